"""Attack paths and synthetic exfiltration (docs/architecture.md#attack-paths and #injection).

Paths run from a sensitive service to `outside` over the communication graph learned from benign traffic (or
a policy file), shortest first, with a DNS path among them. Injection happens once per (run, rate) at the 1 s
bin; every granularity aggregates the same injected seconds. Attacks start at any second, draw their rate once
from a normal distribution, and cut it into ~500 B packets along every hop with 40 B ACKs coming back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import yaml

from mimir.entities import DNS_SERVICE, INGRESS, OUTSIDE, POD, VIP
from mimir.errors import UsageError
from mimir.spec import FeatureSpec

PACKET_BYTES = 500
ACK_BYTES = 40


@dataclass(frozen=True)
class InjectionConfig:
    """How attacks are drawn: a FeatureSpec's injection settings (their defaults live there) and the seed."""

    attack_seconds: int
    attacked_share: float  # of the run's time
    rate_sd: float  # the standard deviation of an attack's rate, as a share of the rate
    max_path_length: int  # services on a path, `outside` excluded
    seed: int

    @classmethod
    def from_spec(cls, spec: FeatureSpec, seed: int) -> InjectionConfig:
        return cls(spec.attack_seconds, spec.attacked_share, spec.rate_sd, spec.max_path_length, seed)


def run_seed(run: str, rate: float, seed: int) -> int:
    """Everything random in an injection comes from (run, rate) and the configured seed."""
    return int.from_bytes(hashlib.sha256(f"{run}|{rate!r}|{seed}".encode()).digest()[:8], "little")


def allowed_graph(edges: pd.DataFrame) -> nx.Graph:
    """Services that talk in benign traffic (either way), and `outside` beside every service that talks to the
    world (ingress or outside): data can leave the cluster only where traffic already does."""
    world = {INGRESS: OUTSIDE}
    pairs = edges[["src_service", "dst_service"]].drop_duplicates().replace(world)
    g = nx.Graph()
    for a, b in pairs.itertuples(index=False):
        if a != b and "unknown" not in (a, b):
            g.add_edge(a, b)
    return g


def policy_graph(path: Path) -> nx.Graph:
    """A network policy as the allowed graph: YAML `allow: [[service, service], ...]` (`outside` for the world)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: cannot read the policy: {e}") from None
    pairs = data.get("allow") if isinstance(data, dict) else None
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise UsageError(f"{path}: allow: expected a list of [service, service] pairs")
    g = nx.Graph()
    g.add_edges_from((str(a), str(b)) for a, b in pairs if a != b)
    return g


def attack_paths(allowed: nx.Graph, sensitive: list[str], max_length: int) -> list[tuple[str, ...]]:
    """Simple paths from each sensitive service to `outside`, shortest first, plus the DNS path."""
    paths: set[tuple[str, ...]] = set()
    for source in sensitive:
        if DNS_SERVICE in allowed and source != DNS_SERVICE:
            paths.add((source, DNS_SERVICE, OUTSIDE))  # tunnelled through lookups
        if source not in allowed or OUTSIDE not in allowed:
            continue
        for path in nx.shortest_simple_paths(allowed, source, OUTSIDE):
            if len(path) - 1 > max_length:
                break
            paths.add(tuple(path))
    return sorted(paths, key=lambda p: (len(p), p))


def _schedule(start: int, end: int, cfg: InjectionConfig, rng: np.random.Generator) -> np.ndarray:
    """Non-overlapping attack start seconds, anywhere in the run (not aligned to minutes)."""
    length = end - start
    count = int(cfg.attacked_share * length // cfg.attack_seconds)
    slack = length - count * cfg.attack_seconds
    if count == 0 or slack < 0:
        return np.zeros(0, np.int64)
    offsets = np.sort(rng.integers(0, slack + 1, count))
    return start + offsets + np.arange(count) * cfg.attack_seconds


def active_pods(edges: pd.DataFrame) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, str]]:
    """Per service, when each of its pods sent something (seconds, pod names, in time order), and each
    service's VIP: where attacks can run."""
    sent = edges.loc[edges["src_kind"] == POD, ["ts", "src", "src_service"]].drop_duplicates(ignore_index=True)
    pods = {
        service: (group["ts"].to_numpy(), group["src"].to_numpy(dtype=object))
        for service, group in sent.sort_values("ts", kind="stable").groupby("src_service", sort=True)
    }
    vips = dict(edges.loc[edges["dst_kind"] == VIP, ["dst_service", "dst"]].drop_duplicates().itertuples(index=False))
    return pods, vips


Edge = tuple[str, str, str, str, str, str]  # src, dst, src kind, src service, dst kind, dst service


