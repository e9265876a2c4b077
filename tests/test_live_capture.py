"""Live capture: captures made during the test by the real tcpdump and dumpcap, on loopback only, checked against
tshark; and `mimir live`'s feeds (mimir.live.capture) reading a pipe, a file, a folder of rotated files being
written, and a tcpdump they run in a network namespace the test creates, checked against `mimir ingest`."""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pytest
from craft import ETH_IPV4, Record, ether, ipv4, pcap, udp
from oracle import flow_totals, tshark_totals

from mimir.capture.flowtable import FlowTable
from mimir.capture.formats import BLOCK_BYTES
from mimir.capture.generate import write_capture
from mimir.capture.ingest import ingest
from mimir.errors import CaptureError, IOFailure, UsageError
from mimir.live.capture import Feed, FileFeed, FolderFeed, InterfaceFeed, StreamFeed

capture_tools = pytest.mark.skipif(
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


@capture_tools
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


@capture_tools
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


@capture_tools
def test_dumpcap_pcapng_with_two_interfaces(tmp_path: Path) -> None:
    port = free_port()
    path = tmp_path / "two.pcapng"
    cmd = ["dumpcap", "-i", "lo", "-i", "any", "-f", f"udp port {port}", "-w", str(path)]
    with capturing(cmd, "File:"):
        udp_traffic(port, 25, 500)
    check([path], 1)
    _, summary = ingest([path], progress=False)
    assert len(summary.files[0].link_types) == 2  # loopback as Ethernet, and the cooked "any" device


# `mimir live`'s feeds.

BASE_SECOND = 1_700_000_000
SENDER = """
import socket, sys, time
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    while True:
        s.sendto(b"live", ("127.0.0.1", int(sys.argv[1])))
        time.sleep(0.01)
"""
needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("tcpdump", "ip", "nsenter")),
    reason="an interface feed needs root, tcpdump, ip and nsenter (make setup installs them)",
)


def frame(number: int) -> bytes:
    """UDP packet `number`: its source port and payload size tell it apart."""
    return ether(ipv4("10.0.0.1", "10.0.0.2", 17, udp(2000 + number, 53, b"p" * number)), ETH_IPV4)


def header() -> bytes:
    return pcap([], 1, nano=True)


def record(number: int) -> bytes:
    """One record of a nanosecond Ethernet pcap: packet `number`, at second BASE_SECOND + number."""
    return pcap([Record((BASE_SECOND + number) * 10**9, frame(number))], 1, nano=True)[len(header()) :]


def numbers(records: list[tuple[int, bytes]]) -> list[int]:
    """The packet numbers of delivered records, each checked to be its packet's frame, byte for byte."""
    for second, data in records:
        assert data == frame(second - BASE_SECOND)
    return [second - BASE_SECOND for second, _ in records]


def table(feed: Feed) -> pa.Table:
    flows = FlowTable(1)
    for buf, records, n in feed.blocks():
        flows.add(buf, records, n)
    return flows.to_arrow()


class Collector:
    """A feed's blocks() read in a thread, each record kept as (second, frame), while the test writes on."""

    def __init__(self, feed: Feed) -> None:
        self.feed = feed
        self.records: list[tuple[int, bytes]] = []
        self.error: BaseException | None = None
        self.done = False
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._run)
        self.thread.start()

    def _run(self) -> None:
        try:
            for buf, r, n in self.feed.blocks():
                got = [(int(r.sec[i]), buf[r.off[i] : r.off[i] + r.caplen[i]].tobytes()) for i in range(n)]
                with self.changed:
                    self.records.extend(got)
                    self.changed.notify_all()
        except BaseException as e:  # raised in the test's thread by finish()
            self.error = e
        finally:
            with self.changed:
                self.done = True
                self.changed.notify_all()

    def wait_for(self, count: int) -> None:
        with self.changed:
            self.changed.wait_for(lambda: len(self.records) >= count or self.done, timeout=60)
            assert len(self.records) >= count, (self.records, self.feed.stats, self.error)

    def finish(self) -> None:
        self.feed.stop()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "blocks() did not end after stop()"
        if self.error is not None:
            raise self.error


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    """A seeded capture larger than the reader's 16 MB buffer."""
    path = tmp_path / "generated.pcap"
    write_capture(path, 40_000, seed=7)
    assert path.stat().st_size > BLOCK_BYTES
    return path


