"""The synthetic traffic model, part by part: each test builds a small application, simulates it, and checks the
property that part promises on the connection table or the bundle (docs/architecture.md#synthetic-source)."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mimir import network
from mimir.apps import load_app
from mimir.loadmodel import DEFAULT_MIX
from mimir.sources.synthetic import synthesize
from mimir.sources.synthetic.connections import MODE_OPEN, MODE_REFUSED, MODE_STREAM, MODE_TCP, MODE_UDP
from mimir.sources.synthetic.simulation import Simulation
from mimir.spec import ExfilWindow, RunSpec

GATEWAY = int(ipaddress.IPv4Address(network.POD_GATEWAY))
NODE = int(ipaddress.IPv4Address(network.NODE_IP))
CLIENT = int(ipaddress.IPv4Address(network.LOAD_GENERATOR_IP))
DNS_VIP = int(ipaddress.IPv4Address(network.KUBE_DNS_VIP))


def page(**extra: Any) -> dict[str, Any]:
    return {"name": "GET /", "request": 400, "response": 20000, **extra}


def base_app(**changes: Any) -> dict[str, Any]:
    """A front end over a database: every behaviour is one page with two queries to the database."""
    db_calls = [{"to": "db", "request": 300, "response": 5000}, {"to": "db", "request": 300, "response": 9000}]
    app: dict[str, Any] = {
        "name": "tiny",
        "namespace": "shop",
        "entry": "front",
        "sensitive": ["db"],
        "services": {
            "front": {"tier": "frontend", "port": 8080, "replicas": 2},
            "db": {"tier": "database", "port": 3306, "replicas": 2},
        },
        "requests": {k: {"steps": [page(calls=db_calls)]} for k in DEFAULT_MIX},
    }
    for key, value in changes.items():
        if key in ("front", "db"):
            app["services"][key].update(value)
        else:
            app[key] = value
    return app


def simulate(tmp_path: Path, app: dict[str, Any], **run: Any) -> tuple[Simulation, dict[str, np.ndarray]]:
    path = tmp_path / f"{app['name']}.yaml"
    path.write_text(yaml.safe_dump(app, sort_keys=False))
    spec = RunSpec(
        app=load_app(str(path)), users=run.pop("users", 10), duration=run.pop("duration", 240.0), seed=3, **run
    )
    sim = Simulation(spec)
    return sim, sim.run()


def calls_to(conns: dict[str, np.ndarray], port: int) -> np.ndarray:
    """Connections to a port, without the kubelet's probes."""
    return (conns["dport"] == port) & (conns["c1"] != GATEWAY)


def pod_ips(sim: Simulation, service: str) -> set[int]:
    j = sim.index[service]
    return {ip for ip, s in zip(sim.pods.ip, sim.pods.service, strict=True) if s == j}


def test_exec_probes_make_no_packets(tmp_path: Path) -> None:
    probes = {"readiness": {"type": "exec"}, "liveness": {"type": "exec"}}
    sim, conns = simulate(tmp_path, base_app(db={"probes": probes}, front={"probes": {"readiness": {"type": "tcp"}}}))
    from_gateway = conns["c1"] == GATEWAY
    assert not np.isin(conns["s1"][from_gateway], list(pod_ips(sim, "db"))).any()
    front = from_gateway & np.isin(conns["s1"], list(pod_ips(sim, "front")))
    assert front.any()
    assert (conns["req"][front] == 0).all() and (conns["resp"][front] == 0).all()  # tcp probes carry no data


def test_grpc_probes_make_a_health_check(tmp_path: Path) -> None:
    probes = {"readiness": {"type": "grpc", "period": 10}, "liveness": {"type": "exec"}}
    sim, conns = simulate(tmp_path, base_app(db={"probes": probes}))
    mine = (conns["c1"] == GATEWAY) & np.isin(conns["s1"], list(pod_ips(sim, "db")))
    assert mine.any() and (conns["req"][mine] > 0).all() and (conns["resp"][mine] > 0).all()


