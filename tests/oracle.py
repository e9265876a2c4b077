"""tshark as the oracle: per-(src, dst) packet and byte totals of a capture, by the outermost IP header."""

from __future__ import annotations

import ipaddress
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

FIELDS = ["frame.protocols", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "frame.len"]


@dataclass
class OracleResult:
    returncode: int
    stderr: str
    totals: Counter  # (src, dst) -> [packets, bytes] packed as a Counter of tuples

    @property
    def cut_short(self) -> bool:
        return "cut short in the middle of a packet" in self.stderr


def tshark_totals(path: Path) -> OracleResult:
    cmd = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "separator=\t", "-E", "occurrence=f"]
    for f in FIELDS:
        cmd += ["-e", f]
    done = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=300, check=False)
    stderr = "\n".join(line for line in done.stderr.splitlines() if "Running as user" not in line and line.strip())
    totals: Counter = Counter()
    for line in done.stdout.splitlines():
        protocols, ip_src, ip_dst, ip6_src, ip6_dst, length = line.split("\t")
        layers = protocols.split(":")
        v4_at = layers.index("ip") if "ip" in layers else None
        v6_at = layers.index("ipv6") if "ipv6" in layers else None
        if ip_src and (v6_at is None or not ip6_src or (v4_at is not None and v4_at < v6_at)):
            pair = (ip_src, ip_dst)
        elif ip6_src:
            pair = (ip6_src, ip6_dst)
        else:
            continue
        key = (_address(pair[0]), _address(pair[1]))
        totals[(*key, "packets")] += 1
        totals[(*key, "bytes")] += int(length)
    return OracleResult(done.returncode, stderr, totals)


def flow_totals(flows) -> Counter:
    """The same totals from a mimir flows table (a pyarrow table)."""
    totals: Counter = Counter()
    grouped = flows.group_by(["src", "dst"]).aggregate([("packets", "sum"), ("bytes", "sum")])
    for row in grouped.to_pylist():
        key = (_address(row["src"]), _address(row["dst"]))
        totals[(*key, "packets")] += row["packets_sum"]
        totals[(*key, "bytes")] += row["bytes_sum"]
    return totals


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | str:
    """Addresses compare as values (tshark and Python print IPv4-mapped IPv6 differently); '' stays ''."""
    return ipaddress.ip_address(text) if text else text
