"""Capture feeds for `mimir live`: blocks of records from a pipe, a file, a folder of rotated files still being
written, or a tcpdump that mimir runs and restarts, each block delivered as soon as whole records have arrived.

Every feed reads with the batch reader (mimir.capture.formats), so the same bytes give the same records as `mimir
ingest`; only the filling of the buffer differs. A file is read in the largest reads; a live source returns what
has arrived, waiting (and looking at `stop()` every POLL_SECONDS) only while nothing new has: tcpdump -U writes
every packet as it comes, and a reader that waited for a full buffer would hold packets back for minutes.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import re
import select
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mimir.capture.formats import PCAP_FILE_HEADER, ByteStream, FileReport, RecordBlock, read_records
from mimir.errors import CaptureError, IOFailure, UsageError

Block = tuple[np.ndarray, RecordBlock, int]

POLL_SECONDS = 0.1  # how long a wait for data goes without looking at stop()
MAX_RESTART_DELAY = 30.0
STOP_SECONDS = 5.0  # from SIGTERM to SIGKILL
PIPE_BYTES = 1 << 20  # tcpdump's stdout pipe: a moment's traffic while the reader is busy (Linux's default cap)
MAX_WARNINGS = 1000  # a feed runs for days: its warnings stay bounded, its counters go on counting
STDERR_LINES = 20  # what is kept of a tcpdump's stderr for the messages
READY = "listening on"  # tcpdump's line on start, no news in a message


@dataclass
class FeedStats:
    """What a feed has read so far; read from any thread."""

    streams: int = 0  # pcap/pcapng streams opened (each tcpdump start, each file)
    restarts: int = 0  # times the source stopped and came back (tcpdump restarted, ...)
    records: int = 0
    truncated: int = 0  # records cut short at a stream's end (a killed tcpdump, a rotated file)
    warnings: list[str] = field(default_factory=list)


class Feed:
    """A source of capture records for `mimir live`, read block by block until it ends for good or `stop()`."""

    def __init__(self, name: str) -> None:
        self.name = name  # what the messages call it
        self.stats = FeedStats()
        self._stopping = threading.Event()
        self._records = RecordBlock()

    def blocks(self) -> Iterator[Block]:
        """(buf, records, n) as soon as any complete records are available; valid until the next iteration.
        Ends when the source has ended for good (pipe EOF, the one file read, stop() called)."""
        raise NotImplementedError

    def stop(self) -> None:
        """End blocks() within about POLL_SECONDS, from any thread, even while it waits for data; idempotent."""
        self._stopping.set()

    def _warn(self, message: str) -> None:
        warnings = self.stats.warnings
        if len(warnings) < MAX_WARNINGS:
            warnings.append(message)
        elif len(warnings) == MAX_WARNINGS:
            warnings.append(f"{self.name}: more than {MAX_WARNINGS} warnings; the later ones are not kept")

    def _read(self, stream: ByteStream) -> Iterator[Block]:
        """The blocks of one stream. A record cut short at its end is counted and warned about, unless stop() cut
        it: then the stream just ends, whatever it was cut in."""
        report = FileReport(path=str(stream.path))
        self.stats.streams += 1
        try:
            for n in read_records(stream, self._records, report):
                self.stats.records += n
                yield stream.buf, self._records, n
                if self._stopping.is_set():
                    return
        except CaptureError:
            if self._stopping.is_set():
                return
            raise
        if self._stopping.is_set():
            return
        self.stats.truncated += report.truncated_records
        for warning in report.warnings:
            self._warn(warning)


def _arrived(stream: ByteStream) -> bool:
    """Whether any byte of the stream arrived (read_records calls a stream that ended without one empty)."""
    return bool(stream.base or stream.end)


def _wanted(stream: ByteStream) -> int:
    """Where a refill of a live stream may return: past one new byte, and at first past a whole pcap file header
    (the reader checks it in the first refill; a pcapng section header it reads on for)."""
    return max(stream.end + 1, 0 if stream.base else PCAP_FILE_HEADER)


class _PipeStream(ByteStream):
    """A pipe read as it is written: a refill returns what has arrived, waiting only while nothing new has."""

    def __init__(self, name: str, raw: BinaryIO, stopping: threading.Event) -> None:
        super().__init__(Path(name), raw=raw)
        self._poll = select.poll()
        self._poll.register(raw.fileno(), select.POLLIN)
        self._stopping = stopping

    def _fill(self) -> None:
        wanted = _wanted(self)
        view = memoryview(self.buf)
        while not self.eof and self.end < self.buf.shape[0]:
            waiting = self.end < wanted
            if not self._poll.poll(int(POLL_SECONDS * 1000) if waiting else 0):
                if not waiting:
                    return
                self.eof = self._stopping.is_set()
                continue
            got = self._read_into(view[self.end :])  # one read: what the pipe holds, up to the buffer's end
            self.eof = not got
            self.end += got


class _GrowingFile(ByteStream):
    """A capture file read while it is written: at its current end, `finished()` waits a little and says whether
    it is done (a later file has appeared, or stop()). A gzip file is read whole: a compressor writes it after
    the rotation, when the capture has moved on."""

    def __init__(self, path: Path, finished: Callable[[], bool]) -> None:
        super().__init__(path)
        self._finished = finished

    def _fill(self) -> None:
        if self.compressed:
            super()._fill()
            return
        wanted = _wanted(self)
        view = memoryview(self.buf)
        while not self.eof and self.end < self.buf.shape[0]:
            got = self._read_into(view[self.end :])
            self.end += got
            if got:
                continue
            if self.end >= wanted:
                return
            if self._finished():
                got = self._read_into(view[self.end :])  # its last bytes, written before it was seen to be done
                self.end += got
                self.eof = not got


class StreamFeed(Feed):
    """A capture arriving on a pipe (`tcpdump -w - | mimir live -`), ending at its end of file.

    It is read from its file descriptor, past Python's buffering: nothing may have been read from `binary` before.
    """

    def __init__(self, binary: BinaryIO, name: str = "stdin") -> None:
        super().__init__(name)
        try:
            fd = binary.fileno()
        except (AttributeError, OSError, ValueError):
            raise UsageError(f"{name}: not a stream with a file descriptor (a live capture is read from one)") from None
        self._raw = io.FileIO(fd, "rb", closefd=False)

    def blocks(self) -> Iterator[Block]:
        if self._stopping.is_set():
            return
        with _PipeStream(self.name, self._raw, self._stopping) as stream:
            try:
                yield from self._read(stream)
            except CaptureError:
                if _arrived(stream):
                    raise
                raise CaptureError(self.name, None, "the stream ended before a pcap or pcapng header came") from None


class FileFeed(Feed):
    """One whole capture file (gzip too), read as `mimir ingest` reads it: a dry run of `mimir live`."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise IOFailure(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
        super().__init__(str(path))
        self.path = path

    def blocks(self) -> Iterator[Block]:
        if self._stopping.is_set():
            return
        with ByteStream(self.path) as stream:
            yield from self._read(stream)


