"""tcpdump on the node with an explicit start and stop (the prototype typed into an interactive shell instead).

One tcpdump process, in its own process group, writes nanosecond pcap files rotated every `rotate_seconds` under
UTC strftime names, so sorting the names sorts the files in time. `start` returns the moment tcpdump said it
listens; `stop` interrupts it, waits, and returns its own packet and kernel-drop counts with the files it wrote.
With `netns`, tcpdump runs inside that network namespace through nsenter: from the host, /proc/<pid>/ns/net of the
minikube node container sees every pod's veth and the bridge, as the prototype's capture inside the VM did.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from mimir.errors import ClusterError, IOFailure, UsageError
from mimir.spec import ClusterSpec, RunSpec

FILE_PATTERN = "capture-%Y%m%dT%H%M%SZ.pcap"  # UTC, so the names sort in time order
FILE_GLOB = "capture-*.pcap"
READY = "listening on"
BUFFER_TIMEOUT = 1.2  # tcpdump's packet buffer timeout (1 s) and a margin
_STATS = {
    "packets_captured": re.compile(r"^(\d+) packets? captured$"),
    "packets_received": re.compile(r"^(\d+) packets? received by filter$"),
    "packets_dropped_kernel": re.compile(r"^(\d+) packets? dropped by kernel$"),
    "packets_dropped_interface": re.compile(r"^(\d+) packets? dropped by interface$"),
}


@dataclass
class CaptureStats:
    """What one capture wrote and what tcpdump counted; `complete` only when it stopped on our signal."""

    start: float
    end: float
    files: list[str]
    packets_captured: int | None
    packets_received: int | None
    packets_dropped_kernel: int | None
    packets_dropped_interface: int | None
    interface: str
    snaplen: int
    command: list[str]
    complete: bool
    problems: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TcpdumpOptions:
    """What tcpdump is told: the interface, rotation, bytes per frame, kernel buffer, network namespace, filter.

    The defaults are a run's (mimir.spec): a capture started by hand looks like one a collection starts.
    """

    interface: str = ClusterSpec.interface
    rotate_seconds: int = RunSpec.rotate
    snaplen: int = RunSpec.snaplen
    buffer_kib: int = ClusterSpec.buffer_kib
    netns: Path | None = None
    bpf: str | None = None
    tcpdump: str = "tcpdump"


class NodeCapture:
    """A tcpdump writing rotated pcap files into `folder` from `start()` until `stop()` (or the end of a with block)."""

    def __init__(self, folder: Path, options: TcpdumpOptions = TcpdumpOptions()) -> None:
        if options.rotate_seconds < 1:
            raise ClusterError(f"capture rotation must be at least 1 s, not {options.rotate_seconds}")
        self.folder = Path(folder)
        self.interface = options.interface
        self.snaplen = options.snaplen
        self.command = [
            options.tcpdump,
            "-i",
            options.interface,
            "-n",
            "-s",
            str(options.snaplen),
            "-B",
            str(options.buffer_kib),
            "--time-stamp-precision=nano",
            "-G",
            str(options.rotate_seconds),
            "-Z",
            "root",  # without it, -G rotation into a root-owned folder leaves one empty file
            "-w",
            str(self.folder / FILE_PATTERN),
        ]
        if options.bpf:
            self.command.append(options.bpf)
        if options.netns is not None:
            self.command = ["nsenter", f"--net={options.netns}", *self.command]
        self.stats: CaptureStats | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._stderr: list[str] = []
        self._listening = threading.Event()
        self._started = 0.0
        self._before: set[str] = set()

    def start(self, timeout: float = 10) -> float:
        """Run tcpdump and return the epoch time at which it reported listening."""
        if self._proc is not None:
            raise ClusterError(f"tcpdump on {self.interface}: already started")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise IOFailure(f"{self.folder}: cannot create the capture folder: {e.strerror}") from None
        self._before = {p.name for p in self.folder.glob(FILE_GLOB)}
        try:
            self._proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env={**os.environ, "TZ": "UTC"},
                process_group=0,  # Ctrl-C on the terminal reaches mimir, which stops the capture in order
            )
        except OSError as e:
            raise ClusterError(f"cannot run {self.command[0]} to capture on {self.interface}: {e.strerror}") from None
        self._reader = threading.Thread(target=self._read_stderr, args=(self._proc.stderr,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._listening.wait(0.05):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                why = "exited" if self._proc.poll() is not None else f"did not report listening within {timeout:g} s"
                self.stop(timeout=2)
                raise ClusterError(f"tcpdump on interface {self.interface} {why}: {self._stderr_text()}")
        return self._started

    def stop(self, timeout: float = 10, settle: float = BUFFER_TIMEOUT) -> CaptureStats:
        """Interrupt tcpdump (SIGKILL after `timeout`), and return its counts and the files it wrote, in time order.

        tcpdump reads the kernel's ring in blocks handed over at the latest after its 1 s buffer timeout, and on
        SIGINT it drops whatever is still in the ring: waiting `settle` seconds first keeps the last packets.
        """
        if self.stats is not None:
            return self.stats
        if self._proc is None or self._reader is None:
            raise ClusterError(f"tcpdump on {self.interface}: stop() before start()")
        problems = []
        signalled = self._proc.poll() is None
        if signalled:
            time.sleep(settle)
            _signal_group(self._proc, signal.SIGINT)
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(self._proc, signal.SIGKILL)
                self._proc.wait()
                problems.append(f"tcpdump did not exit within {timeout:g} s of SIGINT and was killed")
        end = time.time()
        self._reader.join(timeout=5)
        if not signalled:
            problems.append(f"tcpdump exited on its own with status {self._proc.returncode}: {self._stderr_text()}")
        counts = _parse_counts(self._stderr)
        if signalled and counts["packets_captured"] is None and not problems:
            problems.append(f"tcpdump printed no statistics: {self._stderr_text()}")
        files = sorted(p.name for p in self.folder.glob(FILE_GLOB) if p.name not in self._before)
        self.stats = CaptureStats(
            start=self._started,
            end=end,
            files=files,
            interface=self.interface,
            snaplen=self.snaplen,
            command=list(self.command),
            complete=signalled and not problems,
            problems=problems,
            **counts,
        )
        return self.stats

    def __enter__(self) -> NodeCapture:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _read_stderr(self, stream: IO[str] | None) -> None:
        """Keep every line (the statistics come last); note the time of the "listening on" line."""
        for line in stream or ():
            if not self._listening.is_set() and READY in line:
                self._started = time.time()
                self._listening.set()
            self._stderr.append(line.rstrip("\n"))

    def _stderr_text(self) -> str:
        return " | ".join(line for line in self._stderr if line.strip()) or "(nothing on stderr)"


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just exited; wait() collects it
        os.killpg(proc.pid, sig)


def _parse_counts(lines: list[str]) -> dict[str, int | None]:
    """tcpdump's closing lines ("N packets captured", ...); a count it did not print stays None."""
    counts: dict[str, int | None] = dict.fromkeys(_STATS)
    for line in lines:
        for key, pattern in _STATS.items():
            if match := pattern.match(line.strip()):
                counts[key] = int(match.group(1))
    return counts