@dataclass(frozen=True)
class Targets:
    """What every rate's injection into one run shares: the attack paths; where they can run (per service, when each
    of its pods sent something: seconds and pod names in time order; each service's VIP); the benign calls
    (caller, callee) between services; and the run's span [start, end) in seconds."""

    paths: list[tuple[str, ...]]
    pods: dict[str, tuple[np.ndarray, np.ndarray]]
    vips: dict[str, str]
    calls: set[tuple[str, str]]
    start: int
    end: int


@dataclass(frozen=True)
class _Attack:
    """One attack's data stream: ~500 B packets every second of `seconds`, with an ACK for every two coming back."""

    number: int
    path: tuple[str, ...]
    rate: float
    seconds: np.ndarray
    data: np.ndarray  # bytes sent per second

    def frames(self, hop: int, forms: list[Edge]) -> list[pd.DataFrame]:
        """The rows of one hop: per concrete edge (src, dst, kinds, services), the data one way and ACKs back."""
        packets = -(-self.data // PACKET_BYTES)
        acks = -(-packets // 2)
        frames = []
        for src, dst, sk, ss, dk, ds in forms:
            data_way = (src, dst, self.data, packets, sk, ss, dk, ds)
            ack_way = (dst, src, acks * ACK_BYTES, acks, dk, ds, sk, ss)
            for a_end, b_end, nbytes, count, a_kind, a_service, b_kind, b_service in (data_way, ack_way):
                frames.append(
                    pd.DataFrame(
                        {
                            "attack": self.number,
                            "path": ">".join(self.path),
                            "rate": self.rate,
                            "ts": self.seconds,
                            "hop": hop,
                            "src": a_end,
                            "dst": b_end,
                            "bytes": nbytes,
                            "packets": count,
                            "src_kind": a_kind,
                            "src_service": a_service,
                            "dst_kind": b_kind,
                            "dst_service": b_service,
                        }
                    )
                )
        return frames


COLUMNS = [
    "attack",
    "path",
    "rate",
    "ts",
    "hop",
    "src",
    "dst",
    "bytes",
    "packets",
    "src_kind",
    "src_service",
    "dst_kind",
    "dst_service",
]


def _pick_pods(
    pods: dict[str, tuple[np.ndarray, np.ndarray]], path: tuple[str, ...], t0: int, rng: np.random.Generator
) -> list[str]:
    """A pod of every service on the path but `outside`, among those active within 30 s of the attack's start."""
    chosen = []
    for service in path[:-1]:
        ts, names = pods.get(service, (np.zeros(0), np.zeros(0, dtype=object)))
        lo, hi = np.searchsorted(ts, [t0 - 30, t0 + 30])
        candidates = sorted(set(names[lo:hi] if hi > lo else names))
        chosen.append(candidates[int(rng.integers(len(candidates)))] if candidates else f"{service}/?")
    return chosen


def _hop_edges(targets: Targets, path: tuple[str, ...], hop: int, chosen: list[str]) -> list[Edge]:
    """The concrete edges that carry hop a → b."""
    a, b = path[hop], path[hop + 1]
    pa = chosen[hop]
    if b == OUTSIDE:
        return [(pa, OUTSIDE, POD, a, OUTSIDE, OUTSIDE)]
    pb = chosen[hop + 1]
    if (b, a) in targets.calls:  # b pulls the data in responses, through a's VIP
        return [(pa, pb, POD, a, POD, b), (targets.vips.get(a, pa), pb, VIP, a, POD, b)]
    return [(pa, targets.vips.get(b, pb), POD, a, VIP, b), (pa, pb, POD, a, POD, b)]  # a pushes it in requests


def inject(targets: Targets, rate_mb_per_min: float, seed: int, cfg: InjectionConfig) -> pd.DataFrame:
    """The injected traffic: one row per (attack, second, concrete edge) with bytes and packets.

    A hop a → b is a response when b calls a in benign traffic (b's pod receives it from a's pod and from a's
    VIP), else a request through b's VIP (a's pod sends to b's VIP and to b's pod); the last hop goes straight
    from the pod to `outside`. Pods are picked among those active at the attack's start.
    """
    rng = np.random.default_rng(seed)
    paths = targets.paths
    if not paths or rate_mb_per_min <= 0:
        return pd.DataFrame(columns=COLUMNS)
    frames = []
    for number, t0 in enumerate(_schedule(targets.start, targets.end, cfg, rng)):
        path = paths[number % len(paths)] if number < len(paths) else paths[int(rng.integers(len(paths)))]
        rate = max(0.0, rng.normal(rate_mb_per_min, cfg.rate_sd * rate_mb_per_min))
        chosen = _pick_pods(targets.pods, path, t0, rng)
        seconds = np.arange(t0, min(t0 + cfg.attack_seconds, targets.end))
        data = rng.poisson(rate * 1e6 / 60, seconds.shape[0]).astype(np.int64)
        attack = _Attack(number, path, rate, seconds, data)
        for hop in range(len(path) - 1):
            frames += attack.frames(hop, _hop_edges(targets, path, hop, chosen))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    return table[table["packets"] > 0].reset_index(drop=True)