def test_http_probes_carry_a_request_and_an_answer(tmp_path: Path) -> None:
    probes = {"readiness": {"type": "http", "period": 5}, "liveness": {"type": "http", "period": 20}}
    sim, conns = simulate(tmp_path, base_app(front={"probes": probes}))
    pod = sorted(pod_ips(sim, "front"))[0]
    mine = (conns["c1"] == GATEWAY) & (conns["s1"] == pod)
    assert (conns["req"][mine] > 0).all() and (conns["resp"][mine] > 0).all()
    assert abs(mine.sum() - (240 / 5 + 240 / 20)) <= 3


def test_statefulset_restart_changes_the_address_and_causes_an_ist_burst(tmp_path: Path) -> None:
    db = {
        "kind": "statefulset",
        "replicas": 3,
        "pod_life": {"restarts_per_hour": 30},
        "probes": {"readiness": {"type": "exec"}, "liveness": {"type": "exec"}},
    }
    transfer = {"port": 4568, "ist": 3_000_000, "sst": 0}
    replication = [{"service": "db", "port": 4567, "bytes_per_second": 2000, "frame": 180, "state_transfer": transfer}]
    sim, conns = simulate(tmp_path, base_app(db=db, replication=replication), duration=600.0)
    members: dict[str, set[int]] = {}
    for name, ip, s in zip(sim.pods.name, sim.pods.ip, sim.pods.service, strict=True):
        if s == sim.index["db"]:
            members.setdefault(name, set()).add(ip)
    assert set(members) == {"db-0", "db-1", "db-2"}  # ordinal names survive restarts
    assert any(len(ips) > 1 for ips in members.values())  # ... but a restarted member has a new address
    ist = conns["dport"] == 4568
    assert ist.any()
    rejoined = [ip for ip, again in zip(sim.pods.ip, sim.pods.rejoined, strict=True) if again]
    assert set(conns["s1"][ist]) <= set(rejoined)
    assert (conns["req"][ist] >= 0.7 * 3_000_000).all()


def test_ndots_expansion_makes_nxdomains_before_the_answer(tmp_path: Path) -> None:
    egress = [{"from": "front", "to": "198.51.100.10", "port": 443, "request": 500, "response": 4000, "interval": 60}]
    counts = {}
    for qualified in (False, True):
        app = base_app(front={"dns": {"resolves": True, "qualified": qualified}}, egress=egress, dns={"ttl": 0})
        _, conns = simulate(tmp_path, app, users=1)
        lookups = (conns["s1"] == DNS_VIP) & (conns["mode"] == MODE_UDP)
        answers_empty = conns["resp"][lookups] - conns["req"][lookups] >= 70
        calls_out = (conns["s1"] == int(ipaddress.IPv4Address("198.51.100.10"))).sum()
        counts[qualified] = (lookups.sum(), answers_empty.sum(), calls_out)
    queries, empty, calls = counts[False]
    # per lookup of the external name: 3 search domains x (A, AAAA) NXDOMAIN, then A and AAAA (AAAA empty)
    assert calls > 0
    assert queries - counts[True][0] == 6 * calls
    assert empty >= 7 * calls


def test_services_that_do_not_resolve_make_no_dns(tmp_path: Path) -> None:
    _, conns = simulate(tmp_path, base_app(front={"dns": {"resolves": False}}))
    assert not (conns["s1"] == DNS_VIP).any()


def test_resolver_cache_keeps_one_lookup_per_ttl(tmp_path: Path) -> None:
    sim, conns = simulate(tmp_path, base_app(dns={"ttl": 30}), duration=300.0)
    lookups = conns["s1"] == DNS_VIP
    per_pod_and_period = 2 * len(pod_ips(sim, "front")) * (300 / 30 + 1)  # A and AAAA
    assert 0 < lookups.sum() <= per_pod_and_period


