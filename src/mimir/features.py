"""The MIMIR features (docs/architecture.md#features), computed for all intervals of a granularity at once.

Each family is a function of an edge table (interval, src, dst, bytes) over integer node ids and a grouping of
nodes, so the tests can hold it against a plain networkx implementation on random graphs. The prototype's bugs
are fixed: weighted reciprocity accumulates over every edge, edge dispersion is computed in both directions,
and one service-to-pod mapping (the node table) holds for the whole run.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mimir.graphs import Graphs
from mimir.network import INGRESS, OUTSIDE, POD, VIP


def cv(values: np.ndarray) -> float:
    """Coefficient of variation (population standard deviation over |mean|); 0 for no values or a zero mean."""
    if values.size == 0:
        return 0.0
    mean = values.mean()
    return float(values.std() / abs(mean)) if mean != 0 else 0.0


def weighted_reciprocity(
    edges: pd.DataFrame, group: np.ndarray, pairs: list[tuple[int, int]], intervals: int
) -> np.ndarray:
    """[interval, pair]: Σ min(w_uv, w_vu) / Σ w_uv over the edges between the two groups' nodes (either way)."""
    out = np.zeros((intervals, len(pairs)))
    if edges.empty or not pairs:
        return out
    e = edges[["interval", "src", "dst", "bytes"]]
    gs, gd = group[e["src"].to_numpy()], group[e["dst"].to_numpy()]
    e = e[gs != gd].assign(lo=np.minimum(gs, gd)[gs != gd], hi=np.maximum(gs, gd)[gs != gd])
    back = e[["interval", "src", "dst", "bytes"]].rename(columns={"src": "dst", "dst": "src", "bytes": "back"})
    e = e.merge(back, on=["interval", "src", "dst"], how="left").fillna({"back": 0.0})
    e["mutual"] = np.minimum(e["bytes"], e["back"])
    sums = e.groupby(["interval", "lo", "hi"])[["mutual", "bytes"]].sum().reset_index()
    index = {p: k for k, p in enumerate(pairs)}
    column = np.array([index.get((lo, hi), -1) for lo, hi in zip(sums["lo"], sums["hi"], strict=True)], np.int64)
    keep = (column >= 0) & (sums["bytes"].to_numpy() > 0)
    out[sums["interval"].to_numpy()[keep], column[keep]] = (sums["mutual"] / sums["bytes"]).to_numpy()[keep]
    return out


def edge_cv(edges: pd.DataFrame, group: np.ndarray, pairs: list[tuple[int, int]], intervals: int) -> np.ndarray:
    """[interval, ordered pair (a, b)]: CV of the weights of edges from a's nodes to b's nodes (group -1: none)."""
    out = np.zeros((intervals, len(pairs)))
    if edges.empty or not pairs:
        return out
    gs, gd = group[edges["src"].to_numpy()], group[edges["dst"].to_numpy()]
    e = pd.DataFrame({"interval": edges["interval"].to_numpy(), "a": gs, "b": gd, "w": edges["bytes"].to_numpy()})
    e = e[(e["a"] >= 0) & (e["b"] >= 0)]
    stats = e.groupby(["interval", "a", "b"])["w"].agg(["mean", "std", "count"]).reset_index()
    std = stats["std"].fillna(0.0).to_numpy() * np.sqrt((stats["count"] - 1) / stats["count"]).to_numpy()  # ddof 0
    mean = stats["mean"].to_numpy()
    value = np.divide(std, np.abs(mean), out=np.zeros_like(std), where=mean != 0)
    index = {p: k for k, p in enumerate(pairs)}
    column = np.array([index.get((a, b), -1) for a, b in zip(stats["a"], stats["b"], strict=True)], np.int64)
    keep = column >= 0
    out[stats["interval"].to_numpy()[keep], column[keep]] = value[keep]
    return out


