"""Pods over a run: who serves each window, how pods come and go, and which address each gets.

The simulation asks each service's ServiceLife to play its windows (scaling, restarts, crash loops, rolling
updates) into the serving table, keeps every pod incarnation in Pods, and allocates addresses like the bridge
CNI's host-local IPAM once every pod of the run is known.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from mimir import network

if TYPE_CHECKING:
    from mimir.sources.synthetic.simulation import Simulation

POD_NETWORK = ipaddress.IPv4Network(network.POD_NETWORK)
SCALE_WINDOW = 30.0  # seconds between autoscaler decisions, and the step of every pod's life
SCALE_DOWN_WINDOWS = 10  # scale-down stabilisation: the highest recommendation of the last 5 minutes
TERMINATION_GRACE = 30.0  # a pod leaves the endpoints at once, but is deleted this much later
ROLLOUT_SURGE = 0.25  # a rolling update replaces this share of a Deployment's pods per window (maxSurge 25 %)
NODE_POD_RANGE = 256  # addresses in the node's pod CIDR (a /24 of the cluster's pod network, as kubeadm gives)
ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the characters of Kubernetes' generated name suffixes

DNS_SERVICE, PLATFORM_SERVICE, JOB_SERVICE = -1, -2, -3  # service index of kube-dns, other kube-system, job pods


@dataclass
class Pods:
    """Every pod incarnation of the run: service index, IP, name, namespace, owner, app label, when it was added
    and deleted (inf while it lives to the end), and whether it is a new incarnation of a StatefulSet member."""

    service: list[int] = field(default_factory=list)
    ip: list[int] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    namespace: list[str] = field(default_factory=list)
    owner: list[str] = field(default_factory=list)
    app: list[str] = field(default_factory=list)
    added: list[float] = field(default_factory=list)
    deleted: list[float] = field(default_factory=list)
    rejoined: list[bool] = field(default_factory=list)


def allocate_ips(pods: Pods) -> None:
    """host-local IPAM, as the bridge CNI does it: the next free address after the last one given out, in the
    node's /24 pod range (the first address is the bridge gateway), wrapping around, so that a long run with
    churn gives deleted pods' addresses to new pods."""
    first = int(POD_NETWORK.network_address) + 2
    size = NODE_POD_RANGE - 3  # .2 to .254
    in_use: set[int] = set()
    last = -1
    events = [(t, 1, pod) for pod, t in enumerate(pods.added)]
    events += [(t, 0, pod) for pod, t in enumerate(pods.deleted) if math.isfinite(t)]
    for _t, kind, pod in sorted(events):
        if kind == 0:
            in_use.discard(pods.ip[pod])
            continue
        if len(in_use) >= size:
            raise RuntimeError(f"more than {size} pods at once: the node's pod range is full")
        offset = (last + 1) % size
        while first + offset in in_use:
            offset = (offset + 1) % size
        last = offset
        pods.ip[pod] = first + offset
        in_use.add(first + offset)


class ServiceLife:
    """One service's pods over the windows: scaling, restarts, crash loops and rolling updates (PodLife).

    Restarts replace a pod (a Deployment's gets a new name, a StatefulSet member keeps its name, and both get a
    new address); a crash-looping pod keeps its address but stops serving for one to four windows; a rolling
    update replaces a Deployment's pods a quarter per window under a new ReplicaSet hash.
    """

    def __init__(self, sim: Simulation, j: int, name: str):
        self.sim, self.j, self.name = sim, j, name
        self.svc = sim.app.services[name]
        self.stateful = self.svc.kind == "statefulset"
        self.life = self.svc.pod_life  # the application's, with the service's overrides
        self.live: list[int] = []  # pods in the endpoints, in creation order
        self.member: dict[int, int] = {}  # pod -> StatefulSet ordinal
        self.looping: dict[int, int] = {}  # pod -> first window it serves again

    def play(self, replicas: np.ndarray, serving: np.ndarray) -> None:
        sim, rng = self.sim, self.sim.rng
        p_restart = 1 - math.exp(-self.life.restarts_per_hour * SCALE_WINDOW / 3600)
        p_loop = 1 - math.exp(-self.life.crash_loops_per_hour * SCALE_WINDOW / 3600)
        p_rollout = 1 - math.exp(-self.life.rollouts_per_day * SCALE_WINDOW / 86400)
        outdated: list[int] = []
        for w in range(sim.windows):
            t = w * SCALE_WINDOW
            if w and not self.stateful and rng.random() < p_rollout:
                sim.replica_set[self.name] = sim.suffix(10)  # a new version: every live pod is now outdated
                outdated = list(self.live)
            if outdated:
                step = max(1, math.ceil(ROLLOUT_SURGE * len(self.live)))
                for pod in outdated[:step]:
                    self._replace(pod, t)
                outdated = outdated[step:]
            if w:
                for pod in [p for p in self.live if rng.random() < p_restart]:
                    self._replace(pod, t)
                for pod in [p for p in self.live if p not in self.looping and rng.random() < p_loop]:
                    self.looping[pod] = w + int(rng.integers(1, 5))
            self._scale(int(replicas[w]), t)
            self.looping = {p: until for p, until in self.looping.items() if until > w and p in self.live}
            up = [p for p in self.live if p not in self.looping]
            serving[w, : len(up)] = up

    def _add(self, t: float, member: int = -1, *, rejoined: bool = False) -> int:
        sim = self.sim
        name = sim._pod_name(self.name, member)
        owner = f"{'statefulset' if self.stateful else 'deployment'}/{self.name}"
        pod = sim.new_pod(self.j, name, sim.app.namespace, owner, self.name, t, rejoined=rejoined)
        if member >= 0:
            self.member[pod] = member
        return pod

    def _replace(self, pod: int, t: float) -> None:
        """The pod goes; its successor takes its place (a StatefulSet's only once the old one is gone)."""
        if pod not in self.live:
            return
        at = self.live.index(pod)
        if self.stateful:
            self.sim.pods.deleted[pod] = t
            self.live[at] = self._add(t + SCALE_WINDOW / 2, self.member[pod], rejoined=True)
            self.looping[self.live[at]] = int(t // SCALE_WINDOW) + 1  # serves from the next window
        else:
            self.sim.pods.deleted[pod] = t + TERMINATION_GRACE
            self.live[at] = self._add(t)

    def _scale(self, count: int, t: float) -> None:
        while len(self.live) < count:
            member = len(self.live) if self.stateful else -1
            self.live.append(self._add(t, member))
        while len(self.live) > count:
            pod = self.live.pop()  # the newest (a StatefulSet's highest ordinal) goes first
            self.sim.pods.deleted[pod] = t + (0.0 if self.stateful else TERMINATION_GRACE)