def test_per_page_connection_carries_all_queries_to_one_member(tmp_path: Path) -> None:
    sim, conns = simulate(tmp_path, base_app(db={"connection": "per-page"}))
    db = calls_to(conns, 3306)
    assert (conns["mode"][db] == MODE_TCP).all()
    assert (conns["rounds"][db] == 2).all()  # two queries of one page on one connection
    assert np.isin(conns["s2"][db], list(pod_ips(sim, "db"))).all()


def test_keep_alive_reuses_connections_until_idle(tmp_path: Path) -> None:
    app = base_app(front={"connection": {"kind": "keep-alive", "idle": 10}})
    _, conns = simulate(tmp_path, app)
    entry = conns["c1"] == CLIENT
    modes = conns["mode"][entry]
    assert (modes == MODE_OPEN).sum() < (modes == MODE_STREAM).sum()
    # one user keeps one connection to one pod while it is busy: its client port maps to a single pod
    pairs = {(int(p), int(s)) for p, s in zip(conns["sport"][entry], conns["s2"][entry], strict=True)}
    assert len(pairs) == len({p for p, _ in pairs})


def test_streams_open_once_per_caller_pod(tmp_path: Path) -> None:
    _, conns = simulate(tmp_path, base_app(db={"connection": "stream"}))
    db = calls_to(conns, 3306)
    callers = set(conns["c1"][db])
    assert (conns["mode"][db] == MODE_OPEN).sum() == len(callers)


def test_pool_spreads_calls_over_its_connections_and_renews_them(tmp_path: Path) -> None:
    _, conns = simulate(tmp_path, base_app(db={"connection": {"kind": "pool", "size": 3, "lifetime": 60}}))
    db = calls_to(conns, 3306)
    opened = (conns["mode"][db] == MODE_OPEN).sum()
    callers = len(set(conns["c1"][db]))
    assert callers * 3 <= opened <= callers * 3 * (240 / 60 + 1)


def test_probabilistic_calls_happen_with_their_probability(tmp_path: Path) -> None:
    calls = [{"to": "db", "request": 300, "response": 5000, "probability": 0.25}]
    app = base_app(requests={k: {"steps": [page(calls=calls)]} for k in DEFAULT_MIX})
    _, conns = simulate(tmp_path, app, users=30)
    pages = (conns["c1"] == CLIENT).sum()
    queries = calls_to(conns, 3306).sum()
    assert abs(queries / pages - 0.25) < 4 * np.sqrt(0.25 * 0.75 / pages)


def test_page_mixes_pick_pages_by_weight(tmp_path: Path) -> None:
    choose = {
        "choose": [
            {"weight": 3, "name": "GET /a", "request": 400, "response": 11111},
            {"weight": 1, "name": "GET /b", "request": 400, "response": 99999},
        ],
        "repeat": 4,
    }
    app = base_app(requests={k: {"steps": [choose]} for k in DEFAULT_MIX}, sizes={"sigma": 0.0})
    _, conns = simulate(tmp_path, app, users=20)
    entry = conns["c1"] == CLIENT
    share_b = (conns["resp"][entry] == 99999).mean()
    assert abs(share_b - 0.25) < 0.05


def test_errors_answer_small_and_skip_the_rest_of_the_tree(tmp_path: Path) -> None:
    app = base_app(errors={"share": 0.2, "response": 350}, sizes={"sigma": 0.0})
    _, conns = simulate(tmp_path, app, users=20)
    entry = conns["c1"] == CLIENT
    failed = (conns["resp"][entry] == 350).mean()
    assert abs(failed - 0.2) < 0.05
    pages, queries = entry.sum(), calls_to(conns, 3306).sum()
    assert queries == pytest.approx(pages * (2 * 0.8 + 1 * 0.2), rel=0.1)  # a failed page makes its first call only


def test_failed_calls_are_refused_connections(tmp_path: Path) -> None:
    _, conns = simulate(tmp_path, base_app(errors={"share": 0.3, "response": 350}), users=20)
    db = calls_to(conns, 3306)
    refused = db & (conns["mode"] == MODE_REFUSED)
    assert refused.sum() == pytest.approx(0.3 * (conns["c1"] == CLIENT).sum(), rel=0.2)  # one per failed page


