"""Captures made during the test by the real tcpdump and dumpcap, on loopback only, checked against tshark."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from oracle import flow_totals, tshark_totals

from mimir.capture.ingest import ingest

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tcpdump") or not shutil.which("dumpcap"),
    reason="live capture needs root, tcpdump and dumpcap (make setup installs them)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def capturing(cmd: list[str], ready: str) -> Iterator[None]:
    """Run a capture tool until the block ends; wait until it says it listens, stop it with SIGINT."""
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if ready in line or proc.poll() is not None:
            break
    assert proc.poll() is None, f"{cmd[0]} did not start: {''.join(lines)}"
    drain = threading.Thread(target=proc.stderr.read, daemon=True)
    drain.start()
    try:
        yield
        time.sleep(0.5)  # let the last packets reach the file
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)


def udp_traffic(port: int, count: int, size: int) -> None:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            for _ in range(count):
                s.sendto(b"u" * size, (host, port))


def tcp_traffic(port: int, size: int) -> None:
    with socket.create_server(("127.0.0.1", port)) as server:
        received = []

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                while chunk := conn.recv(65536):
                    received.append(len(chunk))
                conn.sendall(b"done")

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"t" * size)
            client.shutdown(socket.SHUT_WR)
            assert client.recv(16) == b"done"
        thread.join(timeout=10)
        assert sum(received) == size


def check(paths: list[Path], linktype: int) -> None:
    flows, summary = ingest(paths, progress=False)
    expected = sum((tshark_totals(p).totals for p in paths), start=type(flow_totals(flows))())
    assert flow_totals(flows) == expected
    assert all(linktype in f.link_types for f in summary.files)
    assert summary.ip_packets > 0 and summary.truncated_records == 0


def test_tcpdump_any_interface_sll2(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "any.pcap"
    cmd = ["tcpdump", "-i", "any", "-n", "-U", "-w", str(path), f"port {port}"]
    with capturing(cmd, "listening on"):
        udp_traffic(port, 30, 300)
        tcp_traffic(port, 200_000)
    check([path], 276)
    flows, _ = ingest([path], progress=False)
    udp = [r for r in flows.to_pylist() if r["proto"] == 17 and r["dport"] == port]
    assert {r["src"] for r in udp} == {"127.0.0.1", "::1"}
    assert sum(r["packets"] for r in udp) >= 60
    assert {r["bytes"] // r["packets"] for r in udp} == {20 + 20 + 8 + 300, 20 + 40 + 8 + 300}  # SLL2 frames


def test_tcpdump_rotated_capture(tmp_path: Path) -> None:
    port = free_port()
    base = tmp_path / "rot.pcap"
    cmd = ["tcpdump", "-i", "lo", "-n", "-U", "-C", "1", "-Z", "root", "-w", str(base), f"udp port {port}"]
    with capturing(cmd, "listening on"):
        udp_traffic(port, 1500, 1200)
    parts = [base, *sorted(tmp_path.glob("rot.pcap[0-9]*"), key=lambda p: int(p.name[8:]))]
    assert len(parts) >= 2
    check(parts, 1)  # the totals over all files are tshark's, file by file
    _, summary = ingest(parts, progress=False)
    assert len(summary.files) == len(parts) and all(f.records for f in summary.files)


def test_dumpcap_pcapng_with_two_interfaces(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "two.pcapng"
    cmd = ["dumpcap", "-i", "lo", "-i", "any", "-f", f"udp port {port}", "-w", str(path)]
    with capturing(cmd, "File:"):
        udp_traffic(port, 25, 500)
    check([path], 1)
    _, summary = ingest([path], progress=False)
    assert len(summary.files[0].link_types) == 2  # loopback as Ethernet, and the cooked "any" device
