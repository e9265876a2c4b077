"""Attack paths and synthetic exfiltration (docs/architecture.md#attack-paths and #injection).

The attacker the MIMIR paper assumes stays inside what the cluster's network policy allows: every hop rides a
call benign traffic makes (pushed in its requests or pulled in its responses) and the data leaves only where
traffic already leaves (a client pulling it from the entry service, a service that talks to the outside, or
lookups kube-dns forwards upstream). Those are the *policy-abiding* paths; the paths of an undirected graph of
benign service pairs that break the policy somewhere are *policy-violating*. Injection happens at the 1 s bin;
every granularity aggregates the same injected seconds. An injection's attacks (when, which class, shape, path,
pods, rate factor) come from the run and the injection's seed alone, so every rate injects the same attacks,
only scaled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import yaml

from mimir.errors import UsageError
from mimir.network import DNS_SERVICE, INGRESS, OUTSIDE, POD, UNKNOWN, VIP
from mimir.spec import BURST_SECONDS, BURSTS, FeatureSpec

PACKET_BYTES = 500
ACK_BYTES = 40
ABIDING, VIOLATING = "abiding", "violating"
PHYSICAL = "physical"  # the class of a run's own exfiltration windows (real packets, judged apart from injected ones)
SHAPES = ("constant", "bursts", "mimicry")
WORLD = (INGRESS, OUTSIDE)

AttackPath = tuple[str, ...]  # services, then `ingress` or `outside`


@dataclass(frozen=True)
class InjectionConfig:
    """How attacks are drawn: a FeatureSpec's injection settings (their defaults live there) and the seed."""

    attack_seconds: int
    attacked_share: float  # of the run's time
    rate_sd: float  # the standard deviation of an attack's rate, as a share of the rate
    max_path_length: int  # services on a path, `ingress` and `outside` excluded
    seed: int

    @classmethod
    def from_spec(cls, spec: FeatureSpec, seed: int) -> InjectionConfig:
        return cls(spec.attack_seconds, spec.attacked_share, spec.rate_sd, spec.max_path_length, seed)


def injection_seed(run: str, seed: int, injection: int, rate: float | None = None) -> int:
    """The seed of one injection's structure, from the run, the configured seed and the injection's number only
    (every rate draws the same attacks: common random numbers); with `rate`, the seed of its per-second noise."""
    key = f"{run}|{seed}|{injection}" + ("" if rate is None else f"|{rate!r}")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


@dataclass(frozen=True)
class Policy:
    """What the cluster's network policy allows, as benign traffic shows it (or a policy file states it).

    `calls`: (caller, callee) service pairs; `entries`: the services clients reach (they answer `ingress`);
    `egress`: the services that open connections to `outside`; `dns_upstream`: kube-dns forwards lookups to a
    resolver outside.
    """

    calls: frozenset[tuple[str, str]]
    entries: frozenset[str]
    egress: frozenset[str]
    dns_upstream: bool

    @classmethod
    def from_edges(cls, edges: pd.DataFrame) -> Policy:
        """Calls are pods sending to a service's VIP; entries answer ingress; egress pods send to the outside."""
        pods = edges[edges["src_kind"] == POD]
        calls = pods.loc[pods["dst_kind"] == VIP, ["src_service", "dst_service"]].drop_duplicates()
        world = set(pods.loc[pods["dst_kind"] == OUTSIDE, "src_service"])
        return cls(
            frozenset(p for p in calls.itertuples(index=False, name=None) if p[0] != p[1] and UNKNOWN not in p),
            frozenset(pods.loc[pods["dst_kind"] == INGRESS, "src_service"]),
            frozenset(world - {DNS_SERVICE}),
            DNS_SERVICE in world,
        )

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, str]]) -> Policy:
        """A policy file's directed pairs (a opens connections to b), `ingress` and `outside` standing for the world:
        (world, a) makes a an entry service, (a, world) lets a send out (kube-dns: forward lookups upstream)."""
        kept = [(a, b) for a, b in pairs if a != b]
        calls = frozenset((a, b) for a, b in kept if a not in WORLD and b not in WORLD)
        out = {a for a, b in kept if b in WORLD and a not in WORLD}
        entries = frozenset(b for a, b in kept if a in WORLD and b not in WORLD)
        return cls(calls, entries, frozenset(out - {DNS_SERVICE}), DNS_SERVICE in out)

    def talks(self, a: str, b: str) -> bool:
        """Whether data may move a → b: a pushes it in requests of a call to b, or b pulls it in responses."""
        return (a, b) in self.calls or (b, a) in self.calls

    def exits(self, services: AttackPath) -> list[AttackPath]:
        """The ways out at the end of `services`: a client pulls from the entry service, an egress service sends
        out, or kube-dns forwards lookups upstream that the service before it makes."""
        last = services[-1]
        out = [(*services, INGRESS)] if last in self.entries else []
        tunnel = last == DNS_SERVICE and len(services) > 1 and (services[-2], DNS_SERVICE) in self.calls
        if last in self.egress or (tunnel and self.dns_upstream):
            out.append((*services, OUTSIDE))
        return out