def test_think_times_follow_their_distribution(tmp_path: Path) -> None:
    from mimir.sources.synthetic.sessions import think_times

    app = load_app("wordpress")
    rng = np.random.default_rng(1)
    exp = type(app.think_time)(distribution="exponential", min=0.0, max=1e9, mean=5.0)
    draws = think_times(exp, 20000, rng)
    assert draws.mean() == pytest.approx(5.0, rel=0.05)
    assert np.median(draws) == pytest.approx(5.0 * np.log(2), rel=0.05)
    logn = type(app.think_time)(distribution="lognormal", min=1.0, max=60.0, median=4.0, sigma=0.8)
    draws = think_times(logn, 20000, rng)
    assert np.median(draws) == pytest.approx(4.0, rel=0.05)
    assert draws.min() >= 1.0 and draws.max() <= 60.0


def test_heavy_tailed_responses(tmp_path: Path) -> None:
    app = base_app(sizes={"sigma": 0.1, "tail_share": 0.1, "tail_alpha": 1.2})
    _, conns = simulate(tmp_path, app, users=30)
    resp = conns["resp"][conns["c1"] == CLIENT]
    assert np.quantile(resp, 0.999) > 5 * np.median(resp)


def test_static_assets_follow_the_page_from_the_user(tmp_path: Path) -> None:
    steps = [page(assets={"count": 5, "response": 7000})]
    app = base_app(requests={k: {"steps": steps} for k in DEFAULT_MIX}, sizes={"sigma": 0.0})
    _, conns = simulate(tmp_path, app, users=5)
    entry = conns["c1"] == CLIENT
    assert (conns["req"][entry] == 420).sum() > 4 * (conns["req"][entry] != 420).sum()


def test_nodeport_ingress_has_three_views(tmp_path: Path) -> None:
    sim, conns = simulate(tmp_path, base_app(ingress={"type": "nodeport"}))
    entry = conns["c1"] == CLIENT
    assert (conns["s1"][entry] == NODE).all()  # the client talks to the node
    assert (conns["c2"][entry] == GATEWAY).all()  # the pod sees the bridge gateway (SNAT)
    assert np.isin(conns["s2"][entry], list(pod_ips(sim, "front"))).all()
    assert (conns["c3"][entry] == CLIENT).all() and (conns["s3"][entry] == conns["s2"][entry]).all()


def test_service_ingress_is_the_vip(tmp_path: Path) -> None:
    sim, conns = simulate(tmp_path, base_app())
    entry = conns["c1"] == CLIENT
    assert (conns["s1"][entry] == sim.vip[sim.index["front"]]).all()
    assert (conns["s3"][entry] == 0).all()


def test_udp_services_get_datagrams(tmp_path: Path) -> None:
    app = base_app(db={"protocol": "udp"})
    _, conns = simulate(tmp_path, app)
    assert (conns["mode"][calls_to(conns, 3306)] == MODE_UDP).all()


def test_periodic_calls_including_loopback_cron(tmp_path: Path) -> None:
    periodic = [
        {"from": "front", "to": "front", "request": 300, "response": 200, "interval": 60},
        {"from": "front", "to": "db", "request": 90, "response": 90, "interval": 5, "protocol": "udp"},
        {"from": "db", "to": "db", "port": 7946, "request": 60, "response": 60, "interval": 10},  # gossip
    ]
    sim, conns = simulate(tmp_path, base_app(periodic=periodic), users=1)
    front = list(pod_ips(sim, "front"))
    cron = np.isin(conns["c1"], front) & (conns["s1"] == sim.vip[sim.index["front"]])
    assert abs(cron.sum() - 2 * 240 / 60) <= 2
    heartbeat = np.isin(conns["c1"], front) & (conns["mode"] == MODE_UDP) & (conns["dport"] == 3306)
    assert abs(heartbeat.sum() - 2 * 240 / 5) <= 2
    gossip = np.isin(conns["c1"], list(pod_ips(sim, "db"))) & (conns["dport"] == 7946)
    assert abs(gossip.sum() - 2 * 240 / 10) <= 2  # on the rule's own port, not the service's


