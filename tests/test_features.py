"""Each feature family against a plain, per-interval networkx implementation on random graphs.

Every family sees at least 100 random graphs, each as one interval of a single table (so the vectorisation over
intervals is what is tested), including empty, single-node and disconnected graphs. Agreement: 1e-9.
"""

from __future__ import annotations

import statistics

import networkx as nx
import numpy as np
import pandas as pd
import pytest

from mimir.features import (
    current_flow_betweenness,
    edge_cv,
    harmonic_centrality,
    vip_mismatch,
    weighted_reciprocity,
)
from mimir.network import INGRESS, OUTSIDE, POD, VIP

GRAPHS = 120
TOLERANCE = {"rtol": 1e-9, "atol": 1e-9}


def random_graphs(seed: int, nodes: int = 12) -> tuple[pd.DataFrame, list[nx.DiGraph]]:
    """GRAPHS random weighted digraphs over node ids 0..nodes-1, as one edge table and as networkx graphs."""
    rng = np.random.default_rng(seed)
    rows, graphs = [], []
    for i in range(GRAPHS):
        g = nx.DiGraph()
        shape = i % 6
        if shape == 0:
            pass  # empty
        elif shape == 1:
            g.add_edge(0, 0, weight=5.0)  # a single node with a self-loop
        else:
            density = [0, 0, 0.08, 0.2, 0.5, 0.9][shape]  # sparse ones come out disconnected
            for u in range(nodes):
                for v in range(nodes):
                    if u != v and rng.random() < density:
                        g.add_edge(u, v, weight=float(rng.choice([rng.uniform(1, 10), rng.uniform(1e3, 1e7)])))
        for u, v, w in g.edges(data="weight"):
            rows.append((i, u, v, w))
        graphs.append(g)
    table = pd.DataFrame(rows, columns=["interval", "src", "dst", "bytes"])
    return table.sort_values(["interval", "src", "dst"], ignore_index=True), graphs


def reference_reciprocity(g: nx.DiGraph, group: np.ndarray, a: int, b: int) -> float:
    total = mutual = 0.0
    for u, v, w in g.edges(data="weight"):
        if {group[u], group[v]} == {a, b} and a != b:
            total += w
            if g.has_edge(v, u):
                mutual += min(w, g[v][u]["weight"])
    return mutual / total if total else 0.0


def test_weighted_reciprocity() -> None:
    table, graphs = random_graphs(1)
    group = np.arange(12) % 4
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    got = weighted_reciprocity(table, group, pairs, GRAPHS)
    want = np.array([[reference_reciprocity(g, group, a, b) for a, b in pairs] for g in graphs])
    assert np.allclose(got, want, **TOLERANCE) and want.any()


def reference_edge_cv(g: nx.DiGraph, group: np.ndarray, a: int, b: int) -> float:
    weights = [w for u, v, w in g.edges(data="weight") if group[u] == a and group[v] == b]
    if not weights or statistics.fmean(weights) == 0:
        return 0.0
    return statistics.pstdev(weights) / abs(statistics.fmean(weights))


def test_edge_dispersion_both_directions() -> None:
    table, graphs = random_graphs(2)
    group = np.where(np.arange(12) < 10, np.arange(12) % 3, -1)  # two nodes belong to no service
    pairs = [(a, b) for a in range(3) for b in range(3) if a != b]
    got = edge_cv(table, group, pairs, GRAPHS)
    want = np.array([[reference_edge_cv(g, group, a, b) for a, b in pairs] for g in graphs])
    assert np.allclose(got, want, **TOLERANCE) and want.any()
    assert not np.allclose(got[:, 0], got[:, 2])  # (0, 1) and (1, 0) are different features


def reference_harmonic(g: nx.DiGraph, nodes: int) -> np.ndarray:
    h = nx.DiGraph()
    h.add_nodes_from(range(nodes))
    edges = [(u, v, w) for u, v, w in g.edges(data="weight") if u != v]
    peak = max((w for *_, w in edges), default=0.0)
    for u, v, w in edges:
        h.add_edge(u, v, distance=peak / w)
    values = nx.harmonic_centrality(h, distance="distance")
    return np.array([values[k] for k in range(nodes)])


def test_harmonic_centrality() -> None:
    table, graphs = random_graphs(3)
    got = harmonic_centrality(table, 12, GRAPHS)
    want = np.array([reference_harmonic(g, 12) for g in graphs])
    assert np.allclose(got, want, **TOLERANCE) and want.any()


def reference_flow(g: nx.DiGraph, nodes: int, sources: list[int], targets: list[int]) -> np.ndarray:
    u = nx.Graph()
    u.add_nodes_from(range(nodes))
    for a, b, w in g.edges(data="weight"):
        if a != b:
            previous = u[a][b]["weight"] if u.has_edge(a, b) else 0.0
            u.add_edge(a, b, weight=previous + w)
    out = np.zeros(nodes)
    for component in nx.connected_components(u):
        src, dst = [s for s in sources if s in component], [t for t in targets if t in component]
        if len(component) < 3 or not src or not dst:
            continue
        values = nx.current_flow_betweenness_centrality_subset(u.subgraph(component), src, dst, weight="weight")
        for node, value in values.items():
            out[node] = value
    return out


def test_current_flow_betweenness() -> None:
    _, graphs = random_graphs(4, nodes=10)
    sources, targets = [0, 1], [9]
    checked = 0
    for g in graphs:
        a = np.zeros((10, 10))
        for u, v, w in g.edges(data="weight"):
            if u != v:
                a[u, v] += w
        got = current_flow_betweenness(a + a.T, np.array(sources), np.array(targets))
        want = reference_flow(g, 10, sources, targets)
        assert np.allclose(got, want, rtol=1e-9, atol=1e-9)
        checked += bool(want.any())
    assert checked > 30  # many graphs had a component joining a source to a target


def reference_mismatch(g: nx.DiGraph, kind: np.ndarray, service: np.ndarray, s: str) -> float:
    to_pod = to_vip = 0.0
    for u, v, w in g.edges(data="weight"):
        if kind[v] == POD and service[v] == s and kind[u] != VIP and not (kind[u] == POD and service[u] == s):
            to_pod += w
        if kind[v] == VIP and service[v] == s:
            to_vip += w
    top = max(to_pod, to_vip)
    return abs(to_pod - to_vip) / top if top else 0.0


def test_vip_mismatch() -> None:
    table, graphs = random_graphs(5)
    kind = np.array([POD, POD, VIP, POD, POD, VIP, POD, VIP, INGRESS, OUTSIDE, POD, POD])
    service = np.array(["a", "a", "a", "b", "b", "b", "c", "c", INGRESS, OUTSIDE, "a", "c"])
    got = vip_mismatch(table, kind, service, ["a", "b", "c"], GRAPHS)
    want = np.array([[reference_mismatch(g, kind, service, s) for s in "abc"] for g in graphs])
    assert np.allclose(got, want, **TOLERANCE) and want.any()


@pytest.mark.parametrize("nodes", [0, 1, 2])
def test_tiny_graphs(nodes: int) -> None:
    empty = pd.DataFrame({"interval": [], "src": [], "dst": [], "bytes": []}).astype(int)
    assert harmonic_centrality(empty, nodes, 3).shape == (3, nodes)
    assert not current_flow_betweenness(np.ones((nodes, nodes)), np.array([0]), np.array([0])).any()
