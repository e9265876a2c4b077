"""The platform's own traffic: what a Kubernetes node does whatever the application (the `platform` settings).

- Probes, per service and type: the kubelet (from the node's address on the pod bridge) opens a TCP connection
  (`tcp`), or sends a small GET and reads a small answer (`http`; `grpc`: the health check over HTTP/2); `exec`
  probes run in the container and make no traffic. kube-system pods are probed too (CoreDNS's HTTP health and
  readiness ports).
- API watches: system pods hold long-lived connections to the `kubernetes` VIP (DNAT to the API server on the
  node) and receive events now and then; every few minutes one lists again. Sparse events make these pairs come
  and go between windows, as in the real slice.
- Node-local: the API server and etcd talk on the node's loopback all the time, and node components (kubelet,
  controller manager, scheduler) talk to the API server on the node's address.
- Metrics: metrics-server scrapes the kubelet's summary API; Prometheus scrapes every pod (an edge to each).
- Logs: a shipper pod streams log lines to a collector.
- Image pulls: a pod started during the run makes its node pull the image from the registry (egress).
The constants are measured on the prototype's real slice (docs: the realism reference) where it shows them:
API-server traffic in ~270-byte frames, watch events of a few hundred bytes to a few kilobytes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mimir import network
from mimir.apps import ConnectionPolicy
from mimir.network import EPHEMERAL_PORTS, ipv4_int
from mimir.sources.synthetic.connections import MODE_OPEN, MODE_STREAM, MODE_TCP
from mimir.sources.synthetic.pods import DNS_SERVICE, JOB_SERVICE, PLATFORM_SERVICE
from mimir.sources.synthetic.routing import CallRows, connect

if TYPE_CHECKING:
    from mimir.sources.synthetic.simulation import Simulation

WATCHERS = ("metrics-server", "kubernetes-dashboard", "storage-provisioner", "dashboard-metrics-scraper", "tiller")
WATCH_EVENTS_PER_SECOND = 0.1  # per watcher: sparse, so a watcher's pairs are absent from some 10 s windows
WATCH_EVENT = (500, 4000)  # bytes of one watch event (uniform)
RELIST_PERIOD = 300.0  # seconds between a watcher's full lists (informer resync)
RELIST_BYTES = 40_000
ETCD_BYTES_PER_SECOND = 22_000  # API server ↔ etcd on loopback, each second, both ways together
ETCD_EXCHANGES_PER_SECOND = 45
NODE_API_BYTES_PER_SECOND = 4_000  # kubelet, controller manager and scheduler ↔ API server on the node address
NODE_API_EXCHANGES_PER_SECOND = 8
KUBELET_PORT, ETCD_PORT, HEALTH_PORT = 10250, 2379, 8080
PROBE_BYTES = {  # a probe's request and answer bytes by type: none for a bare TCP connect
    "tcp": (0, 0),
    "http": (110, 160),  # a kubelet GET and a short 200
    "grpc": (160, 70),  # HTTP/2 preface, SETTINGS and the Health/Check call; the SERVING answer
    "https": (400, 500),  # a system pod's /livez or /readyz over TLS (a resumed session) and a short answer
}
METRICS_SUMMARY = 2_500  # bytes of the kubelet summary per pod, as metrics-server reads it
PROMETHEUS_SCRAPE = (250, 9_000)  # a scrape request and a pod's /metrics answer
IMAGE_LAYERS = 6
INGRESS_CONTROLLER = "ingress-nginx-controller"  # its pods live in their own namespace, ingress-nginx


def create_pods(sim: Simulation) -> None:
    """The kube-system pods of the run: two CoreDNS pods always, and the platform's other pods when enabled."""
    platform = sim.app.platform
    names = ["coredns", "coredns"]
    if platform.metrics.scraper == "metrics-server":
        names.append("metrics-server")
    watchers = [w for w in WATCHERS if w not in names][: max(platform.api_watchers - 2, 0)]
    names += watchers
    if platform.metrics.scraper == "prometheus":
        names.append("prometheus")
    if platform.logs.bytes_per_second > 0:
        names.append("fluent-bit")
    if sim.app.ingress.type == "ingress-controller":
        names += [INGRESS_CONTROLLER] * 2
    hashes: dict[str, str] = {}
    for name in names:
        service = DNS_SERVICE if name == "coredns" else PLATFORM_SERVICE
        hashes.setdefault(name, sim.suffix(10))
        pod_name = f"{name}-{hashes[name]}-{sim.suffix(5)}"
        app = "kube-dns" if name == "coredns" else name
        namespace = "ingress-nginx" if name == INGRESS_CONTROLLER else "kube-system"
        pod = sim.new_pod(service, pod_name, namespace, f"deployment/{name}", app, 0.0)
        sim.platform_pods.setdefault(name, []).append(pod)


