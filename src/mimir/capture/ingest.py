"""Captures to the flows table (docs/architecture.md#flows): one streaming pass over every file, in the order given.

Writes `FLOWS.parquet`, its summary in its metadata, and a copy of the summary beside it, `FLOWS.summary.json`:
each appears whole or not at all, and the copy is removed while the table is replaced (missing, never stale).
"""

from __future__ import annotations

import ipaddress
import os
import queue
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mimir import __version__
from mimir.capture import decode
from mimir.capture.flowtable import FlowTable
from mimir.capture.formats import BufferPool, ByteStream, FileReport, RecordBlock, read_records
from mimir.errors import IOFailure, TableError, UsageError
from mimir.io import Claim, write_table


@dataclass
class IngestSummary:
    """The counts a user checks a flows table against (in its metadata, and as JSON next to it)."""

    files: list[FileReport]
    bin_seconds: int
    packets: int = 0
    ip_packets: int = 0
    ipv4_packets: int = 0
    ipv6_packets: int = 0
    non_ip_packets: int = 0
    unreadable_ip_packets: int = 0  # IP, but the header is cut short or impossible (not in the table)
    truncated_records: int = 0
    frame_bytes: int = 0  # original frame lengths of every record, IP or not
    flows: int = 0
    first_ts: float | None = None
    last_ts: float | None = None
    mimir_version: str = __version__
    warnings: list[str] = field(default_factory=list)


MAX_WORKERS = 256  # threads of one ingest: the bound of every "in parallel" option (mimir.spec.JOBS)