def test_file_feed_reads_what_ingest_reads(generated: Path, tmp_path: Path) -> None:
    compressed = tmp_path / "generated.pcap.gz"
    compressed.write_bytes(gzip.compress(generated.read_bytes(), compresslevel=1))
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(generated.read_bytes()[:-100])  # the last record cut short, as a killed tcpdump leaves it
    for path in (generated, compressed, cut):
        flows, summary = ingest([path], progress=False)
        feed = FileFeed(path)
        assert table(feed).equals(flows)
        assert feed.stats.records == summary.packets and summary.packets > 30_000
        assert feed.stats.streams == 1
        assert feed.stats.truncated == summary.truncated_records == (path == cut)
        assert feed.stats.warnings == summary.warnings


def test_file_feed_reads_pcapng_as_ingest_does(corpus: Path) -> None:
    for name in ("pypacker/packets_ether2.pcapng", "tcpdump/of13_ericsson.pcapng"):
        path = corpus / "pcap" / name
        flows, summary = ingest([path], progress=False)
        feed = FileFeed(path)
        assert table(feed).equals(flows) and flows.num_rows > 0
        assert feed.stats.records == summary.packets


def test_file_feed_refuses_what_is_no_file(tmp_path: Path) -> None:
    with pytest.raises(IOFailure, match=r"missing\.pcap: no such file"):
        FileFeed(tmp_path / "missing.pcap")
    (tmp_path / "text.pcap").write_text("not a capture at all")
    with pytest.raises(CaptureError, match=r"text\.pcap.*not a pcap or pcapng capture"):
        table(FileFeed(tmp_path / "text.pcap"))


def test_stream_feed_delivers_records_before_the_writer_closes() -> None:
    read_end, write_end = os.pipe()
    delivered = threading.Event()
    waited_in_vain = threading.Event()
    closed = threading.Event()

    def write() -> None:
        os.write(write_end, header() + record(0) + record(1) + record(2))
        if not delivered.wait(60):
            waited_in_vain.set()
        os.write(write_end, record(3)[:30])  # then the writer dies mid-record
        os.close(write_end)
        closed.set()

    writer = threading.Thread(target=write)
    writer.start()
    got: list[tuple[int, bytes]] = []
    with os.fdopen(read_end, "rb") as pipe:
        feed = StreamFeed(pipe)
        for buf, r, n in feed.blocks():
            assert not closed.is_set()
            got += [(int(r.sec[i]), buf[r.off[i] : r.off[i] + r.caplen[i]].tobytes()) for i in range(n)]
            if len(got) == 3:
                delivered.set()
    writer.join()
    assert not waited_in_vain.is_set(), "the records came only when the pipe closed"
    assert numbers(got) == [0, 1, 2]
    assert feed.stats.records == 3 and feed.stats.streams == 1 and feed.stats.restarts == 0
    assert feed.stats.truncated == 1
    assert len(feed.stats.warnings) == 1 and feed.stats.warnings[0].startswith("stdin: the last record")


def test_stream_feed_stop_ends_a_wait_on_an_idle_pipe() -> None:
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, header() + record(0) + record(1)[:20])  # and then nothing: the writer stays open
        with os.fdopen(read_end, "rb") as pipe:
            collector = Collector(StreamFeed(pipe, name="tcpdump pipe"))
            collector.wait_for(1)
            collector.finish()
        assert numbers(collector.records) == [0]
        stats = collector.feed.stats
        assert stats.records == 1 and stats.truncated == 0 and stats.warnings == []  # stop() cut it, not the source
    finally:
        os.close(write_end)