def classify(path: AttackPath, policy: Policy) -> str:
    """`abiding` when every hop rides a call of `policy` and the path leaves by one of its exits, else `violating`
    (paths of physical exfiltration windows included)."""
    services = tuple(path[:-1])
    ok = (
        bool(services)
        and path[-1] in WORLD
        and not set(services) & set(WORLD)
        and len(set(path)) == len(path)
        and all(policy.talks(a, b) for a, b in pairwise(services))
        and DNS_SERVICE not in services[:-1]
        and tuple(path) in policy.exits(services)
    )
    return ABIDING if ok else VIOLATING


def _walks(neighbours: dict[str, set[str]], source: str, max_length: int) -> Iterator[AttackPath]:
    """Every simple path from `source` with at most `max_length` services."""
    stack: list[AttackPath] = [(source,)]
    while stack:
        walk = stack.pop()
        yield walk
        if len(walk) < max_length:
            stack.extend((*walk, n) for n in sorted(neighbours.get(walk[-1], ()), reverse=True) if n not in walk)


def abiding_paths(policy: Policy, sensitive: list[str], max_length: int) -> list[AttackPath]:
    """Simple paths from each sensitive service along the policy's calls (either way) that end at one of its exits,
    shortest first. The cluster's resolver is an exit (DNS tunnelling), never a relay inside the cluster: lookups
    of one service answered to another would need the attacker in CoreDNS itself."""
    neighbours: dict[str, set[str]] = {}
    for a, b in policy.calls:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    paths = {
        path
        for source in sensitive
        for walk in _walks(neighbours, source, max_length)
        if DNS_SERVICE not in walk[:-1]
        for path in policy.exits(walk)
    }
    return sorted(paths, key=lambda p: (len(p), p))


def no_abiding_reason(policy: Policy, sensitive: list[str], max_length: int) -> str:
    """Why no policy-abiding path exists, for the note a build carries instead of inventing one."""
    if not sensitive:
        return "run.json names no sensitive service"
    if not (policy.entries or policy.egress or policy.dns_upstream):
        return "benign traffic has no way out (no service answers ingress or sends to outside, no upstream DNS)"
    exits = [*(f"{s}>ingress" for s in sorted(policy.entries)), *(f"{s}>outside" for s in sorted(policy.egress))]
    if policy.dns_upstream:
        exits.append(f"{DNS_SERVICE}>outside")
    return f"no exit ({', '.join(exits)}) within {max_length} services of {', '.join(sensitive)} along benign calls"


def allowed_graph(edges: pd.DataFrame) -> nx.Graph:
    """Services that talk in benign traffic (either way), and `outside` beside every service that talks to the
    world (ingress or outside): the undirected view policy-violating paths are drawn from."""
    return policy_graph(edges[["src_service", "dst_service"]].drop_duplicates().itertuples(index=False, name=None))


