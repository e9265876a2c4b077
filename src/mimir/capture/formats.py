"""Capture file formats: classic pcap and pcapng, plain or gzip-compressed, read as a stream.

The format is decided by the magic number, never by the file name. A file is read block by block into one
reusable buffer; a numba walker finds the records in a block and fills a `RecordBlock`; rare pcapng blocks
(section and interface descriptions) are parsed here in Python. Memory is the buffer, whatever the file size.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numba import njit

from mimir.capture.binary import read_u32, u16, u32
from mimir.capture.gunzip import GZIP_MAGIC, Gunzip
from mimir.capture.jitcache import forget_if_changed
from mimir.capture.linktypes import SUPPORTED_LINKTYPES
from mimir.errors import CaptureError, IOFailure, UnsupportedCapture

forget_if_changed(__file__, "binary.py")

BLOCK_BYTES = 16 << 20
# The largest frame capture tools write (Wireshark's WTAP_MAX_PACKET_SIZE_STANDARD). A record may claim more than
# its file's snaplen (tcpdump's own test files do, and tshark reads them), but never more than this.
MAX_CAPLEN = 262144
MAX_ORIGLEN = 2**31 - 1  # tshark clamps a record's original length to this (pcap, enhanced and packet blocks)
# Timestamps are read from year 1 to year 9999 (what Python's datetime holds); pcapng's 64-bit timestamps and
# if_tsoffset can say more, which no capture means: such a packet is refused.
MIN_EPOCH_SECONDS = -62135596800  # 0001-01-01T00:00:00Z
MAX_EPOCH_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
MAX_TSOFFSET = MAX_EPOCH_SECONDS - MIN_EPOCH_SECONDS  # a larger if_tsoffset puts every timestamp out of range
# A gzip capture may hold at most this many records per compressed byte read (after the first GZIP_SLACK_RECORDS):
# a real capture holds well under 1 (4.2 for a flood of identical 60-byte frames with identical timestamps); a
# stream of empty records, which deflate shrinks 1000-fold, holds 64, and would cost a minute per 10 MB.
MAX_RECORDS_PER_COMPRESSED_BYTE = 16
GZIP_SLACK_RECORDS = 1 << 20
MAX_PCAPNG_BLOCK = 16 << 20
LINKTYPE_MASK = 0x03FFFFFF  # the upper bits of a pcap header's link type carry FCS information

PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1000),  # microsecond timestamps, little-endian
    b"\xa1\xb2\xc3\xd4": (">", 1000),
    b"\x4d\x3c\xb2\xa1": ("<", 1),  # nanosecond timestamps
    b"\xa1\xb2\x3c\x4d": (">", 1),
}
# Classic pcap: a file header (magic, version, zone, sigfigs, snaplen, link type), then records of a 16-byte
# header (seconds, fraction, captured length, original length) and the frame.
PCAP_FILE_HEADER = 24
PCAP_VERSION_AT = 4
PCAP_VERSION_MAJOR = 2
PCAP_VERSION_DGUX = 543  # DG/UX tcpdump's major version: the lengths in the pre-2.3 order
PCAP_VERSION_MINOR_SWAP = 3  # before 2.3 a record header held the original length first, then the captured one
# How a file orders its records' two lengths (libpcap's and Wireshark's reading of the version).
LENGTHS_IN_ORDER = 0
LENGTHS_SWAPPED = 1
LENGTHS_MAYBE_SWAPPED = 2  # version 2.3: some writers kept the old order, seen where captured > original length
PCAP_LINKTYPE_AT = 20
PCAP_RECORD_HEADER = 16
PCAP_CAPLEN_AT = 8
PCAP_ORIGLEN_AT = 12

# pcapng blocks: type, total length, body, total length again. Blocks of other types (name resolution, interface
# statistics, ...) are skipped.
PCAPNG_SHB = 0x0A0D0D0A  # section header: its byte-order magic sets the order of the section
PCAPNG_IDB = 1  # interface description
PCAPNG_PB = 2  # (obsolete) packet block: 16-bit interface id, drop count, then the EPB's fields
PCAPNG_SPB = 3  # simple packet block: original length, frame; interface 0, no timestamp
PCAPNG_EPB = 6  # enhanced packet block: interface, timestamp (high, low), captured and original length, frame
PCAPNG_BLOCK_MIN = 12
PCAPNG_BLOCK_LENGTH_AT = 4
PCAPNG_BYTE_ORDER_AT = 8
PCAPNG_BYTE_ORDER_LITTLE = b"\x4d\x3c\x2b\x1a"
PCAPNG_BYTE_ORDER_BIG = b"\x1a\x2b\x3c\x4d"
PCAPNG_INTERFACE_AT = 8
PCAPNG_TS_HIGH_AT = 12
PCAPNG_TS_LOW_AT = 16
PCAPNG_CAPLEN_AT = 20
PCAPNG_ORIGLEN_AT = 24
PCAPNG_PACKET_DATA_AT = 28
PCAPNG_SPB_ORIGLEN_AT = 8
PCAPNG_SPB_DATA_AT = 12
PCAPNG_SPB_MIN = 16  # type, length, original length, trailing length
PCAPNG_IDB_MIN = 20  # link type, reserved, snaplen, no options
PCAPNG_IDB_OPTIONS_AT = 16
PCAPNG_OPT_END = 0
PCAPNG_IF_TSRESOL = 9  # one byte: a negative power of 10, or of 2 when the high bit is set
PCAPNG_IF_TSOFFSET = 14  # seconds added to every timestamp of the interface
PCAPNG_DEFAULT_UNITS = 1_000_000  # microseconds, without if_tsresol

# Walker outcomes.
NEED_MORE = 0  # the next record is not complete in the buffer
FULL = 1  # the record block is full
BAD_LENGTH = 2
SPECIAL_BLOCK = 3  # a pcapng section header or interface description: parse it in Python
BAD_INTERFACE = 4
UNSUPPORTED_LINK = 5
BAD_TRAILER = 6
BAD_TIMESTAMP = 7
BAD_SPB_LENGTH = 8  # a simple packet block's size does not match the data its original length and snaplen give


class RecordBlock:
    """Per-record fields the format walkers fill for one block of the read buffer."""

    FIELDS = ("off", "caplen", "origlen", "link", "sec", "nsec")

    def __init__(self, capacity: int = 1 << 18):
        self.off = np.empty(capacity, np.int64)  # where the frame starts in the buffer
        self.caplen = np.empty(capacity, np.int64)
        self.origlen = np.empty(capacity, np.int64)
        self.link = np.empty(capacity, np.int32)
        self.sec = np.empty(capacity, np.int64)  # integer epoch seconds
        self.nsec = np.empty(capacity, np.int64)  # nanoseconds within the second

    def swap(self, other: RecordBlock) -> None:
        """Exchange arrays with another block: a filled block is handed to a worker, the walker goes on in a free
        one (`read_records` reads the arrays afresh at every walk)."""
        for name in self.FIELDS:
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, theirs)
            setattr(other, name, mine)


@njit(cache=True, nogil=True)
def walk_pcap(  # noqa: PLR0913, PLR0917
    buf, pos, end, big, lengths, nsec_per_unit, linktype, r_off, r_caplen, r_origlen, r_link, r_sec, r_nsec
):
    """Find classic pcap records from pos: (records found, next position, outcome, offending value).

    `lengths` says the order of a record's two lengths (LENGTHS_*).
    """
    n = 0
    cap = r_off.shape[0]
    while n < cap:
        if pos + PCAP_RECORD_HEADER > end:
            return n, pos, NEED_MORE, 0
        caplen = u32(buf, pos + PCAP_CAPLEN_AT, big)
        origlen = u32(buf, pos + PCAP_ORIGLEN_AT, big)
        if lengths == LENGTHS_SWAPPED or (lengths == LENGTHS_MAYBE_SWAPPED and caplen > origlen):
            caplen, origlen = origlen, caplen
        if caplen > MAX_CAPLEN:
            return n, pos, BAD_LENGTH, caplen
        if pos + PCAP_RECORD_HEADER + caplen > end:
            return n, pos, NEED_MORE, 0
        r_sec[n] = u32(buf, pos, big)
        r_nsec[n] = u32(buf, pos + 4, big) * nsec_per_unit
        r_caplen[n] = caplen
        r_origlen[n] = min(origlen, MAX_ORIGLEN)
        r_off[n] = pos + PCAP_RECORD_HEADER
        r_link[n] = linktype
        n += 1
        pos += PCAP_RECORD_HEADER + caplen
    return n, pos, FULL, 0


@njit(cache=True, nogil=True)
def walk_pcapng(  # noqa: PLR0911, PLR0912, PLR0913, PLR0915, PLR0917
    buf, pos, end, big, if_link, if_supported, if_units, if_offset, if_snaplen, n_if, last_ts,
    r_off, r_caplen, r_origlen, r_link, r_sec, r_nsec,
):  # fmt: skip
    """Find pcapng packets from pos: (records found, next position, outcome, offending value).

    Simple packet blocks carry no timestamp: they take the last timestamp seen (`last_ts`, seconds and ns).
    """
    n = 0
    cap = r_off.shape[0]
    while n < cap:
        if pos + 8 > end:
            return n, pos, NEED_MORE, 0
        btype = u32(buf, pos, big)
        if btype == PCAPNG_SHB or btype == PCAPNG_IDB:
            return n, pos, SPECIAL_BLOCK, btype
        blen = u32(buf, pos + PCAPNG_BLOCK_LENGTH_AT, big)
        if blen < PCAPNG_BLOCK_MIN or blen % 4 != 0 or blen > MAX_PCAPNG_BLOCK:
            return n, pos, BAD_LENGTH, blen
        if pos + blen > end:
            return n, pos, NEED_MORE, 0
        if u32(buf, pos + blen - 4, big) != blen:
            return n, pos, BAD_TRAILER, u32(buf, pos + blen - 4, big)
        if btype == PCAPNG_EPB or btype == PCAPNG_PB:
            if blen < PCAPNG_PACKET_DATA_AT + 4:
                return n, pos, BAD_LENGTH, blen
            if btype == PCAPNG_EPB:
                iface = u32(buf, pos + PCAPNG_INTERFACE_AT, big)
            else:
                iface = u16(buf, pos + PCAPNG_INTERFACE_AT, big)
            if iface >= n_if:
                return n, pos, BAD_INTERFACE, iface
            if not if_supported[iface]:
                return n, pos, UNSUPPORTED_LINK, if_link[iface]
            caplen = u32(buf, pos + PCAPNG_CAPLEN_AT, big)
            if caplen > MAX_CAPLEN or PCAPNG_PACKET_DATA_AT + caplen + 4 > blen:
                return n, pos, BAD_LENGTH, caplen
            ts = np.uint64((u32(buf, pos + PCAPNG_TS_HIGH_AT, big) << 32) | u32(buf, pos + PCAPNG_TS_LOW_AT, big))
            units = np.uint64(if_units[iface])
            whole = ts // units
            if whole > np.uint64(MAX_EPOCH_SECONDS + MAX_TSOFFSET):  # past any offset; the sum cannot overflow
                return n, pos, BAD_TIMESTAMP, 0
            sec = np.int64(whole) + if_offset[iface]
            if sec < MIN_EPOCH_SECONDS or sec > MAX_EPOCH_SECONDS:
                return n, pos, BAD_TIMESTAMP, 0
            nsec = np.int64(np.float64(ts % units) * 1e9 / np.float64(units))
            r_off[n] = pos + PCAPNG_PACKET_DATA_AT
            r_caplen[n] = caplen
            r_origlen[n] = min(u32(buf, pos + PCAPNG_ORIGLEN_AT, big), MAX_ORIGLEN)
            r_link[n] = if_link[iface]
            r_sec[n] = sec
            r_nsec[n] = nsec
            last_ts[0] = sec
            last_ts[1] = nsec
            n += 1
        elif btype == PCAPNG_SPB:  # the frame is its original length, cut to the snaplen, then padded to 4 bytes
            if n_if == 0:
                return n, pos, BAD_INTERFACE, 0
            if not if_supported[0]:
                return n, pos, UNSUPPORTED_LINK, if_link[0]
            origlen = u32(buf, pos + PCAPNG_SPB_ORIGLEN_AT, big)
            caplen = min(origlen, if_snaplen[0]) if if_snaplen[0] > 0 else origlen
            if caplen > MAX_CAPLEN or blen != PCAPNG_SPB_MIN + (caplen + 3) // 4 * 4:
                return n, pos, BAD_SPB_LENGTH, origlen
            r_off[n] = pos + PCAPNG_SPB_DATA_AT
            r_caplen[n] = caplen
            r_origlen[n] = min(origlen, MAX_ORIGLEN)
            r_link[n] = if_link[0]
            r_sec[n] = last_ts[0]
            r_nsec[n] = last_ts[1]
            n += 1
        pos += blen
    return n, pos, FULL, 0


class BufferPool:
    """Read buffers shared by one reader and the workers counting what it read, so that the reader goes on while
    they count: a buffer returns to the pool when nothing holds it any more, and the reader waits for one when all
    are held. Memory stays at `count` buffers (each doubled only for a record larger than itself)."""

    def __init__(self, count: int, nbytes: int = BLOCK_BYTES):
        self._free: list[np.ndarray] = []
        self._unmade = count  # buffers are allocated on first use
        self._nbytes = nbytes
        self._holds: dict[int, int] = {}  # id(buffer): holders
        self._changed = threading.Condition()

    def take(self, nbytes: int) -> np.ndarray:
        """A free buffer of at least nbytes, held once by the caller."""
        with self._changed:
            while not self._free and not self._unmade:
                self._changed.wait()
            if self._free:
                buf = self._free.pop()
            else:
                self._unmade -= 1
                buf = np.empty(max(nbytes, self._nbytes), np.uint8)
            if buf.shape[0] < nbytes:
                buf = np.empty(nbytes, np.uint8)
            self._holds[id(buf)] = 1
            return buf

    def hold(self, buf: np.ndarray) -> None:
        with self._changed:
            self._holds[id(buf)] += 1

    def release(self, buf: np.ndarray) -> None:
        with self._changed:
            self._holds[id(buf)] -= 1
            if not self._holds[id(buf)]:
                del self._holds[id(buf)]
                self._free.append(buf)
                self._changed.notify()


class ByteStream:
    """A file, or the decompressed stream of a gzip file, read into one reusable buffer (or, given a pool, into
    the pool's buffers in turn: the records of a buffer it left stay valid while a worker holds it)."""

    def __init__(
        self,
        path: Path,
        on_progress: Callable[[int], None] | None = None,
        pool: BufferPool | None = None,
        *,
        raw: BinaryIO | None = None,
    ):
        """`raw`: an open stream read instead of opening `path`, which then only names it (a pipe: never sought,
        never decompressed)."""
        self.path = path
        if raw is not None:
            self.raw, self.compressed = raw, False
        else:
            try:
                self.raw = path.open("rb", buffering=0)
            except OSError as e:
                raise IOFailure(f"{path}: cannot open: {e.strerror}") from None
            self.compressed = self.raw.read(2) == GZIP_MAGIC
            self.raw.seek(0)
        self.source: BinaryIO | Gunzip = Gunzip(self.raw) if self.compressed else self.raw
        self._pool = pool
        self.buf = pool.take(BLOCK_BYTES) if pool is not None else np.empty(BLOCK_BYTES, np.uint8)
        self.base = 0  # stream offset of buf[0]
        self.end = 0  # bytes of buf that hold data
        self.eof = False
        self.warnings: list[str] = []
        self._on_progress = on_progress
        self._reported = 0

    def close(self) -> None:
        self.source.close()
        self.raw.close()
        if self._pool is not None and self.buf is not None:
            self._pool.release(self.buf)
            self.buf = None  # type: ignore[assignment]

    def __enter__(self) -> ByteStream:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def error(self, pos: int, message: str, cls: type[CaptureError] = CaptureError) -> CaptureError:
        """An error at buffer position pos, named by its offset in the (decompressed) stream."""
        return cls(self.path, self.base + pos, message, compressed=self.compressed)

    def refill(self, keep_from: int) -> bool:
        """Drop the bytes before buffer position keep_from and read more; False when the stream has ended."""
        leftover = self.end - keep_from
        if self._pool is not None:  # the old buffer may still be counted: go on in another
            size = self.buf.shape[0] * (2 if leftover == self.buf.shape[0] else 1)
            fresh = self._pool.take(size)
            fresh[:leftover] = self.buf[keep_from : self.end]
            self._pool.release(self.buf)
            self.buf = fresh
            self.base += keep_from
            self.end = leftover
        if keep_from and self._pool is None:
            self.buf[:leftover] = self.buf[keep_from : self.end]
            self.base += keep_from
            self.end = leftover
        if self.end == self.buf.shape[0]:  # one record larger than the buffer
            bigger = np.empty(2 * self.buf.shape[0], np.uint8)
            bigger[: self.end] = self.buf[: self.end]
            self.buf = bigger
        before = self.end
        self._fill()
        self._report()
        return self.end > before

    def _fill(self) -> None:
        """Read until the buffer is full or the stream ends: a file in the fewest, largest reads (a live source
        returns sooner, with what has arrived: mimir.live.capture)."""
        view = memoryview(self.buf)
        while not self.eof and self.end < self.buf.shape[0]:
            got = self._read_into(view[self.end :])
            if not got:
                self.eof = True
            self.end += got

    def _read_into(self, view: memoryview) -> int:
        try:
            got = self.source.readinto(view) or 0
        except zlib.error as e:
            raise CaptureError(
                self.path, self.raw.tell(), f"corrupt gzip data near this compressed offset: {e}"
            ) from None
        except OSError as e:
            raise IOFailure(f"{self.path}: read failed: {e.strerror}") from None
        if not got and isinstance(self.source, Gunzip) and self.source.cut_short:
            self.warnings.append(
                f"{self.path}: the gzip stream ends early (at compressed byte {self.raw.tell()}); "
                "the packets before that point are counted"
            )
        return got

    def _report(self) -> None:
        if self._on_progress is not None:
            pos = self.raw.tell()
            self._on_progress(pos - self._reported)
            self._reported = pos


@dataclass
class FileReport:
    """What reading one file found; it goes into the ingest summary."""

    path: str
    format: str = ""
    compressed: bool = False
    records: int = 0
    truncated_records: int = 0
    link_types: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_records(stream: ByteStream, records: RecordBlock, report: FileReport) -> Iterator[int]:
    """Yield the number of records found in each block; `records` and `stream.buf` hold them until the next."""
    stream.refill(0)
    if stream.end == 0:
        raise stream.error(0, "empty file" + (" (after decompression)" if stream.compressed else ""))
    report.compressed = stream.compressed
    magic = stream.buf[:4].tobytes()
    if magic in PCAP_MAGIC:
        yield from _read_pcap(stream, records, report)
    elif int.from_bytes(magic, "little") == PCAPNG_SHB:
        yield from _read_pcapng(stream, records, report)
    else:
        raise stream.error(
            0,
            f"not a pcap or pcapng capture (magic number {magic.hex()}); mimir reads pcap, pcapng and their gzip",
        )
    report.warnings.extend(stream.warnings)


def _next_block(stream: ByteStream, pos: int, report: FileReport) -> int | None:
    """Read on from the incomplete record at pos, which moves to the buffer's start; None at the end.

    A partial record left at the end of the stream is the normal state of a capture stopped mid-write: a
    warning, and the packets before it count.
    """
    if stream.refill(pos):
        return 0
    if stream.end:
        if stream.base == 0:  # nothing complete before it: the file's first block, its header, is cut short
            raise stream.error(0, f"the pcapng section header is cut short ({stream.end} bytes)")
        report.truncated_records += 1
        report.warnings.append(
            f"{stream.path}: the last record, at {'uncompressed ' if stream.compressed else ''}byte offset "
            f"{stream.base}, is cut short ({stream.end} bytes); the packets before it are counted"
        )
    return None


def _read_pcap(stream: ByteStream, records: RecordBlock, report: FileReport) -> Iterator[int]:
    order, nsec_per_unit = PCAP_MAGIC[stream.buf[:4].tobytes()]
    report.format = "pcap (nanosecond)" if nsec_per_unit == 1 else "pcap"
    if stream.end < PCAP_FILE_HEADER:
        raise stream.error(0, f"the pcap file header is cut short ({stream.end} of {PCAP_FILE_HEADER} bytes)")
    header = stream.buf[PCAP_VERSION_AT:PCAP_FILE_HEADER].tobytes()
    major, minor, _zone, _sigfigs, _snaplen, network = struct.unpack(order + "HHiIII", header)
    if (major == PCAP_VERSION_MAJOR and minor < PCAP_VERSION_MINOR_SWAP) or major == PCAP_VERSION_DGUX:
        lengths = LENGTHS_SWAPPED
    elif major == PCAP_VERSION_MAJOR:
        lengths = LENGTHS_MAYBE_SWAPPED if minor == PCAP_VERSION_MINOR_SWAP else LENGTHS_IN_ORDER
    else:
        raise stream.error(PCAP_VERSION_AT, f"unsupported pcap version {major}.{minor}")
    linktype = network & LINKTYPE_MASK
    if linktype not in SUPPORTED_LINKTYPES:
        field = f" (header field {network})" if network != linktype else ""
        raise stream.error(PCAP_LINKTYPE_AT, f"unsupported link type {linktype}{field}", UnsupportedCapture)
    report.link_types = [linktype]
    big = order == ">"
    pos = PCAP_FILE_HEADER
    r = records
    while True:
        n, pos, outcome, value = walk_pcap(
            stream.buf, pos, stream.end, big, lengths, nsec_per_unit, linktype,
            r.off, r.caplen, r.origlen, r.link, r.sec, r.nsec,
        )  # fmt: skip
        if n:
            report.records += n
            yield n
            _check_expansion(stream, pos, report)
        if outcome == BAD_LENGTH:
            raise stream.error(
                pos,
                f"record claims a captured length of {value} bytes, more than any capture holds ({MAX_CAPLEN})",
            )
        if outcome == NEED_MORE:
            pos = _next_block(stream, pos, report)
            if pos is None:
                return


@dataclass
class _Interfaces:
    """The interfaces of the current pcapng section, as arrays the walker indexes."""

    link: list[int] = field(default_factory=list)
    units: list[int] = field(default_factory=list)  # timestamp units per second
    offset: list[int] = field(default_factory=list)  # seconds added to every timestamp
    snaplen: list[int] = field(default_factory=list)

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (
            np.array(self.link, np.int64),
            np.array([lt in SUPPORTED_LINKTYPES for lt in self.link], np.bool_),
            np.array(self.units, np.uint64),
            np.array(self.offset, np.int64),
            np.array(self.snaplen, np.int64),
        )


def _read_pcapng(stream: ByteStream, records: RecordBlock, report: FileReport) -> Iterator[int]:
    report.format = "pcapng"
    interfaces = _Interfaces()
    arrays = interfaces.arrays()
    big = False
    last_ts = np.zeros(2, np.int64)
    pos = 0
    r = records
    while True:
        n, pos, outcome, value = walk_pcapng(
            stream.buf, pos, stream.end, big, *arrays, len(interfaces.link), last_ts,
            r.off, r.caplen, r.origlen, r.link, r.sec, r.nsec,
        )  # fmt: skip
        if n:
            report.records += n
            yield n
            _check_expansion(stream, pos, report)
        if outcome == SPECIAL_BLOCK:
            block = _whole_block(stream, pos, big, report)
            if block is None:
                return
            pos, blen, block_big = block
            if value == PCAPNG_SHB:
                big = block_big
                interfaces = _Interfaces()
            else:
                _add_interface(stream, pos, blen, big, interfaces)
                report.link_types.append(interfaces.link[-1])
            arrays = interfaces.arrays()
            pos += blen
        elif outcome == NEED_MORE:
            pos = _next_block(stream, pos, report)
            if pos is None:
                return
        elif outcome != FULL:
            raise _pcapng_error(stream, pos, outcome, value, len(interfaces.link))


def _pcapng_error(stream: ByteStream, pos: int, outcome: int, value: int, n_interfaces: int) -> CaptureError:
    """The error for a pcapng walker's outcome at pos."""
    if outcome == UNSUPPORTED_LINK:
        return stream.error(pos, f"unsupported link type {value}", UnsupportedCapture)
    message = {
        BAD_LENGTH: f"pcapng block or packet length {value} is impossible",
        BAD_TRAILER: f"pcapng block's trailing length {value} does not match its leading length",
        BAD_INTERFACE: f"packet names interface {value}, but the section describes only {n_interfaces}",
        BAD_TIMESTAMP: "packet timestamp lies outside the years 1 to 9999",
        BAD_SPB_LENGTH: f"simple packet block's size does not fit its original length {value} (cut to the "
        "interface's snaplen)",
    }[outcome]
    return stream.error(pos, message)


def _check_expansion(stream: ByteStream, pos: int, report: FileReport) -> None:
    """Refuse a gzip stream that holds far more records per compressed byte than any capture (a decompression
    bomb of empty records), before it costs minutes."""
    if not isinstance(stream.source, Gunzip):
        return
    compressed = stream.source.consumed
    if report.records > GZIP_SLACK_RECORDS + MAX_RECORDS_PER_COMPRESSED_BYTE * compressed:
        raise stream.error(
            pos,
            f"{report.records} records from {compressed} compressed bytes, more than "
            f"{MAX_RECORDS_PER_COMPRESSED_BYTE} per byte: a decompression bomb, not a capture",
        )


def _section_byte_order(stream: ByteStream, pos: int) -> bool:
    """Whether the section whose header is at pos is big-endian."""
    at = pos + PCAPNG_BYTE_ORDER_AT
    bom = stream.buf[at : at + 4].tobytes()
    if bom == PCAPNG_BYTE_ORDER_LITTLE:
        return False
    if bom == PCAPNG_BYTE_ORDER_BIG:
        return True
    raise stream.error(at, f"pcapng section header has a bad byte-order magic {bom.hex()}")


def _whole_block(stream: ByteStream, pos: int, big: bool, report: FileReport) -> tuple[int, int, bool] | None:
    """Bring the whole block at pos into the buffer: (its position, length, byte order), None at a cut-off end.

    A section header block sets the byte order of its own length and of the section that follows.
    """
    while True:
        if pos + PCAPNG_BLOCK_MIN <= stream.end:
            if read_u32(stream.buf, pos, big) == PCAPNG_SHB:
                big = _section_byte_order(stream, pos)
            blen = read_u32(stream.buf, pos + PCAPNG_BLOCK_LENGTH_AT, big)
            if blen < PCAPNG_BLOCK_MIN or blen % 4 or blen > MAX_PCAPNG_BLOCK:
                raise stream.error(pos, f"pcapng block length {blen} is impossible")
            if pos + blen <= stream.end:
                if read_u32(stream.buf, pos + blen - 4, big) != blen:
                    raise stream.error(pos, "pcapng block's trailing length does not match its leading length")
                return pos, blen, big
        pos = _next_block(stream, pos, report)
        if pos is None:
            return None


def _add_interface(stream: ByteStream, pos: int, blen: int, big: bool, interfaces: _Interfaces) -> None:
    """Parse an interface description block: link type, snaplen, if_tsresol and if_tsoffset."""
    if blen < PCAPNG_IDB_MIN:
        raise stream.error(pos, f"pcapng interface description block of {blen} bytes is too short")
    order = ">" if big else "<"
    data = stream.buf[pos : pos + blen].tobytes()
    linktype, _reserved, snaplen = struct.unpack(order + "HHI", data[8:PCAPNG_IDB_OPTIONS_AT])
    units, offset = PCAPNG_DEFAULT_UNITS, 0
    o = PCAPNG_IDB_OPTIONS_AT
    while o + 4 <= blen - 4:
        code, length = struct.unpack(order + "HH", data[o : o + 4])
        value = data[o + 4 : o + 4 + length]
        if code == PCAPNG_OPT_END:
            break
        if o + 4 + length > blen - 4:
            raise stream.error(pos + o, f"pcapng interface option {code} runs past its block")
        if code == PCAPNG_IF_TSRESOL and length >= 1:
            units = _timestamp_units(stream, pos + o, value[0])
        elif code == PCAPNG_IF_TSOFFSET and length >= 8:
            (offset,) = struct.unpack(order + "q", value[:8])
            if abs(offset) > MAX_TSOFFSET:
                raise stream.error(pos + o, f"if_tsoffset of {offset} s puts every timestamp outside the years 1 "
                                   "to 9999")  # fmt: skip
        o += 4 + ((length + 3) & ~3)
    interfaces.link.append(linktype)
    interfaces.units.append(units)
    interfaces.offset.append(offset)
    interfaces.snaplen.append(snaplen)


def _timestamp_units(stream: ByteStream, at: int, resolution: int) -> int:
    """Timestamp units per second of an if_tsresol byte (at: the option's position), if they fit 64 bits."""
    exponent = resolution & 0x7F
    if resolution & 0x80:
        if exponent > 62:
            raise stream.error(at, f"timestamp resolution 2^-{exponent} is not supported", UnsupportedCapture)
        return 1 << exponent
    if exponent > 18:
        raise stream.error(at, f"timestamp resolution 10^-{exponent} is not supported", UnsupportedCapture)
    return 10**exponent