def test_galera_replication_moves_with_writes_in_small_frames(tmp_path: Path) -> None:
    replication = [{"service": "db", "port": 4567, "bytes_per_second": 1000, "per_write": 0.5, "frame": 180}]
    db = {"replicas": 3, "kind": "statefulset"}
    _, conns = simulate(tmp_path, base_app(db=db, replication=replication), users=40, duration=480.0)
    rep = conns["dport"] == 4567
    pairs = {(int(a), int(b)) for a, b in zip(conns["c1"][rep], conns["s1"][rep], strict=True)}
    assert len(pairs) == 6  # every ordered pair of three members
    per_message = conns["req"][rep] / conns["rounds"][rep]
    assert per_message.max() <= 180
    # per-second bytes follow the load: more users at the peak phase than at the trough
    t = conns["t0"][rep]
    busy, quiet = conns["req"][rep][(t > 360) & (t < 400)].mean(), conns["req"][rep][(t > 100) & (t < 140)].mean()
    assert busy > quiet


def test_platform_watches_scrapes_and_node_local(tmp_path: Path) -> None:
    platform = {"api_watchers": 4, "metrics": {"scraper": "prometheus", "interval": 15}, "node_local": True}
    sim, conns = simulate(tmp_path, base_app(platform=platform))
    api = conns["s1"] == int(ipaddress.IPv4Address(network.API_VIP))
    assert len(set(conns["c1"][api])) >= 4
    scraper = sim.pods.ip[sim.platform_pods["prometheus"][0]]
    scraped = set(conns["s1"][conns["c1"] == scraper])
    assert pod_ips(sim, "front") | pod_ips(sim, "db") <= scraped  # an edge to every pod
    loopback = int(ipaddress.IPv4Address(network.LOOPBACK))
    assert (conns["c1"] == loopback).sum() >= 200


def test_rolling_update_replaces_pods_under_a_new_hash(tmp_path: Path) -> None:
    front = {"replicas": 4, "pod_life": {"rollouts_per_day": 2000}}
    sim, _ = simulate(tmp_path, base_app(front=front), duration=600.0)
    names = [n for n, s in zip(sim.pods.name, sim.pods.service, strict=True) if s == sim.index["front"]]
    hashes = {n.rsplit("-", 2)[1] for n in names}
    assert len(hashes) > 1 and len(names) > 4


def test_crash_loops_keep_the_address_but_stop_serving(tmp_path: Path) -> None:
    front = {"replicas": 3, "pod_life": {"crash_loops_per_hour": 60}}
    sim, _ = simulate(tmp_path, base_app(front=front), duration=600.0)
    j = sim.index["front"]
    assert len([s for s in sim.pods.service if s == j]) == 3  # nobody replaced
    assert ((sim.serving[j] >= 0).sum(axis=1) < 3).any()  # some windows with a pod out of the endpoints


def test_image_pulls_when_pods_start(tmp_path: Path) -> None:
    registry = "198.51.100.200"
    front = {"replicas": 2, "autoscale": {"min": 1, "max": 6, "calls_per_replica": 0.3}}
    life = {"image_bytes": 30_000_000, "registry": registry}
    sim, conns = simulate(tmp_path, base_app(front=front, pod_life=life), users=30, duration=600.0)
    pulls = conns["s1"] == int(ipaddress.IPv4Address(registry))
    later = sum(1 for t, s in zip(sim.pods.added, sim.pods.service, strict=True) if t > 0 and s >= 0)
    assert later > 0 and pulls.sum() == later
    assert (conns["c1"][pulls] == NODE).all()


