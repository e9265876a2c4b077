"""Calls become connections as applications make them, and connections get the views a node's capture shows.

Every page's call tree (sessions.py) is drawn for every visit at once: which probabilistic calls happen, which
pages fail, how long each call takes and how big it is. Then the calls are routed level by level of the tree, so
that a call's caller is the pod that served its parent: per callee service, its connection policy groups the
calls into connections (a connection per call; one per page from a caller pod, carrying all the page's queries to
ONE member, as PHP's MySQL client does; keep-alive connections reused until idle; pools of connections with a
lifetime; one long-lived stream per caller pod), and each connection is pinned to one serving pod of the callee,
picked when it opens, as a ClusterIP's DNAT does. A connection whose pod goes away is reopened to another one.

Views: a call through a service VIP shows client → VIP and client → pod (before and after the DNAT); users reach
the entry service as the application's ingress exposes it (a ClusterIP reached directly; a NodePort or load
balancer with SNAT: client ↔ node, bridge gateway ↔ pod, and the half-NAT response view pod → client).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mimir import network
from mimir.apps import ConnectionPolicy
from mimir.network import DNS_SERVICE, EPHEMERAL_PORTS, ipv4_int
from mimir.sources.synthetic.connections import MODE_OPEN, MODE_REFUSED, MODE_STREAM, MODE_TCP, MODE_UDP
from mimir.sources.synthetic.pods import SCALE_WINDOW
from mimir.spec import BURST_SECONDS, BURSTS, ExfilWindow

if TYPE_CHECKING:
    from mimir.sources.synthetic.sessions import Visits
    from mimir.sources.synthetic.simulation import Simulation

OFFLOAD_SEGMENTS = 44  # an offloaded (GSO/GRO) segment as the capture sees it: up to 64 KB, 44 segments of 1448
LOAD_BALANCER_IP = "198.51.100.80"  # TEST-NET-2: a cloud load balancer in front of the NodePort
EXFIL_PORT = 443
EXFIL_TICK = 5.0  # seconds between a constant window's chunks
BURST_TICK = 0.5  # seconds between the chunks of a burst
TUNNEL_QUERY = 250  # payload bytes of a DNS tunnelling query at most: the name holds the data (255 bytes at most)


@dataclass
class Calls:
    """Every call of every visit, in tree pre-order per visit: `parent` indexes this table (-1: from the user)."""

    t0: np.ndarray
    dur: np.ndarray
    callee: np.ndarray
    req: np.ndarray
    resp: np.ndarray
    queries: np.ndarray
    visit: np.ndarray
    user: np.ndarray
    parent: np.ndarray
    depth: np.ndarray
    refused: np.ndarray  # the call that fails a failed page: its connection is refused (SYN, then RST)

    def take(self, keep: np.ndarray) -> Calls:
        """The rows of `keep` (a mask), with parents renumbered (a dropped parent drops its subtree first)."""
        new = np.cumsum(keep) - 1
        parent = np.where(self.parent >= 0, new[np.maximum(self.parent, 0)], -1)[keep]
        cols = {k: v[keep] for k, v in vars(self).items() if k != "parent"}
        return Calls(parent=parent, **cols)


def expand_calls(sim: Simulation, visits: Visits, templates: dict[str, np.ndarray]) -> Calls:
    """Every call of every visit: timing stretched per page, sizes drawn, probabilistic calls and errors applied."""
    rng, app = sim.rng, sim.app
    n_visits = visits.t.shape[0]
    count = templates["count"][visits.page]
    total = int(count.sum())
    visit = np.repeat(np.arange(n_visits), count)
    first = np.cumsum(count) - count
    local = np.arange(total) - first[visit]
    g = templates["start"][visits.page][visit] + local  # the template call of each call
    stretch = rng.uniform(0.7, 1.6, n_visits)[visit]  # per page: how busy the services were
    parent_local = templates["parent"][g]
    parent = np.where(parent_local >= 0, first[visit] + parent_local, -1)
    depth = np.zeros(total, np.int64)
    for _ in range(64):  # call trees are shallow; each pass settles one more level
        deeper = np.where(parent >= 0, depth[np.maximum(parent, 0)] + 1, 0)
        if np.array_equal(deeper, depth):
            break
        depth = deeper
    sizes = app.sizes
    req = templates["req"][g] * rng.lognormal(0.0, sizes.sigma, total)
    resp = templates["resp"][g] * rng.lognormal(0.0, sizes.sigma, total)
    if sizes.tail_share > 0:  # heavy-tailed responses: a share drawn from a Pareto tail instead
        tail = rng.random(total) < sizes.tail_share
        resp = np.where(tail, resp * (1.0 + rng.pareto(sizes.tail_alpha, total)), resp)
    happens = rng.random(total) < templates["probability"][g]
    failed = rng.random(n_visits) < app.errors.share
    error_call = failed[visit]
    happens &= ~error_call | (local == 0) | ((local == 1) & (parent_local == 0))
    resp = np.where(error_call & (local == 0), app.errors.response, resp)
    keep = happens.copy()
    for d in range(1, int(depth.max(initial=0)) + 1):  # a call that does not happen takes its subtree with it
        level = depth == d
        keep[level] &= keep[parent[level]]
    calls = Calls(
        t0=visits.t[visit] + templates["offset"][g] * stretch,
        dur=templates["duration"][g] * stretch,
        callee=templates["callee"][g],
        req=np.rint(req).astype(np.int64),
        resp=np.rint(resp).astype(np.int64),
        queries=templates["queries"][g],
        visit=visit,
        user=visits.user[visit],
        parent=parent,
        depth=depth,
        refused=error_call & (local == 1) & (parent_local == 0),
    )
    return calls.take(keep)


@dataclass
class Served:
    """Which pod served each call (pod index), for what follows from the load (database replication)."""

    t0: np.ndarray
    callee: np.ndarray
    pod: np.ndarray
    req: np.ndarray


def route_calls(sim: Simulation, calls: Calls) -> Served:
    """Route the calls level by level: a call's caller is the pod that served its parent, or the user."""
    server = np.full(calls.t0.shape[0], -1, np.int64)
    for d in range(int(calls.depth.max(initial=-1)) + 1):
        level = calls.depth == d
        from_user = level & (calls.parent < 0)
        from_pod = level & (calls.parent >= 0)
        for mask, caller in ((from_user, -1 - calls.user), (from_pod, server[np.maximum(calls.parent, 0)])):
            for j in np.unique(calls.callee[mask]):
                rows = np.flatnonzero(mask & (calls.callee == j))
                batch = CallRows(
                    calls.t0[rows],
                    calls.dur[rows],
                    calls.req[rows],
                    calls.resp[rows],
                    calls.queries[rows],
                    calls.refused[rows],
                )
                if d == 0 and sim.app.ingress.type == "ingress-controller":
                    caller_rows = _through_controller(sim, caller[rows], batch)
                    server[rows] = connect(sim, caller_rows, int(j), batch, policy=CONTROLLER_UPSTREAM)
                    continue
                server[rows] = connect(sim, caller[rows], int(j), batch, group_hint=calls.visit[rows])
    return Served(calls.t0, calls.callee, server, calls.req)


