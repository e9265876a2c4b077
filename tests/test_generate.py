"""The capture generator used by the demo job and the benchmarks: seeded, and its ground truth holds; and the
record writer it shares with the synthetic source."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from oracle import flow_totals, tshark_totals

from mimir.capture.decode import LINKTYPE_LINUX_SLL2
from mimir.capture.generate import write_capture
from mimir.capture.ingest import ingest
from mimir.capture.pcapwrite import write_records


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


def _record(snaplen: int, family: int, length: int = 100) -> bytes:
    """One TCP frame from the writer that the generator and the synthetic source share (Linux cooked v2)."""
    out = np.zeros(16 + length, np.uint8)
    col = {k: np.array([v], np.int64) for k, v in
           {"sec": 1, "usec": 2, "length": length, "family": family, "hi": 0, "src": 0x0A000001, "dst": 0x0A000002,
            "proto": 6, "sport": 40000, "dport": 80, "seq": 7, "ack": 9, "flags": 0x18}.items()}  # fmt: skip
    used = write_records(
        out, col["sec"], col["usec"], col["length"], snaplen, LINKTYPE_LINUX_SLL2, 2, col["family"], col["hi"],
        col["src"], col["hi"], col["dst"], col["proto"], col["sport"], col["dport"], col["seq"], col["ack"],
        col["flags"], 64240, True,
    )  # fmt: skip
    return out[:used].tobytes()


def test_one_record_writer_lays_out_headers_and_cuts_them_at_the_snaplen() -> None:
    sll2 = struct.pack(">HHIHBB8x", 0x0800, 0, 2, 1, 0, 6)
    ipv4 = struct.pack(">BBHHHBBHII", 0x45, 0, 80, 0, 0x4000, 64, 6, 0, 0x0A000001, 0x0A000002)
    tcp = struct.pack(">HHIIBBHHH", 40000, 80, 7, 9, 0x50, 0x18, 64240, 0, 0)
    assert _record(68, 4) == struct.pack("<IIII", 1, 2, 68, 100) + sll2 + ipv4 + tcp + bytes(8)
    cut = _record(75, 6)  # IPv6: the TCP header starts at byte 60 of the frame, the snaplen cuts its window
    assert len(cut) == 16 + 75 and cut[16 + 74] == 64240 >> 8