def test_backup_job_moves_a_database_out(tmp_path: Path) -> None:
    jobs = [{"name": "backup", "at": 60, "reads_from": "db", "bytes": 50_000_000, "to": "198.51.100.99"}]
    sim, conns = simulate(tmp_path, base_app(jobs=jobs))
    pod = sim.pods.name.index(next(n for n in sim.pods.name if n.startswith("backup-")))
    ip = sim.pods.ip[pod]
    read = (conns["c1"] == ip) & (conns["dport"] == 3306)
    out = (conns["c1"] == ip) & (conns["s1"] == int(ipaddress.IPv4Address("198.51.100.99")))
    assert conns["resp"][read].sum() == 50_000_000 and conns["req"][out].sum() == 50_000_000


def test_the_bundle_names_platform_and_job_pods(tmp_path: Path) -> None:
    app = base_app(
        platform={"api_watchers": 3}, jobs=[{"name": "backup", "at": 30, "reads_from": "db", "bytes": 1000, "to": "db"}]
    )
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(app))
    spec = RunSpec(app=load_app(str(path)), users=3, duration=120.0, seed=1)
    synthesize(spec, tmp_path / "run", progress=False)
    events = [json.loads(line) for line in (tmp_path / "run" / "entities.jsonl").read_text().splitlines()]
    kinds = {(e["namespace"], e["owner"].split("/")[0]) for e in events if e["kind"] == "pod"}
    assert ("kube-system", "deployment") in kinds and ("shop", "job") in kinds
    node = next(e for e in events if e["kind"] == "node")
    assert network.POD_GATEWAY in node["ips"]


def test_addresses_are_given_round_robin_and_reused_after_the_range_wraps(tmp_path: Path) -> None:
    front = {"replicas": 20, "pod_life": {"restarts_per_hour": 3600}}  # every pod replaced every 30 s
    sim, _ = simulate(tmp_path, base_app(front=front), users=1, duration=600.0)
    holders: dict[int, set[str]] = {}
    for name, ip in zip(sim.pods.name, sim.pods.ip, strict=True):
        holders.setdefault(ip, set()).add(name)
    assert len(sim.pods.name) > 254  # more pods than the node's /24 holds
    assert any(len(names) > 1 for names in holders.values())  # so a deleted pod's address went to a new pod
    live_at_once = max(sim.alive(t).shape[0] for t in np.arange(0, 600, 15.0))
    assert len(holders) <= 253 and live_at_once <= 253


def test_coredns_forwards_external_names_upstream(tmp_path: Path) -> None:
    egress = [{"from": "front", "to": "198.51.100.10", "port": 443, "request": 500, "response": 4000, "interval": 20}]
    app = base_app(egress=egress, dns={"ttl": 0, "upstream": "198.51.100.53"})
    sim, conns = simulate(tmp_path, app, users=1)
    upstream = conns["s1"] == int(ipaddress.IPv4Address("198.51.100.53"))
    coredns = {sim.pods.ip[p] for p in sim.platform_pods["coredns"]}
    assert upstream.any() and set(conns["c1"][upstream]) <= coredns  # an edge from CoreDNS to the outside
    assert (conns["c2"][upstream] == NODE).all()  # and the node's view after SNAT
    assert upstream.sum() <= 240 / 30 + 1  # at most once per CoreDNS cache period


def test_log_shipping_streams_to_its_collector(tmp_path: Path) -> None:
    platform = {"logs": {"bytes_per_second": 2000, "to": "198.51.100.77"}}
    sim, conns = simulate(tmp_path, base_app(platform=platform), users=1)
    shipper = sim.pods.ip[sim.platform_pods["fluent-bit"][0]]
    shipped = (conns["c1"] == shipper) & (conns["s1"] == int(ipaddress.IPv4Address("198.51.100.77")))
    assert conns["req"][shipped].sum() == pytest.approx(2000 * 240, rel=0.2)
    assert (conns["mode"][shipped] == MODE_OPEN).sum() == 1  # one long-lived connection


def test_load_balancer_ingress_fronts_the_node_port(tmp_path: Path) -> None:
    from mimir.sources.synthetic.routing import LOAD_BALANCER_IP

    _, conns = simulate(tmp_path, base_app(ingress={"type": "loadbalancer"}))
    entry = conns["c1"] == CLIENT
    assert (conns["s1"][entry] == int(ipaddress.IPv4Address(LOAD_BALANCER_IP))).all()
    assert (conns["c2"][entry] == GATEWAY).all() and (conns["c3"][entry] == CLIENT).all()


