"""`mimir live` on real packets: a run with a physical exfiltration window replayed by tcpreplay onto a veth in a
network namespace the test creates, captured by tcpdump, scored as it arrives.

At real speed, mimir runs tcpdump itself (`--capture interface:IF`), the test kills that tcpdump mid-run, and the
alert still comes within two intervals of the window's start, with no more false alerts in the benign stretches
than the model's validation rate allows. At accelerated speed, a pipe from tcpdump (`--capture -`) gives the
same lines as the dry run on the very bytes that went through the pipe.

The runs are synthetic (Linux cooked captures, as on a node's `any` interface, 128 bytes of each frame): they
are rewritten to Ethernet, which a veth carries, each frame padded with zeros to its original length (on a veth
with a 64 kB MTU: offloaded segments are that large), and their entity events are moved to the replay's clock.
"""

from __future__ import annotations

import http.server
import json
import math
import os
import shutil
import signal
import struct
import subprocess
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import livesetup
import pytest
from conftest import MIMIR

from mimir.capture.formats import ByteStream, FileReport, RecordBlock, read_records

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tcpreplay") or not shutil.which("tcpdump"),
    reason="needs root, tcpreplay and tcpdump (make setup)",
)
SLL2_HEADER = 20
ETHERNET = struct.pack("6s6s", bytes.fromhex("020000000002"), bytes.fromhex("020000000001"))
INTERVAL = 10  # the mimir@10 model


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> livesetup.LiveSetup:
    return livesetup.make(tmp_path_factory.mktemp("live-replay"))


def to_ethernet(capture: Path, out: Path) -> float:
    """The capture's frames as Ethernet (the cooked header replaced by one to a fixed address), each padded with
    zeros to its original length, as the wire carried it; the capture's first time."""
    first = math.inf
    records = RecordBlock()
    with ByteStream(capture) as stream, out.open("wb") as sink:
        sink.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        for n in read_records(stream, records, FileReport(path=str(capture))):
            buf, parts = stream.buf, []
            first = min(first, float(records.sec[0]) + records.nsec[0] * 1e-9)
            for k in range(n):
                off, caplen, length = int(records.off[k]), int(records.caplen[k]), int(records.origlen[k]) - 6
                kept = ETHERNET + buf[off : off + 2].tobytes() + buf[off + SLL2_HEADER : off + caplen].tobytes()
                usec = int(records.nsec[k]) // 1000
                parts += [
                    struct.pack("<IIII", int(records.sec[k]), usec, length, length),
                    kept,
                    bytes(length - len(kept)),
                ]
            sink.write(b"".join(parts))
    return first


def replayed_run(run: Path, out: Path, origin: float, at: float, speed: float) -> dict:
    """A copy of the run bundle whose entity events and windows are on the replay's clock: `origin` (the run's
    first packet) happens at `at`, `speed` times as fast; a margin of a second before each event."""

    def moved(ts: float) -> float:
        return at + (ts - origin) / speed

    shutil.copytree(run, out, ignore=shutil.ignore_patterns("capture"))
    lines = []
    for line in (run / "entities.jsonl").read_text().splitlines():
        event = json.loads(line)
        event["ts"] = moved(event["ts"]) - 1.0
        lines.append(json.dumps(event))
    (out / "entities.jsonl").write_text("\n".join(lines) + "\n")
    info = json.loads((run / "run.json").read_text())
    for key in ("start", "end"):
        info[key] = moved(info[key])
    for window in info.get("exfiltration", []):
        window["start"], window["end"] = moved(window["start"]), moved(window["end"])
    (out / "run.json").write_text(json.dumps(info))
    return info