def _name_order(path: Path) -> tuple[tuple[str | int, ...], str]:
    """Names in order, their digit runs as numbers: time-stamped names (tcpdump -G, `mimir collect`) sort as
    they do as text, and tcpdump -C's cap.pcap, cap.pcap1, ..., cap.pcap10 in the order they were written."""
    parts = re.split(r"(\d+)", path.name)
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts)), path.name


class FolderFeed(Feed):
    """A folder of rotated capture files, read in name order (`_name_order`) until stop(): the files there first,
    then each new one; the last is read while it grows, and left once a later file exists and it is read to its
    end. A file that cannot be read (not a capture, corrupt) is warned about and left at its first bad byte; an
    empty one is passed over. A file whose name sorts before one already begun is never read, nor tcpdump -z's
    X.gz of a file X begun already."""

    def __init__(self, folder: Path, pattern: str = "*.pcap*", poll: float = 0.1) -> None:
        if not folder.is_dir():
            raise IOFailure(f"{folder}: no such folder" if not folder.exists() else f"{folder}: not a folder")
        if not poll > 0:
            raise UsageError(f"the folder poll interval must be more than 0 s, not {poll}")
        super().__init__(str(folder))
        self.folder = folder
        self.pattern = pattern
        self.poll = poll

    def blocks(self) -> Iterator[Block]:
        current: Path | None = None
        while not self._stopping.is_set():
            after = self._next_file(current)
            if after is None:
                self._stopping.wait(self.poll)
                continue
            current = after
            yield from self._follow(current)

    def _next_file(self, current: Path | None) -> Path | None:
        """The first file after `current` in name order, None while there is none."""
        later = [
            path
            for path in self.folder.glob(self.pattern)
            if current is None or (_name_order(path) > _name_order(current) and path.name != f"{current.name}.gz")
        ]
        return min(later, key=_name_order, default=None)

    def _finished(self, path: Path) -> bool:
        """Whether the file being read will not grow any more (a later file exists); if not, wait one poll
        interval first (and True at once on stop())."""
        if self._next_file(path) is not None:
            return True
        return self._stopping.wait(self.poll)

    def _follow(self, path: Path) -> Iterator[Block]:
        try:
            stream = _GrowingFile(path, lambda: self._finished(path))
        except IOFailure as e:  # gone since the listing, or a folder
            self._warn(f"{e}; passed over")
            return
        with stream:
            try:
                yield from self._read(stream)
            except (CaptureError, IOFailure) as e:
                if _arrived(stream):
                    self._warn(f"{e}; the rest of the file is passed over")


