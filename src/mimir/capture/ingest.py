"""Captures to the flows table (docs/architecture.md#flows): one streaming pass over every file, in the order given.

Writes `FLOWS.parquet`, its summary in its metadata, and a copy of the summary beside it, `FLOWS.summary.json`:
each appears whole or not at all, and the copy is removed while the table is replaced (missing, never stale).
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from mimir import __version__
from mimir.capture import decode
from mimir.capture.flowtable import FlowTable
from mimir.capture.formats import ByteStream, FileReport, RecordBlock, read_records
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


def ingest(
    captures: list[Path], bin_seconds: int = 1, *, progress: bool | None = None
) -> tuple[pa.Table, IngestSummary]:
    """Read the captures (one run, in time order) into the flows table and its summary."""
    if bin_seconds < 1:
        raise UsageError(f"--bin must be a whole number of seconds >= 1, not {bin_seconds}")
    for path in captures:
        if not path.is_file():
            raise IOFailure(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    table = FlowTable(bin_seconds)
    records = RecordBlock()
    summary = IngestSummary(files=[], bin_seconds=bin_seconds)
    first_ts, last_ts = np.inf, -np.inf  # epoch seconds as floats: years 1 to 9999 overflow int64 nanoseconds
    total = sum(p.stat().st_size for p in captures)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=not show, leave=False) as bar:
        for path in captures:
            report = FileReport(path=str(path))
            with ByteStream(path, on_progress=bar.update) as stream:
                for n in read_records(stream, records, report):
                    table.add(stream.buf, records, n)
                    stamps = records.sec[:n] + records.nsec[:n] * 1e-9
                    first_ts = min(first_ts, float(stamps.min()))
                    last_ts = max(last_ts, float(stamps.max()))
                    summary.frame_bytes += int(records.origlen[:n].sum())
            summary.files.append(report)
            summary.packets += report.records
            summary.truncated_records += report.truncated_records
            summary.warnings.extend(report.warnings)
    stats = table.stats
    summary.ipv4_packets = int(stats[decode.STAT_IPV4])
    summary.ipv6_packets = int(stats[decode.STAT_IPV6])
    summary.ip_packets = summary.ipv4_packets + summary.ipv6_packets
    summary.non_ip_packets = int(stats[decode.STAT_NON_IP])
    summary.unreadable_ip_packets = int(stats[decode.STAT_BAD_IP])
    flows = table.to_arrow()
    summary.flows = flows.num_rows
    if summary.packets:
        summary.first_ts, summary.last_ts = first_ts, last_ts
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
