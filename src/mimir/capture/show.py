"""A flows table at a glance, for a person: `python -m mimir.capture.show FLOWS.parquet`.

It prints the number of rows, the bin width, the packets and files read (from the summary ingest wrote into the
table), the packets by kind (IPv4, IPv6, non-IP, unreadable IP, truncated records), the span of the bins
and the address pairs that sent the most bytes. No stage of the workflow calls it; the README shows its output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from mimir.io import recorded_summary


def describe(flows_path: Path, top: int = 10) -> str:
    flows = pq.read_table(flows_path)
    summary = recorded_summary(flows_path)
    lines = [
        f"{flows_path}: {flows.num_rows:,} flow rows, {summary['bin_seconds']} s bins, "
        f"from {summary['packets']:,} packets in {len(summary['files'])} file(s)",
        f"  IPv4 {summary['ipv4_packets']:,}  IPv6 {summary['ipv6_packets']:,}  non-IP {summary['non_ip_packets']:,}  "
        f"unreadable IP {summary['unreadable_ip_packets']:,}  truncated records {summary['truncated_records']:,}",
    ]
    if flows.num_rows:
        ts = flows.column("ts")
        lines.append(f"  bins {pc.min(ts).as_py()} .. {pc.max(ts).as_py()} (epoch seconds)")
        pairs = flows.group_by(["src", "dst"]).aggregate([("packets", "sum"), ("bytes", "sum")])
        pairs = pairs.sort_by([("bytes_sum", "descending"), ("src", "ascending"), ("dst", "ascending")])
        lines.append(f"\n  {'src':>28}  {'dst':>28}  {'packets':>10}  {'bytes':>14}")
        for row in pairs.slice(0, top).to_pylist():
            lines.append(f"  {row['src']:>28}  {row['dst']:>28}  {row['packets_sum']:>10,}  {row['bytes_sum']:>14,}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(describe(Path(sys.argv[1])))