CONTROLLER_UPSTREAM = ConnectionPolicy(kind="keep-alive", idle=60.0)  # ingress-nginx's upstream keepalive


def _through_controller(sim: Simulation, users: np.ndarray, calls: CallRows) -> np.ndarray:
    """Users reach an ingress-controller pod (NodePort with SNAT, keep-alive per user); returns, per call, the
    controller pod that forwards it to the entry service."""
    controllers = np.array(sim.platform_pods["ingress-nginx-controller"], np.int64)
    ip = np.array(sim.pods.ip, np.int64)
    policy = ConnectionPolicy(kind="keep-alive", idle=75.0)  # nginx's keepalive_timeout
    group = _groups(sim, users, calls, policy, None)
    keys, inverse = np.unique(group, return_inverse=True)
    inverse = inverse.ravel()
    pod = controllers[sim.rng.integers(0, controllers.shape[0], keys.shape[0])][inverse]
    sport = sim.rng.integers(*EPHEMERAL_PORTS, keys.shape[0])[inverse]
    client, node, gateway = (
        ipv4_int(network.LOAD_GENERATOR_IP),
        ipv4_int(network.NODE_IP),
        ipv4_int(network.POD_GATEWAY),
    )
    mode = np.where(_first_per_key(inverse, calls.t0), MODE_OPEN, MODE_STREAM)
    sim.conns.add(
        t0=calls.t0 - 0.0005,
        dur=calls.dur + 0.001,
        mode=mode,
        c1=client,
        s1=node,
        c2=gateway,
        s2=ip[pod],
        c3=client,
        s3=ip[pod],
        sport=sport,
        dport=80,
        req=calls.req,
        resp=calls.resp,
        rounds=1,
    )
    return pod


