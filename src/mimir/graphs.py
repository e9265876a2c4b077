"""Per-interval communication graphs (docs/architecture.md#graphs), kept as edge tables over all intervals at once.

The pod+VIP graph has a node per pod, service VIP, `ingress`, `outside` (and `unknown/<ip>`); the service graph
collapses each service's pods and VIP into the service. Edge weight = bytes, with packets alongside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


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


@dataclass
class CodedEdges:
    """Per-second edges over integer node ids (names factorised once per run, reused for every rate)."""

    nodes: pd.DataFrame  # name, kind, service; the index is the node id
    table: pd.DataFrame  # ts, src, dst, packets, bytes

    @classmethod
    def from_edges(cls, edges: pd.DataFrame) -> CodedEdges:
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
        ids = pd.Index(ends["name"])
        table = pd.DataFrame(
            {
                "ts": edges["ts"].to_numpy(np.int64),
                "src": ids.get_indexer(edges["src"]),
                "dst": ids.get_indexer(edges["dst"]),
                "packets": edges["packets"].to_numpy(float),
                "bytes": edges["bytes"].to_numpy(float),
            }
        )
        return cls(ends, table)

    def with_rows(self, rows: pd.DataFrame) -> CodedEdges:
        """These edges plus rows named like an edges table (injected traffic); `build_graphs` sums them."""
        if rows.empty:
            return self
        extra = CodedEdges.from_edges(rows)
        nodes = pd.concat([self.nodes, extra.nodes[~extra.nodes["name"].isin(self.nodes["name"])]], ignore_index=True)
        ids = pd.Index(nodes["name"]).get_indexer(extra.nodes["name"])
        added = extra.table.assign(src=ids[extra.table["src"]], dst=ids[extra.table["dst"]])
        return CodedEdges(nodes, pd.concat([self.table, added], ignore_index=True))


def build_graphs(edges: CodedEdges, start: int, end: float, tg: int, bin_seconds: int = 1) -> Graphs:
    """Aggregate per-second edges into intervals [start + k·tg, start + (k+1)·tg)."""
    if tg % bin_seconds:
        raise ValueError(f"the granularity {tg} s is not a multiple of the flows' bin of {bin_seconds} s")
    t = edges.table
    count = max(int(np.ceil((end - start) / tg)), 0)
    table = t.assign(interval=(t["ts"].to_numpy() - start) // tg)
    table = table[(table["interval"] >= 0) & (table["interval"] < count)]
    table = table.groupby(["interval", "src", "dst"], as_index=False, sort=True)[["bytes", "packets"]].sum()
    return Graphs(tg, start, count, edges.nodes, table)
