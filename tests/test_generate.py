"""The capture generator used by the demo job and the benchmarks: seeded, and its ground truth holds."""

from __future__ import annotations

from pathlib import Path

from oracle import flow_totals, tshark_totals

from mimir.capture.generate import write_capture
from mimir.capture.ingest import ingest


def test_generator_truth_equals_mimir_and_tshark(tmp_path: Path) -> None:
    for linktype in (1, 276):
        path = tmp_path / f"g{linktype}.pcap"
        traffic, truth = write_capture(path, 20_000, seed=7, snaplen=96, linktype=linktype)
        flows, summary = ingest([path], progress=False)
        oracle = tshark_totals(path)
        assert oracle.returncode == 0 and not oracle.stderr
        assert flow_totals(flows) == oracle.totals
        by_pair = truth.by_pair(traffic)
        assert {(r["src"], r["dst"]) for r in flows.to_pylist()} == set(by_pair)
        assert summary.packets == 20_000 and summary.files[0].link_types == [linktype]


def test_generator_is_seeded(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    write_capture(a, 5_000, seed=1)
    write_capture(b, 5_000, seed=1)
    write_capture(c, 5_000, seed=2)
    assert a.read_bytes() == b.read_bytes() != c.read_bytes()