@dataclass(frozen=True)
class Reach:
    """How a batch of calls reaches its service: the connection policy, the protocol and the port."""

    policy: ConnectionPolicy
    protocol: str
    port: int


@dataclass
class CallRows:
    """Calls to one service from known callers: start, duration, bytes each way and queries (exchanges)."""

    t0: np.ndarray
    dur: np.ndarray
    req: np.ndarray
    resp: np.ndarray
    queries: np.ndarray
    refused: np.ndarray | None = None  # calls whose connection is refused (per-call and per-page connections)


def connect(
    sim: Simulation,
    caller: np.ndarray,
    j: int,
    calls: CallRows,
    *,
    group_hint: np.ndarray | None = None,
    policy: ConnectionPolicy | None = None,
    protocol: str | None = None,
    port: int | None = None,
) -> np.ndarray:
    """Group calls to service j into connections by its policy, pin each to a serving pod, add the connections.

    `caller` is a pod index, or -1 - user for the load generator's users; `group_hint` the page of each call (for
    the per-page policy); `policy`, `protocol` and `port` override the service's own (a timer's calls). Returns
    the serving pod of each call.
    """
    svc = sim.app.services[sim.names[j]]
    policy = policy or svc.connection
    group = _groups(sim, caller, calls, policy, group_hint)
    pod = np.full(caller.shape[0], -1, np.int64)
    deleted = np.array(sim.pods.deleted)
    pending = np.ones(caller.shape[0], bool)
    generation = np.zeros(caller.shape[0], np.int64)
    for _ in range(8):  # a connection whose pod is gone is reopened to another pod, until none is left
        keys, inverse = np.unique(np.c_[group, generation][pending], axis=0, return_inverse=True)
        inverse = inverse.ravel()
        opened = np.full(keys.shape[0], np.inf)
        np.minimum.at(opened, inverse, calls.t0[pending])
        pick = _pick_pods(sim, j, opened)
        pod[pending] = pick[inverse]
        gone = pending & (calls.t0 + calls.dur >= deleted[np.maximum(pod, 0)])
        gone &= pod >= 0
        if not gone.any():
            break
        generation[gone] += 1
        pending = gone
    ok = pod >= 0
    key = group * 64 + generation  # one connection per (group, generation)
    reach = Reach(policy, protocol or svc.protocol, port or svc.port)
    _emit(sim, caller[ok], j, pod[ok], key[ok], replace_rows(calls, ok), reach)
    return pod


def replace_rows(calls: CallRows, keep: np.ndarray) -> CallRows:
    return CallRows(*(None if v is None else v[keep] for v in vars(calls).values()))


def _groups(
    sim: Simulation,
    caller: np.ndarray,
    calls: CallRows,
    policy: ConnectionPolicy,
    hint: np.ndarray | None,
) -> np.ndarray:
    """The connection each call travels on, as an id unique within this batch of calls."""
    n = caller.shape[0]
    if policy.kind == "per-call" or n == 0:
        return np.arange(n, dtype=np.int64)
    if policy.kind == "per-page" and hint is not None:
        return np.unique(np.c_[caller, hint], axis=0, return_inverse=True)[1].ravel().astype(np.int64)
    if policy.kind == "pool":
        slot = sim.rng.integers(0, max(policy.size, 1), n)
        epoch = np.floor(calls.t0 / policy.lifetime).astype(np.int64) if policy.lifetime > 0 else np.zeros(n, int)
        return np.unique(np.c_[caller, slot, epoch], axis=0, return_inverse=True)[1].ravel().astype(np.int64)
    if policy.kind == "stream":
        return np.unique(caller, return_inverse=True)[1].ravel().astype(np.int64)
    # keep-alive: a caller's calls share a connection until it has been idle for `idle` seconds
    order = np.lexsort((calls.t0, caller))
    c, t, end = caller[order], calls.t0[order], (calls.t0 + calls.dur)[order]
    new = np.r_[True, c[1:] != c[:-1]]
    shift = np.cumsum(new) * 1e7  # keeps the running maximum of call ends from crossing callers
    last_end = np.maximum.accumulate(np.r_[-np.inf, (end + shift)[:-1]]) - shift
    new |= t - last_end > policy.idle
    out = np.empty(n, np.int64)
    out[order] = np.cumsum(new) - 1
    return out


