"""The cluster's side of the simulation: pods that scale with the load and come and go, and every connection.

The users' pages (sessions.py) become calls from the load generator or a pod to a service, routed over the
connections applications really make (routing.py); around them, the cluster's own traffic: DNS (resolver.py),
the platform (platform.py: probes, the API server, metrics, logs, image pulls), databases (database.py:
replication, state transfers, backup jobs), timers, benign egress and, when asked for, an exfiltration along a
path of services. Pods follow an HPA-like autoscaler, restart, crash-loop and roll over to new versions, and take
their addresses like Kubernetes' IPAM does, so addresses are reused by other pods: what the entities file records
and the edge attribution must resolve. The result is a connection table (connections.py), sorted by start time;
no packet exists yet.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any

import numpy as np

from mimir import network
from mimir.network import ipv4_int
from mimir.sources.synthetic import database, platform, resolver, routing
from mimir.sources.synthetic.connections import Connections
from mimir.sources.synthetic.pods import ALPHABET, SCALE_DOWN_WINDOWS, SCALE_WINDOW, Pods, ServiceLife, allocate_ips
from mimir.sources.synthetic.sessions import call_templates, step_instances, step_templates
from mimir.spec import RunSpec

SERVICE_NETWORK = ipaddress.IPv4Network(network.SERVICE_NETWORK)
KUBE_DNS_VIP = ipv4_int(network.KUBE_DNS_VIP)
API_VIP = ipv4_int(network.API_VIP)


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
        self.serving = np.zeros((0, 0, 0), np.int64)
        self.platform_pods: dict[str, list[int]] = {}
        self.opened: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (time, pod, service) of connections
        self.external_lookups: list[tuple[np.ndarray, np.ndarray]] = []  # (time, pod) of calls to external names
        self.job_runs: list[tuple[int, float, float, Any]] = []  # (pod, start, duration of each half, job)

    def run(self) -> dict[str, np.ndarray]:
        """The connection table of the whole run, sorted by start time, without what starts after its end."""
        slots = step_templates(self.app)
        templates = call_templates(self.app, slots.pages, self.index)
        visits = step_instances(self.cfg, slots, self.rng)
        calls = routing.expand_calls(self, visits, templates)
        self.serving = self.create_pods(self.replicas(calls))
        platform.create_pods(self)
        database.create_job_pods(self)
        allocate_ips(self.pods)
        served = routing.route_calls(self, calls)
        routing.add_periodic(self)
        routing.add_egress(self)
        database.add_replication(self, served)
        database.add_state_transfers(self)
        database.add_jobs(self)
        platform.add_traffic(self)
        routing.add_exfiltration(self)
        resolver.add_lookups(self)
        table = self.conns.table()
        keep = table["t0"] < self.cfg.duration
        order = np.argsort(table["t0"][keep], kind="stable")
        return {c: v[keep][order] for c, v in table.items()}

    # --- addressing -----------------------------------------------------------------------------------------
    def _assign_vips(self) -> np.ndarray:
        base = int(SERVICE_NETWORK.network_address)
        taken = {KUBE_DNS_VIP, API_VIP}
        vips = []
        for _ in self.names:
            while (v := base + int(self.rng.integers(256, SERVICE_NETWORK.num_addresses))) in taken:
                pass
            taken.add(v)
            vips.append(v)
        return np.array(vips, np.int64)

    def suffix(self, length: int) -> str:
        return "".join(ALPHABET[i] for i in self.rng.integers(0, len(ALPHABET), length))

    def _pod_name(self, service: str, member: int) -> str:
        """A StatefulSet member's ordinal name, or a Deployment pod's: its ReplicaSet's hash and a random suffix."""
        if member >= 0:
            return f"{service}-{member}"
        if service not in self.replica_set:
            self.replica_set[service] = self.suffix(10)
        return f"{service}-{self.replica_set[service]}-{self.suffix(5)}"

    # --- autoscaling and pods ------------------------------------------------------------------------------
    def replicas(self, calls: routing.Calls) -> np.ndarray:
        """Replicas per (window, service): HPA-like, from the calls each service served in the previous window."""
        n_s = len(self.names)
        window = np.minimum((calls.t0 // SCALE_WINDOW).astype(np.int64), self.windows - 1)
        load = np.zeros((self.windows, n_s))
        np.add.at(load, (window, calls.callee), 1.0)
        rate = load / SCALE_WINDOW  # calls per second per (window, service)
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

    def new_pod(
        self, service: int, name: str, namespace: str, owner: str, app: str, t: float, *, rejoined: bool = False
    ) -> int:
        """A pod incarnation (`owner` as `kind/name`); its address is allocated once every pod of the run is known."""
        pods = self.pods
        pods.service.append(service)
        pods.ip.append(0)
        pods.name.append(name)
        pods.namespace.append(namespace)
        pods.owner.append(owner)
        pods.app.append(app)
        pods.added.append(t)
        pods.deleted.append(math.inf)
        pods.rejoined.append(rejoined)
        return len(pods.service) - 1

    def create_pods(self, replicas: np.ndarray) -> np.ndarray:
        """Pods over the run; returns the serving pods per (service, window) as a padded table (-1: none)."""
        width = int(replicas.max()) + 1
        serving = np.full((len(self.names), self.windows, width), -1, np.int64)
        for j, name in enumerate(self.names):
            ServiceLife(self, j, name).play(replicas[:, j], serving[j])
        return serving

    def alive(self, t: float) -> np.ndarray:
        """Pods that exist at time t (added, not yet deleted)."""
        added, deleted = np.array(self.pods.added), np.array(self.pods.deleted)
        return np.flatnonzero((added <= t) & (t < deleted))