def namespace_file(spec: str) -> Path | None:
    """`host` → capture where mimir runs; a path → that namespace file; `container:NAME` → a Docker container's.

    With minikube's docker driver the node is the container `minikube`: capturing in its namespace from the host sees
    every pod's veth and the bridge, as the prototype's capture inside the VM did.
    """
    if spec == "host":
        return None
    if spec.startswith("container:"):
        name = spec.split(":", 1)[1]
        try:
            out = subprocess.run(
                ["docker", "inspect", "--format", "{{.State.Pid}}", name],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.strip()
        except FileNotFoundError:
            raise UsageError(f"--capture-netns {spec}: no docker command to find the container") from None
        except subprocess.CalledProcessError as e:
            raise UsageError(f"--capture-netns {spec}: docker inspect failed: {e.stderr.strip()}") from None
        if not out.isdigit() or out == "0":
            raise UsageError(f"--capture-netns {spec}: container {name!r} is not running")
        return Path(f"/proc/{out}/ns/net")
    path = Path(spec)
    if not path.exists():
        raise UsageError(f"--capture-netns {spec}: no such network namespace file")
    return path


def link_type(path: Path) -> int | None:
    """The link type in a classic pcap header (tcpdump writes classic pcap)."""
    with path.open("rb") as handle:
        header = handle.read(24)
    if len(header) < 24:
        return None
    order = "little" if header[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else "big"
    return int.from_bytes(header[20:24], order) & 0x0FFFFFFF
