"""Entities replayed by time, and flows resolved to edges."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import run_mimir

from mimir.edges import build_edges
from mimir.entities import read_events, resolve, timeline
from mimir.errors import EntitiesError

T0 = 1_800_000_000.0


def event(ts: float, kind: str, what: str, name: str, ips: list[str], **rest) -> dict:
    base = {"ts": T0 + ts, "event": kind, "kind": what, "namespace": "shop", "name": name, "ips": ips,
            "labels": {}, "selector": {}, "owner": "", "app": ""}  # fmt: skip
    base.update(rest)
    return base


def write_run(folder: Path, events: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "entities.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    run = {"addresses": {"pod_network": "10.244.0.0/16", "service_network": "10.96.0.0/12",
                         "load_generator": "192.168.49.1"}}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(run))
    return folder


EVENTS = [
    event(0, "added", "node", "node-1", ["192.168.49.2"], namespace=""),
    event(0, "added", "service", "cart", ["10.96.0.20"], selector={"app": "cart"}),
    event(0, "added", "service", "kube-dns", ["10.96.0.10"], namespace="kube-system", selector={"k8s-app": "kube-dns"}),
    event(0, "added", "pod", "coredns-a", ["10.244.0.2"], namespace="kube-system", labels={"k8s-app": "kube-dns"}),
    event(0, "added", "pod", "proxy-x", ["10.244.0.3"], namespace="kube-system", labels={"k8s-app": "proxy"}),
    event(0, "added", "pod", "cart-1", ["10.244.0.5"], labels={"app": "cart"}),
    event(0, "added", "pod", "front-1", ["10.244.0.6"], labels={"app": "front"}, owner="deployment/front"),
    event(100, "deleted", "pod", "cart-1", ["10.244.0.5"], labels={"app": "cart"}),
    event(130, "added", "pod", "front-2", ["10.244.0.5"], labels={"app": "front"}, owner="deployment/front"),
]


def test_addresses_resolve_by_time_with_reuse() -> None:
    spans = timeline(EVENTS)
    ips = pd.Series(["10.244.0.5", "10.244.0.5", "10.244.0.5", "10.244.0.6", "10.96.0.20", "8.8.8.8"])
    at = pd.Series([T0 + 50, T0 + 110, T0 + 140, T0 + 140, T0 + 1, T0 + 1])
    got = resolve(ips, at, spans).fillna("-")
    assert got["entity"].tolist() == ["shop/cart-1", "-", "shop/front-2", "shop/front-1", "shop/cart", "-"]
    assert got["service"].tolist() == ["cart", "-", "front", "front", "cart", "-"]  # by selector, else owner
    assert got["kind"].tolist() == ["pod", "-", "pod", "pod", "vip", "-"]


def test_edges_classes_infra_dns_unknown(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", EVENTS)
    rows = [  # ts, src, dst, packets, bytes
        (T0 + 10, "192.168.49.1", "10.96.0.20", 2, 200),  # the load generator: ingress
        (T0 + 10, "10.244.0.6", "10.96.0.10", 1, 80),  # DNS is kept
        (T0 + 10, "192.168.49.2", "10.244.0.6", 3, 300),  # the node's probes: infrastructure
        (T0 + 10, "10.244.0.3", "10.244.0.6", 1, 60),  # a kube-system pod other than DNS: infrastructure
        (T0 + 10, "10.244.0.6", "203.0.113.9", 4, 4000),  # egress: outside
        (T0 + 110, "10.244.0.6", "10.244.0.5", 1, 100),  # nobody held .5 then: unknown, not merged
        (T0 + 140, "10.244.0.6", "10.244.0.5", 1, 100),  # .5 is front-2 now
    ]
    flows = pa.table({
        "ts": [int(r[0]) for r in rows], "src": [r[1] for r in rows], "dst": [r[2] for r in rows],
        "proto": [6] * len(rows), "sport": [1] * len(rows), "dport": [2] * len(rows),
        "packets": [r[3] for r in rows], "bytes": [r[4] for r in rows],
    })  # fmt: skip
    edges, summary = build_edges(flows, run, bin_seconds=1)
    got = {(r["src"], r["dst"]): (r["src_kind"], r["dst_kind"], r["dst_service"]) for _, r in edges.iterrows()}
    assert got == {
        ("ingress", "shop/cart"): ("ingress", "vip", "cart"),
        ("shop/front-1", "kube-system/kube-dns"): ("pod", "vip", "kube-dns"),
        ("shop/front-1", "outside"): ("pod", "outside", "outside"),
        ("shop/front-1", "unknown/10.244.0.5"): ("pod", "unknown", "unknown"),
        ("shop/front-1", "shop/front-2"): ("pod", "pod", "front"),
    }
    assert summary["unknown_in_cluster_addresses"] == ["10.244.0.5"] and summary["unknown_in_cluster_packets"] == 1
    assert summary["infra_packets"] == 4 and summary["outside_addresses"] == 1
    kept, _ = build_edges(flows, run, bin_seconds=1, keep_infra=True)
    assert len(kept) == len(edges) + 2


def test_edges_command_on_a_synthetic_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run_mimir("synth", "--app", "sockshop", "--duration", "240", "--users", "8", "-o", run, check=True)
    run_mimir("ingest", *sorted((run / "capture").glob("*.pcap")), "-o", tmp_path / "flows.parquet", check=True)
    done = run_mimir("edges", tmp_path / "flows.parquet", run, "-o", tmp_path / "edges.parquet", check=True)
    assert "warning" not in done.stderr  # every in-cluster address is known
    edges = pd.read_parquet(tmp_path / "edges.parquet")
    flows = pd.read_parquet(tmp_path / "flows.parquet")
    summary = json.loads((tmp_path / "edges.summary.json").read_text())
    assert edges["bytes"].sum() <= flows["bytes"].sum()  # less the dropped probes
    assert summary["packets"] == flows["packets"].sum()
    assert set(edges["src_kind"]) | set(edges["dst_kind"]) == {"pod", "vip", "ingress"}
    assert not edges.duplicated(["ts", "src", "dst"]).any()


def test_bad_entities_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "entities.jsonl"
    path.write_text(json.dumps(EVENTS[0]) + "\n{not json\n")
    with pytest.raises(EntitiesError, match=f"{path}: line 2"):
        read_events(path)
