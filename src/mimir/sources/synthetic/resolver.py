"""DNS as pods' resolvers make it: lookups when a connection opens, a cache, ndots search expansion, forwarding.

A pod whose service resolves names looks the callee up when it opens a connection (getaddrinfo: an A and an AAAA
query, to kube-dns's VIP, answered by one of the coredns pods), unless its resolver still holds the answer (the
application's `dns.ttl`; 0: a lookup per connection, as glibc without a cache does). A name with fewer dots than
`ndots` that is not fully qualified is first tried with each search domain: for a service of the pod's own
namespace the first one answers, but an external name (benign egress) goes through every search domain, each an
NXDOMAIN for A and AAAA, before the name itself is asked; CoreDNS forwards that to the upstream resolver when its
own cache (30 s) has no answer, which is an edge from a coredns pod to the outside that benign traffic has.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mimir import network
from mimir.network import EPHEMERAL_PORTS, ipv4_int
from mimir.sources.synthetic.connections import MODE_UDP
from mimir.sources.synthetic.routing import egress_rows

if TYPE_CHECKING:
    from mimir.sources.synthetic.simulation import Simulation

EXTERNAL_NAME = "api.wordpress.org"  # the length of a typical external name (17 characters, 2 dots)
CLUSTER_DOMAIN = "svc.cluster.local"
COREDNS_CACHE = 30.0  # seconds: CoreDNS's `cache 30` in kubeadm's and minikube's Corefile
QUERY_OVERHEAD = 12 + 2 + 4 + 11  # DNS header, name length bytes and terminator, type and class, EDNS0 OPT
ANSWER_A, ANSWER_EMPTY = 16, 70  # an A record; an NXDOMAIN or NODATA answer's SOA record (AAAA in the cluster)


def add_lookups(sim: Simulation) -> None:
    """Every lookup the run's pods make, with the upstream forwarding it causes."""
    dns = sim.app.dns
    # system and job pods (negative service indices) are not the application's: their lookups are not modelled
    resolves = np.array([s.dns.resolves for s in sim.app.services.values()] + [False] * 3)
    qualified = np.array([s.dns.qualified for s in sim.app.services.values()] + [True] * 3)
    pod_service = np.array(sim.pods.service, np.int64)
    for occasion in _occasions(sim):
        asks = resolves[pod_service[occasion[1]]]
        t, pod, target = _cached(*(column[asks] for column in occasion), dns.ttl)
        if not t.shape[0]:
            continue
        internal = target >= 0
        name = np.where(internal, [_name_length(sim, j) for j in np.maximum(target, 0)], len(EXTERNAL_NAME))
        dots = np.where(internal, 4, EXTERNAL_NAME.count("."))
        expands = ~qualified[pod_service[pod]] & (dots < dns.ndots)
        search = np.where(expands, np.where(internal, 1, dns.search), 0)  # search domains tried
        _queries(sim, t, pod, name, search, internal)
        if dns.upstream:
            external = ~internal
            _forward(sim, t[external], name[external])


def _name_length(sim: Simulation, j: int) -> int:
    return len(f"{sim.names[j]}.{sim.app.namespace}.{CLUSTER_DOMAIN}")


def _occasions(sim: Simulation) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(time, pod, target) where pods resolve a name: connections they open (target: the service) and benign
    egress (target -1: an external name)."""
    out = [(t, pod, target) for t, pod, target in sim.opened]
    out += [(t, pod, np.full(t.shape[0], -1, np.int64)) for t, pod in sim.external_lookups]
    return out


def _cached(t: np.ndarray, pod: np.ndarray, target: np.ndarray, ttl: float) -> tuple[np.ndarray, ...]:
    """Only the lookups a resolver cache of `ttl` seconds lets through: the first per (pod, name) and TTL period."""
    if ttl <= 0 or not t.shape[0]:
        return t, pod, target
    period = np.floor(t / ttl).astype(np.int64)
    key = np.c_[pod, target, period]
    order = np.lexsort((t, period, target, pod))
    k = key[order]
    first = np.r_[True, (k[1:] != k[:-1]).any(axis=1)]
    pick = np.sort(order[first])
    return t[pick], pod[pick], target[pick]


def _queries(
    sim: Simulation, t: np.ndarray, pod: np.ndarray, name: np.ndarray, search: np.ndarray, internal: np.ndarray
) -> None:
    """A and AAAA for each search domain tried (the last one answers) and the name: UDP through kube-dns's VIP."""
    rng = sim.rng
    # an internal name is answered by its first search domain; an external one by itself, after the NXDOMAINs
    tries = np.maximum(search + np.where(internal, 0, 1), 1)
    per = 2 * tries  # A and AAAA each
    lookup = np.repeat(np.arange(t.shape[0]), per)
    k = np.arange(lookup.shape[0]) - np.repeat(np.cumsum(per) - per, per)
    attempt, aaaa = k // 2, k % 2
    last = attempt == tries[lookup] - 1
    query = QUERY_OVERHEAD + name[lookup] + np.where(last, 0, 20)  # a search domain lengthens the name
    answer = query + np.where(last & (aaaa == 0), ANSWER_A, ANSWER_EMPTY)
    n = lookup.shape[0]
    ip = np.array(sim.pods.ip, np.int64)
    coredns = np.array(sim.platform_pods["coredns"], np.int64)
    server = ip[coredns[rng.integers(0, coredns.shape[0], n)]]
    client = ip[pod[lookup]]
    sim.conns.add(
        t0=t[lookup] - 0.002 + attempt * 0.0004 + aaaa * 0.00005,
        dur=0.0002,
        mode=MODE_UDP,
        c1=client,
        s1=ipv4_int(network.KUBE_DNS_VIP),
        c2=client,
        s2=server,
        sport=rng.integers(*EPHEMERAL_PORTS, n),
        dport=53,
        req=query,
        resp=answer,
    )


def _forward(sim: Simulation, t: np.ndarray, name: np.ndarray) -> None:
    """CoreDNS asks the upstream resolver for external names its cache does not hold (every 30 s at most)."""
    if not t.shape[0]:
        return
    period = np.floor(t / COREDNS_CACHE)
    _, first = np.unique(period, return_index=True)
    at = np.sort(t[first])
    n = at.shape[0]
    ip = np.array(sim.pods.ip, np.int64)
    coredns = np.array(sim.platform_pods["coredns"], np.int64)
    resolver = ip[coredns[sim.rng.integers(0, coredns.shape[0], n)]]
    query = QUERY_OVERHEAD + int(name[0])
    upstream = ipv4_int(sim.app.dns.upstream)
    egress_rows(sim, at - 0.0015, resolver, upstream, 53, query, query + ANSWER_A, mode=MODE_UDP, dur=0.002)