def test_stream_feed_stopped_before_any_byte_ends_quietly() -> None:
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, "rb") as pipe:
            collector = Collector(StreamFeed(pipe))
            collector.finish()
        assert collector.records == [] and collector.feed.stats.warnings == []
    finally:
        os.close(write_end)


def test_stream_feed_of_nothing_is_an_error() -> None:
    read_end, write_end = os.pipe()
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe, pytest.raises(CaptureError, match=r"^stdin: the stream ended before"):
        table(StreamFeed(pipe))


def test_stream_feed_reads_what_ingest_reads(tmp_path: Path) -> None:
    path = tmp_path / "small.pcap"
    write_capture(path, 5_000, seed=3)
    data = path.read_bytes()
    read_end, write_end = os.pipe()

    def write() -> None:
        with os.fdopen(write_end, "wb", buffering=0) as pipe:
            for at in range(0, len(data), 4099):  # pieces that cut records anywhere
                pipe.write(data[at : at + 4099])

    writer = threading.Thread(target=write)
    writer.start()
    with os.fdopen(read_end, "rb") as pipe:
        feed = StreamFeed(pipe)
        flows = table(feed)
    writer.join()
    expected, summary = ingest([path], progress=False)
    assert flows.equals(expected)
    assert feed.stats.records == summary.packets == 5_000 and feed.stats.truncated == 0


def test_folder_feed_follows_files_as_they_are_written_and_rotated(tmp_path: Path) -> None:
    (tmp_path / "cap-1.pcap").write_bytes(header() + record(0) + record(1))  # there before the feed starts
    second = tmp_path / "cap-2.pcap"
    second.write_bytes(header() + record(2) + record(3)[:25])  # cut mid-record: still being written
    collector = Collector(FolderFeed(tmp_path, poll=0.02))
    try:
        collector.wait_for(3)
        with second.open("ab") as f:
            f.write(record(3)[25:] + record(4))
        collector.wait_for(5)
        third = tmp_path / "cap-3.pcap"
        third.touch()  # rotation: the new file is empty at first
        assert collector.feed.stats.truncated == 0
        with third.open("ab") as f:
            f.write(header() + record(5) + record(6)[:40])  # and it is left cut short...
        collector.wait_for(6)
        (tmp_path / "cap-4.pcap").write_bytes(header() + record(7))  # ...when the next one appears
        collector.wait_for(7)
    finally:
        collector.finish()
    assert numbers(collector.records) == [0, 1, 2, 3, 4, 5, 7]
    stats = collector.feed.stats
    assert stats.records == 7 and stats.streams == 4 and stats.restarts == 0
    assert stats.truncated == 1
    assert len(stats.warnings) == 1 and "cap-3.pcap: the last record" in stats.warnings[0]


def test_folder_feed_name_order_compressed_copies_and_bad_files(tmp_path: Path) -> None:
    """tcpdump -C names cap.pcap, cap.pcap1, ..., cap.pcap10; tcpdump -z leaves X.gz of a file X once rotated."""
    files = {"rot.pcap": 0, "rot.pcap1": 1, "rot.pcap2": 2, "rot.pcap10": 3}
    for name, number in files.items():
        (tmp_path / name).write_bytes(header() + record(number))
    (tmp_path / "rot.pcap1.gz").write_bytes(gzip.compress(header() + record(1)))  # read already, as rot.pcap1
    (tmp_path / "rot.pcap3").touch()  # an empty file, passed over
    (tmp_path / "rot.pcap4").write_bytes(b"no capture here, but a name like one")
    (tmp_path / "rot.pcap11.gz").write_bytes(gzip.compress(header() + record(4)))
    (tmp_path / "notes.txt").write_text("not matched by the pattern")
    collector = Collector(FolderFeed(tmp_path, poll=0.02))
    try:
        collector.wait_for(5)
    finally:
        collector.finish()
    assert numbers(collector.records) == [0, 1, 2, 3, 4]
    warnings = collector.feed.stats.warnings
    assert len(warnings) == 1 and "rot.pcap4" in warnings[0] and "not a pcap or pcapng capture" in warnings[0]


