"""Per-interval communication graphs (design §4, "Graphs"), kept as edge tables over all intervals at once.

The pod+VIP graph has a node per pod, service VIP, `ingress`, `outside` (and `unknown/<ip>`); the service graph
collapses each service's pods and VIP into the service. Edge weight = bytes, with packets alongside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mimir.entities import POD, VIP


@dataclass
class Graphs:
    """All intervals of one granularity: `edges` rows are (interval, src, dst, bytes, packets) over node ids."""

    tg: int
    start: int
    intervals: int
    nodes: pd.DataFrame  # id (= row), name, kind, service
    edges: pd.DataFrame

    def service_edges(self) -> pd.DataFrame:
        """The service graph: (interval, src, dst, bytes, packets) over service names, self-loops kept."""
        service = self.nodes["service"].to_numpy()
        e = self.edges.assign(src=service[self.edges["src"]], dst=service[self.edges["dst"]])
        return e.groupby(["interval", "src", "dst"], as_index=False, sort=True)[["bytes", "packets"]].sum()

    def pods_of(self, service: str) -> np.ndarray:
        n = self.nodes
        return n.index[(n["service"] == service) & (n["kind"] == POD)].to_numpy()

    def vip_of(self, service: str) -> np.ndarray:
        n = self.nodes
        return n.index[(n["service"] == service) & (n["kind"] == VIP)].to_numpy()


def build_graphs(edges: pd.DataFrame, start: int, end: float, tg: int, bin_seconds: int = 1) -> Graphs:
    """Aggregate per-second edges into intervals [start + k·tg, start + (k+1)·tg)."""
    if tg % bin_seconds:
        raise ValueError(f"the granularity {tg} s is not a multiple of the flows' bin of {bin_seconds} s")
    ends = (
        pd.concat(
            [
                edges[["src", "src_kind", "src_service"]].set_axis(["name", "kind", "service"], axis=1),
                edges[["dst", "dst_kind", "dst_service"]].set_axis(["name", "kind", "service"], axis=1),
            ]
        )
        .drop_duplicates("name")
        .sort_values("name", kind="stable")
        .reset_index(drop=True)
    )
    ids = pd.Series(ends.index, index=ends["name"])
    interval = (edges["ts"].to_numpy() - start) // tg
    table = pd.DataFrame(
        {
            "interval": interval,
            "src": ids[edges["src"]].to_numpy(),
            "dst": ids[edges["dst"]].to_numpy(),
            "bytes": edges["bytes"].to_numpy(dtype=float),
            "packets": edges["packets"].to_numpy(dtype=float),
        }
    )
    count = max(int(np.ceil((end - start) / tg)), 0)
    table = table[(table["interval"] >= 0) & (table["interval"] < count)]
    table = table.groupby(["interval", "src", "dst"], as_index=False, sort=True)[["bytes", "packets"]].sum()
    return Graphs(tg, start, count, ends, table)