def test_ingress_controller_pods_forward_to_the_entry(tmp_path: Path) -> None:
    sim, conns = simulate(tmp_path, base_app(ingress={"type": "ingress-controller"}))
    controllers = {sim.pods.ip[p] for p in sim.platform_pods["ingress-nginx-controller"]}
    entry = conns["c1"] == CLIENT
    assert entry.any() and set(conns["s2"][entry]) <= controllers  # users reach a controller pod
    forwarded = np.isin(conns["c1"], list(controllers)) & (conns["s1"] == sim.vip[sim.index["front"]])
    assert forwarded.any() and set(conns["s2"][forwarded]) <= pod_ips(sim, "front")
    assert sim.pods.namespace[sim.platform_pods["ingress-nginx-controller"][0]] == "ingress-nginx"


def test_ingress_segment_gives_the_outer_view_its_own_segments(tmp_path: Path) -> None:
    sim, conns = simulate(tmp_path, base_app(ingress={"type": "nodeport", "segment": 4344}))
    outer = (conns["c1"] == CLIENT) & (conns["s1"] == NODE)
    inner = (conns["c1"] == GATEWAY) & np.isin(conns["s1"], list(pod_ips(sim, "front"))) & (conns["req"] > 0)
    assert (conns["mss"][outer] == 4344).all() and (conns["mss"][inner] != 4344).all()
    assert outer.sum() == inner.sum()  # the same calls, once per side of the node


def test_a_client_pulls_exfiltration_through_the_ingress_controller(tmp_path: Path) -> None:
    app = base_app(ingress={"type": "ingress-controller"})
    window = ExfilWindow(("db", "front", "ingress"), 600e3, 60.0, 60.0)
    sim, conns = simulate(tmp_path, app, users=1, exfil=(window,))
    controllers = {sim.pods.ip[p] for p in sim.platform_pods["ingress-nginx-controller"]}
    (record,) = sim.exfil_windows
    front = sim.pods.ip[sim.pods.name.index(record["pods"][1])]
    big = conns["resp"] >= 50_000  # a 5 s chunk: 50 KB
    to_client = big & (conns["c1"] == CLIENT)
    assert to_client.any() and set(conns["s2"][to_client]) <= controllers  # users reach a controller pod
    forwarded = big & np.isin(conns["c1"], list(controllers)) & (conns["s1"] == sim.vip[sim.index["front"]])
    assert set(conns["s2"][forwarded]) == {front}  # which asks the front pod of the path, through its VIP
    assert conns["resp"][to_client].sum() == conns["resp"][forwarded].sum() == record["bytes"] == 600e3


def test_dns_tunnelling_without_an_upstream_goes_to_the_attackers_server(tmp_path: Path) -> None:
    window = ExfilWindow(("db", "front", "kube-dns", "outside"), 120e3, 20.0, 60.0, "bursts")
    sim, conns = simulate(tmp_path, base_app(), users=1, exfil=(window,))
    coredns = {sim.pods.ip[p] for p in sim.platform_pods["coredns"]}
    tunnel = (conns["s1"] == DNS_VIP) & np.isin(conns["c1"], list(pod_ips(sim, "front"))) & (conns["req"] > 100)
    out = (conns["s1"] == int(ipaddress.IPv4Address(network.EXFIL_DESTINATION))) & (conns["dport"] == 53)
    assert (conns["mode"][tunnel | out] == MODE_UDP).all() and conns["req"][tunnel].max() <= 250
    assert set(conns["c1"][out]) <= coredns and conns["req"][out].sum() == conns["req"][tunnel].sum()
    assert len(np.unique(np.floor(conns["t0"][out]))) <= 12  # four bursts of 3 s
    assert sim.exfil_windows[0]["pods"][2].startswith("coredns-")
