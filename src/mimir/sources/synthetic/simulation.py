"""The cluster's side of the simulation: pods that scale with the load, and every connection between them.

The users' pages (sessions.py) become calls from the load generator or a pod to a service's VIP, answered by one
of the service's serving pods; around them, the cluster's own traffic: DNS lookups to kube-dns, the kubelet's
probes, database replication, benign egress and, when asked for, an exfiltration along a path of services. Pods
come and go with an HPA-like autoscaler and take their addresses like Kubernetes' IPAM does, so addresses are
reused by other pods: what the entities file records and the edge attribution must resolve.
The result is a connection table (connections.py), sorted by start time; no packet exists yet.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mimir import network
from mimir.network import EPHEMERAL_PORTS
from mimir.sources.synthetic.connections import MODE_STREAM, MODE_TCP, MODE_UDP, Connections
from mimir.sources.synthetic.sessions import call_templates, step_instances, step_templates
from mimir.spec import RunSpec

SERVICE_NETWORK = ipaddress.IPv4Network(network.SERVICE_NETWORK)
POD_NETWORK = ipaddress.IPv4Network(network.POD_NETWORK)
KUBE_DNS_VIP = int(ipaddress.IPv4Address(network.KUBE_DNS_VIP))
NODE_IP = int(ipaddress.IPv4Address(network.NODE_IP))
LOAD_GENERATOR_IP = int(ipaddress.IPv4Address(network.LOAD_GENERATOR_IP))
EXFIL_DESTINATION = int(ipaddress.IPv4Address(network.EXFIL_DESTINATION))

SCALE_WINDOW = 30.0  # seconds between autoscaler decisions
SCALE_DOWN_WINDOWS = 10  # scale-down stabilisation: the highest recommendation of the last 5 minutes
TERMINATION_GRACE = 30.0  # a pod leaves the endpoints at once, but is deleted this much later
PROBE_PERIOD = 10.0
DNS_SHARE = 0.25  # share of calls preceded by lookups (the rest hit the resolver's cache)


@dataclass
class Pods:
    """Every pod of the run: service index (-1: kube-dns), IP, name, and when it served (window span)."""

    service: list[int] = field(default_factory=list)
    ip: list[int] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    added: list[float] = field(default_factory=list)
    deleted: list[float] = field(default_factory=list)  # inf while it lives to the end


class Simulation:
    """One run's cluster under its load; `run()` gives the connection table, the attributes its pods and VIPs."""

    def __init__(self, cfg: RunSpec):
        self.cfg = cfg
        self.app = cfg.app
        self.rng = np.random.default_rng(cfg.seed)
        self.names = list(self.app.services)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.windows = max(1, math.ceil(cfg.duration / SCALE_WINDOW))
        self.conns = Connections()
        self.pods = Pods()
        self.vip = self._assign_vips()
        self.exfil_windows: list[dict[str, Any]] = []
        self.replica_set: dict[str, str] = {}

    def run(self) -> dict[str, np.ndarray]:
        """The connection table of the whole run, sorted by start time, without what starts after its end."""
        sessions, steps = step_templates(self.app)
        calls = call_templates(self.app, steps, self.index)
        inst_t, inst_step = step_instances(self.cfg, sessions, self.rng)
        serving = self.create_pods(self.replicas(inst_t, inst_step, calls))
        self.add_user_calls(inst_t, inst_step, calls, serving)
        self.add_probes()
        self.add_replication(serving)
        self.add_egress()
        self.add_exfiltration(serving)
        table = self.conns.table()
        keep = table["t0"] < self.cfg.duration
        order = np.argsort(table["t0"][keep], kind="stable")
        return {c: v[keep][order] for c, v in table.items()}

    # --- addressing -----------------------------------------------------------------------------------------
    def _assign_vips(self) -> np.ndarray:
        base = int(SERVICE_NETWORK.network_address)
        taken = {KUBE_DNS_VIP, base + 1}  # kube-dns and the API server
        vips = []
        for _ in self.names:
            while (v := base + int(self.rng.integers(256, SERVICE_NETWORK.num_addresses))) in taken:
                pass
            taken.add(v)
            vips.append(v)
        return np.array(vips, np.int64)

    def _pod_name(self, service: str) -> str:
        """Like a Deployment's pods: the service, its ReplicaSet's hash, and a random suffix."""
        alphabet = "bcdfghjklmnpqrstvwxz2456789"
        if service not in self.replica_set:
            self.replica_set[service] = "".join(alphabet[i] for i in self.rng.integers(0, len(alphabet), 10))
        suffix = "".join(alphabet[i] for i in self.rng.integers(0, len(alphabet), 5))
        return f"{service}-{self.replica_set[service]}-{suffix}"

    # --- autoscaling and pods ------------------------------------------------------------------------------
    def replicas(self, inst_t: np.ndarray, inst_step: np.ndarray, calls: dict[str, np.ndarray]) -> np.ndarray:
        """Replicas per (window, service): HPA-like, from the calls each service served in the previous window."""
        n_s = len(self.names)
        per_template = np.zeros((len(calls["count"]), n_s))
        np.add.at(per_template, (calls["template"], calls["callee"]), 1.0)
        window = np.minimum((inst_t // SCALE_WINDOW).astype(np.int64), self.windows - 1)
        load = np.zeros((self.windows, len(calls["count"])))
        np.add.at(load, (window, inst_step), 1.0)
        rate = load @ per_template / SCALE_WINDOW  # calls per second per (window, service)
        out = np.zeros((self.windows, n_s), np.int64)
        for j, name in enumerate(self.names):
            svc = self.app.services[name]
            if svc.autoscale is None:
                out[:, j] = svc.replicas
                continue
            a = svc.autoscale
            desired = np.clip(np.ceil(rate[:, j] / a.calls_per_replica), a.min, a.max).astype(np.int64)
            out[0, j] = min(max(svc.replicas, a.min), a.max)
            for w in range(1, self.windows):
                out[w, j] = desired[max(0, w - SCALE_DOWN_WINDOWS) : w].max()
        return out

    def create_pods(self, replicas: np.ndarray) -> np.ndarray:
        """Pods over the run; returns the serving pods per (service, window) as a padded table (-1: none)."""
        events: list[tuple[float, int, int, int]] = []  # (time, 0 delete / 1 add, service, pod) in time order
        live: list[list[int]] = [[] for _ in self.names]
        serving = np.full((len(self.names), self.windows, int(replicas.max())), -1, np.int64)
        dns = [self._new_pod(-1, "coredns", 0.0) for _ in range(2)]
        for w in range(self.windows):
            t = w * SCALE_WINDOW
            for j, name in enumerate(self.names):
                while len(live[j]) < replicas[w, j]:
                    pod = self._new_pod(j, name, t)
                    live[j].append(pod)
                    events.append((t, 1, j, pod))
                while len(live[j]) > replicas[w, j]:
                    pod = live[j].pop()  # the newest goes first
                    self.pods.deleted[pod] = t + TERMINATION_GRACE
                    events.append((t + TERMINATION_GRACE, 0, j, pod))
                serving[j, w, : len(live[j])] = live[j]
        self._allocate_ips(events, dns)
        self.dns_pods = np.array(dns, np.int64)
        return serving

    def _new_pod(self, service: int, name: str, t: float) -> int:
        self.pods.service.append(service)
        self.pods.ip.append(0)
        self.pods.name.append(self._pod_name(name))
        self.pods.added.append(t)
        self.pods.deleted.append(math.inf)
        return len(self.pods.service) - 1

    def _allocate_ips(self, events: list[tuple[float, int, int, int]], first: list[int]) -> None:
        """Kubernetes-like IPAM: the lowest free address of the pod network; a deleted pod's address is reused."""
        free: list[int] = []
        next_fresh = int(POD_NETWORK.network_address) + 2

        def allocate() -> int:
            nonlocal next_fresh
            if free:
                free.sort()
                return free.pop(0)
            next_fresh += 1
            return next_fresh - 1

        for pod in first:
            self.pods.ip[pod] = allocate()
        for _t, kind, _j, pod in sorted(events, key=lambda e: (e[0], e[1])):
            if kind == 1:
                self.pods.ip[pod] = allocate()
            else:
                free.append(self.pods.ip[pod])

    # --- connections ----------------------------------------------------------------------------------------
    def add_user_calls(
        self, inst_t: np.ndarray, inst_step: np.ndarray, calls: dict[str, np.ndarray], serving: np.ndarray
    ) -> None:
        """Every call of every page: its template's timing stretched per page, sizes varied, a serving pod picked."""
        rng = self.rng
        n_calls = calls["count"][inst_step]
        total = int(n_calls.sum())
        inst = np.repeat(np.arange(inst_t.shape[0]), n_calls)
        first = np.cumsum(n_calls) - n_calls
        local = np.arange(total) - np.repeat(first, n_calls)
        g = calls["start"][inst_step][inst] + local  # the template call of each call
        stretch = rng.uniform(0.7, 1.6, inst_t.shape[0])[inst]  # per page: how busy the services were
        t0 = inst_t[inst] + calls["offset"][g] * stretch
        dur = calls["duration"][g] * stretch
        req = np.rint(calls["req"][g] * rng.lognormal(0.0, 0.2, total)).astype(np.int64)
        resp = np.rint(calls["resp"][g] * rng.lognormal(0.0, 0.2, total)).astype(np.int64)
        callee = calls["callee"][g]
        window = np.minimum((inst_t // SCALE_WINDOW).astype(np.int64), self.windows - 1)[inst]
        choices = (serving[callee, window] >= 0).sum(axis=1)
        pick = np.minimum((rng.random(total) * choices).astype(np.int64), choices - 1)
        pod = serving[callee, window, pick]
        ip = np.array(self.pods.ip, np.int64)
        parent = calls["parent"][g]
        caller_call = np.where(parent >= 0, np.arange(total) - local + np.maximum(parent, 0), -1)
        client = np.where(parent >= 0, ip[pod[np.maximum(caller_call, 0)]], LOAD_GENERATOR_IP)
        self._service_connections(t0, dur, client, callee, ip[pod], req, resp, dns=parent >= 0)

    def _service_connections(
        self,
        t0: np.ndarray,
        dur: np.ndarray,
        client: np.ndarray,
        callee: np.ndarray,
        server: np.ndarray,
        req: np.ndarray,
        resp: np.ndarray,
        dns: np.ndarray,
    ) -> None:
        """Calls through a service VIP: the client's side shows client→VIP, the server's side client→pod."""
        rng = self.rng
        n = t0.shape[0]
        self.conns.add(
            t0=t0,
            dur=dur,
            mode=MODE_TCP,
            c1=client,
            s1=self.vip[callee],
            c2=client,
            s2=server,
            sport=rng.integers(*EPHEMERAL_PORTS, n),
            dport=np.array([self.app.services[s].port for s in self.names])[callee],
            req=req,
            resp=resp,
        )
        self._lookups(t0[dns], client[dns])

    def _lookups(self, t: np.ndarray, client: np.ndarray) -> None:
        """DNS before a share of calls: an A and an AAAA query to kube-dns, through its VIP."""
        rng = self.rng
        asks = rng.random(t.shape[0]) < DNS_SHARE
        t, client = np.repeat(t[asks], 2), np.repeat(client[asks], 2)
        n = t.shape[0]
        resolver = np.array(self.pods.ip, np.int64)[self.dns_pods[rng.integers(0, 2, n)]]
        self.conns.add(
            t0=t - 0.0006 + np.tile([0.0, 0.00005], n // 2),
            dur=0.0002,
            mode=MODE_UDP,
            c1=client,
            s1=KUBE_DNS_VIP,
            c2=client,
            s2=resolver,
            sport=rng.integers(*EPHEMERAL_PORTS, n),
            dport=53,
            req=rng.integers(70, 100, n),
            resp=rng.integers(120, 200, n),
        )

    def add_probes(self) -> None:
        """The kubelet's readiness and liveness probes: node → pod, directly, every 10 s."""
        rng = self.rng
        ports = np.array([self.app.services[s].port for s in self.names] + [8080])
        for pod, service in enumerate(self.pods.service):
            end = min(self.pods.deleted[pod], self.cfg.duration)
            first = self.pods.added[pod] + rng.uniform(1.0, PROBE_PERIOD)
            t = np.arange(first, end, PROBE_PERIOD / 2)  # readiness and liveness interleaved
            n = t.shape[0]
            self.conns.add(
                t0=t,
                dur=0.002,
                mode=MODE_TCP,
                c1=NODE_IP,
                s1=self.pods.ip[pod],
                sport=rng.integers(*EPHEMERAL_PORTS, n),
                dport=ports[service],
                req=rng.integers(100, 140, n),
                resp=rng.integers(60, 160, n),
            )

    def add_replication(self, serving: np.ndarray) -> None:
        """Database members stream to each other directly (pod to pod) on open connections."""
        rng = self.rng
        ip = np.array(self.pods.ip, np.int64)
        for rule in self.app.replication:
            j = self.index[rule.service]
            ticks = np.arange(rng.uniform(0, rule.interval), self.cfg.duration, rule.interval)
            window = np.minimum((ticks // SCALE_WINDOW).astype(np.int64), self.windows - 1)
            ports: dict[tuple[int, int], int] = {}
            for w in np.unique(window):
                members = serving[j, w][serving[j, w] >= 0]
                at = ticks[window == w]
                for a in members:
                    for b in members:
                        if a == b:
                            continue
                        sport = ports.setdefault((int(a), int(b)), int(rng.integers(*EPHEMERAL_PORTS)))
                        n = at.shape[0]
                        size = rng.poisson(rule.bytes_per_second * rule.interval, n)
                        self.conns.add(
                            t0=at + rng.uniform(0, 0.01, n),
                            dur=0.001,
                            mode=MODE_STREAM,
                            c1=ip[a],
                            s1=ip[b],
                            sport=sport,
                            dport=rule.port,
                            req=size,
                            resp=0,
                        )

    def add_egress(self) -> None:
        """Benign calls to the outside: seen from the pod (before SNAT) and from the node (after)."""
        rng = self.rng
        for rule in self.app.egress:
            j = self.index[rule.source]
            outside = int(ipaddress.IPv4Address(rule.to))
            for pod, service in enumerate(self.pods.service):
                if service != j:
                    continue
                end = min(self.pods.deleted[pod], self.cfg.duration)
                t = np.arange(self.pods.added[pod] + rng.uniform(0, rule.interval), end, rule.interval)
                n = t.shape[0]
                client = np.full(n, self.pods.ip[pod])
                self._egress_connections(t, client, outside, rule.port, rule.request, rule.response)
                self._lookups(t, client)

    def _egress_connections(
        self, t0: np.ndarray, client: np.ndarray, outside: int, port: int, req: int | np.ndarray, resp: int
    ) -> None:
        """Calls to the outside: seen from the pod (before SNAT) and from the node (after)."""
        self.conns.add(
            t0=t0,
            dur=0.05,
            mode=MODE_TCP,
            c1=client,
            s1=outside,
            c2=NODE_IP,
            s2=outside,
            sport=self.rng.integers(*EPHEMERAL_PORTS, t0.shape[0]),
            dport=port,
            req=req,
            resp=resp,
        )

    def add_exfiltration(self, serving: np.ndarray) -> None:
        """Real exfiltration packets along each window's path: pulled over a call the app makes, else pushed."""
        rng = self.rng
        ip = np.array(self.pods.ip, np.int64)
        calls = self.app.edges()
        for ex in self.cfg.exfil:
            w = min(int(ex.start // SCALE_WINDOW), self.windows - 1)
            pods = [
                int(serving[self.index[s], w, rng.integers(0, (serving[self.index[s], w] >= 0).sum())])
                for s in ex.path[:-1]
            ]
            ticks = np.arange(ex.start, min(ex.start + ex.duration, self.cfg.duration), 5.0)
            total = ex.bytes_per_minute * ex.duration / 60
            chunk = np.full(ticks.shape[0], total / max(ticks.shape[0], 1))
            chunk = np.rint(chunk).astype(np.int64)
            for hop, (a, b) in enumerate(zip(ex.path[:-1], ex.path[1:], strict=True)):
                t = ticks + 0.01 * hop + rng.uniform(0, 0.001, ticks.shape[0])
                src = np.full(ticks.shape[0], ip[pods[hop]])
                n = ticks.shape[0]
                if b == "outside":
                    self._egress_connections(t, src, EXFIL_DESTINATION, 443, chunk, 200)
                elif (b, a) in calls:  # b normally calls a: b pulls the data in a response
                    dst = np.full(n, ip[pods[hop + 1]])
                    self._service_connections(
                        t,
                        np.full(n, 0.01),
                        dst,
                        np.full(n, self.index[a]),
                        src,
                        np.full(n, 300),
                        chunk,
                        dns=np.zeros(n, bool),
                    )
                else:  # a pushes the data to b in a request
                    server = np.full(n, ip[pods[hop + 1]])
                    self._service_connections(
                        t,
                        np.full(n, 0.01),
                        src,
                        np.full(n, self.index[b]),
                        server,
                        chunk,
                        np.full(n, 200),
                        dns=np.zeros(n, bool),
                    )
            self.exfil_windows.append(
                {
                    "start": self.cfg.start + ex.start,
                    "end": self.cfg.start + ex.start + ex.duration,
                    "path": list(ex.path),
                    "pods": [self.pods.name[p] for p in pods],
                    "bytes": int(chunk.sum()),
                    "bytes_per_minute": ex.bytes_per_minute,
                }
            )
