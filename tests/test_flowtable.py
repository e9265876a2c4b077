"""The flow table grows past its first allocation (rows and addresses) without losing or splitting a flow."""

from __future__ import annotations

import ipaddress
from collections import Counter
from pathlib import Path

from craft import ETH_IPV4, Record, ether, ipv4, pcap, udp

from mimir.capture.flowtable import FlowTable
from mimir.capture.generate import write_capture
from mimir.capture.ingest import ingest


def test_many_flows_match_the_generator_truth(tmp_path: Path) -> None:
    path = tmp_path / "many.pcap"
    traffic, truth = write_capture(path, 300_000, seed=5, pairs=3000, rate=2000.0)
    flows, _ = ingest([path], progress=False)
    assert flows.num_rows > 2 * (1 << 16)  # well past the first allocation
    got: Counter = Counter()
    for row in flows.to_pylist():
        got[row["src"], row["dst"], "packets"] += row["packets"]
        got[row["src"], row["dst"], "bytes"] += row["bytes"]
    expected: Counter = Counter()
    for (src, dst), (packets, nbytes) in truth.by_pair(traffic).items():
        expected[src, dst, "packets"] += packets
        expected[src, dst, "bytes"] += nbytes
    assert got == expected
    keys = flows.select(["ts", "src", "dst", "proto", "sport", "dport"]).to_pylist()
    assert len({tuple(k.values()) for k in keys}) == flows.num_rows  # one row per key


def test_many_addresses(tmp_path: Path) -> None:
    n = 3 * 4096
    records = [
        Record(1_700_000_000 * 10**6, ether(ipv4(str(ipaddress.IPv4Address(0x0A000000 + k)), "10.255.0.1", 17,
                                                  udp(1000, 2000)), ETH_IPV4))
        for k in range(n)
    ]  # fmt: skip
    path = tmp_path / "addresses.pcap"
    path.write_bytes(pcap(records + records, 1))
    flows, _ = ingest([path], progress=False)
    assert flows.num_rows == n and set(flows.column("packets").to_pylist()) == {2}
    assert FlowTable(1).ip_family.shape[0] < n  # the address table had to grow
    assert flows.column("src").to_pylist()[:2] == ["10.0.0.0", "10.0.0.1"]  # numeric order