class InterfaceFeed(Feed):
    """A tcpdump that mimir runs on an interface (in a network namespace through nsenter, as `mimir collect`'s),
    reading its pcap on stdout, restarted when it exits on its own until stop().

    A restart waits `restart_delay`, doubled for each start in a row that delivered no records, at most
    MAX_RESTART_DELAY. A tcpdump that cannot capture the first time (no such interface, not root) is a UsageError
    with its stderr. `pid` is the running tcpdump's (None between runs).
    """

    def __init__(
        self,
        interface: str,
        *,
        netns: Path | None = None,
        snaplen: int = 262144,
        bpf: str | None = None,
        restart_delay: float = 1.0,
        tcpdump: str = "tcpdump",
    ) -> None:
        self.where = f"{interface} in network namespace {netns}" if netns is not None else interface
        super().__init__(f"tcpdump on {self.where}")
        if not restart_delay > 0:
            raise UsageError(f"the capture restart delay must be more than 0 s, not {restart_delay}")
        self.command = [tcpdump, "-i", interface, "-n", "-U", "-s", str(snaplen), "--time-stamp-precision=nano"]
        self.command += ["-w", "-"]
        if bpf:
            self.command.append(bpf)
        if netns is not None:
            self.command = ["nsenter", f"--net={netns}", *self.command]
        self.restart_delay = restart_delay
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: deque[str] = deque(maxlen=STDERR_LINES)
        self._stderr_reader: threading.Thread | None = None
        self._lock = threading.Lock()  # between a start and stop(): no tcpdump starts once stop() has begun

    def blocks(self) -> Iterator[Block]:
        captured = False  # some tcpdump has captured: a failure from then on is a fault to ride out
        failures = 0  # starts in a row that delivered no records
        try:
            while True:
                records = self.stats.records
                ended = yield from self._run_once()
                if ended is None:
                    return
                arrived, why = ended
                if arrived:
                    captured = True
                    self.stats.restarts += 1
                    self._warn(f"{self.name} stopped ({why}); restarting it")
                elif not captured:
                    raise UsageError(f"cannot capture on {self.where}: {why}")
                elif not failures:
                    self._warn(f"{self.name} could not start again ({why}); trying on")
                if self.stats.records > records:
                    failures = 0
                if self._stopping.wait(min(self.restart_delay * 2 ** min(failures, 16), MAX_RESTART_DELAY)):
                    return
                failures += 1
        finally:
            self._end(grace=0)

    def stop(self) -> None:
        """End blocks() and its tcpdump (SIGTERM, SIGKILL after STOP_SECONDS), reaped when this returns."""
        with self._lock:
            self._stopping.set()
            proc = self._proc
        if proc is not None:
            _terminate(proc)

    def _run_once(self) -> Generator[Block, None, tuple[bool, str] | None]:
        """One tcpdump's blocks; then whether a capture came from it at all, and how it ended (None: stop())."""
        try:
            proc = self._start()
        except OSError as e:
            return False, f"{self.command[0]} cannot be run: {e.strerror}"
        if proc is None:
            return None
        with _PipeStream(self.name, proc.stdout, self._stopping) as stream:  # type: ignore[arg-type]
            try:
                yield from self._read(stream)
            except CaptureError:
                if _arrived(stream):
                    raise
        status = self._end(grace=STOP_SECONDS)
        if self._stopping.is_set():
            return None
        return _arrived(stream), f"tcpdump {status}: {self._stderr_text()}"

    def _start(self) -> subprocess.Popen[bytes] | None:
        """Run tcpdump, its stdout a pipe of PIPE_BYTES; None once stop() has been called."""
        with self._lock:
            if self._stopping.is_set():
                return None
            self._stderr.clear()
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                bufsize=0,
                process_group=0,  # Ctrl-C on the terminal reaches mimir, which stops the capture in order
            )
            self._proc, self.pid = proc, proc.pid
        with contextlib.suppress(OSError):  # a smaller pipe only holds less
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)  # type: ignore[union-attr]
        self._stderr_reader = threading.Thread(target=self._read_stderr, args=(proc.stderr,), daemon=True)
        self._stderr_reader.start()
        return proc

    def _end(self, grace: float) -> str:
        """Reap the tcpdump, SIGTERM if it still runs after `grace` seconds, and its stderr reader: how it ended."""
        with self._lock:
            proc, self._proc, self.pid = self._proc, None, None
        if proc is None:
            return "not running"
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            _terminate(proc)
        if self._stderr_reader is not None:
            self._stderr_reader.join()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.returncode < 0:
            return f"killed by {signal.Signals(-proc.returncode).name}"
        return f"exit status {proc.returncode}"

    def _read_stderr(self, stream: BinaryIO) -> None:
        with stream:
            for line in stream:
                text = line.decode(errors="replace").strip()
                if text and not text.startswith(f"tcpdump: {READY}"):
                    self._stderr.append(text)

    def _stderr_text(self) -> str:
        return " | ".join(self._stderr) or "(nothing on stderr)"


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, SIGKILL after STOP_SECONDS; reaped either way (signals to a reaped process are not sent)."""
    proc.terminate()
    try:
        proc.wait(STOP_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