def harmonic_centrality(edges: pd.DataFrame, nodes: int, intervals: int) -> np.ndarray:
    """[interval, node]: Σ_v 1/d(v, u) with distance = 1 / (weight / the interval's largest weight).

    All intervals at once: a batched Floyd-Warshall over a [interval, node, node] distance array.
    """
    if nodes == 0 or intervals == 0:
        return np.zeros((intervals, nodes))
    w = np.zeros((intervals, nodes, nodes))
    e = edges[edges["src"] != edges["dst"]]
    np.add.at(w, (e["interval"].to_numpy(), e["src"].to_numpy(), e["dst"].to_numpy()), e["bytes"].to_numpy())
    peak = w.max(axis=(1, 2), keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.where(w > 0, peak / w, np.inf)
    for k in range(nodes):
        np.minimum(d, d[:, :, k : k + 1] + d[:, k : k + 1, :], out=d)
    d[:, np.arange(nodes), np.arange(nodes)] = np.inf
    return (1.0 / d).sum(axis=1)


def current_flow_betweenness(adjacency: np.ndarray, sources: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """networkx's normalised current-flow betweenness for subsets, per connected component of an undirected,
    weighted graph: computed where a component holds a source, a target and at least 3 nodes; 0 elsewhere."""
    n = adjacency.shape[0]
    out = np.zeros(n)
    if n < 3:
        return out
    from scipy.sparse.csgraph import connected_components

    count, label = connected_components(adjacency > 0, directed=False)
    for c in range(count):
        members = np.flatnonzero(label == c)
        src, dst = sources[np.isin(sources, members)], targets[np.isin(targets, members)]
        if members.size < 3 or src.size == 0 or dst.size == 0:
            continue
        a = adjacency[np.ix_(members, members)]
        laplacian = np.diag(a.sum(axis=1)) - a
        inverse = np.zeros_like(laplacian)
        inverse[1:, 1:] = np.linalg.inv(laplacian[1:, 1:])  # grounded at the first node
        local = {v: k for k, v in enumerate(members)}
        s_idx, t_idx = [local[v] for v in src], [local[v] for v in dst]
        u, v = np.nonzero(np.triu(a, 1))
        flow = a[u, v][:, None] * (inverse[u] - inverse[v])  # [edge, node]: current for a unit injection
        through = np.abs(flow[:, s_idx][:, :, None] - flow[:, t_idx][:, None, :]).sum(axis=(1, 2))
        b = np.zeros(members.size)
        np.add.at(b, u, 0.5 * through)
        np.add.at(b, v, 0.5 * through)
        m = members.size
        out[members] = b / ((m - 1.0) * (m - 2.0)) + 1.0 / (2 - m)
    return out


def vip_mismatch(
    edges: pd.DataFrame, kind: np.ndarray, service: np.ndarray, services: list[str], intervals: int
) -> np.ndarray:
    """[interval, service]: |P - V| / max(P, V), where P is what clients sent the service's pods directly (from a
    node that is neither a VIP nor one of its pods) and V what they sent its VIP; 0 when both are 0.

    Through a service every call shows twice with the same bytes (client → VIP, client → pod): a mismatch is
    traffic that bypassed the VIP, or a VIP answering nobody."""
    out = np.zeros((intervals, len(services)))
    if edges.empty or not services:
        return out
    src, dst = edges["src"].to_numpy(), edges["dst"].to_numpy()
    to_pod = (kind[dst] == POD) & (kind[src] != VIP) & ~((kind[src] == POD) & (service[src] == service[dst]))
    to_vip = kind[dst] == VIP
    index = {s: k for k, s in enumerate(services)}
    for mask, name in ((to_pod, "pod"), (to_vip, "vip")):
        e = pd.DataFrame(
            {
                "interval": edges["interval"].to_numpy()[mask],
                "s": service[dst][mask],
                "w": edges["bytes"].to_numpy()[mask],
            }
        )
        sums = e.groupby(["interval", "s"])["w"].sum().reset_index()
        col = np.array([index.get(s, -1) for s in sums["s"]], np.int64)
        keep = col >= 0
        target = np.zeros((intervals, len(services)))
        target[sums["interval"].to_numpy()[keep], col[keep]] = sums["w"].to_numpy()[keep]
        if name == "pod":
            pod_bytes = target
        else:
            vip_bytes = target
    top = np.maximum(pod_bytes, vip_bytes)
    return np.divide(np.abs(pod_bytes - vip_bytes), top, out=out, where=top > 0)


def compute_features(graphs: Graphs, sensitive: list[str]) -> pd.DataFrame:
    """One row per interval, one column per feature (names say the family and the services)."""
    nodes = graphs.nodes
    kind = nodes["kind"].to_numpy()
    service = nodes["service"].to_numpy()
    app_services = sorted(set(service[(kind == POD) | (kind == VIP)]))
    s_index = {s: k for k, s in enumerate(app_services)}
    group = np.array([s_index.get(s, -1) if k in (POD, VIP) else -1 for s, k in zip(service, kind, strict=True)])
    e = graphs.edges
    count = graphs.intervals
    columns: dict[str, np.ndarray] = {}

    # services' own groups, plus one group each for ingress and outside (reciprocity with the world)
    world = {INGRESS: len(app_services), OUTSIDE: len(app_services) + 1}
    rgroup = group.copy()
    for k, g in world.items():
        rgroup[kind == k] = g
    rgroup[rgroup < 0] = len(app_services) + 2  # unknown addresses: their own group
    seen = e.assign(a=rgroup[e["src"].to_numpy()], b=rgroup[e["dst"].to_numpy()])
    seen = seen[seen["a"] != seen["b"]]
    pairs = sorted({(min(a, b), max(a, b)) for a, b in zip(seen["a"], seen["b"], strict=True)})
    names = [*app_services, INGRESS, OUTSIDE, "unknown"]
    values = weighted_reciprocity(e, rgroup, pairs, count)
    for k, (a, b) in enumerate(pairs):
        columns[f"reciprocity:{names[a]}|{names[b]}"] = values[:, k]

    pod_group = np.where(kind == POD, group, -1)
    talking = e.assign(a=pod_group[e["src"].to_numpy()], b=pod_group[e["dst"].to_numpy()])
    talking = talking[(talking["a"] >= 0) & (talking["b"] >= 0) & (talking["a"] != talking["b"])]
    ordered = sorted({(a, b) for a, b in zip(talking["a"], talking["b"], strict=True)})
    values = edge_cv(e, pod_group, ordered, count)
    for k, (a, b) in enumerate(ordered):
        columns[f"edge_cv:{app_services[a]}>{app_services[b]}"] = values[:, k]

    s_edges = graphs.service_edges()
    s_names = sorted(set(s_edges["src"]) | set(s_edges["dst"]))
    s_ids = {s: k for k, s in enumerate(s_names)}
    numbered = pd.DataFrame(
        {
            "interval": s_edges["interval"],
            "src": s_edges["src"].map(s_ids),
            "dst": s_edges["dst"].map(s_ids),
            "bytes": s_edges["bytes"],
        }
    )
    values = harmonic_centrality(numbered, len(s_names), count)
    for k, s in enumerate(s_names):
        columns[f"harmonic:{s}"] = values[:, k]

    columns.update(_flow_spread(graphs, sensitive, app_services))
    values = vip_mismatch(e, kind, service, app_services, count)
    for k, s in enumerate(app_services):
        columns[f"vip_mismatch:{s}"] = values[:, k]
    return pd.DataFrame(columns, index=pd.RangeIndex(count, name="interval"))


def _flow_spread(graphs: Graphs, sensitive: list[str], app_services: list[str]) -> dict[str, np.ndarray]:
    """Per service: CV over its pods of current-flow betweenness from the sensitive pods to the world
    (`outside` and `ingress`), on the undirected pod+VIP graph of each interval (weights: bytes both ways)."""
    nodes = graphs.nodes
    kind, service = nodes["kind"].to_numpy(), nodes["service"].to_numpy()
    n = len(nodes)
    sources_all = np.flatnonzero((kind == POD) & np.isin(service, sensitive))
    targets_all = np.flatnonzero(np.isin(kind, [OUTSIDE, INGRESS]))
    out = {f"flow_cv:{s}": np.zeros(graphs.intervals) for s in app_services}
    pods = {s: np.flatnonzero((kind == POD) & (service == s)) for s in app_services}
    e = graphs.edges
    if e.empty or sources_all.size == 0 or targets_all.size == 0:
        return out
    bounds = np.searchsorted(e["interval"].to_numpy(), np.arange(graphs.intervals + 1))
    src, dst, w = e["src"].to_numpy(), e["dst"].to_numpy(), e["bytes"].to_numpy()
    is_source, is_target = np.zeros(n, bool), np.zeros(n, bool)
    is_source[sources_all], is_target[targets_all] = True, True
    for i in range(graphs.intervals):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            continue
        present = np.unique(np.r_[src[lo:hi], dst[lo:hi]])
        if not is_source[present].any() or not is_target[present].any():
            continue  # no source or no target: every value is 0
        local = np.full(n, -1)
        local[present] = np.arange(present.size)
        a = np.zeros((present.size, present.size))
        keep = src[lo:hi] != dst[lo:hi]
        np.add.at(a, (local[src[lo:hi][keep]], local[dst[lo:hi][keep]]), w[lo:hi][keep])
        values = current_flow_betweenness(
            a + a.T, local[present[is_source[present]]], local[present[is_target[present]]]
        )
        for s, members in pods.items():
            here = local[members]
            out[f"flow_cv:{s}"][i] = cv(values[here[here >= 0]])
    return out
