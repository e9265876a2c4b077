"""Flows to edges (docs/architecture.md#edges): addresses resolved to entities at the packet's time.

One row per (second, src entity, dst entity) with packets and bytes and both ends' kind and service. Addresses
nobody in the cluster held are `outside`, the load generator is `ingress` (kept apart from egress), and
addresses inside the cluster's ranges that no entity held are kept as `unknown/<ip>` and counted, not merged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from mimir.capture.ingest import read_table, recorded_bin, with_bin
from mimir.entities import Addressing, load_run, resolve
from mimir.errors import UsageError
from mimir.io import Claim, write_table
from mimir.network import INFRA, INGRESS, OUTSIDE, UNKNOWN

LOOPBACK = "loopback"  # the entity of the node's loopback addresses: infrastructure, like the node
EDGE_COLUMNS = ["ts", "src", "dst", "packets", "bytes", "src_kind", "src_service", "dst_kind", "dst_service"]


def _ends(ips: pd.Series, at: pd.Series, spans: pd.DataFrame, addressing: Addressing) -> pd.DataFrame:
    """Entity, kind and service of each address at each time, classifying what no entity held."""
    pairs = pd.DataFrame({"ip": ips, "t": at}).drop_duplicates(ignore_index=True)
    found = resolve(pairs["ip"], pairs["t"], spans)
    pairs = pd.concat([pairs, found], axis=1)
    missing = pairs["entity"].isna()
    addresses = pairs.loc[missing, "ip"].to_numpy()
    inside = addressing.in_cluster(addresses)
    ingress = np.isin(addresses, list(addressing.load_generators))
    text = addresses.astype(str)
    loopback = np.char.startswith(text, "127.") | (text == "::1")  # the node talking to itself (API server, etcd)
    kind = np.where(ingress, INGRESS, np.where(loopback, INFRA, np.where(inside, UNKNOWN, OUTSIDE)))
    entity = np.where(kind == UNKNOWN, "unknown/" + text, np.where(loopback, LOOPBACK, kind))
    pairs.loc[missing, "kind"] = kind
    pairs.loc[missing, "entity"] = entity
    pairs.loc[missing, "service"] = np.where(kind == UNKNOWN, UNKNOWN, np.where(loopback, "", kind))
    return pairs


def build_edges(
    flows: pa.Table, run_dir: Path, *, bin_seconds: int, keep_infra: bool = False
) -> tuple[pd.DataFrame, dict]:
    """The edges table of one run and its summary."""
    spans, addressing, _ = load_run(run_dir)
    return resolve_flows(flows, spans, addressing, bin_seconds=bin_seconds, keep_infra=keep_infra)


def resolve_flows(
    flows: pa.Table, spans: pd.DataFrame, addressing: Addressing, *, bin_seconds: int, keep_infra: bool = False
) -> tuple[pd.DataFrame, dict]:
    """Edges and their summary from flows and an address timeline: a whole run's (`build_edges`) or the closing
    interval's of `mimir live`, which thus resolves every bin exactly as the batch path does."""
    f = flows.group_by(["ts", "src", "dst"]).aggregate([("packets", "sum"), ("bytes", "sum")]).to_pandas()
    f = f.rename(columns={"packets_sum": "packets", "bytes_sum": "bytes"})
    f["t"] = f["ts"] + bin_seconds / 2  # the middle of the bin decides who held an address
    ends = _ends(pd.concat([f["src"], f["dst"]], ignore_index=True), pd.concat([f["t"], f["t"]], ignore_index=True),
                 spans, addressing)  # fmt: skip
    for side in ("src", "dst"):
        named = ends.rename(columns={"ip": side, "entity": f"{side}_entity", "kind": f"{side}_kind",
                                     "service": f"{side}_service"})  # fmt: skip
        f = f.merge(named, on=[side, "t"], how="left", validate="many_to_one")
    table = f.drop(columns=["src", "dst", "t"]).rename(columns={"src_entity": "src", "dst_entity": "dst"})
    infra = (table["src_kind"] == INFRA) | (table["dst_kind"] == INFRA)
    unknown = (table["src_kind"] == UNKNOWN) | (table["dst_kind"] == UNKNOWN)
    summary = {
        "flow_rows": len(f),
        "packets": int(table["packets"].sum()),
        "infra_packets": int(table.loc[infra, "packets"].sum()),
        "infra_kept": keep_infra,
        "unknown_in_cluster_addresses": sorted(ends.loc[ends["kind"] == UNKNOWN, "ip"].unique().tolist()),
        "unknown_in_cluster_packets": int(table.loc[unknown, "packets"].sum()),
        "outside_addresses": int(ends.loc[ends["kind"] == OUTSIDE, "ip"].nunique()),
    }
    if not keep_infra:
        table = table[~infra]
    keys = ["ts", "src", "dst", "src_kind", "src_service", "dst_kind", "dst_service"]
    table = table.groupby(keys, sort=True, as_index=False)[["packets", "bytes"]].sum()[EDGE_COLUMNS]
    summary["edges"] = len(table)
    return table.reset_index(drop=True), summary


def write_edges(
    flows_path: Path,
    run_dir: Path,
    out: Path,
    *,
    bin_seconds: int | None = None,
    keep_infra: bool = False,
    force: bool = False,
) -> dict:
    """The edges table of a flows table; its bin is the one the flows table records (`bin_seconds` must agree).

    Written as `mimir edges` may: where nothing is, or with force over a previous edges table; never over an input.
    """
    claim = Claim("edges", force, inputs=(flows_path, run_dir))
    claim.check_table(out)
    recorded = recorded_bin(flows_path, "flows")
    if bin_seconds is not None and bin_seconds != recorded:
        raise UsageError(f"{flows_path}: the flows were binned per {recorded} s, not per {bin_seconds} s")
    flows = read_table(flows_path, "flows")
    edges, summary = build_edges(flows, run_dir, bin_seconds=recorded, keep_infra=keep_infra)
    summary["bin_seconds"] = recorded
    table = with_bin(pa.Table.from_pandas(edges, preserve_index=False), recorded)
    write_table(table, out, claim, summary)
    return summary