def add_traffic(sim: Simulation) -> None:
    add_probes(sim)
    platform = sim.app.platform
    if platform.api_watchers > 0:
        _watches(sim)
    if platform.node_local:
        _node_local(sim)
    if platform.metrics.scraper != "none":
        _metrics(sim)
    if platform.logs.bytes_per_second > 0:
        _logs(sim)
    _image_pulls(sim)


def _span(sim: Simulation, pod: int) -> tuple[float, float]:
    return sim.pods.added[pod], min(sim.pods.deleted[pod], sim.cfg.duration)


def add_probes(sim: Simulation) -> None:
    """Readiness and liveness probes of every pod, by type, from the node's address on the pod bridge."""
    rng = sim.rng
    gateway = ipv4_int(network.POD_GATEWAY)
    ts, ips, ports, kinds = [], [], [], []
    for pod, service in enumerate(sim.pods.service):
        if service == JOB_SERVICE:
            continue
        if service >= 0:
            svc = sim.app.services[sim.names[service]]
            probes, port = (svc.probes.readiness, svc.probes.liveness), svc.port
        else:  # CoreDNS answers plain HTTP health checks; the other system pods serve theirs over TLS
            system = "http" if service == DNS_SERVICE else "https"
            probes, port = (None, None), HEALTH_PORT
        start, end = _span(sim, pod)
        for probe in probes:
            kind, period = (probe.type, probe.period) if probe else (system, 10.0)
            if kind in ("exec", "none"):
                continue
            t = np.arange(start + rng.uniform(1.0, period), end, period)
            ts.append(t)
            ips.append(np.full(t.shape[0], sim.pods.ip[pod]))
            ports.append(np.full(t.shape[0], port))
            kinds.append(np.full((t.shape[0], 2), PROBE_BYTES[kind]))
    if not ts:
        return
    t, ip, port, sizes = (np.concatenate(x) for x in (ts, ips, ports, kinds))
    n = t.shape[0]
    sim.conns.add(
        t0=t,
        dur=0.002,
        mode=MODE_TCP,
        c1=gateway,
        s1=ip,
        sport=rng.integers(*EPHEMERAL_PORTS, n),
        dport=port,
        req=sizes[:, 0],
        resp=sizes[:, 1],
    )