def default_workers() -> int:
    """The cores this process may run on (its affinity, as a batch scheduler sets it), at most MAX_WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@dataclass
class _Counts:
    """What one worker counted: its flow table, and the time span and frame bytes of the records it saw."""

    table: FlowTable
    first_ts: float = np.inf  # epoch seconds as floats: years 1 to 9999 overflow int64 nanoseconds
    last_ts: float = -np.inf
    frame_bytes: int = 0

    def add(self, buf: np.ndarray, records: RecordBlock, n: int) -> None:
        self.table.add(buf, records, n)
        stamps = records.sec[:n] + records.nsec[:n] * 1e-9
        self.first_ts = min(self.first_ts, float(stamps.min()))
        self.last_ts = max(self.last_ts, float(stamps.max()))
        self.frame_bytes += int(records.origlen[:n].sum())


def _count_file(path: Path, counters: queue.Queue[_Counts], progress: Callable[[int], None]) -> FileReport:
    """Read one file and count it, alone, into one counter (taken from the queue for the whole file)."""
    counts = counters.get()
    try:
        report = FileReport(path=str(path))
        records = RecordBlock()
        with ByteStream(path, on_progress=progress) as stream:
            for n in read_records(stream, records, report):
                counts.add(stream.buf, records, n)
        return report
    finally:
        counters.put(counts)


def _count_file_pipelined(
    path: Path, counters: queue.Queue[_Counts], progress: Callable[[int], None], pool: ThreadPoolExecutor
) -> FileReport:
    """Read one file here and count its blocks in the pool's threads, each block into whichever counter is free.

    The reader finds the records (a quick walk over their headers) while the workers decode and count them; the
    buffers and record blocks in flight are bounded, so memory does not grow with the file.
    """
    workers = counters.qsize()
    buffers = BufferPool(workers + 2)
    free: queue.Queue[RecordBlock] = queue.Queue()
    for _ in range(workers + 1):
        free.put(RecordBlock())

    def count(buf: np.ndarray, block: RecordBlock, n: int) -> None:
        counts = counters.get()
        try:
            counts.add(buf, block, n)
        finally:
            counters.put(counts)
            buffers.release(buf)
            free.put(block)

    report = FileReport(path=str(path))
    walked = RecordBlock()
    pending: list[Future[None]] = []
    try:
        with ByteStream(path, on_progress=progress, pool=buffers) as stream:
            for n in read_records(stream, walked, report):
                block = free.get()
                block.swap(walked)
                buffers.hold(stream.buf)
                pending.append(pool.submit(count, stream.buf, block, n))
                for done in [f for f in pending if f.done()]:
                    pending.remove(done)
                    done.result()  # a worker's error stops the reading
    finally:
        wait(pending)
    for future in pending:
        future.result()
    return report


def _count_all(
    captures: list[Path], counters: queue.Queue[_Counts], workers: int, progress: Callable[[int], None]
) -> list[FileReport]:
    """Count every file, one after the other with one worker; else several files at once, or the blocks of a
    single file in parallel. The reports come in the order of the files, and so does the first error."""
    if workers == 1:
        return [_count_file(path, counters, progress) for path in captures]
    with ThreadPoolExecutor(workers, thread_name_prefix="ingest") as pool:
        if len(captures) == 1:
            return [_count_file_pipelined(captures[0], counters, progress, pool)]
        futures = [pool.submit(_count_file, path, counters, progress) for path in captures]
        try:
            return [future.result() for future in futures]
        finally:
            for future in futures:  # after an error, the files not yet begun are not read
                future.cancel()


def ingest(
    captures: list[Path], bin_seconds: int = 1, *, progress: bool | None = None, workers: int = 1
) -> tuple[pa.Table, IngestSummary]:
    """Read the captures (one run, in time order) into the flows table and its summary.

    With several workers, several files are read at once, or the blocks of a single file counted in parallel;
    each worker keeps its own table and the tables are merged at the end. Every count is a sum of integers and
    the rows are sorted, so the table and the summary are the same, byte for byte, whatever the number of workers
    (errors too: the first bad file in the given order is the one reported).
    """
    if bin_seconds < 1:
        raise UsageError(f"--bin must be a whole number of seconds >= 1, not {bin_seconds}")
    if not 1 <= workers <= MAX_WORKERS:
        raise UsageError(f"workers must be a whole number in 1..{MAX_WORKERS}, not {workers}")
    for path in captures:
        if not path.is_file():
            raise IOFailure(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    counters: queue.Queue[_Counts] = queue.Queue()
    everyone = [_Counts(FlowTable(bin_seconds)) for _ in range(workers)]
    for counts in everyone:
        counters.put(counts)
    summary = IngestSummary(files=[], bin_seconds=bin_seconds)
    total = sum(p.stat().st_size for p in captures)
    show = sys.stderr.isatty() if progress is None else progress
    if show:
        from tqdm import tqdm  # only for a bar: its import is a tenth of a second of every `mimir ingest`

        with tqdm(total=total, unit="B", unit_scale=True, desc="ingest", leave=False) as bar:
            reports = _count_all(captures, counters, workers, bar.update)
    else:
        reports = _count_all(captures, counters, workers, lambda _: None)
    for report in reports:
        summary.files.append(report)
        summary.packets += report.records
        summary.truncated_records += report.truncated_records
        summary.warnings.extend(report.warnings)
    merged = everyone[0]
    for counts in everyone[1:]:
        merged.table.merge(counts.table)
        merged.first_ts = min(merged.first_ts, counts.first_ts)
        merged.last_ts = max(merged.last_ts, counts.last_ts)
        merged.frame_bytes += counts.frame_bytes
    summary.frame_bytes = merged.frame_bytes
    stats = merged.table.stats
    summary.ipv4_packets = int(stats[decode.STAT_IPV4])
    summary.ipv6_packets = int(stats[decode.STAT_IPV6])
    summary.ip_packets = summary.ipv4_packets + summary.ipv6_packets
    summary.non_ip_packets = int(stats[decode.STAT_NON_IP])
    summary.unreadable_ip_packets = int(stats[decode.STAT_BAD_IP])
    flows = merged.table.to_arrow()
    summary.flows = flows.num_rows
    if summary.packets:
        summary.first_ts, summary.last_ts = merged.first_ts, merged.last_ts
    return flows, summary


BIN_KEY = b"mimir.bin_seconds"  # in a flows or edges table's schema metadata: the time bin its rows were summed in


def with_bin(table: pa.Table, bin_seconds: int) -> pa.Table:
    """The table, its schema recording the bin, so that later stages read it from the data, never from a name."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), BIN_KEY: str(bin_seconds).encode()})


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


# the columns a stage reads from each table, and their types (docs/architecture.md#flows, #edges)
TABLE_COLUMNS: dict[str, dict[str, Callable[[pa.DataType], bool]]] = {
    "flows": {
        **{"ts": pa.types.is_integer, "src": _is_text, "dst": _is_text},
        **dict.fromkeys(("proto", "sport", "dport", "packets", "bytes"), pa.types.is_integer),
    },
    "edges": {
        **{"ts": pa.types.is_integer, "src": _is_text, "dst": _is_text},
        **dict.fromkeys(("packets", "bytes"), pa.types.is_integer),
        **dict.fromkeys(("src_kind", "src_service", "dst_kind", "dst_service"), _is_text),
    },
}
ADDRESS_COLUMNS = {"flows": ("src", "dst")}
MADE_BY = {"flows": "mimir ingest", "edges": "mimir edges"}
_NAMED = {"flows": "a flows table", "edges": "an edges table"}


