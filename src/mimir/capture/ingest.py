"""Captures to the flows table (docs/architecture.md#flows): one streaming pass over every file, in the order given.

Writes `FLOWS.parquet` and, beside it, `FLOWS.summary.json`; both appear whole or not at all.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from mimir import __version__
from mimir.capture import decode
from mimir.capture.flowtable import FlowTable
from mimir.capture.formats import ByteStream, FileReport, RecordBlock, read_records
from mimir.errors import IOFailure, UsageError
from mimir.io import atomic_path


@dataclass
class IngestSummary:
    """The counts a user checks a flows table against (also written as JSON next to it)."""

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

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


def summary_path(flows_path: Path) -> Path:
    """`flows.parquet` → `flows.summary.json`."""
    return flows_path.with_name(flows_path.stem + ".summary.json")


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
    first_ns, last_ns = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    total = sum(p.stat().st_size for p in captures)
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=total, unit="B", unit_scale=True, desc="ingest", disable=not show, leave=False) as bar:
        for path in captures:
            report = FileReport(path=str(path))
            with ByteStream(path, on_progress=bar.update) as stream:
                for n in read_records(stream, records, report):
                    table.add(stream.buf, records, n)
                    stamps = records.sec[:n] * 1_000_000_000 + records.nsec[:n]
                    first_ns = min(first_ns, int(stamps.min()))
                    last_ns = max(last_ns, int(stamps.max()))
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
        summary.first_ts = first_ns / 1e9
        summary.last_ts = last_ns / 1e9
    return flows, summary


BIN_KEY = b"mimir.bin_seconds"  # in a flows or edges table's schema metadata: the time bin its rows were summed in


def with_bin(table: pa.Table, bin_seconds: int) -> pa.Table:
    """The table, its schema recording the bin, so that later stages read it from the data, never from a name."""
    return table.replace_schema_metadata({**(table.schema.metadata or {}), BIN_KEY: str(bin_seconds).encode()})


def recorded_bin(path: Path) -> int:
    """The bin a flows or edges table was written with (an error naming the file when it does not say)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid) as e:
        raise IOFailure(f"{path}: cannot read the table: {e}") from None
    value = metadata.get(BIN_KEY, b"")
    if not value.isdigit() or int(value) < 1:
        raise IOFailure(f"{path}: the table does not record its time bin (written by an older mimir? ingest again)")
    return int(value)


def write_flows(flows: pa.Table, summary: IngestSummary, out: Path) -> None:
    """Write the table and its summary, each under a temporary name renamed into place when complete."""
    with atomic_path(out) as tmp:
        pq.write_table(with_bin(flows, summary.bin_seconds), tmp, compression="zstd")
    with atomic_path(summary_path(out)) as tmp:
        tmp.write_text(summary.to_json())