def _watches(sim: Simulation) -> None:
    """Every system pod's watch connection to the API server, its sparse events and its periodic relists."""
    rng = sim.rng
    api_vip, node = ipv4_int(network.API_VIP), ipv4_int(network.NODE_IP)
    for pods in sim.platform_pods.values():
        for pod in pods:
            start, end = _span(sim, pod)
            ip = sim.pods.ip[pod]
            sport = int(rng.integers(*EPHEMERAL_PORTS))
            n = rng.poisson(WATCH_EVENTS_PER_SECOND * (end - start))
            t = np.r_[start + 0.5, np.sort(rng.uniform(start + 1, end, n))]
            mode = np.r_[MODE_OPEN, np.full(n, MODE_STREAM)]
            resp = np.r_[1200, rng.integers(*WATCH_EVENT, n)]
            sim.conns.add(
                t0=t,
                dur=0.001,
                mode=mode,
                c1=ip,
                s1=api_vip,
                c2=ip,
                s2=node,
                sport=sport,
                dport=443,
                req=np.r_[400, np.zeros(n, np.int64)],
                resp=resp,
            )
            relist = np.arange(start + rng.uniform(0, RELIST_PERIOD), end, RELIST_PERIOD)
            k = relist.shape[0]
            sim.conns.add(
                t0=relist,
                dur=0.02,
                mode=MODE_TCP,
                c1=ip,
                s1=api_vip,
                c2=ip,
                s2=node,
                sport=rng.integers(*EPHEMERAL_PORTS, k),
                dport=443,
                req=450,
                resp=rng.integers(RELIST_BYTES // 2, 2 * RELIST_BYTES, k),
                rounds=3,
            )


def _node_local(sim: Simulation) -> None:
    """API server ↔ etcd on loopback and node components ↔ API server on the node address, every second."""
    rng = sim.rng
    t = np.arange(rng.uniform(0, 1), sim.cfg.duration, 1.0)
    n = t.shape[0]
    loopback, node = ipv4_int(network.LOOPBACK), ipv4_int(network.NODE_IP)
    for client, port, per_second, exchanges in (
        (loopback, ETCD_PORT, ETCD_BYTES_PER_SECOND, ETCD_EXCHANGES_PER_SECOND),
        (node, network.API_PORT, NODE_API_BYTES_PER_SECOND, NODE_API_EXCHANGES_PER_SECOND),
    ):
        total = rng.gamma(4.0, per_second / 4.0, n)  # bursty: a coefficient of variation of 0.5 per second
        rounds = np.maximum(rng.poisson(exchanges, n), 1)
        sim.conns.add(
            t0=t,
            dur=0.9,
            mode=MODE_STREAM,
            c1=client,
            s1=client,
            sport=int(rng.integers(*EPHEMERAL_PORTS)),
            dport=port,
            req=np.rint(total * 0.3).astype(np.int64),
            resp=np.rint(total * 0.7).astype(np.int64),
            rounds=rounds,
        )


def _metrics(sim: Simulation) -> None:
    """metrics-server reads the kubelet's summary; Prometheus scrapes every pod's metrics."""
    rng = sim.rng
    metrics = sim.app.platform.metrics
    node = ipv4_int(network.NODE_IP)
    if metrics.scraper == "metrics-server":
        pod = sim.platform_pods["metrics-server"][0]
        start, end = _span(sim, pod)
        t = np.arange(start + rng.uniform(0, metrics.interval), end, metrics.interval)
        n = t.shape[0]
        live = np.array([sim.alive(x).shape[0] for x in t])
        sim.conns.add(
            t0=t,
            dur=0.03,
            mode=MODE_TCP,
            c1=sim.pods.ip[pod],
            s1=node,
            sport=rng.integers(*EPHEMERAL_PORTS, n),
            dport=KUBELET_PORT,
            req=300,
            resp=METRICS_SUMMARY * live,
            rounds=1,
        )
        return
    scraper = sim.platform_pods["prometheus"][0]
    targets = [p for p in range(len(sim.pods.service)) if p != scraper]
    for pod in targets:
        start, end = _span(sim, pod)
        t = np.arange(start + rng.uniform(0, metrics.interval), end, metrics.interval)
        n = t.shape[0]
        service = sim.pods.service[pod]
        port = sim.app.services[sim.names[service]].port if service >= 0 else HEALTH_PORT
        sim.conns.add(
            t0=t,
            dur=0.01,
            mode=MODE_TCP,
            c1=sim.pods.ip[scraper],
            s1=sim.pods.ip[pod],
            sport=rng.integers(*EPHEMERAL_PORTS, n),
            dport=port,
            req=PROMETHEUS_SCRAPE[0],
            resp=rng.integers(PROMETHEUS_SCRAPE[1] // 2, 2 * PROMETHEUS_SCRAPE[1], n),
        )


def _logs(sim: Simulation) -> None:
    """A log shipper pushes the node's log lines to its collector every 5 seconds (through SNAT when outside)."""
    rng = sim.rng
    logs = sim.app.platform.logs
    pod = sim.platform_pods["fluent-bit"][0]
    t = np.arange(rng.uniform(0, 5), sim.cfg.duration, 5.0)
    n = t.shape[0]
    size = rng.gamma(2.0, logs.bytes_per_second * 5 / 2.0, n).astype(np.int64)
    target = logs.to
    if target in sim.index:
        j = sim.index[target]
        rows = CallRows(t, np.full(n, 0.01), size, np.full(n, 120), np.ones(n, np.int64))
        connect(sim, np.full(n, pod), j, rows, policy=ConnectionPolicy(kind="stream"))
        return
    out = ipv4_int(target)
    sim.conns.add(
        t0=t,
        dur=0.01,
        mode=np.r_[MODE_OPEN, np.full(n - 1, MODE_STREAM)],
        c1=sim.pods.ip[pod],
        s1=out,
        c2=ipv4_int(network.NODE_IP),
        s2=out,
        sport=int(rng.integers(*EPHEMERAL_PORTS)),
        dport=24224,
        req=size,
        resp=60,
    )


def _image_pulls(sim: Simulation) -> None:
    """The node pulls a new pod's image from the registry (pods of the first moment were pulled before)."""
    rng = sim.rng
    node = ipv4_int(network.NODE_IP)
    for pod, service in enumerate(sim.pods.service):
        if service < 0 or sim.pods.added[pod] <= 0:
            continue
        life = sim.app.services[sim.names[service]].pod_life
        if life.image_bytes <= 0 or not life.registry:
            continue
        size = int(life.image_bytes * rng.uniform(0.8, 1.2))
        sim.conns.add(
            t0=max(sim.pods.added[pod] - 4.0 + rng.uniform(0, 1), 0.0),
            dur=max(size / 50e6, 0.2),
            mode=MODE_TCP,
            c1=node,
            s1=ipv4_int(life.registry),
            sport=int(rng.integers(*EPHEMERAL_PORTS)),
            dport=443,
            req=2_000 * IMAGE_LAYERS,
            resp=size,
            rounds=IMAGE_LAYERS,
        )