def _parquet(path: Path, read: Callable[[pa.NativeFile], Any]) -> Any:
    """read(the open file): an I/O error when the file cannot be opened, a table error when it is no parquet.

    pyarrow is given its own file, never a Python file object: its reader threads would call back into Python for
    every read, and one still waiting for the interpreter when it exits aborts the process (SIGABRT).
    """
    try:
        with path.open("rb"):
            pass
    except FileNotFoundError:
        raise IOFailure(f"{path}: no such file") from None
    except IsADirectoryError:
        raise IOFailure(f"{path}: a folder, not a table") from None
    except OSError as e:
        raise IOFailure(f"{path}: cannot read: {e.strerror}") from None
    try:
        with pa.OSFile(str(path)) as file:
            return read(file)
    except (pa.ArrowException, OSError) as e:  # no parquet footer, cut short, a damaged page
        raise TableError(f"{path}: not a readable parquet table: {e}") from None


def _what(schema: pa.Schema) -> str:
    """What a table is, judged by its columns."""
    names = set(schema.names)
    for kind, columns in TABLE_COLUMNS.items():
        if columns.keys() <= names:
            return f"{_NAMED[kind]} (written by `{MADE_BY[kind]}`)"
    if {"interval", "label"} <= names:
        return "a feature table (written by `mimir features`)"
    shown = ", ".join(schema.names[:8]) + (", ..." if len(names) > 8 else "")
    return f"a table of columns {shown or '(none)'}"


def check_kind(path: Path, schema: pa.Schema, kinds: tuple[str, ...]) -> None:
    """Refuse a table that is none of `kinds` (flows, edges), saying what it is instead."""
    expected = " or ".join(f"{_NAMED[k]} (written by `{MADE_BY[k]}`)" for k in kinds)
    kind = next((k for k in kinds if TABLE_COLUMNS[k].keys() <= set(schema.names)), None)
    if kind is None:
        raise TableError(f"{path}: {_what(schema)}, not {expected}")
    wrong = next((name for name, fits in TABLE_COLUMNS[kind].items() if not fits(schema.field(name).type)), None)
    if wrong is not None:
        raise TableError(f"{path}: column {wrong!r} holds {schema.field(wrong).type}: not {expected}")


def recorded_bin(path: Path, kind: str | None = None) -> int:
    """The bin a flows or edges table (or, given a kind, a table of that kind) was written with; an error naming
    the file when it is another table or does not say."""
    schema = _parquet(path, pq.read_schema)
    check_kind(path, schema, (kind,) if kind else tuple(TABLE_COLUMNS))
    value = (schema.metadata or {}).get(BIN_KEY, b"")
    if not value.isdigit() or int(value) < 1:
        raise TableError(
            f"{path}: the table does not record its time bin ({BIN_KEY.decode()}): not written by `mimir ingest` "
            "or `mimir edges`, or by an older mimir (make it again)"
        )
    return int(value)


def read_table(path: Path, kind: str) -> pa.Table:
    """A whole flows or edges table, refused (naming the file and the column) when it is damaged, another kind of
    table, or holds what its writer never writes: an empty value, an address that is not one."""
    table = _parquet(path, pq.read_table)
    check_kind(path, table.schema, (kind,))
    for name in TABLE_COLUMNS[kind]:
        if table.column(name).null_count:
            raise TableError(f"{path}: column {name!r} has {table.column(name).null_count} empty value(s)")
    import pyarrow.compute as pc  # only here: its import costs a tenth of a second of every `mimir ingest`

    for name in ADDRESS_COLUMNS.get(kind, ()):
        for text in pc.unique(table.column(name)).to_pylist():  # a few thousand distinct addresses at most
            try:
                ipaddress.ip_address(text)
            except ValueError:
                raise TableError(f"{path}: column {name!r} holds {text[:60]!r}, not an IP address") from None
    return table


def write_flows(flows: pa.Table, summary: IngestSummary, out: Path, claim: Claim | None = None) -> None:
    """Write the table (its summary in its metadata) and the summary's copy beside it, as `mimir ingest` may
    (by default where nothing is; the captures are never replaced)."""
    claim = claim or Claim("ingest", inputs=tuple(Path(f.path) for f in summary.files))
    write_table(with_bin(flows, summary.bin_seconds), out, claim, asdict(summary))
