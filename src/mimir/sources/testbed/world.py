"""The world outside the testbed: the resolver cluster DNS forwards to, and the attacker's receiver.

Runs in the outside namespace (`python -m mimir.sources.testbed.world --log FILE`). The resolver answers every
name NXDOMAIN at once (a benign lookup such as api.wordpress.org must not wait for a timeout) except the tunnel's
names, which it decodes and answers with an A record; the receiver reads each connection to its end. What
arrives is appended to FILE as JSON lines, one per tunnel query and one per connection, so the run can check
that what the source sent reached the world. Only the standard library; SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from mimir.errors import TestbedError
from mimir.network import EXFIL_DESTINATION
from mimir.sources.testbed.network import OUTSIDE_RESOLVER
from mimir.sources.testbed.relay import CHUNK, EXFIL_PORT, HEADER, Meter, decode_tunnel

NXDOMAIN, FORMERR = 3, 1
ANSWER_TTL = 0  # no resolver on the way caches a tunnel answer


class Log:
    """JSON lines appended and flushed one at a time by every thread."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.lock = threading.Lock()

    def write(self, **record: Any) -> None:
        line = json.dumps({"time": time.time(), **record}, separators=(",", ":"))
        with self.lock:
            self.file.write(line + "\n")
            self.file.flush()


# the resolver ----------------------------------------------------------------------------------------------------
def question(message: bytes) -> tuple[str, int, int] | None:
    """(name, type, offset after the question) of a query, None for anything else."""
    if len(message) < 12:
        return None
    flags, count = struct.unpack("!H H", message[2:6])
    if flags & 0x8000 or count != 1:
        return None
    labels, at = [], 12
    while at < len(message) and message[at] != 0:
        size = message[at]
        if size & 0xC0 or at + 1 + size > len(message):
            return None
        labels.append(message[at + 1 : at + 1 + size].decode("ascii", "replace"))
        at += 1 + size
    if at + 5 > len(message):
        return None
    (qtype,) = struct.unpack("!H", message[at + 1 : at + 3])
    return ".".join(labels), qtype, at + 5


def answer(message: bytes, peer: str, transport: str, log: Log) -> bytes | None:
    """The reply to one query: a tunnel name logged and answered with an A record, any other name NXDOMAIN."""
    parsed = question(message)
    if parsed is None:
        if len(message) < 12 or message[2] & 0x80:
            return None
        return message[:2] + struct.pack("!HHHHH", 0x8080 | FORMERR, 0, 0, 0, 0)
    name, qtype, end = parsed
    qid, flags = struct.unpack("!HH", message[:4])
    tunnelled = decode_tunnel(name)
    if tunnelled is None:
        log.write(kind="query", name=name, type=qtype, peer=peer, transport=transport)
        rcode, records = NXDOMAIN, b""
    else:
        window, seq, data = tunnelled
        log.write(kind="tunnel", window=window, seq=seq, bytes=len(data), data=base64.b64encode(data).decode(),
                  size=len(message), peer=peer, transport=transport)  # fmt: skip
        rcode = 0
        records = b"" if qtype != 1 else struct.pack("!HHHIH4s", 0xC00C, 1, 1, ANSWER_TTL, 4,
                                                      socket.inet_aton(EXFIL_DESTINATION))  # fmt: skip
    reply_flags = 0x8000 | (flags & 0x7900) | 0x0080 | rcode  # opcode and RD copied, RA set
    header = struct.pack("!HHHHHH", qid, reply_flags, 1, 1 if records else 0, 0, 0)
    return header + message[12:end] + records


def serve_udp(sock: socket.socket, log: Log) -> None:
    while True:
        message, (peer, _) = sock.recvfrom(4096)
        reply = answer(message, peer, "udp", log)
        if reply is not None:
            sock.sendto(reply, (peer, _))


def serve_dns_tcp(conn: socket.socket, peer: str, log: Log) -> None:
    """Queries over TCP, each after its two-byte length, until the client closes."""
    with conn:
        conn.settimeout(10)
        while (size := _exactly(conn, 2)) and (message := _exactly(conn, struct.unpack("!H", size)[0])):
            reply = answer(message, peer, "tcp", log)
            if reply is None:
                return
            conn.sendall(struct.pack("!H", len(reply)) + reply)


def _exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        part = conn.recv(size - len(data))
        if not part:
            return b""
        data += part
    return data


# the receiver ----------------------------------------------------------------------------------------------------
def receive(conn: socket.socket, peer: str, log: Log) -> None:
    """One connection read to its end: the window named by an `EXFIL <tag>` first line (the source address is the
    node's after SNAT, the same for every window), its payload counted and hashed, logged, then closed: the sender
    waits for the close, so once it has ended the line is written."""
    opened, window, payload = time.time(), None, Meter()
    with conn:
        head = b""
        while b"\n" not in head and len(head) < 128 and (data := conn.recv(CHUNK)):
            head += data
        line, newline, rest = head.partition(b"\n")
        if newline and line.startswith(HEADER + b" "):
            window, head = line[len(HEADER) + 1 :].decode("ascii", "replace").strip(), rest
        if head:
            payload.add(head)
        while data := conn.recv(CHUNK):
            payload.add(data)
        log.write(kind="tcp", window=window, peer=peer, bytes=payload.bytes, sha256=payload.digest.hexdigest(),
                  first=payload.first, last=payload.last, opened=opened, closed=time.time())  # fmt: skip


def accept_loop(server: socket.socket, handler: Any, log: Log) -> None:
    while True:
        conn, (peer, _) = server.accept()
        threading.Thread(target=handler, args=(conn, peer, log), daemon=True).start()


# the process -----------------------------------------------------------------------------------------------------
def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _bind(kind: int, address: tuple[str, int]) -> socket.socket:
    try:
        if kind == socket.SOCK_STREAM:
            return socket.create_server(address)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(address)
        return sock
    except OSError as e:
        raise TestbedError(f"world: cannot listen on {address[0]}:{address[1]}: {e.strerror or e}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mimir.sources.testbed.world", description=__doc__.split("\n")[0])
    parser.add_argument("--log", type=Path, required=True, help="JSON lines of what arrives")
    parser.add_argument("--resolver", default=OUTSIDE_RESOLVER, help="the resolver's address (port 53)")
    parser.add_argument("--receiver", default=EXFIL_DESTINATION, help=f"the receiver's address (port {EXFIL_PORT})")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    try:
        udp = _bind(socket.SOCK_DGRAM, (args.resolver, 53))
        tcp = _bind(socket.SOCK_STREAM, (args.resolver, 53))
        receiver = _bind(socket.SOCK_STREAM, (args.receiver, EXFIL_PORT))
    except TestbedError as e:
        print(e, file=sys.stderr)
        return 1
    with args.log.open("a") as file:
        log = Log(file)
        threads = [
            threading.Thread(target=serve_udp, args=(udp, log), daemon=True),
            threading.Thread(target=accept_loop, args=(tcp, serve_dns_tcp, log), daemon=True),
            threading.Thread(target=accept_loop, args=(receiver, receive, log), daemon=True),
        ]
        for thread in threads:
            thread.start()
        print(f"world: resolver {args.resolver}:53, receiver {args.receiver}:{EXFIL_PORT}", flush=True)
        try:
            while all(thread.is_alive() for thread in threads):
                time.sleep(0.5)
        except (SystemExit, KeyboardInterrupt):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with log.lock:  # no thread is half-way through a line when the file closes
            for sock in (udp, tcp, receiver):
                sock.close()
            return 0 if all(thread.is_alive() for thread in threads) else 1


if __name__ == "__main__":
    sys.exit(main())