def read_policy(path: Path) -> list[tuple[str, str]]:
    """A network policy file: YAML `allow: [[a, b], ...]`, a opening connections to b (`ingress` and `outside`
    for the world)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{path}: cannot read the policy: {e}") from None
    pairs = data.get("allow") if isinstance(data, dict) else None
    if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
        raise UsageError(f"{path}: allow: expected a list of [service, service] pairs")
    return [(str(a), str(b)) for a, b in pairs]


def policy_graph(pairs: Iterable[tuple[str, str]]) -> nx.Graph:
    """Service pairs (a policy file's, or benign traffic's) as the undirected allowed graph, `ingress` counted as
    `outside`, self-pairs and `unknown` left out."""
    g = nx.Graph()
    world = {INGRESS: OUTSIDE}
    for a, b in pairs:
        u, v = world.get(a, a), world.get(b, b)
        if u != v and UNKNOWN not in (u, v):
            g.add_edge(u, v)
    return g


def attack_paths(allowed: nx.Graph, sensitive: list[str], max_length: int) -> list[AttackPath]:
    """Simple paths from each sensitive service to `outside` in the undirected allowed graph, shortest first, plus
    the DNS path: the candidates policy-violating paths are drawn from."""
    paths: set[AttackPath] = set()
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


@dataclass(frozen=True)
class PathSet:
    """The attack paths of one run, per class."""

    abiding: tuple[AttackPath, ...]
    violating: tuple[AttackPath, ...]

    @classmethod
    def find(cls, policy: Policy, allowed: nx.Graph, sensitive: list[str], max_length: int) -> PathSet:
        abiding = abiding_paths(policy, sensitive, max_length)
        candidates = attack_paths(allowed, sensitive, max_length)
        return cls(tuple(abiding), tuple(p for p in candidates if classify(p, policy) == VIOLATING))

    def classes(self) -> list[tuple[str, tuple[AttackPath, ...]]]:
        """The classes that have paths, abiding first: attacks alternate between them."""
        return [(c, paths) for c, paths in ((ABIDING, self.abiding), (VIOLATING, self.violating)) if paths]


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


def client_views(edges: pd.DataFrame) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Per service that exchanges traffic with clients: the kinds of its end (pod, VIP) on the rows it sends to
    `ingress`, and on the rows `ingress` sends to it. Behind a NodePort the capture shows only the half-NAT
    responses pod → client (the clients' side is the node's, dropped as infrastructure)."""
    views: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    to_clients = edges.loc[edges["dst_kind"] == INGRESS, ["src_service", "src_kind"]].drop_duplicates()
    from_clients = edges.loc[edges["src_kind"] == INGRESS, ["dst_service", "dst_kind"]].drop_duplicates()
    for service in set(to_clients["src_service"]) | set(from_clients["dst_service"]):
        sends = to_clients.loc[to_clients["src_service"] == service, "src_kind"]
        answers = from_clients.loc[from_clients["dst_service"] == service, "dst_kind"]
        views[service] = (frozenset(sends), frozenset(answers))
    return views


