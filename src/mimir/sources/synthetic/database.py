"""Databases beyond their clients: replication between members, state transfers, and backup jobs.

Replication (Galera/PXC group communication and write sets) runs on every ordered pair of serving members: a
keep-alive floor of `bytes_per_second`, plus `per_write` bytes for each request byte the sending member served in
that second (writes carry their rows in the request), cut into `frame`-byte messages, each acknowledged. So the
traffic moves with the write load, in small frames, on every pair in both directions. Without `frame` a rule
keeps the old form: one message per `interval` of Poisson-distributed size.
A member that comes back (a StatefulSet pod restarted under its name) receives an incremental state transfer
(IST) from a donor; a member that joins for the first time after the start, a full one (SST).
A job pod reads a large amount from a database and sends it elsewhere: a nightly backup, the benign look-alike of
exfiltration that detectors must live with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mimir.network import EPHEMERAL_PORTS, ipv4_int
from mimir.sources.synthetic.connections import MODE_STREAM, MODE_TCP
from mimir.sources.synthetic.pods import JOB_SERVICE, SCALE_WINDOW
from mimir.sources.synthetic.routing import egress_rows

if TYPE_CHECKING:
    from mimir.sources.synthetic.routing import Served
    from mimir.sources.synthetic.simulation import Simulation

TRANSFER_RATE = 100e6  # bytes per second of a state transfer or a backup on one node
CHUNK = 1 << 20  # a bulk transfer's exchanges: one per MiB


def add_replication(sim: Simulation, served: Served) -> None:
    rng = sim.rng
    ip = np.array(sim.pods.ip, np.int64)
    seconds = int(np.ceil(sim.cfg.duration))
    for rule in sim.app.replication:
        j = sim.index[rule.service]
        mine = (served.callee == j) & (served.pod >= 0)
        writes = np.zeros((len(sim.pods.service), seconds))  # request bytes each member served, per second
        np.add.at(
            writes, (served.pod[mine], np.minimum(served.t0[mine].astype(np.int64), seconds - 1)), served.req[mine]
        )
        ticks = np.arange(rng.uniform(0, rule.interval), sim.cfg.duration, rule.interval)
        window = np.minimum((ticks // SCALE_WINDOW).astype(np.int64), sim.windows - 1)
        ports: dict[tuple[int, int], int] = {}
        for w in np.unique(window):
            members = sim.serving[j, w][sim.serving[j, w] >= 0]
            at = ticks[window == w]
            n = at.shape[0]
            for a in members:
                for b in members:
                    if a == b:
                        continue
                    sport = ports.setdefault((int(a), int(b)), int(rng.integers(*EPHEMERAL_PORTS)))
                    load = writes[a, np.minimum(at.astype(np.int64), seconds - 1)] * rule.interval
                    size = rng.poisson(rule.bytes_per_second * rule.interval + rule.per_write * load)
                    rounds = np.maximum(np.ceil(size / rule.frame), 1).astype(np.int64) if rule.frame else 1
                    sim.conns.add(
                        t0=at + rng.uniform(0, 0.01, n),
                        dur=0.9 * rule.interval if rule.frame else 0.001,
                        mode=MODE_STREAM,
                        c1=ip[a],
                        s1=ip[b],
                        sport=sport,
                        dport=rule.port,
                        req=size,
                        resp=0,
                        rounds=rounds,
                        mss=rule.frame if rule.frame else 0,
                    )


def add_state_transfers(sim: Simulation) -> None:
    """IST to a member back under its name, SST to a member new after the start, each from a serving donor."""
    rng = sim.rng
    for rule in sim.app.replication:
        transfer = rule.state_transfer
        j = sim.index[rule.service]
        for pod, service in enumerate(sim.pods.service):
            if service != j or sim.pods.added[pod] <= 0:
                continue
            size = transfer.ist if sim.pods.rejoined[pod] else transfer.sst
            if size <= 0:
                continue
            t = sim.pods.added[pod] + rng.uniform(2.0, 5.0)
            donors = [d for d in sim.alive(t) if sim.pods.service[d] == j and d != pod]
            if not donors:
                continue
            donor = donors[int(rng.integers(0, len(donors)))]
            size = int(size * rng.uniform(0.7, 1.3))
            sim.conns.add(
                t0=t,
                dur=max(size / TRANSFER_RATE, 0.05),
                mode=MODE_TCP,
                c1=sim.pods.ip[donor],
                s1=sim.pods.ip[pod],
                sport=int(rng.integers(*EPHEMERAL_PORTS)),
                dport=transfer.port,
                req=size,
                resp=0,
                rounds=max(size // CHUNK, 1),
            )


def create_job_pods(sim: Simulation) -> None:
    """A pod per run of each job (its own name and, once allocated, a new address); it goes when done."""
    for job in sim.app.jobs:
        starts = np.arange(job.at, sim.cfg.duration, job.every) if job.every > 0 else np.array([job.at])
        for t in starts[starts < sim.cfg.duration]:
            took = max(job.bytes / TRANSFER_RATE * 2, 1.0)
            name = f"{job.name}-{sim.suffix(5)}"
            pod = sim.new_pod(JOB_SERVICE, name, sim.app.namespace, f"job/{job.name}", job.name, float(t))
            sim.pods.deleted[pod] = t + took + 5.0
            sim.job_runs.append((pod, float(t) + 1.0, took / 2, job))


def add_jobs(sim: Simulation) -> None:
    """Each job run reads `bytes` from its service (one member, through the VIP) and sends them on."""

    rng = sim.rng
    ip = np.array(sim.pods.ip, np.int64)
    for pod, t, took, job in sim.job_runs:
        j = sim.index[job.reads_from]
        table = sim.serving[j, min(int(t // SCALE_WINDOW), sim.windows - 1)]
        members = table[table >= 0]
        if not members.shape[0]:
            continue
        member = int(members[rng.integers(0, members.shape[0])])
        rounds = max(job.bytes // CHUNK, 1)
        port = job.port or sim.app.services[job.reads_from].port
        _through_vip(sim, ip[pod], j, ip[member], port, t0=t, dur=took, req=300 * rounds, resp=job.bytes, rounds=rounds)
        if job.to in sim.index:
            k = sim.index[job.to]
            target = sim.serving[k, min(int((t + took) // SCALE_WINDOW), sim.windows - 1)]
            server = int(target[target >= 0][0]) if (target >= 0).any() else -1
            if server < 0:
                continue
            port = job.to_port or sim.app.services[job.to].port
            _through_vip(
                sim,
                ip[pod],
                k,
                ip[server],
                port,
                t0=t + took,
                dur=took,
                req=job.bytes,
                resp=200 * rounds,
                rounds=rounds,
            )
        else:
            egress_rows(
                sim,
                np.array([t + took]),
                np.array([ip[pod]]),
                ipv4_int(job.to),
                job.to_port or 443,
                job.bytes,
                200 * rounds,
                dur=took,
            )


def _through_vip(sim: Simulation, client: int, j: int, server: int, port: int, **columns: Any) -> None:
    """One TCP connection from a pod to service j's VIP, DNAT-ed to `server` (both views)."""
    sport = int(sim.rng.integers(*EPHEMERAL_PORTS))
    sim.conns.add(mode=MODE_TCP, c1=client, s1=sim.vip[j], c2=client, s2=server, sport=sport, dport=port, **columns)
