"""The synthetic source of runs (design §5): a seeded simulation of a microservice application under load, as a
capture on a Kubernetes node's `any` interface would show it.

The simulation works on connections, not packets: user sessions become step instances, step instances become
trees of service calls, background (DNS, kubelet probes, replication, benign egress, optional exfiltration) adds
more connections, and only then is every connection expanded, with numpy, into its TCP or UDP packets in one or
two views (before and after the service VIP's DNAT, or before and after egress SNAT). Packets are sorted by time
in batches and written by a numba kernel as Linux cooked v2 records, rotated into several files.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit
from tqdm import tqdm

from mimir import __version__
from mimir.apps import App, Call, Step
from mimir.capture.pcapwrite import pcap_header, put_be, put_ipv4, put_ports, put_record_header
from mimir.errors import UsageError
from mimir.io import atomic_dir

POD_NETWORK = int(ipaddress.IPv4Address("10.244.0.0"))
SERVICE_NETWORK = int(ipaddress.IPv4Address("10.96.0.0"))  # a /12
KUBE_DNS_VIP = int(ipaddress.IPv4Address("10.96.0.10"))
NODE_IP = int(ipaddress.IPv4Address("192.168.49.2"))
LOAD_GENERATOR_IP = int(ipaddress.IPv4Address("192.168.49.1"))
EXFIL_DESTINATION = int(ipaddress.IPv4Address("203.0.113.66"))

PHASES = 24  # the prototype's experiments split a run into 24 phases of a daily curve
SCALE_WINDOW = 30.0  # seconds between autoscaler decisions
SCALE_DOWN_WINDOWS = 10  # scale-down stabilisation: the highest recommendation of the last 5 minutes
TERMINATION_GRACE = 30.0  # a pod leaves the endpoints at once, but is deleted this much later
PROBE_PERIOD = 10.0
DNS_SHARE = 0.25  # share of calls preceded by lookups (the rest hit the resolver's cache)
RTT = 0.0002  # seconds, on one node
SEGMENT = 32768  # largest TCP payload per captured segment (offloaded segments are normal on veths)

MODE_TCP = 0  # handshake, request, response, close
MODE_STREAM = 1  # data on an open connection (replication): data and an ACK each way
MODE_UDP = 2  # one datagram each way (DNS)

# packet roles within a connection
SYN, SYNACK, ACK_C, REQ, ACK_S, RESP, FIN_C, FIN_S, UDP_Q, UDP_R = range(10)
_CLIENT_SENDS = np.array([True, False, True, True, False, False, True, False, True, False])
_FLAGS = np.array([0x02, 0x12, 0x10, 0x18, 0x10, 0x18, 0x11, 0x11, 0, 0], np.int64)


def daily_curve(users: int) -> np.ndarray:
    """Active users in each of the 24 phases: the prototype's "normal" curve, peaking at `users` in phase 18."""
    h = np.arange(PHASES)
    r = -0.5 * np.sin(np.pi * h / 12) + 1.1
    return np.rint(users * r / r.max()).astype(np.int64)