@pytest.fixture
def veth() -> Iterator[tuple[str, str, str]]:
    """A network namespace with a veth pair inside: (namespace, sending end, capturing end); removed after."""
    ns = f"mimir-live-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        ip = ["ip", "-n", ns, "link"]
        subprocess.run([*ip, "add", "lv-send", "type", "veth", "peer", "name", "lv-cap"], check=True)
        for end in ("lv-send", "lv-cap"):  # frames as large as the capture's (segmentation offload, up to 64 kB)
            subprocess.run([*ip, "set", end, "mtu", "65535", "up"], check=True)
        yield ns, "lv-send", "lv-cap"
    finally:
        for pid in _pids_in(ns):
            os.kill(pid, signal.SIGKILL)
        subprocess.run(["ip", "netns", "delete", ns], check=False)


def _pids_in(ns: str) -> list[int]:
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
    return [int(p) for p in done.stdout.split()]


def _tcpdump_on(interface: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                words = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if words and words[0].endswith(b"tcpdump") and interface.encode() in words:
                return int(proc.name)
    return None


def _wait_for(check: object, what: str, timeout: float = 30) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()  # type: ignore[operator]
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout} s")


def _replay(ns: str, interface: str, capture: Path, speed: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, "tcpreplay", "-q", "-i", interface, f"--multiplier={speed:g}", str(capture)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


class TcpdumpTee:
    """tcpdump in the namespace writing to a pipe, copied both into a process's stdin and into a file."""

    def __init__(self, ns: str, interface: str, copy: Path, into: subprocess.Popen[bytes]):
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "tcpdump", "-i", interface, "-n", "-U", "-s", "262144", "-w", "-"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        self.copy, self.into = copy, into
        self.listening = threading.Event()
        self.threads = [threading.Thread(target=self._copy), threading.Thread(target=self._watch)]
        for thread in self.threads:
            thread.start()

    def _copy(self) -> None:
        assert self.proc.stdout is not None and self.into.stdin is not None
        with self.copy.open("wb") as kept:
            while chunk := self.proc.stdout.read1(1 << 16):
                kept.write(chunk)
                self.into.stdin.write(chunk)
                self.into.stdin.flush()
        self.into.stdin.close()

    def _watch(self) -> None:  # tcpdump says when it listens
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if b"listening on" in line:
                self.listening.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        for thread in self.threads:
            thread.join(timeout=60)


class Receiver:
    """A webhook receiver on loopback: every POSTed JSON body, in order."""

    def __enter__(self) -> Receiver:
        received: list[dict] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.received = received
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def _scrape(url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as page:  # noqa: S310 - loopback, the test's own process
        text = page.read().decode()
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_real_speed_replay_alerts_within_two_intervals_through_a_tcpdump_restart(
    setup: livesetup.LiveSetup, veth: tuple[str, str, str], tmp_path: Path
) -> None:
    ns, send, cap = veth
    frames = tmp_path / "frames.pcap"
    origin = to_ethernet(setup.capture, frames)
    at = time.time() + 3.0  # entities first: the replay starts a little later
    info = replayed_run(setup.evaluation, tmp_path / "run", origin, at, 1.0)
    alerts = tmp_path / "alerts.jsonl"
    with Receiver() as hook:
        live = subprocess.Popen(
            [str(MIMIR), "live", "--model", setup.models / "mimir@10", "--capture", f"interface:{cap}",
             "--capture-netns", f"/run/netns/{ns}", "--entities", tmp_path / "run", "--alerts", alerts,
             "--metrics-port", "0", "--webhook", hook.url],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert live.stderr is not None
            metrics_url = live.stderr.readline().split(" on ")[-1].strip()  # its first line says where
            _wait_for(lambda: _tcpdump_on(cap), "tcpdump started by mimir live")
            time.sleep(max(0.0, at - time.time()))
            replay = _replay(ns, send, frames, 1.0)
            started = time.time()
            time.sleep(15)
            killed = _tcpdump_on(cap)
            assert killed is not None
            os.kill(killed, signal.SIGKILL)
            _wait_for(lambda: (_tcpdump_on(cap) or killed) != killed, "tcpdump started again")
            assert replay.wait(timeout=900) == 0, replay.stderr.read() if replay.stderr else ""
            time.sleep(3.0)  # the lateness allowance, and the last interval's close on the wall clock
            metrics = _scrape(metrics_url)
            live.send_signal(signal.SIGTERM)
            _, err = live.communicate(timeout=60)
        finally:
            if live.poll() is None:
                live.kill()
                live.wait()
    assert live.returncode == 130, err
    assert "1 capture restarts" in err
    assert "Traceback" not in err
    assert metrics["mimir_live_capture_restarts_total"] == 1
    assert metrics["mimir_live_packets_total"] > 0 and metrics["mimir_live_intervals_scored_total"] >= 10
    assert metrics["mimir_live_threshold"] == pytest.approx(
        json.loads((setup.models / "mimir@10" / "model.json").read_text())["threshold"]
    )
    lines = _lines(alerts)
    shift = started - at  # the replay's real start against the one planned for the entities
    window = info["exfiltration"][0]
    w_start, w_end = window["start"] + shift, window["end"] + shift
    detected = [x for x in lines if x["alert"] and x["end"] > w_start and x["start"] < w_end]
    assert detected, lines
    assert detected[0]["start"] < w_start + 2 * INTERVAL
    benign = [x for x in lines if x["end"] <= w_start - INTERVAL or x["start"] >= w_end + INTERVAL]
    benign = [x for x in benign if x["packets"] > 0 and not x["partial"]]
    allowed = math.ceil(
        setup.validation_alert_rate * len(benign) + 2 * math.sqrt(len(benign) * setup.validation_alert_rate)
    )
    assert sum(x["alert"] for x in benign) <= allowed, (setup.validation_alert_rate, benign)
    assert all(0 < x["lag"] < 10 for x in lines if not x["partial"])  # scored soon after each close
    # every alert went to the webhook as well, as written
    assert hook.received == [x for x in lines if x["alert"]]


def test_an_accelerated_replay_through_a_pipe_gives_the_dry_runs_lines(
    setup: livesetup.LiveSetup, veth: tuple[str, str, str], tmp_path: Path
) -> None:
    ns, send, cap = veth
    frames = tmp_path / "frames.pcap"
    origin = to_ethernet(setup.capture, frames)
    speed = 4.0
    at = time.time() + 3.0
    replayed_run(setup.evaluation, tmp_path / "run", origin, at, speed)
    copy = tmp_path / "piped.pcap"
    alerts = tmp_path / "live.jsonl"
    live = subprocess.Popen(
        [str(MIMIR), "live", "--model", setup.models / "mimir", "--capture", "-", "--entities", tmp_path / "run",
         "--alerts", alerts],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    tee = TcpdumpTee(ns, cap, copy, live)
    try:
        assert tee.listening.wait(30), "tcpdump did not start listening"
        time.sleep(max(0.0, at - time.time()))
        replay = _replay(ns, send, frames, speed)
        assert replay.wait(timeout=900) == 0
        time.sleep(1.0)
        tee.stop()
        live.wait(timeout=120)  # its stdin is closed by the copy: the end of the capture
        err = live.stderr.read().decode() if live.stderr else ""
    finally:
        tee.stop()
        if live.poll() is None:
            live.kill()
            live.wait()
    assert live.returncode == 0, err
    dry = tmp_path / "dry.jsonl"
    done = subprocess.run(
        [str(MIMIR), "live", "--model", setup.models / "mimir", "--capture", copy, "--entities", tmp_path / "run",
         "--alerts", dry],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    def comparable(lines: list[dict]) -> list[dict]:
        return [{k: v for k, v in x.items() if k not in ("lag", "partial")} for x in lines]

    piped, whole = _lines(alerts), _lines(dry)
    assert len(piped) >= 120 / speed / 30 - 1
    assert comparable(piped) == comparable(whole)
