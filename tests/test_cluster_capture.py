"""The node capture controller with the real tcpdump: loopback traffic the tests make, and a namespace they create."""

from __future__ import annotations

import ipaddress
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from oracle import flow_totals, tshark_totals

from mimir.capture.formats import ByteStream, FileReport, RecordBlock, read_records
from mimir.capture.ingest import ingest
from mimir.errors import ClusterError
from mimir.sources.cluster.capture import NodeCapture, TcpdumpOptions

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tcpdump") or not shutil.which("tshark"),
    reason="node capture needs root, tcpdump and tshark (make setup installs them)",
)

LOOPBACK = "127.0.0.1"
LO = ipaddress.ip_address(LOOPBACK)  # how the tshark oracle keys addresses


def udp_receiver() -> socket.socket:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind((LOOPBACK, 0))
    return receiver


def send_udp(port: int, count: int, size: int = 120) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(b"u" * size, (LOOPBACK, port))


def tcp_exchange(rounds: int) -> int:
    """A TCP connection on loopback that echoes `rounds` messages; returns the server's port."""
    with socket.create_server((LOOPBACK, 0)) as server:
        port = server.getsockname()[1]

        def echo() -> None:
            conn, _ = server.accept()
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data)

        thread = threading.Thread(target=echo)
        thread.start()
        with socket.create_connection((LOOPBACK, port)) as client:
            for i in range(rounds):
                message = f"message {i}\n".encode()
                client.sendall(message)
                received = b""
                while len(received) < len(message):
                    received += client.recv(4096)
        thread.join(timeout=10)
    return port


def tshark_all(paths: list[Path]) -> Counter:
    totals: Counter = Counter()
    for path in paths:
        result = tshark_totals(path)
        assert result.returncode == 0, result.stderr
        totals.update(result.totals)
    return totals


def record_times(path: Path) -> list[int]:
    """Nanosecond timestamps of every record, read with mimir's own reader."""
    records = RecordBlock()
    report = FileReport(path=str(path))
    stamps: list[int] = []
    with ByteStream(path) as stream:
        for n in read_records(stream, records, report):
            stamps += (records.sec[:n] * 1_000_000_000 + records.nsec[:n]).tolist()
    return stamps


def test_capture_matches_tshark_and_counts_what_was_sent(tmp_path: Path) -> None:
    receiver = udp_receiver()
    udp_port = receiver.getsockname()[1]
    sent = 40
    folder = tmp_path / "capture"
    with NodeCapture(
        folder, TcpdumpOptions(interface="any", bpf=f"udp port {udp_port} or (tcp and host {LOOPBACK})")
    ) as capture:
        send_udp(udp_port, sent)
        tcp_exchange(rounds=5)
    receiver.close()
    stats = capture.stats
    assert stats is not None
    assert stats.complete, stats.problems
    assert stats.files and all((folder / name).is_file() for name in stats.files)
    assert stats.start <= stats.end
    assert stats.command[:3] == ["tcpdump", "-i", "any"]
    assert stats.packets_captured is not None and stats.packets_captured >= sent
    assert stats.packets_dropped_kernel == 0
    assert stats.to_json()["packets_captured"] == stats.packets_captured

    paths = [folder / name for name in stats.files]
    flows, summary = ingest(paths, progress=False)
    assert summary.packets == stats.packets_captured
    oracle = tshark_all(paths)
    assert flow_totals(flows) == oracle
    assert oracle[(LO, LO, "packets")] >= sent + 5 * 2  # the datagrams, then at least one segment per echo
    udp = flows.filter(flows["dport"].to_numpy() == udp_port)
    assert sum(udp["packets"].to_pylist()) == sent


def test_rotation_gives_time_ordered_files_that_hold_every_packet(tmp_path: Path) -> None:
    receiver = udp_receiver()
    port = receiver.getsockname()[1]
    folder = tmp_path / "capture"
    capture = NodeCapture(folder, TcpdumpOptions(interface="lo", rotate_seconds=1, bpf=f"udp port {port}"))
    capture.start()
    sent = 0
    try:
        while sent < 200:  # 20 bursts 0.2 s apart: several rotation intervals (timed by waiting, not asserted on)
            send_udp(port, 10)
            sent += 10
            time.sleep(0.2)
    finally:
        stats = capture.stop()
        receiver.close()
    assert stats.complete, stats.problems
    assert len(stats.files) >= 2
    assert stats.files == sorted(stats.files)
    stamps = [record_times(folder / name) for name in stats.files]
    filled = [s for s in stamps if s]
    for earlier, later in itertools.pairwise(filled):
        assert max(earlier) <= min(later)
    assert sum(len(s) for s in stamps) == sent == stats.packets_captured
    oracle = tshark_all([folder / name for name in stats.files])
    assert oracle[(LO, LO, "packets")] == sent


@pytest.fixture
def namespace() -> str:
    """A network namespace of the test's own, with loopback up; deleted afterwards."""
    if not shutil.which("ip") or not shutil.which("nsenter"):
        pytest.skip("needs ip and nsenter")
    name = f"mimir-test-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


SEND_INSIDE = """
import socket, sys
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("127.0.0.1", int(sys.argv[1])))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(int(sys.argv[2])):
    s.sendto(b"inside the namespace", ("127.0.0.1", int(sys.argv[1])))
    r.recv(100)
"""


def test_capture_inside_a_network_namespace(tmp_path: Path, namespace: str) -> None:
    port, count = 40000 + secrets.randbelow(20000), 25
    folder = tmp_path / "capture"
    with NodeCapture(folder, TcpdumpOptions(interface="any", netns=Path("/run/netns") / namespace)) as capture:
        assert capture.command[:2] == ["nsenter", f"--net=/run/netns/{namespace}"]
        subprocess.run(
            ["ip", "netns", "exec", namespace, sys.executable, "-c", SEND_INSIDE, str(port), str(count)],
            check=True,
            timeout=30,
        )
    stats = capture.stats
    assert stats is not None and stats.complete, stats and stats.problems
    flows, _ = ingest([folder / name for name in stats.files], progress=False)
    inside = flows.filter(flows["dport"].to_numpy() == port)
    assert sum(inside["packets"].to_pylist()) == count
    assert set(inside["src"].to_pylist()) == {LOOPBACK}


def test_an_interface_that_does_not_exist_is_a_cluster_error(tmp_path: Path) -> None:
    capture = NodeCapture(tmp_path / "capture", TcpdumpOptions(interface="mimir-nosuch0"))
    with pytest.raises(ClusterError, match="mimir-nosuch0"):
        capture.start()
    stats = capture.stop()
    assert not stats.complete
    assert stats.problems


def test_stop_before_start_is_a_cluster_error(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="before start"):
        NodeCapture(tmp_path, TcpdumpOptions(interface="lo")).stop()
