"""`mimir realism` (docs/architecture.md#mimir-realism): how alike two sources of traffic for one application are.

A side is a run bundle (its capture read in-process at 1 s bins, its entity events, its run record) or the
prototype's `tshark -z conv,ip` tables with its cluster log. Both become one table of conversations per window
(unordered address pairs, as tshark counts them: frames and bytes each way, first and last second seen), whose ends
are resolved to roles (client, node, a service's pods or VIP, DNS, platform, outside, unknown). The roles of a
pair's ends make its category ("wordpress pod ↔ my-release-pxc vip"); every figure is computed per window and
summarised by its median over the selected windows, and each figure of the candidate is set against the
reference's with a distance and a tolerance.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mimir.entities import read_events, resolve, timeline
from mimir.errors import EntitiesError, IOFailure, LegacyError, UsageError
from mimir.io import Claim, atomic_path, mark_folder
from mimir.network import DNS_SERVICE, INFRA, SERVICE_NETWORK
from mimir.network import POD as ENTITY_POD
from mimir.network import VIP as ENTITY_VIP

# The prototype's minikube (VirtualBox driver, docker bridge): what its conversation tables' addresses are.
LEGACY_ADDRESSES: dict[str, Any] = {
    "load_generator": ["192.168.99.1"],  # the host running Locust (vboxnet0)
    "nodes": ["192.168.99.100", "10.0.2.15"],  # the node seen from the host (NodePort), the node's own address
    "gateway": "172.17.0.1",  # the docker bridge on the node: kubelet probes, SNAT-ed NodePort traffic
    "pod_network": "172.17.0.0/16",
    "service_network": SERVICE_NETWORK,
}

# roles of a conversation's end
CLIENT, NODE, POD, VIP, DNS, PLATFORM, OUTSIDE, UNKNOWN = (
    "client", "node", "pod", "vip", "dns", "platform", "outside", "unknown",
)  # fmt: skip
_ORDER = {CLIENT: 0, NODE: 1, POD: 2, VIP: 3, DNS: 4, PLATFORM: 5, OUTSIDE: 6, UNKNOWN: 7}

# how a figure's two values are compared: (distance, lowest within, highest within, tolerance text)
COUNT, CV, SHARE, MISMATCH = "count", "cv", "share", "mismatch"
TOLERANCE = {
    COUNT: ("ratio", 0.6, 1.4, "ratio in [0.6, 1.4]"),
    CV: ("ratio", 0.5, 2.0, "ratio in [0.5, 2]"),
    SHARE: ("difference", -0.15, 0.15, "difference ±0.15"),
    MISMATCH: ("count", 0.0, 0.0, "none"),
}

ALL, GRAPH = "all", "graph"
TOTAL_FIGURES = [
    ("IP conversations", COUNT),
    ("frames", COUNT),
    ("bytes", COUNT),
    ("bytes per conversation, median", COUNT),
    ("bytes per conversation, p90", COUNT),
    ("bytes per conversation, max", COUNT),
    ("share of conversations spanning the window", SHARE),
]
GRAPH_FIGURES = [("nodes", COUNT), ("edges", COUNT), ("degree, mean", COUNT), ("degree, max", COUNT)]
CATEGORY_FIGURES = [
    ("pairs", COUNT),
    ("frames", COUNT),
    ("bytes", COUNT),
    ("bytes per frame", COUNT),
    ("response/request bytes", COUNT),
    ("bytes per pair, median", COUNT),
    ("per-pair CV across windows, median", CV),
    ("per-pair CV across windows, p90", CV),
    ("pair churn", SHARE),
    ("direction ratio max/min, median", COUNT),
]
MISMATCH_FIGURE = "service pairs only one side has"


@dataclass(frozen=True)
class SideSpec:
    """One side as the user names it: a run bundle folder, or conversation table files with their cluster log
    (the prototype's pickle or an entities.jsonl) and optionally the log's time of the first table."""

    paths: tuple[Path, ...]
    log: Path | None = None
    at: float | None = None

    @classmethod
    def parse(cls, text: str, log: Path | None = None, at: float | None = None) -> SideSpec:
        return cls(tuple(Path(p) for p in text.split(",") if p), log, at)


@dataclass(frozen=True)
class Network:
    """Which addresses are the load generator, the node, and inside the cluster (run.json `addresses`)."""

    load_generators: frozenset[str]
    nodes: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    api_vip: str  # the `kubernetes` service: the first address of the service network

    @classmethod
    def from_addresses(cls, a: dict[str, Any], where: Path) -> Network:
        def listed(key: str) -> list[str]:
            value = a.get(key) or []
            return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]

        try:
            nets = [ipaddress.ip_network(n) for k in ("pod_network", "service_network") for n in listed(k)]
            nets += [ipaddress.ip_network(n) for n in listed("cluster_networks")]
        except ValueError as e:
            raise EntitiesError(f"{where}: addresses: {e}") from None
        services = listed("service_network")
        api = str(ipaddress.ip_network(services[0])[1]) if services else ""
        nodes = listed("node") + listed("nodes") + listed("gateway")
        return cls(frozenset(listed("load_generator")), frozenset(nodes), tuple(nets), api)

    def classify(self, ips: Iterable[str]) -> dict[str, str]:
        """Roles of addresses no entity needs to name: client, node (loopback too), inside or outside."""
        out = {}
        for ip in ips:
            address = ipaddress.ip_address(ip)
            if ip in self.load_generators:
                out[ip] = CLIENT
            elif ip in self.nodes or address.is_loopback:
                out[ip] = NODE
            elif ip == self.api_vip:
                out[ip] = PLATFORM
            else:
                out[ip] = UNKNOWN if any(address in net for net in self.networks) else OUTSIDE
        return out


@dataclass
class Side:
    """One side's conversations per window and what is needed to name their ends."""

    name: str
    conversations: pd.DataFrame  # window, a, b, frames_ab, bytes_ab, frames_ba, bytes_ba, first, last
    starts: np.ndarray  # start time of every window, in the clock of the entity events
    windows: list[int]  # the windows the figures are computed over
    spans: pd.DataFrame  # mimir.entities.timeline
    network: Network
    window: int
    notes: list[str] = field(default_factory=list)


CONVERSATION_COLUMNS = ["window", "a", "b", "frames_ab", "bytes_ab", "frames_ba", "bytes_ba", "first", "last"]


# ----------------------------------------------------------------------------------------------- reading sides


def _peak_windows(run: dict[str, Any], base: int, count: int, window: int) -> tuple[list[int], str]:
    phases = (run.get("load") or {}).get("phases") or []
    start, end = float(run["start"]), float(run["end"])
    if not phases:
        return list(range(count)), "no load phases in run.json: every window"
    length = (end - start) / len(phases)
    busiest = int(np.argmax(phases))
    lo, hi = start + busiest * length, start + (busiest + 1) * length
    begins = base + window * np.arange(count)
    inside = np.flatnonzero((begins >= lo) & (begins + window <= hi))
    if not len(inside):
        inside = np.flatnonzero((begins + window / 2 >= lo) & (begins + window / 2 < hi))
    text = f"the busiest load phase ({busiest + 1} of {len(phases)}, {phases[busiest]} users, {lo:.0f} to {hi:.0f} s)"
    return inside.tolist(), text


def bundle_side(name: str, run_dir: Path, window: int, *, peak: bool) -> Side:
    """A run bundle: its capture files (run.json `capture.files`) read at 1 s bins, whole windows from its start."""
    from mimir.capture.ingest import ingest
    from mimir.entities import load_run

    spans, _, run = load_run(run_dir)
    where = run_dir / "run.json"
    files = (run.get("capture") or {}).get("files") or []
    if not files:
        raise EntitiesError(f"{where}: capture.files lists no capture file")
    flows, summary = ingest([run_dir / f for f in files], 1, progress=False)
    if run.get("start") is None or run.get("end") is None:
        if summary.first_ts is None:
            raise EntitiesError(f"{where}: no start and end, and the capture holds no packets")
        run = {**run, "start": run.get("start", summary.first_ts), "end": run.get("end", summary.last_ts)}
    base = math.floor(float(run["start"]))
    count = int((float(run["end"]) - base) // window)
    if count < 1:
        raise UsageError(f"{run_dir}: the run is shorter than one window of {window} s")
    addresses = run.get("addresses") or {}
    if run.get("source") == "import":  # an imported prototype run: its bridge gateway and second node address
        addresses = {**LEGACY_ADDRESSES, **{k: v for k, v in addresses.items() if v}}
    f = flows.group_by(["ts", "src", "dst"]).aggregate([("packets", "sum"), ("bytes", "sum")]).to_pandas()
    offset = f["ts"].to_numpy(np.int64) - base
    keep = (offset >= 0) & (offset < count * window)
    f, offset = f[keep], offset[keep]
    codes, names = pd.factorize(pd.concat([f["src"], f["dst"]], ignore_index=True))
    src, dst = codes[: len(f)], codes[len(f) :]
    forward = src <= dst
    packets, octets = f["packets_sum"].to_numpy(np.int64), f["bytes_sum"].to_numpy(np.int64)
    g = pd.DataFrame({
        "window": offset // window,
        "a": np.minimum(src, dst),
        "b": np.maximum(src, dst),
        "frames_ab": np.where(forward, packets, 0),
        "bytes_ab": np.where(forward, octets, 0),
        "frames_ba": np.where(forward, 0, packets),
        "bytes_ba": np.where(forward, 0, octets),
        "first": offset % window,
        "last": offset % window,
    })  # fmt: skip
    sums = dict.fromkeys(("frames_ab", "bytes_ab", "frames_ba", "bytes_ba"), "sum")
    conv = g.groupby(["window", "a", "b"], as_index=False).agg({**sums, "first": "min", "last": "max"})
    names = np.asarray(names, dtype=object)
    conv["a"], conv["b"] = names[conv["a"].to_numpy()], names[conv["b"].to_numpy()]
    if peak:
        windows, chosen = _peak_windows(run, base, count, window)
    else:
        windows, chosen = list(range(count)), "every window"
    note = f"{name}: run bundle {run_dir} ({run.get('source', '?')}, {run.get('app', '?')}), {count} windows of "
    note += f"{window} s from {base}; figures over {len(windows)} of them: {chosen}"
    return Side(
        name=name,
        conversations=conv[CONVERSATION_COLUMNS],
        starts=base + window * np.arange(count, dtype=float),
        windows=windows,
        spans=spans,
        network=Network.from_addresses(addresses, where),
        window=window,
        notes=[note],
    )


_TABLE_HEADER = re.compile(r"^IPv4 Conversations\s*$", re.MULTILINE)
_SPLIT_NAME = re.compile(r"_(\d{5})_(\d{14})(?:\.\w+)?$")  # editcap -i: <prefix>_<index>_<YYYYmmddHHMMSS>


def read_tables(paths: Sequence[Path]) -> list[pd.DataFrame]:
    """Every `tshark -z conv,ip` table of the files, in file order (mimir.sources.legacy.parse_conversations)."""
    from mimir.sources.legacy import parse_conversations

    tables = []
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError as e:
            raise IOFailure(f"{path}: cannot read: {e.strerror}") from None
        parts = _TABLE_HEADER.split(text)
        chunks = parts[1:] if len(parts) > 1 else ([text] if "<->" in text else [])
        if not chunks:
            raise LegacyError(f"{path}: no `tshark -z conv,ip` table in it")
        for k, chunk in enumerate(chunks, 1):
            try:
                tables.append(parse_conversations(chunk))
            except LegacyError as e:
                raise LegacyError(f"{path}: table {k}: {e}") from None
    return tables


def _log_spans(path: Path) -> tuple[pd.DataFrame, float | None]:
    """The address timeline of a cluster log: the prototype's pickle (clock: log seconds) or an entities.jsonl
    (clock: its own timestamps). Returns the spans and, for the pickle, its last second (None for entities.jsonl)."""
    from mimir.sources.legacy import log_events, read_cluster_log

    try:
        head = path.read_bytes()[:64].lstrip()
    except FileNotFoundError:
        raise IOFailure(f"{path}: no such file") from None
    except OSError as e:
        raise IOFailure(f"{path}: cannot read: {e.strerror}") from None
    if head.startswith(b"{"):
        return timeline(read_events(path)), None
    log = read_cluster_log(path)
    return timeline(log_events(log, 0.0, path)), float(max(log, default=0))


def _held(ips: np.ndarray, times: np.ndarray, spans: pd.DataFrame) -> np.ndarray:
    """Whether an entity held each address at each time."""
    if not len(spans) or not len(ips):
        return np.zeros(len(ips), bool)
    return resolve(pd.Series(ips), pd.Series(times), spans)["entity"].notna().to_numpy()


def _table_clock(spec: SideSpec, name: str, spans: pd.DataFrame, last: float | None, inside: np.ndarray, window: int):
    """The log's time of the first table: given, from an editcap split's file name, or the best-matching time."""
    option = f"--{name}-at"
    if spec.at is not None:
        return float(spec.at), f"placed at {spec.at:g} in the log's clock by {option}"
    starts = np.unique(spans["start"].to_numpy()) if len(spans) else np.zeros(1)
    match = _SPLIT_NAME.search(spec.paths[0].name)
    if last is not None and match and 0 <= int(match[1]) * window <= last:
        at = int(match[1]) * window
        held = _held(inside, np.full(len(inside), at + window / 2), spans).sum()
        return float(at), (
            f"placed at log second {at} (split {int(match[1])} of {window} s in the file name; {held} of "
            f"{len(inside)} in-cluster addresses held then; {option} to choose another)"
        )
    held = _held(np.tile(inside, len(starts)), np.repeat(starts + window / 2, len(inside)), spans)
    counts = held.reshape(len(starts), len(inside)).sum(axis=1)
    best = int(np.argmax(counts))
    return float(starts[best]), (
        f"placed at {starts[best]:g} in the log's clock, the time whose entities hold the most of its in-cluster "
        f"addresses ({counts[best]} of {len(inside)}; {option} to choose another)"
    )


def table_side(name: str, spec: SideSpec, window: int) -> Side:
    """Conversation tables, each one window of `window` seconds in file order, named by a cluster log."""
    if spec.log is None:
        raise UsageError(f"{name}: conversation tables need their cluster log (--{name}-log)")
    spans, log_end = _log_spans(spec.log)
    tables = read_tables(spec.paths)
    frames = []
    for k, t in enumerate(tables):
        first = np.clip(np.floor(t["relative_start"].to_numpy(float)), 0, window - 1)
        last = np.clip(np.floor((t["relative_start"] + t["duration"]).to_numpy(float)), first, window - 1)
        frames.append(pd.DataFrame({
            "window": k, "a": t["a"], "b": t["b"], "frames_ab": t["frames_a_to_b"], "bytes_ab": t["bytes_a_to_b"],
            "frames_ba": t["frames_b_to_a"], "bytes_ba": t["bytes_b_to_a"],
            "first": first.astype(np.int64), "last": last.astype(np.int64),
        }))  # fmt: skip
    conv = pd.concat(frames, ignore_index=True)
    network = Network.from_addresses(LEGACY_ADDRESSES, spec.log)
    ips = pd.unique(pd.concat([conv["a"], conv["b"]]))
    roles = network.classify(ips)
    inside = np.array([ip for ip in ips if roles[ip] == UNKNOWN], dtype=object)
    at, placed = _table_clock(spec, name, spans, log_end, inside, window)
    files = ", ".join(str(p) for p in spec.paths)
    note = f"{name}: {len(tables)} conversation table(s) of {window} s from {files}, named by {spec.log}, {placed}"
    return Side(
        name=name,
        conversations=conv[CONVERSATION_COLUMNS],
        starts=at + window * np.arange(len(tables), dtype=float),
        windows=list(range(len(tables))),
        spans=spans,
        network=network,
        window=window,
        notes=[note],
    )


def load_side(name: str, spec: SideSpec, window: int, *, peak: bool = False) -> Side:
    if not spec.paths:
        raise UsageError(f"{name.upper()}: give a run bundle folder or conversation table files")
    for path in spec.paths:
        if not path.exists():
            raise IOFailure(f"{path}: no such file or directory")
    if len(spec.paths) == 1 and spec.paths[0].is_dir():
        if spec.log is not None or spec.at is not None:
            raise UsageError(f"--{name}-log and --{name}-at are for conversation tables; {spec.paths[0]} is a run")
        return bundle_side(name, spec.paths[0], window, peak=peak)
    for path in spec.paths:
        if path.is_dir():
            raise UsageError(f"{path}: a run bundle folder is a side of its own, not one of several files")
    return table_side(name, spec, window)


# -------------------------------------------------------------------------------------------- roles, categories


def _ends(side: Side, renames: dict[str, str]) -> pd.DataFrame:
    """Per (window, address): role, service and graph node, resolved at the first second the address is seen."""
    c = side.conversations
    both = pd.DataFrame({
        "window": np.concatenate([c["window"], c["window"]]),
        "ip": np.concatenate([c["a"], c["b"]]),
        "first": np.concatenate([c["first"], c["first"]]),
    })  # fmt: skip
    ends = both.groupby(["window", "ip"], as_index=False)["first"].min()
    at = side.starts[ends["window"].to_numpy()] + ends["first"].to_numpy() + 0.5
    if len(side.spans):
        found = resolve(ends["ip"], pd.Series(at), side.spans)
    else:
        found = pd.DataFrame({"entity": np.nan, "kind": np.nan, "service": np.nan}, index=ends.index)
    fixed = side.network.classify(pd.unique(ends["ip"]))
    role = ends["ip"].map(fixed).to_numpy(object)
    kind, entity = found["kind"].to_numpy(object), found["entity"].fillna("").to_numpy(object)
    service = found["service"].fillna("").replace(renames).to_numpy(object)
    namespace = pd.Series(entity, dtype=object).str.split("/", n=1).str[0].to_numpy(object)
    is_dns = service == DNS_SERVICE
    api = (kind == ENTITY_VIP) & (service == "kubernetes") & (namespace == "default")
    resolved = np.select(
        [kind == INFRA, api, is_dns & np.isin(kind, [ENTITY_POD, ENTITY_VIP]), kind == ENTITY_POD, kind == ENTITY_VIP],
        [np.where(namespace == "", NODE, PLATFORM), PLATFORM, DNS, POD, VIP],
        default="",
    )
    keep = np.isin(role, [CLIENT, NODE]) | (resolved == "")  # the run's addresses first, then the entities
    ends["role"] = np.where(keep, role, resolved)
    ends["service"] = np.where(np.isin(ends["role"], [POD, VIP]), service, "")
    ends["node"] = np.select(
        [ends["role"] == CLIENT, ends["role"] == NODE, (ends["role"] == OUTSIDE) | (entity == "")],
        [CLIENT, NODE, ends["ip"].to_numpy(object)],
        default=entity,
    )
    return ends


def _category(x: tuple[str, str], y: tuple[str, str], callers: set[tuple[str, str]]) -> tuple[str, int, str]:
    """Label, rank and requester ("x", "y", "small": the end sending fewer bytes, "": none) of a pair of roles,
    x before y in role order."""
    (kx, sx), (ky, sy) = x, y
    kinds = {kx, ky}
    rules: list[tuple[bool, tuple[str, int, str]]] = [
        (UNKNOWN in kinds, ("unknown", 11, "")),
        (PLATFORM in kinds or kinds == {NODE}, ("platform", 9, "")),
        (kinds == {DNS, NODE}, ("platform", 9, "")),  # the kubelet probing CoreDNS
        (DNS in kinds, ("dns", 8, "x" if (ky == DNS and kx != DNS) or (kx == DNS and ky == OUTSIDE) else "")),
        (OUTSIDE in kinds, ("egress", 10, "x" if ky == OUTSIDE and kx != OUTSIDE else "")),
        (kx == CLIENT and ky == NODE, ("client ↔ node", 0, "x")),
        (kx == CLIENT and ky == VIP, (f"client ↔ {sy} vip", 1, "x")),
        (kx == CLIENT and ky == POD, (f"client ↔ {sy} pod", 2, "x")),
        (kx == NODE and ky == POD, (f"node ↔ {sy} pod", 3, "x")),
        (kx == NODE and ky == VIP, (f"node ↔ {sy} vip", 4, "x")),
        (kx == POD and ky == VIP, (f"{sx} pod ↔ {sy} vip", 5, "x")),
        (kx == ky == POD and sx == sy, (f"within {sx}", 7, "")),
    ]
    for matched, result in rules:
        if matched:
            return result
    if kx == ky == POD:
        if (sx, sy) in callers and (sy, sx) not in callers:
            return f"{sx} pod ↔ {sy} pod", 6, "x"
        if (sy, sx) in callers and (sx, sy) not in callers:
            return f"{sy} pod ↔ {sx} pod", 6, "y"
        return f"{sx} pod ↔ {sy} pod", 6, "small"
    return f"{kx} {sx} ↔ {ky} {sy}".replace("  ", " "), 12, ""


def pairs(side: Side, renames: dict[str, str]) -> pd.DataFrame:
    """The side's conversations in its selected windows with both ends' roles, the category, and the bytes each
    way by requester and responder."""
    c = side.conversations[side.conversations["window"].isin(side.windows)].reset_index(drop=True)
    ends = _ends(side, renames)
    for end in ("a", "b"):
        named = ends.rename(
            columns={"ip": end, "role": f"role_{end}", "service": f"service_{end}", "node": f"node_{end}"}
        )
        c = c.merge(named.drop(columns="first"), on=["window", end], how="left", validate="many_to_one")
    roles = ["role_a", "service_a", "role_b", "service_b"]
    combos = c[roles].drop_duplicates().to_numpy(object).tolist()
    callers = {(sa, sb) for ra, sa, rb, sb in combos if ra == POD and rb == VIP}
    callers |= {(sb, sa) for ra, sa, rb, sb in combos if ra == VIP and rb == POD}
    rows = []
    for ra, sa, rb, sb in combos:  # distinct role pairs, not pairs
        swapped = (_ORDER[ra], sa) > (_ORDER[rb], sb)
        x, y = ((rb, sb), (ra, sa)) if swapped else ((ra, sa), (rb, sb))
        label, rank, who = _category(x, y, callers)
        requester = {"x": "b" if swapped else "a", "y": "a" if swapped else "b"}.get(who, who)
        rows.append((ra, sa, rb, sb, label, rank, requester))
    categories = pd.DataFrame(rows, columns=[*roles, "category", "rank", "requester"])
    c = c.merge(categories, on=roles, how="left", validate="many_to_one")
    ab, ba = c["bytes_ab"].to_numpy(float), c["bytes_ba"].to_numpy(float)
    who = c["requester"].to_numpy(object)
    c["request"] = np.select([who == "a", who == "b", who == "small"], [ab, ba, np.minimum(ab, ba)], np.nan)
    c["response"] = np.select([who == "a", who == "b", who == "small"], [ba, ab, np.maximum(ab, ba)], np.nan)
    c["frames"] = c["frames_ab"] + c["frames_ba"]
    c["bytes"] = c["bytes_ab"] + c["bytes_ba"]
    return c


# ----------------------------------------------------------------------------------------------------- figures


@dataclass
class Figures:
    """One side's figures: values[(category, figure)] (medians over the windows) and the distributions drawn."""

    values: dict[tuple[str, str], float]
    ranks: dict[str, int]
    pair_bytes: np.ndarray
    pair_cvs: np.ndarray
    windows: int


def _median(values: pd.Series | np.ndarray) -> float:
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    return float(np.median(v)) if len(v) else math.nan


def _per_window(frame: pd.DataFrame, windows: list[int], counts: Sequence[str]) -> pd.DataFrame:
    """Rows for every selected window: counts 0 where a window has none, other figures NaN there."""
    frame = frame.reindex(windows)
    frame[list(counts)] = frame[list(counts)].fillna(0)
    return frame


def _cvs(c: pd.DataFrame, windows: list[int]) -> pd.DataFrame:
    """Per pair (category, a, b): the coefficient of variation of its bytes over the windows (0 where absent) and
    how many windows it was present in."""
    per = c.groupby(["category", "a", "b", "window"])["bytes"].sum().unstack("window")
    per = per.reindex(columns=windows).fillna(0.0)
    values = per.to_numpy(float)
    mean = values.mean(axis=1)
    out = pd.DataFrame(index=per.index).reset_index()
    out["cv"] = np.where(mean > 0, values.std(axis=1) / np.where(mean > 0, mean, 1), np.nan)
    out["present"] = (values > 0).sum(axis=1)
    return out


def figures(side: Side, c: pd.DataFrame) -> Figures:
    windows, n = side.windows, len(side.windows)
    values: dict[tuple[str, str], float] = {}
    by_window = c.groupby("window")
    spanning = (c["first"] == 0) & (c["last"] == side.window - 1)
    totals = pd.DataFrame({
        "IP conversations": by_window.size(),
        "frames": by_window["frames"].sum(),
        "bytes": by_window["bytes"].sum(),
        "bytes per conversation, median": by_window["bytes"].median(),
        "bytes per conversation, p90": by_window["bytes"].quantile(0.9),
        "bytes per conversation, max": by_window["bytes"].max(),
        "share of conversations spanning the window": spanning.groupby(c["window"]).mean(),
    })  # fmt: skip
    totals = _per_window(totals, windows, ["IP conversations", "frames", "bytes"])
    for figure, _ in TOTAL_FIGURES:
        values[(ALL, figure)] = _median(totals[figure])

    # the graph: pods, VIPs and outside addresses as themselves, the node's addresses as one node, the client one
    ga, gb = c["node_a"].to_numpy(object), c["node_b"].to_numpy(object)
    codes, _ = pd.factorize(np.concatenate([ga, gb]))
    ca, cb = codes[: len(c)], codes[len(c) :]
    edges = pd.DataFrame({"window": c["window"], "u": np.minimum(ca, cb), "v": np.maximum(ca, cb)})
    edges = edges[edges["u"] != edges["v"]].drop_duplicates()
    nodes = pd.DataFrame({"window": np.concatenate([c["window"], c["window"]]), "n": codes}).drop_duplicates()
    degree = pd.concat([edges[["window", "u"]].set_axis(["window", "n"], axis=1),
                        edges[["window", "v"]].set_axis(["window", "n"], axis=1)]).value_counts()  # fmt: skip
    node_count = nodes.groupby("window").size()
    graph = pd.DataFrame({
        "nodes": node_count,
        "edges": edges.groupby("window").size(),
        "degree, mean": 2 * edges.groupby("window").size() / node_count,
        "degree, max": degree.groupby(level="window").max(),
    })  # fmt: skip
    graph = _per_window(graph, windows, ["nodes", "edges"])
    for figure, _ in GRAPH_FIGURES:
        values[(GRAPH, figure)] = _median(graph[figure])

    direction = np.maximum(c["bytes_ab"], c["bytes_ba"]) / np.minimum(c["bytes_ab"], c["bytes_ba"]).replace(0, np.nan)
    g = c.assign(direction=direction).groupby(["category", "window"])
    per = g.agg(
        pairs=("bytes", "size"),
        frames=("frames", "sum"),
        bytes=("bytes", "sum"),
        request=("request", lambda s: s.sum(min_count=1)),
        response=("response", lambda s: s.sum(min_count=1)),
        pair_median=("bytes", "median"),
        direction=("direction", "median"),
    )
    per["bytes per frame"] = per["bytes"] / per["frames"].replace(0, np.nan)
    per["response/request bytes"] = per["response"] / per["request"].where(per["request"] > 0)
    cvs = _cvs(c, windows)
    ranks = c.groupby("category")["rank"].first().to_dict()
    for category in ranks:
        rows = _per_window(per.loc[category], windows, ["pairs", "frames", "bytes"])
        mine = cvs[cvs["category"] == category]
        within = category.startswith("within ")
        figure_values = {
            "pairs": _median(rows["pairs"]),
            "frames": _median(rows["frames"]),
            "bytes": _median(rows["bytes"]),
            "bytes per frame": _median(rows["bytes per frame"]),
            "response/request bytes": _median(rows["response/request bytes"]),
            "bytes per pair, median": _median(rows["pair_median"]),
            "per-pair CV across windows, median": _median(mine["cv"]) if n >= 2 else math.nan,
            "per-pair CV across windows, p90": float(np.nanquantile(mine["cv"], 0.9))
            if n >= 2 and mine["cv"].notna().any()
            else math.nan,
            "pair churn": float((mine["present"] < n).mean()) if n >= 2 and len(mine) else math.nan,
            "direction ratio max/min, median": _median(rows["direction"]) if within else math.nan,
        }
        for figure, value in figure_values.items():
            values[(category, figure)] = value
    return Figures(
        values=values,
        ranks=ranks,
        pair_bytes=c["bytes"].to_numpy(float),
        pair_cvs=cvs["cv"].dropna().to_numpy(float) if n >= 2 else np.zeros(0),
        windows=n,
    )


# ---------------------------------------------------------------------------------------------------- compare


def distance(kind: str, reference: float, candidate: float) -> tuple[float, bool | None]:
    """The distance of two values and whether it is within the kind's tolerance (None: n/a)."""
    if math.isnan(reference) or math.isnan(candidate):
        return math.nan, None
    measure, lo, hi, _ = TOLERANCE[kind]
    if measure == "difference":
        d = candidate - reference
    elif measure == "count":
        d = candidate + reference
    elif reference == 0:
        d = 1.0 if candidate == 0 else math.inf
    else:
        d = candidate / reference
    return d, bool(lo - 1e-12 <= d <= hi + 1e-12)


def _badness(kind: str, d: float) -> float:
    measure, lo, hi, _ = TOLERANCE[kind]
    if math.isnan(d):
        return -1.0
    if measure == "ratio":
        return math.inf if d in (0, math.inf) else max(d / hi, lo / d)
    if measure == "difference":
        return abs(d) / hi
    return 0.0 if d == 0 else 1.0 + d


@dataclass
class Comparison:
    table: pd.DataFrame  # figure, category, reference, candidate, distance, tolerance, within, kind
    reference: Figures
    candidate: Figures
    only: dict[str, list[str]]  # categories only the reference / only the candidate has
    notes: list[str]
    summary: str


def _helm_renames(ref: set[str], cand: set[str]) -> dict[str, str]:
    """`release-name` on one side only, `name` on the other only: the same service under a Helm release prefix."""
    renames = {}
    for mine, other in ((ref, cand), (cand, ref)):
        for service in sorted(mine - other):
            found = [o for o in sorted(other - mine) if service.endswith("-" + o)]
            if len(found) == 1:
                renames[service] = found[0]
    return renames


def _services(side: Side) -> set[str]:
    return set(side.spans["service"].dropna()) if len(side.spans) else set()


def compare(reference: Side, candidate: Side, renames: dict[str, str] | None = None) -> Comparison:
    renames = dict(renames or {})
    auto = {k: v for k, v in _helm_renames(_services(reference), _services(candidate)).items() if k not in renames}
    renames.update(auto)
    ref_pairs, cand_pairs = pairs(reference, renames), pairs(candidate, renames)
    ref, cand = figures(reference, ref_pairs), figures(candidate, cand_pairs)
    rows = []
    for figure, kind in TOTAL_FIGURES:
        rows.append((figure, ALL, kind))
    for figure, kind in GRAPH_FIGURES:
        rows.append((figure, GRAPH, kind))
    ranks = {**cand.ranks, **ref.ranks}
    categories = sorted(ranks, key=lambda k: (ranks[k], k))
    only = {
        "reference": [k for k in categories if k in ref.ranks and k not in cand.ranks],
        "candidate": [k for k in categories if k in cand.ranks and k not in ref.ranks],
    }
    table = []
    for figure, category, kind in rows:
        r, k = ref.values[(category, figure)], cand.values[(category, figure)]
        table.append((figure, category, r, k, kind))
    table.append((MISMATCH_FIGURE, GRAPH, len(only["reference"]), len(only["candidate"]), MISMATCH))
    for category in categories:
        for figure, kind in CATEGORY_FIGURES:
            r = ref.values.get((category, figure), math.nan)
            k = cand.values.get((category, figure), math.nan)
            if math.isnan(r) and math.isnan(k):
                continue
            table.append((figure, category, r, k, kind))
    out = pd.DataFrame(table, columns=["figure", "category", "reference", "candidate", "kind"])
    out[["reference", "candidate"]] = out[["reference", "candidate"]].astype(float)
    measured = [
        distance(kind, r, k) for r, k, kind in zip(out["reference"], out["candidate"], out["kind"], strict=True)
    ]
    out["distance"] = [d for d, _ in measured]
    out["within"] = [w for _, w in measured]
    out["tolerance"] = out["kind"].map(lambda kind: TOLERANCE[kind][3])
    out = out[["figure", "category", "reference", "candidate", "distance", "tolerance", "within", "kind"]]
    notes = reference.notes + candidate.notes
    if renames:
        notes.append("services renamed on both sides: " + ", ".join(f"{a} → {b}" for a, b in sorted(renames.items())))
    return Comparison(out, ref, cand, only, notes, summary_line(out))


def _format_value(kind: str, value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if kind == SHARE:
        return f"{100 * value:.1f} %"
    if kind == MISMATCH:
        return f"{value:.0f}"
    if kind == CV:
        return f"{value:.3g}"
    a = abs(value)
    for size, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if a >= size:
            return f"{value / size:.4g}{suffix}"
    return f"{value:.4g}"


def _format_distance(kind: str, d: float) -> str:
    if math.isnan(d):
        return "n/a"
    if kind == SHARE:
        return f"{d:+.3f}"
    if kind == MISMATCH:
        return f"{d:.0f}"
    return "∞" if math.isinf(d) else f"{d:.3g}"


def summary_line(table: pd.DataFrame) -> str:
    measured = table[table["within"].notna()]
    within = int(measured["within"].astype(bool).sum())
    text = f"realism: {within} of {len(measured)} figures within tolerance"
    missing = len(table) - len(measured)
    if missing:
        text += f" ({missing} n/a)"
    if len(measured):
        bad = [_badness(kind, d) for kind, d in zip(measured["kind"], measured["distance"], strict=True)]
        worst = measured.iloc[int(np.argmax(bad))]
        text += (
            f"; worst: {worst['figure']} ({worst['category']}): reference "
            f"{_format_value(worst['kind'], worst['reference'])}, candidate "
            f"{_format_value(worst['kind'], worst['candidate'])}, "
            f"distance {_format_distance(worst['kind'], worst['distance'])}"
        )
    return text


# ----------------------------------------------------------------------------------------------------- outputs


def markdown(comparison: Comparison) -> str:
    lines = [
        "# Realism: reference against candidate",
        "",
        comparison.summary,
        "",
        "| figure | category | reference | candidate | distance | tolerance | within |",
        "|---|---|---:|---:|---:|---|:---:|",
    ]
    for row in comparison.table.itertuples(index=False):
        mark = "n/a" if row.within is None else ("yes" if row.within else "**no**")
        lines.append(
            f"| {row.figure} | {row.category} | {_format_value(row.kind, row.reference)} | "
            f"{_format_value(row.kind, row.candidate)} | {_format_distance(row.kind, row.distance)} | "
            f"{row.tolerance} | {mark} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {note}" for note in comparison.notes]
    for side, names in comparison.only.items():
        if names:
            lines.append(f"- service pairs only the {side} has: {', '.join(names)}")
    lines.append(
        "- figures are medians over the windows; per-pair CV and churn are across the windows (n/a with one); "
        "distances are candidate / reference (ratios) or candidate - reference (shares)"
    )
    return "\n".join(lines) + "\n"


def _ecdf(ax: Any, values: np.ndarray, label: str, color: str) -> None:
    v = np.sort(values[np.isfinite(values)])
    if len(v):
        ax.step(v, np.arange(1, len(v) + 1) / len(v), where="post", label=f"{label} ({len(v)})", color=color)


def plot(comparison: Comparison, stem: Path, window: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from mimir.experiment import _save

    ref, cand = comparison.reference, comparison.candidate
    colors = {"reference": "tab:blue", "candidate": "tab:orange"}
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.5))
    ax = axes[0]
    for name, side in (("reference", ref), ("candidate", cand)):
        _ecdf(ax, np.maximum(side.pair_bytes, 1), name, colors[name])
    ax.set_xscale("log")
    ax.set_title(f"bytes per IP pair per {window} s window")
    ax.set_xlabel("bytes (log scale)")
    ax.set_ylabel("share of pairs (cumulative)")
    ax.legend(title="side (pairs x windows)")

    ax = axes[1]
    rows = comparison.table[comparison.table["figure"] == "bytes per frame"]
    y = np.arange(len(rows))
    ax.barh(y - 0.2, rows["reference"].fillna(0), height=0.4, label="reference", color=colors["reference"])
    ax.barh(y + 0.2, rows["candidate"].fillna(0), height=0.4, label="candidate", color=colors["candidate"])
    ax.set_yticks(y, rows["category"], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # decades only: minor labels overlap
    ax.set_title("bytes per frame, per category (median over windows)")
    ax.set_xlabel("bytes per frame (log scale)")
    ax.legend()

    ax = axes[2]
    drawn = False
    for name, side in (("reference", ref), ("candidate", cand)):
        if len(side.pair_cvs):
            _ecdf(ax, side.pair_cvs, name, colors[name])
            drawn = True
        else:
            ax.plot([], [], color=colors[name], label=f"{name}: n/a ({side.windows} window)")
    ax.set_title(f"per-pair CV of bytes across {window} s windows")
    ax.set_xlabel("coefficient of variation (std / mean)")
    ax.set_ylabel("share of pairs (cumulative)")
    ax.legend(title="side (pairs)" if drawn else None)
    fig.suptitle("mimir realism: " + comparison.summary.removeprefix("realism: ").split(";")[0])
    fig.tight_layout()
    _save(fig, stem)
    plt.close(fig)


OUTPUTS = ("realism.csv", "realism.md", "realism.png", "realism.svg")


def write(comparison: Comparison, out: Path, window: int, claim: Claim | None = None) -> None:
    """realism.csv, realism.md, realism.png and realism.svg in `out`, each written under a temporary name where no
    file is (or, with the claim's force, over those of a previous comparison: the folder's marker names realism)."""
    if out.exists() and not out.is_dir():
        raise IOFailure(f"{out}: exists and is not a folder")
    claim = claim or Claim("realism")
    for name in OUTPUTS:
        claim.check(out / name)
    mark_folder(out, claim)
    csv = comparison.table.drop(columns="kind").copy()
    csv["within"] = csv["within"].map({True: "true", False: "false"}).fillna("")
    with atomic_path(out / "realism.csv") as tmp:
        csv.to_csv(tmp, index=False, float_format="%.6g")
    with atomic_path(out / "realism.md") as tmp:
        tmp.write_text(markdown(comparison))
    plot(comparison, out / "realism", window)


def parse_renames(text: str | None) -> dict[str, str]:
    """`old=new,...` → {old: new}."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        old, sep, new = part.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise UsageError(f"--rename: {part!r} is not OLD=NEW")
        out[old.strip()] = new.strip()
    return out


def realism(
    reference: SideSpec,
    candidate: SideSpec,
    out: Path | None = None,
    *,
    window: int = 10,
    peak: bool = False,
    renames: dict[str, str] | None = None,
    force: bool = False,
) -> Comparison:
    """Compare two sources of traffic; write the table, the markdown and the figure into `out` if given. The
    workflow calls this with the reference a config names for an application and a run bundle as candidate."""
    if window < 1:
        raise UsageError(f"--window must be at least 1 s, not {window}")
    sides = (reference, candidate)
    claim = Claim("realism", force, inputs=tuple(p for s in sides for p in (*s.paths, s.log) if p is not None))
    if out is not None:  # before the work: a refused output fails fast
        for name in OUTPUTS:
            claim.check(out / name)
    ref = load_side("reference", reference, window, peak=peak)
    cand = load_side("candidate", candidate, window, peak=peak)
    for side in (ref, cand):
        if not side.windows:
            raise UsageError(f"{side.name}: no window to compare ({side.notes[0]})")
    comparison = compare(ref, cand, renames)
    if out is not None:
        write(comparison, out, window, claim)
    return comparison