def test_folder_feed_needs_a_folder(tmp_path: Path) -> None:
    with pytest.raises(IOFailure, match="nowhere: no such folder"):
        FolderFeed(tmp_path / "nowhere")


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of this test with its loopback up; removed whatever happens."""
    name = f"mimir-feed-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True, capture_output=True)


@contextmanager
def udp_sender(netns: str, port: int) -> Iterator[None]:
    """A datagram every 10 ms to 127.0.0.1:port inside the namespace, until the block ends."""
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-c", SENDER, str(port)])
    try:
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def runs_tcpdump(pid: int) -> bool:
    """Whether the process is there, running or as an unreaped zombie."""
    try:
        return "(tcpdump)" in Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False


@needs_netns
def test_interface_feed_restarts_after_tcpdump_is_killed(netns: str) -> None:
    port = free_port()
    feed = InterfaceFeed("lo", netns=Path("/run/netns") / netns, bpf=f"udp port {port}", restart_delay=0.05)
    assert feed.name == f"tcpdump on lo in network namespace /run/netns/{netns}"
    flows = FlowTable(1)
    per_stream: dict[int, int] = {}
    pids: list[int] = []
    guard = threading.Timer(120, feed.stop)  # a broken feed fails the test instead of hanging it
    guard.start()
    try:
        with udp_sender(netns, port):
            for buf, records, n in feed.blocks():
                flows.add(buf, records, n)
                stream = feed.stats.streams
                per_stream[stream] = per_stream.get(stream, 0) + n
                if feed.pid is not None and feed.pid not in pids:
                    pids.append(feed.pid)
                if stream == 1 and per_stream[1] >= 5 and len(pids) == 1:
                    os.kill(pids[0], signal.SIGKILL)
                if stream == 2 and per_stream[2] >= 5:
                    feed.stop()
    finally:
        guard.cancel()
        feed.stop()
    stats = feed.stats
    assert stats.restarts == 1 and stats.streams == 2 and len(pids) == 2
    assert per_stream[1] >= 5 and per_stream[2] >= 5 and stats.records == sum(per_stream.values())
    assert any("stopped (tcpdump killed by SIGKILL" in w and "restarting" in w for w in stats.warnings)
    assert stats.truncated <= 1  # a kill may cut the record being written
    rows = flows.to_arrow().to_pylist()
    assert {(r["src"], r["dst"], r["proto"], r["dport"]) for r in rows} == {("127.0.0.1", "127.0.0.1", 17, port)}
    assert sum(r["packets"] for r in rows) == stats.records
    assert feed.pid is None and not any(runs_tcpdump(pid) for pid in pids)


@needs_netns
def test_interface_feed_stop_while_idle_leaves_no_tcpdump(netns: str) -> None:
    feed = InterfaceFeed("lo", netns=Path("/run/netns") / netns, bpf="udp port 9")
    collector = Collector(feed)
    try:
        for _ in range(3000):  # tcpdump starts; no packet will come
            if feed.pid is not None:
                break
            time.sleep(0.01)
        pid = feed.pid
        assert pid is not None
    finally:
        collector.finish()
    assert feed.pid is None and not runs_tcpdump(pid)
    assert collector.records == [] and feed.stats.restarts == 0 and feed.stats.warnings == []


@needs_netns
def test_interface_feed_that_cannot_capture_says_why(netns: str) -> None:
    feed = InterfaceFeed("nosuch0", netns=Path("/run/netns") / netns)
    with pytest.raises(UsageError, match=r"cannot capture on nosuch0 in network namespace .*No such device"):
        table(feed)
    assert feed.pid is None
    with pytest.raises(UsageError, match=r"cannot capture on lo: /nonexistent/tcpdump cannot be run: No such file"):
        table(InterfaceFeed("lo", tcpdump="/nonexistent/tcpdump"))
    with pytest.raises(UsageError, match=r"nsenter: .*/run/netns/none-such"):
        table(InterfaceFeed("lo", netns=Path("/run/netns/none-such")))