def parse_mix(text: str, kinds: list[str]) -> dict[str, float]:
    """`browse=0.5,buy=0.3,register=0.2` → probabilities (normalised), each kind named by the application."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in kinds:
            raise UsageError(f"--mix: {part!r}: use NAME=WEIGHT with NAME one of {', '.join(kinds)}")
        try:
            weight = float(value)
        except ValueError:
            raise UsageError(f"--mix: {part!r}: {value!r} is not a number") from None
        if weight < 0 or not math.isfinite(weight):
            raise UsageError(f"--mix: {part!r}: weights are finite and not negative")
        mix[name] = weight
    total = sum(mix.values())
    if total <= 0:
        raise UsageError("--mix: at least one weight must be positive")
    return {k: mix.get(k, 0.0) / total for k in kinds}


@dataclass(frozen=True)
class Exfiltration:
    """A physical exfiltration: `bytes_per_minute` along `path` (services, then `outside`) for a window."""

    path: tuple[str, ...]
    bytes_per_minute: float
    start: float
    duration: float

    @classmethod
    def parse(cls, text: str, app: App) -> Exfiltration:
        fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
        unknown = set(fields) - {"path", "rate", "start", "duration"}
        if unknown or not {"path", "rate", "start"} <= set(fields):
            raise UsageError(f"--exfil {text!r}: use path=SVC,...,outside;rate=100KB/min;start=S[;duration=S]")
        path = tuple(p.strip() for p in fields["path"].split(","))
        if len(path) < 2 or path[-1] != "outside" or any(p not in app.services for p in path[:-1]):
            raise UsageError(f"--exfil {text!r}: the path lists services of {app.name} and ends with 'outside'")
        match = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]?B)/(s|min)\s*", fields["rate"])
        if not match:
            raise UsageError(f"--exfil {text!r}: rate looks like 100KB/min or 1MB/s")
        unit = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}[match.group(2)]
        per_minute = float(match.group(1)) * unit * (60 if match.group(3) == "s" else 1)
        try:
            start, duration = float(fields["start"]), float(fields.get("duration", 60))
        except ValueError:
            raise UsageError(f"--exfil {text!r}: start and duration are seconds") from None
        return cls(path, per_minute, start, duration)


@dataclass
class SynthConfig:
    app: App
    duration: float
    users: int
    mix: dict[str, float]
    seed: int
    start: int = 1_767_225_600  # 2026-01-01T00:00:00Z
    snaplen: int = 128
    rotate: float = 600.0
    exfiltration: list[Exfiltration] = field(default_factory=list)


@dataclass
class _Pods:
    """Every pod of the run: service index (-1: kube-dns), IP, name, and when it served (window span)."""

    service: list[int] = field(default_factory=list)
    ip: list[int] = field(default_factory=list)
    name: list[str] = field(default_factory=list)
    added: list[float] = field(default_factory=list)
    deleted: list[float] = field(default_factory=list)  # inf while it lives to the end


class _Connections:
    """Column lists of connections; `table()` concatenates them into arrays."""

    COLUMNS = ("t0", "dur", "mode", "c1", "s1", "c2", "s2", "sport", "dport", "req", "resp")

    def __init__(self) -> None:
        self.parts: dict[str, list[np.ndarray]] = {c: [] for c in self.COLUMNS}

    def add(self, **cols: Any) -> None:
        n = next((np.shape(v)[0] for v in cols.values() if np.ndim(v) > 0), 1)  # scalars apply to every row
        for c in self.COLUMNS:
            self.parts[c].append(np.broadcast_to(np.asarray(cols.get(c, 0)), (n,)).copy())

    def table(self) -> dict[str, np.ndarray]:
        out = {c: np.concatenate(v) if v else np.zeros(0) for c, v in self.parts.items()}
        for c in self.COLUMNS[2:]:
            out[c] = out[c].astype(np.int64)
        return out


class Simulation:
    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        self.app = cfg.app
        self.rng = np.random.default_rng(cfg.seed)
        self.names = list(self.app.services)
        self.index = {n: i for i, n in enumerate(self.names)}
        self.windows = max(1, math.ceil(cfg.duration / SCALE_WINDOW))
        self.conns = _Connections()
        self.pods = _Pods()
        self.vip = self._assign_vips()
        self.exfil_windows: list[dict[str, Any]] = []
        self.replica_set: dict[str, str] = {}

    # --- addressing -----------------------------------------------------------------------------------------
    def _assign_vips(self) -> np.ndarray:
        taken = {KUBE_DNS_VIP, SERVICE_NETWORK + 1}  # kube-dns and the API server
        vips = []
        for _ in self.names:
            while (v := SERVICE_NETWORK + int(self.rng.integers(256, 1 << 20))) in taken:
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

    # --- load -----------------------------------------------------------------------------------------------
    def _templates(self) -> tuple[list[list[int]], list[Step]]:
        """Per request type, the sequence of step templates a session visits (repeats expanded)."""
        steps: list[Step] = []
        sessions: list[list[int]] = []
        for kind in self.app.requests:
            seq = []
            for step in self.app.requests[kind]:
                steps.append(step)
                seq += [len(steps) - 1] * step.repeat
            sessions.append(seq)
        return sessions, steps

    def step_instances(self) -> tuple[np.ndarray, np.ndarray]:
        """Start times (s since start) and step template of every page a user requests."""
        cfg, rng = self.cfg, self.rng
        sessions, _ = self._templates()
        kinds = list(self.app.requests)
        p = np.array([cfg.mix.get(k, 0.0) for k in kinds])
        lo, hi = self.app.think_time
        phase = cfg.duration / PHASES
        active = daily_curve(cfg.users)
        times, steps = [], []
        for user in range(int(active.max())):
            # a user is active in the phases whose count exceeds its number, and keeps its sessions going
            # across consecutive active phases (one long-running load generator, unlike the prototype's restarts)
            on = np.flatnonzero(np.diff(np.r_[0, (active > user).astype(np.int64), 0]))
            for first, last in zip(on[::2], on[1::2], strict=True):
                t, end = first * phase + rng.uniform(0, min(phase, 10.0)), last * phase
                while t < end:
                    seq = sessions[rng.choice(len(kinds), p=p)]
                    gaps = rng.uniform(lo, hi, len(seq))
                    at = t + np.concatenate(([0.0], np.cumsum(gaps[:-1])))
                    keep = at < end
                    times.append(at[keep])
                    steps.append(np.asarray(seq)[keep])
                    t = at[-1] + gaps[-1]
        if not times:
            return np.zeros(0), np.zeros(0, np.int64)
        t = np.concatenate(times)
        s = np.concatenate(steps).astype(np.int64)
        order = np.argsort(t, kind="stable")
        return t[order], s[order]

    # --- call trees -----------------------------------------------------------------------------------------
    def call_templates(self, steps: list[Step]) -> dict[str, np.ndarray]:
        """Flatten every step into its calls (pre-order), with offsets and durations relative to the step."""
        rows: list[tuple[int, int, int, int, int, float, float]] = []  # template, parent, callee, req, resp, t, d
        starts = []

        def layout(
            template: int, parent: int, callee: int, req: int, resp: int, calls: tuple[Call, ...], t0: float
        ) -> float:
            me = len(rows)
            rows.append((template, parent, callee, req, resp, t0, 0.0))
            t = t0 + 1.5 * RTT + req / 1e9
            for call in calls:
                t = layout(template, me, self.index[call.to], call.request, call.response, call.calls, t + 0.0003)
            end = t + 0.0005 + resp / 1e9 + 2 * RTT
            rows[me] = (*rows[me][:6], end - t0)
            return end

        for k, step in enumerate(steps):
            starts.append(len(rows))
            layout(k, -1, self.index[self.app.entry], step.request, step.response, step.calls, 0.0)
        cols = list(zip(*rows, strict=True))
        out = {
            name: np.array(col, dtype=np.float64 if name in ("offset", "duration") else np.int64)
            for name, col in zip(
                ("template", "parent", "callee", "req", "resp", "offset", "duration"), cols, strict=True
            )
        }
        out["start"] = np.array(starts, np.int64)
        has_parent = out["parent"] >= 0  # parents as positions within their own template
        out["parent"][has_parent] -= out["start"][out["template"][has_parent]]
        out["count"] = np.bincount(out["template"], minlength=len(steps))
        return out

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
        next_fresh = POD_NETWORK + 2

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
            sport=rng.integers(32768, 61000, n),
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
            sport=rng.integers(32768, 61000, n),
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
                sport=rng.integers(32768, 61000, n),
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
                        sport = ports.setdefault((int(a), int(b)), int(rng.integers(32768, 61000)))
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
            sport=self.rng.integers(32768, 61000, t0.shape[0]),
            dport=port,
            req=req,
            resp=resp,
        )

    def add_exfiltration(self, serving: np.ndarray) -> None:
        """Real exfiltration packets along each window's path: pulled over a call the app makes, else pushed."""
        rng = self.rng
        ip = np.array(self.pods.ip, np.int64)
        calls = self.app.edges()
        for ex in self.cfg.exfiltration:
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

    def run(self) -> dict[str, np.ndarray]:
        _, steps = self._templates()
        calls = self.call_templates(steps)
        inst_t, inst_step = self.step_instances()
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