def _pick_pods(sim: Simulation, j: int, t: np.ndarray) -> np.ndarray:
    """A serving pod of service j at each time, uniformly (-1 where none serves)."""
    window = np.minimum((t // SCALE_WINDOW).astype(np.int64), sim.windows - 1)
    table = sim.serving[j, window]
    choices = (table >= 0).sum(axis=1)
    pick = np.minimum((sim.rng.random(t.shape[0]) * choices).astype(np.int64), np.maximum(choices - 1, 0))
    return np.where(choices > 0, table[np.arange(t.shape[0]), pick], -1)


def tcp_columns(sim: Simulation, j: int, n: int) -> tuple[np.ndarray, float]:
    """Segment size per connection (some offloaded into larger captured segments) and the loss rate."""
    tcp = sim.app.services[sim.names[j]].tcp
    offloaded = sim.rng.random(n) < tcp.offload_share
    return np.where(offloaded, tcp.mss * OFFLOAD_SEGMENTS, tcp.mss), tcp.loss


def _emit(
    sim: Simulation,
    caller: np.ndarray,
    j: int,
    pod: np.ndarray,
    key: np.ndarray,
    calls: CallRows,
    reach: Reach,
) -> None:
    """Connections for routed calls: one row per connection that opens and closes around its calls, or one row
    per call on a long-lived connection (the first opens it)."""
    policy, protocol, dport = reach.policy, reach.protocol, reach.port
    ip = np.array(sim.pods.ip, np.int64)
    keys, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    n_conn = keys.shape[0]
    sport = sim.rng.integers(*EPHEMERAL_PORTS, n_conn)
    mss, loss = tcp_columns(sim, j, n_conn)
    if protocol != "udp" and policy.kind in ("per-call", "per-page"):  # opened for the calls, closed after the last
        start = np.full(n_conn, np.inf)
        np.minimum.at(start, inverse, calls.t0)
        end = np.zeros(n_conn)
        np.maximum.at(end, inverse, calls.t0 + calls.dur)
        sums = {c: np.bincount(inverse, getattr(calls, c), n_conn).astype(np.int64) for c in ("req", "resp", "queries")}
        refused = calls.refused if calls.refused is not None else np.zeros(caller.shape[0], bool)
        mode = np.where(np.bincount(inverse, refused, n_conn) > 0, MODE_REFUSED, MODE_TCP)
        _add(
            sim,
            caller[first],
            j,
            ip[pod[first]],
            t0=start,
            dur=end - start,
            mode=mode,
            sport=sport,
            dport=dport,
            req=sums["req"],
            resp=sums["resp"],
            rounds=np.maximum(sums["queries"], 1),
            mss=mss,
            loss=loss,
        )
        _opened(sim, start, caller[first], j)
        return
    if protocol == "udp":  # datagrams: nothing to share, and a lookup before each
        mode_rows = np.full(caller.shape[0], MODE_UDP)
        opens = np.ones(caller.shape[0], bool)
    else:  # long-lived connections: one row per call, the first opens it
        calls = replace(calls, t0=_one_at_a_time(inverse, calls.t0, calls.dur))
        mode_rows = np.where(_first_per_key(inverse, calls.t0), MODE_OPEN, MODE_STREAM)
        opens = mode_rows == MODE_OPEN
    _add(
        sim,
        caller,
        j,
        ip[pod],
        t0=calls.t0,
        dur=calls.dur,
        mode=mode_rows,
        sport=sport[inverse],
        dport=dport,
        req=calls.req,
        resp=calls.resp,
        rounds=calls.queries,
        mss=mss[inverse],
        loss=loss,
    )
    _opened(sim, calls.t0[opens], caller[opens], j)


def _one_at_a_time(connection: np.ndarray, t0: np.ndarray, dur: np.ndarray) -> np.ndarray:
    """Start times of calls on long-lived connections, each call waiting for the one before it on its connection
    to end (a connection carries one exchange at a time; concurrent calls queue, a few milliseconds at most)."""
    order = np.lexsort((t0, connection))
    c, start, d = connection[order], t0[order].copy(), dur[order]
    same = np.r_[False, c[1:] == c[:-1]]
    for _ in range(1000):  # each pass settles one more call of a queue; queues are short
        earliest = np.r_[-np.inf, (start + d)[:-1]]
        late = same & (start < earliest)
        if not late.any():
            break
        start[late] = earliest[late]
    out = np.empty_like(start)
    out[order] = start
    return out


def _opened(sim: Simulation, t: np.ndarray, caller: np.ndarray, j: int) -> None:
    """Remember where pods open connections to a service: their resolvers look its name up then."""
    pods = caller >= 0
    sim.opened.append((t[pods], caller[pods], np.full(int(pods.sum()), j, np.int64)))


def _first_per_key(inverse: np.ndarray, t: np.ndarray) -> np.ndarray:
    """True for the earliest row of each key (ties: the first in order)."""
    order = np.lexsort((t, inverse))
    first = np.zeros(inverse.shape[0], bool)
    first[order[np.r_[True, inverse[order][1:] != inverse[order][:-1]]]] = True
    return first


def _add(sim: Simulation, caller: np.ndarray, j: int, server: np.ndarray, **columns: Any) -> None:
    """Add connections to service j with every view the capture shows of them.

    A call through a VIP shows client → VIP and client → pod. Users behind a NodePort or a load balancer show
    client ↔ node (or balancer), bridge gateway ↔ pod after the SNAT, and the half-NAT view pod → client of the
    responses; when the ingress sets its own `segment`, the outer views (the node's external interface, where
    TSO hands the capture larger segments) are a connection row of their own, segmented so.
    """
    ip = np.array(sim.pods.ip, np.int64)
    n = caller.shape[0]
    from_user = caller < 0
    client = np.where(from_user, ipv4_int(network.LOAD_GENERATOR_IP), ip[np.maximum(caller, 0)])
    vip = np.full(n, sim.vip[j])
    ingress = sim.app.ingress
    if ingress.type not in ("nodeport", "loadbalancer") or not from_user.any():
        sim.conns.add(c1=client, s1=vip, c2=client, s2=server, **columns)
        return
    front = ipv4_int(network.NODE_IP if ingress.type == "nodeport" else LOAD_BALANCER_IP)
    gateway = ipv4_int(network.POD_GATEWAY)
    none = np.zeros(n, np.int64)
    if not ingress.segment:
        sim.conns.add(
            c1=client,
            s1=np.where(from_user, front, vip),
            c2=np.where(from_user, gateway, client),
            s2=server,
            c3=np.where(from_user, client, 0),
            s3=np.where(from_user, server, 0),
            **columns,
        )
        return
    inner = {k: np.broadcast_to(v, (n,)) for k, v in columns.items()}
    sim.conns.add(
        c1=np.where(from_user, gateway, client),
        s1=np.where(from_user, server, vip),
        c2=np.where(from_user, 0, client),
        s2=np.where(from_user, 0, server),
        **inner,
    )
    outer = {k: v[from_user] for k, v in inner.items()} | {"mss": ingress.segment}
    sim.conns.add(
        c1=client[from_user],
        s1=front,
        c3=client[from_user],
        s3=server[from_user],
        c2=none[from_user],
        s2=none[from_user],
        **outer,
    )


def add_periodic(sim: Simulation) -> None:
    """Timers: every pod of a service calls a service (or an address) every `interval` seconds."""
    for rule in sim.app.periodic:
        source = sim.index[rule.source]
        pods, t = pod_timers(sim, source, rule.interval)
        n = t.shape[0]
        if not n:
            continue
        # a timer sends the same protocol message each time (a ping, a heartbeat frame): sizes are not jittered
        req, resp = np.full(n, rule.request), np.full(n, rule.response)
        if rule.to in sim.index:
            policy = ConnectionPolicy(kind=rule.connection)
            j = sim.index[rule.to]
            rows = CallRows(t, np.full(n, 0.003), req, resp, np.ones(n, np.int64))
            connect(sim, pods, j, rows, policy=policy, protocol=rule.protocol, port=rule.port)
        else:
            ip = np.array(sim.pods.ip, np.int64)
            mode = MODE_UDP if rule.protocol == "udp" else MODE_TCP
            egress_rows(sim, t, ip[pods], ipv4_int(rule.to), rule.port, req, resp, mode=mode)


def pod_timers(sim: Simulation, service: int, interval: float) -> tuple[np.ndarray, np.ndarray]:
    """(pod, time) of a timer every `interval` seconds in every pod of a service over its life, random phase."""
    pods, times = [], []
    for pod, s in enumerate(sim.pods.service):
        if s != service:
            continue
        end = min(sim.pods.deleted[pod], sim.cfg.duration)
        t = np.arange(sim.pods.added[pod] + sim.rng.uniform(0, interval), end, interval)
        pods.append(np.full(t.shape[0], pod))
        times.append(t)
    if not times:
        return np.zeros(0, np.int64), np.zeros(0)
    return np.concatenate(pods).astype(np.int64), np.concatenate(times)


def add_egress(sim: Simulation) -> None:
    """Benign calls to the outside from every pod of a service."""
    ip = np.array(sim.pods.ip, np.int64)
    for rule in sim.app.egress:
        pods, t = pod_timers(sim, sim.index[rule.source], rule.interval)
        egress_rows(sim, t, ip[pods], ipv4_int(rule.to), rule.port, rule.request, rule.response)
        sim.external_lookups.append((t, pods))


def egress_rows(  # noqa: PLR0913
    sim: Simulation,
    t0: np.ndarray,
    client: np.ndarray,
    outside: int,
    port: int,
    req: int | np.ndarray,
    resp: int | np.ndarray,
    *,
    mode: int = MODE_TCP,
    dur: float = 0.05,
) -> None:
    """Calls to the outside: seen from the pod (before SNAT) and from the node (after)."""
    n = t0.shape[0]
    sim.conns.add(
        t0=t0,
        dur=dur,
        mode=mode,
        c1=client,
        s1=outside,
        c2=ipv4_int(network.NODE_IP),
        s2=outside,
        sport=sim.rng.integers(*EPHEMERAL_PORTS, n),
        dport=port,
        req=req,
        resp=resp,
    )


def add_exfiltration(sim: Simulation) -> None:
    """Real exfiltration packets along each window's path, in chunks shaped as the window says: pulled over a call
    the app makes, else pushed; out of the cluster as egress, to a client through the entry service, or tunnelled
    through DNS (`kube-dns, outside`)."""
    rng = sim.rng
    ip = np.array(sim.pods.ip, np.int64)
    calls = sim.app.edges()
    for ex in sim.cfg.exfil:
        w = min(int(ex.start // SCALE_WINDOW), sim.windows - 1)
        pods, names = [], []
        for s in ex.path[:-1]:
            if s == DNS_SERVICE:  # CoreDNS pods, query by query: the tunnel names them
                pods.append(-1)
                names.append("")
                continue
            table = sim.serving[sim.index[s], w]
            pods.append(int(table[rng.integers(0, max((table >= 0).sum(), 1))]))
            names.append(sim.pods.name[pods[-1]])
        ticks, span = _exfil_ticks(sim, ex)
        n = ticks.shape[0]
        total = ex.bytes_per_minute * ex.duration / 60
        chunk = np.rint(np.full(n, total / max(n, 1))).astype(np.int64)
        for hop, (a, b) in enumerate(zip(ex.path[:-1], ex.path[1:], strict=True)):
            if a == DNS_SERVICE:  # kube-dns → outside: forwarded with the hop before
                continue
            t = ticks + 0.01 * hop + rng.uniform(0, 0.001, n)
            src = np.full(n, ip[pods[hop]])
            if b == DNS_SERVICE:
                resolvers = _tunnel(sim, t, span, int(ip[pods[hop]]), chunk)
                names[hop + 1] = ",".join(sorted({sim.pods.name[p] for p in resolvers}))
                continue
            if b == "outside":
                egress_rows(sim, t, src, ipv4_int(network.EXFIL_DESTINATION), EXFIL_PORT, chunk, 200)
                continue
            if b == "ingress":
                _pulled_by_client(sim, t, pods[hop], chunk)
                continue
            pulled = (b, a) in calls  # b normally calls a: b pulls the data in a response
            client, server, j = (ip[pods[hop + 1]], src, a) if pulled else (src, ip[pods[hop + 1]], b)
            req, resp = (np.full(n, 300), chunk) if pulled else (chunk, np.full(n, 200))
            k = sim.index[j]
            sim.conns.add(
                t0=t,
                dur=0.01,
                mode=MODE_TCP,
                c1=client,
                s1=sim.vip[k],
                c2=client,
                s2=server,
                sport=rng.integers(*EPHEMERAL_PORTS, n),
                dport=sim.app.services[j].port,
                req=req,
                resp=resp,
                rounds=1,
            )
        sim.exfil_windows.append(
            {
                "start": sim.cfg.start + ex.start,
                "end": sim.cfg.start + ex.start + ex.duration,
                "path": list(ex.path),
                "pods": names,
                "bytes": int(chunk.sum()),
                "bytes_per_minute": ex.bytes_per_minute,
                "shape": ex.shape,
            }
        )


def _exfil_ticks(sim: Simulation, ex: ExfilWindow) -> tuple[np.ndarray, np.ndarray]:
    """When a window's chunks leave, and the seconds each may spread over: every 5 s across the window (the part
    within the run), or every 0.5 s within each of its bursts, which start on whole seconds apart from each other
    where the run's rng puts them."""
    end = min(ex.start + ex.duration, sim.cfg.duration)
    if ex.shape == "constant":
        ticks, step = np.arange(ex.start, end, EXFIL_TICK), EXFIL_TICK
    else:
        length, count = BURST_SECONDS, BURSTS
        slack = max(int(end - ex.start - count * length), 0)
        begin = ex.start + np.sort(sim.rng.integers(0, slack + 1, count)) + np.arange(count) * length
        ticks, step = (begin[:, None] + np.arange(0, length, BURST_TICK)).ravel(), BURST_TICK
        ticks = ticks[ticks < end]
    return ticks, np.minimum(step, end - ticks)


def _pulled_by_client(sim: Simulation, t: np.ndarray, pod: int, chunk: np.ndarray) -> None:
    """The hop entry → ingress: the attacker is one more user of the application, whose small requests reach the
    entry pod as the users' do (the same connection policy, VIP, NodePort and SNAT views, or ingress-controller
    pods), and whose responses carry the chunks."""
    n = t.shape[0]
    if not n:  # the window starts after the run's end
        return
    entry = sim.app.entry
    j = sim.index[entry]
    svc = sim.app.services[entry]
    rows = CallRows(t, np.full(n, 0.01), np.full(n, 300), chunk, np.ones(n, np.int64))
    caller = np.full(n, -1, np.int64)  # a user (-1 - user): the load generator's address
    policy = svc.connection
    if sim.app.ingress.type == "ingress-controller":
        caller, policy = _through_controller(sim, caller, rows), CONTROLLER_UPSTREAM
    key = _groups(sim, caller, rows, policy, np.arange(n))  # a page per request for the per-page policy
    _emit(sim, caller, j, np.full(n, pod), key, rows, Reach(policy, svc.protocol, svc.port))


def _tunnel(sim: Simulation, t: np.ndarray, span: np.ndarray, client: int, chunk: np.ndarray) -> np.ndarray:
    """DNS tunnelling: each chunk rides in the names of queries of at most 250 bytes from the pod to kube-dns's VIP,
    spread over the chunk's `span` seconds; the CoreDNS pod that gets a query forwards it to the upstream
    resolver (the app's, else the attacker's server), as no cache holds such a name, and each answer is one A
    record. Returns the CoreDNS pod of each query."""
    from mimir.sources.synthetic.resolver import ANSWER_A, QUERY_OVERHEAD  # resolver.py builds on this module

    rng = sim.rng
    count = -(-chunk // (TUNNEL_QUERY - QUERY_OVERHEAD))  # queries per chunk, names of the chunk's bytes
    tick = np.repeat(np.arange(t.shape[0]), count)
    k = np.arange(tick.shape[0]) - np.repeat(np.cumsum(count) - count, count)
    query = QUERY_OVERHEAD + chunk[tick] // count[tick] + (k < chunk[tick] % count[tick])
    at = t[tick] + k * (span[tick] / count[tick])
    n = at.shape[0]
    ip = np.array(sim.pods.ip, np.int64)
    coredns = np.array(sim.platform_pods["coredns"], np.int64)
    resolver = coredns[rng.integers(0, coredns.shape[0], n)]
    sim.conns.add(
        t0=at,
        dur=0.003,
        mode=MODE_UDP,
        c1=client,
        s1=ipv4_int(network.KUBE_DNS_VIP),
        c2=client,
        s2=ip[resolver],
        sport=rng.integers(*EPHEMERAL_PORTS, n),
        dport=53,
        req=query,
        resp=query + ANSWER_A,
    )
    upstream = ipv4_int(sim.app.dns.upstream or network.EXFIL_DESTINATION)
    egress_rows(sim, at + 0.0005, ip[resolver], upstream, 53, query, query + ANSWER_A, mode=MODE_UDP, dur=0.002)
    return resolver
