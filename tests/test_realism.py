"""`mimir realism`: hand-built runs with known answers, the real corpus slice, and the command's errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, run_mimir
from craft import ETH_IPV4, Record, ether, ipv4, pcap, tcp

from mimir.errors import IOFailure, UsageError
from mimir.realism import SideSpec, realism

T0 = 1_800_000_000
SLICE = "mimir/wordpress_auto_v3_mk5_bridge_any_split_00883_20190411020629"
LOG = "mimir/wordpress_example_final_cluster_creation_log.txt"
SLICE_ENTITIES = REPO / "config" / "references" / "wordpress-slice.entities.jsonl"

CLIENT, NODE, GATEWAY = "192.168.49.1", "192.168.49.2", "10.244.0.1"
WEB_VIP, DB_VIP, DNS_VIP, API_VIP = "10.96.0.20", "10.96.0.30", "10.96.0.10", "10.96.0.1"
WEB1, WEB2, DB0, DB1, CACHE = "10.244.0.5", "10.244.0.6", "10.244.0.8", "10.244.0.9", "10.244.0.12"
COREDNS, METRICS, STRAY, WORLD = "10.244.0.2", "10.244.0.3", "10.244.0.99", "203.0.113.5"


def _event(kind: str, namespace: str, name: str, ips: list[str], **rest: dict) -> dict:
    return {"ts": float(T0), "event": "added", "kind": kind, "namespace": namespace, "name": name, "ips": ips,
            "labels": rest.get("labels", {}), "selector": rest.get("selector", {}), "owner": "", "app": ""}  # fmt: skip


EVENTS = [
    _event("node", "", "node-1", [NODE]),
    _event("service", "shop", "web", [WEB_VIP], selector={"app": "web"}),
    _event("service", "shop", "db", [DB_VIP], selector={"app": "db"}),
    _event("service", "shop", "cache", [], selector={"app": "cache"}),
    _event("service", "kube-system", "kube-dns", [DNS_VIP], selector={"k8s-app": "kube-dns"}),
    _event("pod", "kube-system", "coredns-1", [COREDNS], labels={"k8s-app": "kube-dns"}),
    _event("pod", "kube-system", "metrics-1", [METRICS], labels={"k8s-app": "metrics"}),
    _event("pod", "shop", "web-1", [WEB1], labels={"app": "web"}),
    _event("pod", "shop", "web-2", [WEB2], labels={"app": "web"}),
    _event("pod", "shop", "db-0", [DB0], labels={"app": "db"}),
    _event("pod", "shop", "db-1", [DB1], labels={"app": "db"}),
    _event("pod", "shop", "cache-1", [CACHE], labels={"app": "cache"}),
]


def _traffic() -> list[tuple[int, str, str, int]]:
    """(second of the run, src, dst, frame length): three windows of 10 s, every figure known by hand."""
    packets = []
    for w in range(3):
        s = 10 * w
        # client -> web VIP: 100 B request at the window's first second, 2 x 1000 B at its last (spans the window)
        packets += [(s, CLIENT, WEB_VIP, 100), (s + 9, WEB_VIP, CLIENT, 1000), (s + 9, WEB_VIP, CLIENT, 1000)]
        # web-1 -> db, before and after the DNAT: 200 B request, a response of 1000, 2000, 3000 B in two frames
        for dst in (DB_VIP, DB0):
            packets += [(s + 3, WEB1, dst, 200)] + [(s + 3, dst, WEB1, 500 * (w + 1))] * 2
        # db-0 <-> db-1 replication: 3 x 100 B one way, 2 x 100 B back, at the first and the last second
        packets += [(s, DB0, DB1, 100), (s, DB0, DB1, 100), (s + 9, DB0, DB1, 100)]
        packets += [(s, DB1, DB0, 100), (s + 9, DB1, DB0, 100)]
        # metrics-1 <-> the API VIP (the first address of the service network, no entity): platform
        packets += [(s + 1, METRICS, API_VIP, 66), (s + 1, API_VIP, METRICS, 66)]
    # kubelet probes of web-1 from the bridge gateway in windows 0 and 2 only: a pair that churns
    packets += [(5, GATEWAY, WEB1, 60), (5, WEB1, GATEWAY, 60), (25, GATEWAY, WEB1, 60), (25, WEB1, GATEWAY, 60)]
    packets += [(12, WEB2, DNS_VIP, 80), (12, DNS_VIP, WEB2, 160)]  # a DNS lookup in window 1
    packets += [(22, WEB2, WORLD, 100), (22, WORLD, WEB2, 500)]  # egress in window 2
    packets += [(4, WEB2, CACHE, 100), (4, CACHE, WEB2, 900)]  # pod to pod, no VIP: the bigger way is the response
    packets += [(2, "127.0.0.1", "127.0.0.1", 70)]  # node loopback: platform
    packets += [(7, STRAY, WEB1, 90)]  # an in-cluster address nobody held: unknown
    return sorted(packets)


def write_run(folder: Path, *, phases: list[int] | None = None) -> Path:
    (folder / "capture").mkdir(parents=True)
    records = []
    for k, (second, src, dst, length) in enumerate(_traffic()):
        frame = ether(ipv4(src, dst, 6, tcp(40000, 80)), ETH_IPV4)
        records.append(Record(ts=(T0 + second) * 1_000_000 + k, data=frame, origlen=length))
    (folder / "capture" / "capture-00000.pcap").write_bytes(pcap(records, 1))
    (folder / "entities.jsonl").write_text("".join(json.dumps(e) + "\n" for e in EVENTS))
    run = {
        "app": "shop", "source": "synthetic", "start": float(T0), "end": float(T0 + 30),
        "load": {"users": 5, "phases": phases or []},
        "addresses": {"node": NODE, "gateway": GATEWAY, "load_generator": CLIENT, "pod_network": "10.244.0.0/16",
                      "service_network": "10.96.0.0/12"},
        "capture": {"files": ["capture/capture-00000.pcap"]},
    }  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run))
    return folder


def _values(table: pd.DataFrame, side: str = "reference") -> dict[tuple[str, str], float]:
    return {(r.category, r.figure): getattr(r, side) for r in table.itertuples()}


def test_hand_built_run_has_the_known_figures(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run")
    comparison = realism(SideSpec((run,)), SideSpec((run,)), tmp_path / "out")
    v = _values(comparison.table)
    assert set(comparison.reference.ranks) == {
        "client ↔ web vip", "node ↔ web pod", "web pod ↔ db vip", "web pod ↔ db pod", "cache pod ↔ web pod",
        "within db", "dns", "platform", "egress", "unknown",
    }  # fmt: skip
    # totals per window (medians over 3): 9, 6 and 7 conversations; 6412, 7372 and 9852 bytes
    assert v[("all", "IP conversations")] == 7
    assert v[("all", "bytes")] == 2100 + 2 * 2200 + 500 + 132 + 240
    assert v[("all", "frames")] == 20  # 22, 18 and 20
    # spanning the window: client <-> VIP and the replication pair, of 9, 6 and 7 conversations
    assert v[("all", "share of conversations spanning the window")] == pytest.approx(2 / 7)
    # client <-> web VIP: 3 frames, 2100 B, 700 B per frame, responses 20 x the requests, spans every window
    assert v[("client ↔ web vip", "pairs")] == 1
    assert v[("client ↔ web vip", "bytes per frame")] == 700
    assert v[("client ↔ web vip", "response/request bytes")] == 20
    assert v[("client ↔ web vip", "per-pair CV across windows, median")] == 0
    # web -> db: request 200 B, responses 1000, 2000, 3000 B: pair bytes 1200, 2200, 3200
    cv = math.sqrt((1000**2 + 0 + 1000**2) / 3) / 2200
    for category in ("web pod ↔ db vip", "web pod ↔ db pod"):
        assert v[(category, "bytes")] == 2200
        assert v[(category, "frames")] == 3
        assert v[(category, "response/request bytes")] == 10
        assert v[(category, "per-pair CV across windows, median")] == pytest.approx(cv)
        assert v[(category, "pair churn")] == 0
    # pod to pod without a VIP: the bigger direction is the response; present in one window of three
    assert v[("cache pod ↔ web pod", "response/request bytes")] == 9
    assert v[("cache pod ↔ web pod", "pairs")] == 0
    assert v[("cache pod ↔ web pod", "pair churn")] == 1
    # replication: 5 frames of 100 B, 3 one way and 2 back
    assert v[("within db", "bytes per frame")] == 100
    assert v[("within db", "direction ratio max/min, median")] == 1.5
    assert v[("within db", "per-pair CV across windows, median")] == 0
    # probes in windows 0 and 2: bytes 120, 0, 120
    assert v[("node ↔ web pod", "pairs")] == 1
    assert v[("node ↔ web pod", "pair churn")] == 1
    assert v[("node ↔ web pod", "per-pair CV across windows, median")] == pytest.approx(math.sqrt(3200) / 80)
    assert v[("node ↔ web pod", "response/request bytes")] == 1
    assert v[("dns", "response/request bytes")] == 2
    assert v[("egress", "response/request bytes")] == 5
    # platform: metrics <-> API VIP every window, loopback in window 0
    assert v[("platform", "pairs")] == 1
    assert v[("platform", "pair churn")] == pytest.approx(0.5)
    assert v[("unknown", "bytes")] == 0
    # the graph: the node's addresses (gateway, loopback) are one node, the loopback conversation no edge; w0 has
    # 12 nodes and 8 edges, w1 10 and 6, w2 11 and 7
    assert v[("graph", "nodes")] == 11
    assert v[("graph", "edges")] == 7
    assert v[("graph", "degree, mean")] == pytest.approx(14 / 11)
    # against itself every figure is within, at distance 1 or 0
    t = comparison.table
    assert t["within"].dropna().all()
    assert comparison.summary.startswith(f"realism: {t['within'].notna().sum()} of {t['within'].notna().sum()}")
    for name in ("realism.csv", "realism.md", "realism.png", "realism.svg"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_peak_keeps_the_busiest_phase(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", phases=[1, 5, 2])
    peak = realism(SideSpec((run,)), SideSpec((run,)), peak=True)  # phase 2 of 3: window 1 alone
    v = _values(peak.table)
    assert v[("all", "IP conversations")] == 6  # client, db VIP and pod, replication, API, DNS; no probe
    assert v[("all", "bytes")] == 2100 + 2 * 2200 + 500 + 132 + 240
    assert math.isnan(peak.reference.values[("within db", "per-pair CV across windows, median")])  # one window
    assert ("within db", "per-pair CV across windows, median") not in v  # n/a on both sides: no row
    assert "node ↔ web pod" not in peak.reference.ranks
    assert any("busiest load phase (2 of 3" in note for note in peak.notes)


def test_tables_with_entities_and_renames(tmp_path: Path) -> None:
    """A conversation table side: exact figures from the table, roles from an entities.jsonl, Helm prefixes."""
    table = tmp_path / "conv.txt"
    table.write_text(
        "=====\nIPv4 Conversations\nFilter:<No Filter>\n   |  <-  | |  ->  | | Total | Start | Duration |\n"
        "192.168.99.1  <-> 192.168.99.100   10  20000   5  500   15  20500  0.1  9.5\n"
        "172.17.0.8    <-> 172.17.0.9        4    600   6  600   10   1200  3.0  2.0\n"
        "=====\n"
    )
    entities = tmp_path / "entities.jsonl"
    entities.write_text("".join(json.dumps(e) + "\n" for e in [
        {"ts": 0, "event": "added", "kind": "service", "namespace": "default", "name": "rel-db", "ips": [],
         "selector": {"app": "db"}},
        *({"ts": 0, "event": "added", "kind": "pod", "namespace": "default", "name": f"db-{k}",
           "ips": [f"172.17.0.{8 + k}"], "labels": {"app": "db"}} for k in range(2)),
    ]))  # fmt: skip
    run = write_run(tmp_path / "run")
    comparison = realism(SideSpec((table,), entities), SideSpec((run,)))
    v = _values(comparison.table)
    assert v[("all", "IP conversations")] == 2
    assert v[("all", "frames")] == 25
    assert v[("all", "bytes")] == 21700
    assert v[("all", "share of conversations spanning the window")] == 0.5
    assert v[("client ↔ node", "response/request bytes")] == 40
    assert v[("within db", "direction ratio max/min, median")] == 1
    assert "rel-db → db" in " ".join(comparison.notes)  # the Helm release prefix, matched without asking
    assert math.isnan(_values(comparison.table, "candidate")[("client ↔ node", "pairs")])
    assert comparison.only["reference"] == ["client ↔ node"]


def test_real_slice_against_itself_and_a_synthetic_run(corpus: Path, tmp_path: Path) -> None:
    real = corpus / SLICE
    itself = realism(SideSpec((real,), SLICE_ENTITIES), SideSpec((real,), SLICE_ENTITIES))
    t = itself.table
    assert t["within"].dropna().all() and t["within"].notna().sum() > 40
    ratios = t[t["tolerance"].str.startswith("ratio") & t["distance"].notna()]
    assert (ratios["distance"] == 1).all()
    v = _values(t)
    # the slice, summed from the file: 149 conversations, 104,745 frames, 87,602,994 bytes
    assert v[("all", "IP conversations")] == 149
    assert v[("all", "frames")] == 104_745
    assert v[("all", "bytes")] == 87_602_994
    assert v[("all", "share of conversations spanning the window")] == pytest.approx(63 / 149)
    # the reference note's rows (../shared/reference/realism-wordpress.md)
    assert v[("client ↔ node", "bytes per frame")] == pytest.approx(2362, abs=1)
    assert v[("node ↔ wwwppp-wordpress pod", "pairs")] == 11
    assert v[("client ↔ wwwppp-wordpress pod", "bytes")] == pytest.approx(6.8e6, rel=0.01)
    assert v[("wwwppp-wordpress pod ↔ my-release-pxc vip", "bytes per frame")] == pytest.approx(1119, abs=1)
    assert v[("wwwppp-wordpress pod ↔ my-release-pxc vip", "response/request bytes")] == pytest.approx(13.6, abs=0.05)
    assert v[("wwwppp-wordpress pod ↔ my-release-pxc pod", "pairs")] == 76
    assert v[("within my-release-pxc", "pairs")] == 21
    assert v[("within my-release-pxc", "bytes per frame")] == pytest.approx(162, abs=1)
    assert v[("within my-release-pxc", "direction ratio max/min, median")] == pytest.approx(1.14, abs=0.005)
    assert v[("platform", "pairs")] == 18
    assert "dns" not in itself.reference.ranks

    # the prototype's own (pickled) log places the slice by its split number; it is another run's log, so only
    # the totals are the slice's
    logged = realism(SideSpec((real,), corpus / LOG), SideSpec((real,), corpus / LOG))
    assert _values(logged.table)[("all", "frames")] == 104_745
    assert logged.table["within"].dropna().all()
    assert "log second 8830" in logged.notes[0]

    synthetic, out = tmp_path / "synth", tmp_path / "out"
    run_mimir("synth", "--app", "wordpress", "--duration", "240", "--users", "20", "-o", synthetic, check=True)
    done = run_mimir("realism", real, synthetic, "--reference-log", SLICE_ENTITIES, "-o", out, "--peak", check=True)
    assert done.stdout.startswith("realism: ") and " of " in done.stdout and "worst: " in done.stdout
    csv = pd.read_csv(out / "realism.csv")
    assert list(csv.columns) == ["figure", "category", "reference", "candidate", "distance", "tolerance", "within"]
    rows = csv.set_index(["category", "figure"])
    assert rows.loc[("all", "IP conversations"), "reference"] == 149
    assert rows.loc[("all", "frames"), "reference"] == pytest.approx(104.7e3, rel=0.001)
    assert rows.loc[("all", "bytes"), "reference"] == pytest.approx(87.6e6, rel=0.001)
    assert rows.loc[("all", "frames"), "candidate"] > 0
    assert "| IP conversations | all | 149 |" in (out / "realism.md").read_text()
    assert (out / "realism.svg").read_text().startswith("<?xml")
    assert (out / "realism.png").read_bytes()[:4] == b"\x89PNG"


def test_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    run = write_run(tmp_path / "run")
    done = run_mimir("realism", missing, run, "-o", tmp_path / "out")
    assert done.returncode == 5
    assert f"{missing}: no such file" in done.stderr
    assert not (tmp_path / "out").exists()
    table = tmp_path / "conv.txt"
    table.write_text("nothing here\n")
    done = run_mimir("realism", table, run, "--reference-log", run / "entities.jsonl")
    assert done.returncode == 3 and f"{table}: no `tshark -z conv,ip` table" in done.stderr
    with pytest.raises(UsageError, match="--reference-log"):
        realism(SideSpec((table,)), SideSpec((run,)))
    with pytest.raises(IOFailure, match=r"no-log\.pickle: no such file"):
        realism(SideSpec((run / "run.json",), tmp_path / "no-log.pickle"), SideSpec((run,)))
    done = run_mimir("realism", run, run, "--window", "0")
    assert done.returncode == 2 and "--window" in done.stderr


def test_help_is_complete() -> None:
    text = run_mimir("realism", "--help", check=True).stdout
    for needle in ("REFERENCE", "CANDIDATE", "--window", "--peak", "--reference-log", "--candidate-at", "--rename",
                   "within S", "half-NAT", "pair churn", "realism.csv", "realism.svg", "exit codes"):  # fmt: skip
        assert needle in text, needle