def expand_packets(conns: dict[str, np.ndarray], isn: np.ndarray) -> dict[str, np.ndarray]:
    """Every packet of the given connections, in both views where a connection has two, unsorted."""
    mode, req, resp = conns["mode"], conns["req"], conns["resp"]
    kq = np.where(req > 0, -(-req // SEGMENT), 0)
    kr = np.where(resp > 0, -(-resp // SEGMENT), 0)
    count = np.select([mode == MODE_TCP, mode == MODE_STREAM], [8 + kq + kr, kq + 1 + np.where(kr > 0, kr + 1, 0)], 2)
    c = np.repeat(np.arange(mode.shape[0]), count)
    p = np.arange(c.shape[0]) - np.repeat(np.cumsum(count) - count, count)
    m, q, r = mode[c], kq[c], kr[c]
    tcp_role = np.select(
        [p == 0, p == 1, p == 2, p < 3 + q, p == 3 + q, p < 4 + q + r, p == 4 + q + r, p == 5 + q + r, p == 6 + q + r],
        [SYN, SYNACK, ACK_C, REQ, ACK_S, RESP, ACK_C, FIN_C, FIN_S],
        ACK_C,
    )
    stream_role = np.select([p < q, p == q, p < q + 1 + r], [REQ, ACK_S, RESP], ACK_C)
    role = np.select([m == MODE_TCP, m == MODE_STREAM], [tcp_role, stream_role], np.where(p == 0, UDP_Q, UDP_R))
    j = np.select(
        [m == MODE_TCP, m == MODE_STREAM],
        [np.where(role == REQ, p - 3, p - 4 - q), np.where(role == REQ, p, p - q - 1)],
        0,
    )
    rq, rs = req[c], resp[c]
    payload = np.select(
        [role == REQ, role == RESP, role == UDP_Q, role == UDP_R],
        [np.minimum(SEGMENT, rq - j * SEGMENT), np.minimum(SEGMENT, rs - j * SEGMENT), rq, rs],
        0,
    )
    t0, d = conns["t0"][c], conns["dur"][c]
    rtt = np.minimum(RTT, d / 10)
    tcp_at = np.select(
        [
            role == SYN,
            role == SYNACK,
            (role == ACK_C) & (p == 2),
            role == REQ,
            role == ACK_S,
            role == RESP,
            role == ACK_C,
            role == FIN_C,
            role == FIN_S,
        ],
        [0.0, 0.5 * rtt, rtt, rtt + j * 2e-6, 1.5 * rtt, d - 2 * rtt + j * 2e-6, d - 1.5 * rtt, d - rtt, d - 0.5 * rtt],
        d,
    )
    stream_at = np.select([role == REQ, role == ACK_S, role == RESP], [j * 2e-6, 0.5 * rtt, rtt + j * 2e-6], 1.5 * rtt)
    at = t0 + np.select([m == MODE_TCP, m == MODE_STREAM], [tcp_at, stream_at], np.where(role == UDP_Q, 0.0, d))
    isn_c, isn_s = isn[0][c], isn[1][c]
    sent_c = np.select([role == SYN, (role == ACK_C) & (p == 2), role == REQ], [0, 1, 1 + j * SEGMENT], 1 + rq)
    sent_c = np.where((role == ACK_C) & (p == 7 + q + r), 2 + rq, sent_c)
    sent_s = np.select([role == SYNACK, role == ACK_S, role == RESP], [0, 1, 1 + j * SEGMENT], 1 + rs)
    client_sends = _CLIENT_SENDS[role]
    seq = np.where(client_sends, isn_c + sent_c, isn_s + sent_s) & 0xFFFFFFFF
    acked_by_client = np.where((role == FIN_C) | (role == ACK_C) & (p > 3 + q), 1 + rs, 1)
    acked_by_client = np.where((role == ACK_C) & (p == 7 + q + r), 2 + rs, acked_by_client)
    acked_by_server = np.where(role == FIN_S, 2 + rq, np.where(role == SYNACK, 1, 1 + rq))
    ack = np.where(client_sends, isn_s + acked_by_client, isn_c + acked_by_server) & 0xFFFFFFFF
    ack = np.where(role == SYN, 0, ack)
    proto = np.where(m == MODE_UDP, 17, 6)
    views = []
    for cip, sip, shift in (("c1", "s1", 0.0), ("c2", "s2", 4e-6)):
        has = conns[sip][c] != 0
        a, b = conns[cip][c][has], conns[sip][c][has]
        cs = client_sends[has]
        views.append(
            {
                "t": at[has] + np.where(cs, shift, -shift),
                "src": np.where(cs, a, b),
                "dst": np.where(cs, b, a),
                "sport": np.where(cs, conns["sport"][c][has], conns["dport"][c][has]),
                "dport": np.where(cs, conns["dport"][c][has], conns["sport"][c][has]),
                "proto": proto[has],
                "flags": _FLAGS[role[has]],
                "seq": seq[has],
                "ack": ack[has],
                "payload": payload[has],
            }
        )
    return {k: np.concatenate([v[k] for v in views]) for k in views[0]}


@njit(cache=True)
def write_sll2_records(out, sec, usec, src, dst, proto, sport, dport, flags, seq, ack, payload, snaplen):
    """Pcap records of Linux cooked v2 frames with IPv4 and TCP or UDP headers; zero payload. Returns bytes used."""
    o = 0
    for i in range(sec.shape[0]):
        transport = 20 if proto[i] == 6 else 8
        length = 20 + 20 + transport + payload[i]
        caplen = min(length, snaplen)
        put_record_header(out, o, sec[i], usec[i], caplen, length)
        f = o + 16
        end = f + caplen
        out[f:end] = 0
        put_be(out, f, 0x0800, 2)  # SLL2: protocol, reserved, interface index, ARPHRD_ETHER, packet type, address
        put_be(out, f + 4, 2, 4)
        put_be(out, f + 8, 1, 2)
        out[f + 11] = 6
        ip = f + 20
        t = put_ipv4(out, ip, length - 20, proto[i], src[i], dst[i])
        out[ip + 6] = 0x40  # don't fragment
        put_ports(out, t, end, sport[i], dport[i])
        if proto[i] == 6:
            if t + 16 <= end:
                put_be(out, t + 4, seq[i], 4)
                put_be(out, t + 8, ack[i], 4)
                out[t + 12] = 0x50
                out[t + 13] = flags[i]
                put_be(out, t + 14, 64240, 2)
        elif t + 6 <= end:
            put_be(out, t + 4, 8 + payload[i], 2)
        o = end
    return o


@dataclass
class SynthResult:
    files: list[Path]
    packets: int
    truth: dict[tuple[str, str], tuple[int, int]]  # (src, dst) -> (packets, bytes), when asked for


class _CaptureWriter:
    """Writes sorted packets into pcap files rotated every `rotate` seconds of capture time."""

    def __init__(self, folder: Path, cfg: SynthConfig, count: bool):
        self.folder, self.cfg = folder, cfg
        self.files: list[Path] = []
        self.current: int | None = None
        self.handle = None
        self.packets = 0
        self.truth: dict[int, list[int]] | None = {} if count else None

    def write(self, pk: dict[str, np.ndarray]) -> None:
        if not pk["t"].shape[0]:
            return
        micros = np.floor(pk["t"] * 1e6).astype(np.int64) + self.cfg.start * 1_000_000
        index = ((micros // 1_000_000 - self.cfg.start) // int(self.cfg.rotate)).astype(np.int64)
        bounds = np.flatnonzero(np.diff(index)) + 1
        for lo, hi in zip(np.r_[0, bounds], np.r_[bounds, index.shape[0]], strict=True):
            self._switch(int(index[lo]))
            sl = slice(lo, hi)
            out = np.empty((hi - lo) * (16 + self.cfg.snaplen), np.uint8)
            used = write_sll2_records(
                out,
                micros[sl] // 1_000_000,
                micros[sl] % 1_000_000,
                pk["src"][sl],
                pk["dst"][sl],
                pk["proto"][sl],
                pk["sport"][sl],
                pk["dport"][sl],
                pk["flags"][sl],
                pk["seq"][sl],
                pk["ack"][sl],
                pk["payload"][sl],
                self.cfg.snaplen,
            )
            self.handle.write(memoryview(out)[:used])
        self.packets += pk["t"].shape[0]
        if self.truth is None:
            return
        frame = 40 + np.where(pk["proto"] == 6, 20, 8) + pk["payload"]
        key = (pk["src"].astype(np.uint64) << np.uint64(32)) | pk["dst"].astype(np.uint64)
        keys, inverse = np.unique(key, return_inverse=True)
        packets = np.bincount(inverse)
        nbytes = np.bincount(inverse, weights=frame).astype(np.int64)
        for k, n, b in zip(keys.tolist(), packets.tolist(), nbytes.tolist(), strict=True):
            entry = self.truth.setdefault(k, [0, 0])
            entry[0] += n
            entry[1] += b

    def _switch(self, index: int) -> None:
        if index == self.current:
            return
        self.close()
        path = self.folder / f"capture-{index:05d}.pcap"
        self.files.append(path)
        self.handle = path.open("wb")
        self.handle.write(pcap_header(self.cfg.snaplen, 276))
        self.current = index

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _ip(v: int) -> str:
    return str(ipaddress.IPv4Address(int(v)))


def synthesize(
    cfg: SynthConfig, out: Path, *, truth: bool = False, progress: bool | None = None, batch: int = 200_000
) -> SynthResult:
    """Write the run bundle (capture/, entities.jsonl, run.json) into `out`; same config, same bytes.

    With truth=True the result also carries the generator's own packet and byte count per address pair.
    """
    sim = Simulation(cfg)
    conns = sim.run()
    isn = sim.rng.integers(0, 1 << 32, (2, conns["t0"].shape[0]), dtype=np.int64)
    n = conns["t0"].shape[0]
    show = sys.stderr.isatty() if progress is None else progress
    with atomic_dir(out) as tmp, tqdm(total=n, unit="conn", desc="synth", disable=not show, leave=False) as bar:
        (tmp / "capture").mkdir(parents=True)
        writer = _CaptureWriter(tmp / "capture", cfg, truth)
        carry: dict[str, np.ndarray] | None = None
        for lo in range(0, n, batch):
            hi = min(lo + batch, n)
            part = {k: v[lo:hi] for k, v in conns.items()}
            pk = expand_packets(part, isn[:, lo:hi])
            if carry is not None:
                pk = {k: np.concatenate([carry[k], pk[k]]) for k in pk}
            order = np.argsort(pk["t"], kind="stable")
            pk = {k: v[order] for k, v in pk.items()}
            # later batches start no earlier than this; the capture stops at the end of the run
            limit = conns["t0"][hi] - 1e-5 if hi < n else cfg.duration
            cut = int(np.searchsorted(pk["t"], limit))
            writer.write({k: v[:cut] for k, v in pk.items()})
            carry = {k: v[cut:] for k, v in pk.items()}
            bar.update(hi - lo)
        writer.close()
        files = [out / "capture" / p.name for p in writer.files]
        (tmp / "entities.jsonl").write_text(_entities(sim))
        (tmp / "run.json").write_text(json.dumps(_run_info(sim, writer, files), indent=2) + "\n")
    counted = {(_ip(k >> 32), _ip(k & 0xFFFFFFFF)): (v[0], v[1]) for k, v in sorted((writer.truth or {}).items())}
    return SynthResult(files, writer.packets, counted)


def _entities(sim: Simulation) -> str:
    cfg, app = sim.cfg, sim.app
    lines = []

    def event(ts: float, kind: str, what: str, **rest: Any) -> None:
        lines.append((ts, len(lines), json.dumps({"ts": ts, "event": kind, "kind": what, **rest}, sort_keys=True)))

    t0 = float(cfg.start)
    event(
        t0, "added", "node", namespace="", name="node-1", ips=[_ip(NODE_IP)], labels={}, selector={}, owner="", app=""
    )
    dns_labels = {"k8s-app": "kube-dns"}
    event(
        t0,
        "added",
        "service",
        namespace="kube-system",
        name="kube-dns",
        ips=[_ip(KUBE_DNS_VIP)],
        labels=dns_labels,
        selector=dns_labels,
        owner="",
        app="kube-dns",
    )
    for j, name in enumerate(sim.names):
        svc = app.services[name]
        event(
            t0,
            "added",
            "service",
            namespace=app.namespace,
            name=name,
            ips=[_ip(sim.vip[j])],
            labels=svc.labels,
            selector=svc.labels,
            owner="",
            app=name,
        )
    for pod, service in enumerate(sim.pods.service):
        if service < 0:
            namespace, owner, app_name, labels = "kube-system", "deployment/coredns", "kube-dns", dns_labels
        else:
            name = sim.names[service]
            namespace, owner, app_name, labels = app.namespace, f"deployment/{name}", name, app.services[name].labels
        common = {
            "namespace": namespace,
            "name": sim.pods.name[pod],
            "ips": [_ip(sim.pods.ip[pod])],
            "labels": labels,
            "selector": {},
            "owner": owner,
            "app": app_name,
        }
        event(t0 + sim.pods.added[pod], "added", "pod", **common)
        if sim.pods.deleted[pod] < cfg.duration:
            event(t0 + sim.pods.deleted[pod], "deleted", "pod", **common)
    return "".join(line + "\n" for _, _, line in sorted(lines, key=lambda e: (e[0], e[1])))


def _run_info(sim: Simulation, writer: _CaptureWriter, files: list[Path]) -> dict[str, Any]:
    cfg = sim.cfg
    return {
        "app": cfg.app.name,
        "source": "synthetic",
        "start": cfg.start,
        "end": cfg.start + cfg.duration,
        "load": {"users": cfg.users, "curve": "normal", "phases": daily_curve(cfg.users).tolist()},
        "mix": cfg.mix,
        "sensitive": list(cfg.app.sensitive),
        "exfiltration": sim.exfil_windows,
        "addresses": {
            "node": _ip(NODE_IP),
            "load_generator": _ip(LOAD_GENERATOR_IP),
            "pod_network": "10.244.0.0/16",
            "service_network": "10.96.0.0/12",
            "kube_dns": _ip(KUBE_DNS_VIP),
        },
        "generator": {
            "seed": cfg.seed,
            "snaplen": cfg.snaplen,
            "rotate_seconds": cfg.rotate,
            "app_sha256": _app_digest(cfg.app),
        },
        "tools": {"mimir": __version__},
        "capture": {
            "files": [f"capture/{p.name}" for p in files],
            "packets": writer.packets,
            "dropped": 0,
            "link_type": 276,
        },
    }


def _app_digest(app: App) -> str:
    return hashlib.sha256(repr(app).encode()).hexdigest()