@dataclass(frozen=True)
class Loads:
    """Benign bytes per second of every service pair (src_service, dst_service) over the run: what a mimicry
    attack shapes itself to."""

    rows: dict[tuple[str, str], int]
    bytes: np.ndarray  # [pair, second since the run's start]

    @classmethod
    def from_edges(cls, edges: pd.DataFrame, start: int, end: int, pairs: set[tuple[str, str]] | None = None) -> Loads:
        """The loads of `pairs` (every pair if None) over [start, end)."""
        length = max(end - start, 0)
        t = edges["ts"].to_numpy(np.int64) - start
        inside = (t >= 0) & (t < length)
        src, src_names = pd.factorize(edges["src_service"].to_numpy()[inside])
        dst, dst_names = pd.factorize(edges["dst_service"].to_numpy()[inside])
        seen, codes = np.unique(src * len(dst_names) + dst, return_inverse=True)
        names = list(zip(src_names[seen // len(dst_names)], dst_names[seen % len(dst_names)], strict=True))
        keep = np.array([pairs is None or name in pairs for name in names], bool)
        row = np.cumsum(keep) - 1  # a kept pair's row
        use = keep[codes]
        size = int(keep.sum()) * length
        flat = np.bincount(row[codes[use]] * length + t[inside][use], edges["bytes"].to_numpy(float)[inside][use], size)
        kept = [name for name, k in zip(names, keep, strict=True) if k]
        return cls({pair: k for k, pair in enumerate(kept)}, flat.reshape(len(kept), length))

    def carrier(self, path: AttackPath) -> int | None:
        """The row of the last hop whose service pair carries benign bytes in the hop's data direction."""
        for a, b in reversed(list(pairwise(path))):
            row = self.rows.get((a, b))
            if row is not None and self.bytes[row].any():
                return row
        return None


@dataclass(frozen=True)
class Targets:
    """What every rate and injection into one run shares: the attack paths and the policy that classes them;
    where attacks can run (per service, when each of its pods sent something: seconds and pod names in time
    order; each service's VIP); how clients' traffic shows in the capture (`client_views`); the benign loads
    mimicry follows; and the run's span [start, end) in seconds."""

    paths: PathSet
    policy: Policy
    pods: dict[str, tuple[np.ndarray, np.ndarray]]
    vips: dict[str, str]
    clients: dict[str, tuple[frozenset[str], frozenset[str]]]
    loads: Loads
    start: int
    end: int

    @classmethod
    def of(cls, edges: pd.DataFrame, paths: PathSet, policy: Policy, start: int, end: int) -> Targets:
        """The targets of the run whose (benign) edges are `edges`."""
        pods, vips = active_pods(edges)
        hops = {hop for path in (*paths.abiding, *paths.violating) for hop in pairwise(path)}
        loads = Loads.from_edges(edges, start, end, hops)
        return cls(paths, policy, pods, vips, client_views(edges), loads, start, end)


@dataclass(frozen=True)
class Attack:
    """One attack's structure: the same at every rate of an injection."""

    number: int
    policy: str  # abiding or violating
    shape: str
    path: AttackPath
    start: int
    factor: float  # the attack's rate as a share of the injected rate: N(1, rate_sd), not below 0
    pods: list[str]  # per service on the path
    bursts: np.ndarray  # burst starts, seconds into the attack (shape `bursts`)


def _schedule(start: int, end: int, cfg: InjectionConfig, rng: np.random.Generator) -> np.ndarray:
    """Non-overlapping attack start seconds, anywhere in the run (not aligned to minutes)."""
    length = end - start
    count = int(cfg.attacked_share * length // cfg.attack_seconds)
    slack = length - count * cfg.attack_seconds
    if count == 0 or slack < 0:
        return np.zeros(0, np.int64)
    offsets = np.sort(rng.integers(0, slack + 1, count))
    return start + offsets + np.arange(count) * cfg.attack_seconds


def _pick_pods(
    pods: dict[str, tuple[np.ndarray, np.ndarray]], path: AttackPath, t0: int, rng: np.random.Generator
) -> list[str]:
    """A pod of every service on the path, among those active within 30 s of the attack's start."""
    chosen = []
    for service in path[:-1]:
        ts, names = pods.get(service, (np.zeros(0), np.zeros(0, dtype=object)))
        lo, hi = np.searchsorted(ts, [t0 - 30, t0 + 30])
        candidates = sorted(set(names[lo:hi] if hi > lo else names))
        chosen.append(candidates[int(rng.integers(len(candidates)))] if candidates else f"{service}/?")
    return chosen


def _burst_starts(seconds: int, rng: np.random.Generator) -> np.ndarray:
    """Starts of non-overlapping bursts at random places within an attack of `seconds` (fewer if it is short)."""
    count = min(BURSTS, seconds // BURST_SECONDS)
    free = seconds - count * BURST_SECONDS
    picks = np.sort(rng.choice(free + count, count, replace=False))
    return picks + np.arange(count) * (BURST_SECONDS - 1)


def plan(targets: Targets, cfg: InjectionConfig, seed: int) -> list[Attack]:
    """One injection's attacks, from its structure seed only. Attack k alternates class (abiding, violating, ...)
    when both have paths; within a class the shape cycles constant, bursts, mimicry and the path cycles from a
    random start."""
    rng = np.random.default_rng(seed)
    classes = targets.paths.classes()
    if not classes:
        return []
    starts = _schedule(targets.start, targets.end, cfg, rng)
    first = {name: int(rng.integers(len(paths))) for name, paths in classes}
    attacks = []
    for number, t0 in enumerate(starts):
        name, paths = classes[number % len(classes)]
        turn = number // len(classes)
        path, shape = paths[(first[name] + turn) % len(paths)], SHAPES[turn % len(SHAPES)]
        factor = max(0.0, rng.normal(1.0, cfg.rate_sd))
        pods = _pick_pods(targets.pods, path, int(t0), rng)
        bursts = _burst_starts(cfg.attack_seconds, rng) if shape == "bursts" else np.zeros(0, np.int64)
        attacks.append(Attack(number, name, shape, path, int(t0), factor, pods, bursts))
    return attacks


def _spread(total: int, weights: np.ndarray) -> np.ndarray:
    """`total` bytes over seconds in proportion to `weights`, in whole bytes that add up to `total` exactly."""
    share = np.cumsum(weights) / weights.sum()
    return np.diff(np.rint(share * total), prepend=0.0).astype(np.int64)


def attack_bytes(attack: Attack, rate: float, targets: Targets, seconds: int, noise: np.random.Generator) -> np.ndarray:
    """Bytes sent per second: Poisson around the attack's rate (constant); the same total in bursts, or in
    proportion to the carrier's benign load (mimicry, constant where the carrier is silent)."""
    constant = noise.poisson(attack.factor * rate * 1e6 / 60, seconds).astype(np.int64)
    weights = np.zeros(seconds)
    if attack.shape == "bursts":
        weights[(attack.bursts[:, None] + np.arange(BURST_SECONDS)).ravel()] = 1.0
    elif attack.shape == "mimicry" and (row := targets.loads.carrier(attack.path)) is not None:
        begin = attack.start - targets.start
        weights = targets.loads.bytes[row, begin : begin + seconds]
    return _spread(int(constant.sum()), weights) if weights.sum() > 0 else constant


Way = tuple[str, str, str, str, str, str, bool]  # src, dst, their kinds, their services, carries the data


def _both_ways(forms: list[tuple[str, str, str, str, str, str]]) -> list[Way]:
    """Each concrete edge carries the data, its reverse the ACKs."""
    ways: list[Way] = []
    for src, dst, sk, ss, dk, ds in forms:
        ways += [(src, dst, sk, ss, dk, ds, True), (dst, src, dk, ds, sk, ss, False)]
    return ways


def _hop_ways(targets: Targets, path: AttackPath, hop: int, chosen: list[str]) -> list[Way]:
    """The concrete edges that carry hop a → b, each way."""
    a, b = path[hop], path[hop + 1]
    pa = chosen[hop]
    va = targets.vips.get(a, pa)
    if b == INGRESS:  # a client pulls the data: as benign clients' traffic shows (default: pod → ingress, ACKs back)
        sends, answers = targets.clients.get(a, (frozenset({POD}), frozenset({POD})))
        end = {POD: pa, VIP: va}
        data = [(end[k], INGRESS, k, a, INGRESS, INGRESS, True) for k in sorted(sends & {POD, VIP}) or [POD]]
        return data + [(INGRESS, end[k], INGRESS, INGRESS, k, a, False) for k in sorted(answers & {POD, VIP})]
    if b == OUTSIDE:  # egress: the pod's side of the SNAT, both ways
        return _both_ways([(pa, OUTSIDE, POD, a, OUTSIDE, OUTSIDE)])
    pb = chosen[hop + 1]
    if (b, a) in targets.policy.calls:  # b pulls the data in responses, through a's VIP
        return _both_ways([(pa, pb, POD, a, POD, b), (va, pb, VIP, a, POD, b)])
    return _both_ways([(pa, targets.vips.get(b, pb), POD, a, VIP, b), (pa, pb, POD, a, POD, b)])  # a pushes it


COLUMNS = [
    "attack",
    "path",
    "policy",
    "shape",
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


def _rows(attack: Attack, rate: float, data: np.ndarray, ways: list[tuple[int, Way]]) -> pd.DataFrame:
    """One attack's rows: every (way, second), data one way (~500 B packets), an ACK of 40 B per two back."""
    seconds = data.shape[0]
    packets = -(-data // PACKET_BYTES)
    acks = -(-packets // 2)
    hops, columns = np.array([h for h, _ in ways]), list(zip(*(w for _, w in ways), strict=True))
    carries = np.repeat(np.array(columns[6], bool), seconds)
    strings = {
        name: np.repeat(np.array(values, dtype=object), seconds)
        for name, values in zip(
            ["src", "dst", "src_kind", "src_service", "dst_kind", "dst_service"], columns[:6], strict=True
        )
    }
    return pd.DataFrame(
        {
            "attack": attack.number,
            "path": ">".join(attack.path),
            "policy": attack.policy,
            "shape": attack.shape,
            "rate": attack.factor * rate,
            "ts": np.tile(np.arange(attack.start, attack.start + seconds), len(ways)),
            "hop": np.repeat(hops, seconds),
            "src": strings["src"],
            "dst": strings["dst"],
            "bytes": np.where(carries, np.tile(data, len(ways)), np.tile(acks * ACK_BYTES, len(ways))),
            "packets": np.where(carries, np.tile(packets, len(ways)), np.tile(acks, len(ways))),
            **{k: strings[k] for k in ("src_kind", "src_service", "dst_kind", "dst_service")},
        }
    )


def inject(
    targets: Targets, rate_mb_per_min: float, cfg: InjectionConfig, run: str, injection: int = 0
) -> pd.DataFrame:
    """The injected traffic of one injection at one rate: one row per (attack, second, concrete edge, direction).

    A hop a → b is a response when b calls a (b's pod receives it from a's pod and from a's VIP), else a request
    through b's VIP (a's pod sends to b's VIP and to b's pod); the hop to `outside` goes from the pod, the hop to
    `ingress` takes the form benign clients' traffic has. Pods are picked among those active at the attack's start.
    """
    attacks = plan(targets, cfg, injection_seed(run, cfg.seed, injection))
    noise = np.random.default_rng(injection_seed(run, cfg.seed, injection, rate_mb_per_min))
    frames = []
    for attack in attacks:
        data = attack_bytes(attack, rate_mb_per_min, targets, cfg.attack_seconds, noise)
        ways = [
            (hop, w) for hop in range(len(attack.path) - 1) for w in _hop_ways(targets, attack.path, hop, attack.pods)
        ]
        frames.append(_rows(attack, rate_mb_per_min, data, ways))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    table = pd.concat(frames, ignore_index=True)
    return table[table["packets"] > 0].reset_index(drop=True)
