"""How fast mimir goes from edges to labelled feature tables, against the plain networkx reference.

For a 3-hour Sock Shop run at 100 users (generated with `mimir synth`, ingested with `mimir ingest`), one run
times `mimir edges` and `mimir features` (the paper's five rates, 10 s and 60 s, on all cores), then runs the
per-interval networkx implementation of every feature family (the tests' reference) on a sample of intervals
and extrapolates it to all intervals of all rates. Target: at least 20 times faster, and under 3 minutes.

    .venv/bin/python benchmarks/features.py [--dir DIR] [--sample 24]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_features import (
    reference_edge_cv,
    reference_flow,
    reference_harmonic,
    reference_mismatch,
    reference_reciprocity,
)

from mimir.graphs import CodedEdges, Graphs, build_graphs
from mimir.network import INGRESS, OUTSIDE, POD, VIP

MIMIR = Path(sys.executable).with_name("mimir")
RATES = 5


def timed(*args: str | Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(MIMIR), *map(str, args)], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def reference_interval(graphs: Graphs, e: pd.DataFrame, s_edges: pd.DataFrame, sensitive: list[str]) -> None:
    """Every feature family of one interval (its pod+VIP and service edges), the plain networkx way."""
    nodes = graphs.nodes
    kind, service = nodes["kind"].to_numpy(), nodes["service"].to_numpy()
    g = nx.DiGraph()
    for u, v, w in zip(e["src"], e["dst"], e["bytes"], strict=True):
        g.add_edge(int(u), int(v), weight=float(w))
    app = sorted(set(service[(kind == POD) | (kind == VIP)]))
    group = np.array([app.index(s) if k in (POD, VIP) else -1 for s, k in zip(service, kind, strict=True)])
    for a in range(len(app)):
        for b in range(a + 1, len(app)):
            reference_reciprocity(g, group, a, b)
    pod_group = np.where(kind == POD, group, -1)
    for a in range(len(app)):
        for b in range(len(app)):
            if a != b:
                reference_edge_cv(g, pod_group, a, b)
    names = sorted(set(s_edges["src"]) | set(s_edges["dst"]))
    sg = nx.DiGraph()
    for a, b, w in zip(s_edges["src"], s_edges["dst"], s_edges["bytes"], strict=True):
        sg.add_edge(names.index(a), names.index(b), weight=float(w))
    reference_harmonic(sg, len(names))
    sources = [int(k) for k in np.flatnonzero((kind == POD) & np.isin(service, sensitive))]
    targets = [int(k) for k in np.flatnonzero(np.isin(kind, [OUTSIDE, INGRESS]))]
    reference_flow(g, len(nodes), sources, targets)
    for s in app:
        reference_mismatch(g, kind, service, s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "mimir-bench-features")
    parser.add_argument("--sample", type=int, default=24, help="intervals per granularity for the reference")
    args = parser.parse_args()
    work = args.dir
    work.mkdir(parents=True, exist_ok=True)
    print(f"# mimir features benchmark, {os.cpu_count()} cores\n")
    if not (work / "flows.parquet").exists():
        subprocess.run(
            [
                str(MIMIR),
                "synth",
                "--app",
                "sockshop",
                "--duration",
                "10800",
                "--users",
                "100",
                "--seed",
                "1",
                "-o",
                str(work / "run"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        captures = sorted((work / "run" / "capture").glob("*.pcap"))
        subprocess.run(
            [str(MIMIR), "ingest", *map(str, captures), "-o", str(work / "flows.parquet")],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    edges_s = timed("edges", work / "flows.parquet", work / "run", "-o", work / "edges.parquet")
    features_s = timed("features", work / "edges.parquet", work / "run", "-o", work / "out")
    mimir_s = edges_s + features_s

    import json

    run = json.loads((work / "run" / "run.json").read_text())
    edges = pd.read_parquet(work / "edges.parquet")
    attacks = pd.read_parquet(work / "out" / "attacks" / "1.parquet")
    combined = CodedEdges.from_edges(edges).with_rows(attacks)
    reference_s = 0.0
    rows = []
    for tg in (10, 60):
        graphs = build_graphs(combined, int(run["start"]), run["end"], tg)
        sample = np.linspace(0, graphs.intervals - 1, min(args.sample, graphs.intervals)).astype(int)
        pod_edges, service_edges = graphs.edges, graphs.service_edges()
        slices = [
            (pod_edges[pod_edges["interval"] == k], service_edges[service_edges["interval"] == k]) for k in sample
        ]  # prepared outside the timing: only the reference's own work counts
        start = time.perf_counter()
        for e, s_e in slices:
            reference_interval(graphs, e, s_e, run["sensitive"])
        per_interval = (time.perf_counter() - start) / sample.size
        total = per_interval * graphs.intervals * RATES
        reference_s += total
        rows.append((tg, graphs.intervals, per_interval, total))

    print("| stage | seconds |")
    print("|---|---:|")
    print(f"| `mimir edges` (3 h, {len(edges):,} edge rows) | {edges_s:.1f} |")
    print(f"| `mimir features` (5 rates x 10 s and 60 s) | {features_s:.1f} |")
    print(f"| mimir, edges to features | {mimir_s:.1f} |")
    for tg, count, per_interval, total in rows:
        print(
            f"| networkx reference, {tg} s: {per_interval * 1e3:.0f} ms/interval x {count} intervals x {RATES} "
            f"rates (from {args.sample} sampled) | {total:.0f} |"
        )
    print(f"| networkx reference, all | {reference_s:.0f} |")
    print(
        f"\nmimir features is {reference_s / features_s:.0f}x faster than the networkx reference "
        f"({reference_s / mimir_s:.0f}x counting the edges stage); edges to features in {mimir_s:.0f} s."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
