"""`mimir synth`: runs that look like a capture on a Kubernetes node, checked with tshark, mimir ingest and the
application files themselves."""

from __future__ import annotations

import bisect
import ipaddress
import json
import subprocess
from collections import defaultdict
from functools import cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from conftest import run_mimir
from oracle import flow_totals

from mimir.apps import load_app
from mimir.capture.ingest import ingest
from mimir.errors import UsageError
from mimir.loadmodel import DEFAULT_MIX, PHASES, daily_curve, parse_mix
from mimir.network import (
    EXFIL_DESTINATION,
    KUBE_DNS_VIP,
    LOAD_GENERATOR_IP,
    NODE_IP,
    POD_GATEWAY,
    POD_NETWORK,
    SERVICE_NETWORK,
)
from mimir.sources.synthetic import synthesize
from mimir.spec import ExfilWindow, RunSpec

APPS = ["sockshop", "wordpress", "online-boutique"]
MIX = ",".join(f"{kind}={weight}" for kind, weight in DEFAULT_MIX.items())


def config(app: str, duration: float = 480, users: int = 20, mix: str = MIX, seed: int = 1, **kw) -> RunSpec:
    model = load_app(app)
    return RunSpec(app=model, duration=duration, users=users, mix=parse_mix(mix, list(model.requests)), seed=seed,
                   **kw)  # fmt: skip


@cache
def run(
    tmp: Path, app: str, users: int = 20, mix: str = MIX, seed: int = 1, duration: float = 480
) -> tuple[Path, pa.Table, dict]:
    """A generated run (made once per arguments), its flows and the generator's own counts."""
    out = tmp / f"{app}-{users}-{mix}-{seed}-{duration}"
    cfg = config(app, duration=duration, users=users, mix=mix, seed=seed, rotate=120)
    result = synthesize(cfg, out, truth=True, force=True)  # a run some other test made already: made again
    flows, _ = ingest(result.files, progress=False)
    return out, flows, result.truth


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synth")


class Entities:
    """Who held an address when, replayed from entities.jsonl (the test's own, simple replay)."""

    def __init__(self, path: Path):
        self.events = [json.loads(line) for line in path.read_text().splitlines()]
        self.spans: dict[str, list[tuple[float, float, str, str]]] = defaultdict(list)  # ip -> (from, to, kind, app)
        open_since: dict[str, tuple[float, str, str]] = {}
        for e in self.events:
            for ip in e["ips"]:
                key = f"{e['kind']}:{e['name']}:{ip}"
                if e["event"] == "added":
                    open_since[key] = (e["ts"], e["kind"], e["app"])
                elif e["event"] == "deleted":
                    start, kind, app = open_since.pop(key)
                    self.spans[ip].append((start, e["ts"], kind, app))
        for key, (start, kind, app) in open_since.items():
            self.spans[key.rsplit(":", 1)[1]].append((start, float("inf"), kind, app))
        for spans in self.spans.values():
            spans.sort()

    def at(self, ip: str, ts: float) -> tuple[str, str]:
        spans = self.spans.get(ip, [])
        k = bisect.bisect_right([s[0] for s in spans], ts) - 1
        if k >= 0 and spans[k][1] > ts:
            return spans[k][2], spans[k][3]
        return "outside", ip


def service_edges(out: Path, flows: pa.Table) -> dict[tuple[str, str, str, str], int]:
    """(src kind, src app, dst kind, dst app) -> bytes; the pod-level and VIP-level traffic matrix."""
    entities = Entities(out / "entities.jsonl")
    edges: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for row in flows.select(["ts", "src", "dst", "bytes"]).to_pylist():
        edges[(*entities.at(row["src"], row["ts"] + 0.5), *entities.at(row["dst"], row["ts"] + 0.5))] += row["bytes"]
    return edges


@pytest.mark.parametrize("app", APPS)
def test_files_read_cleanly_and_ingest_matches_the_generator(tmp: Path, app: str) -> None:
    out, flows, truth = run(tmp, app)
    files = sorted((out / "capture").glob("*.pcap"))
    assert len(files) == 4  # 480 s rotated every 120 s
    for f in files:
        done = subprocess.run(["tshark", "-r", str(f), "-q"], capture_output=True, text=True, check=False)
        problems = [line for line in done.stderr.splitlines() if "Running as user" not in line]
        assert done.returncode == 0 and not problems, problems
    expected = {(ipaddress.ip_address(s), ipaddress.ip_address(d), what): v[i]
                for (s, d), v in truth.items() for i, what in enumerate(("packets", "bytes"))}  # fmt: skip
    assert flow_totals(flows) == expected
    info = json.loads((out / "run.json").read_text())
    assert info["capture"]["files"] == [f"capture/{f.name}" for f in files] and info["source"] == "synthetic"


@pytest.mark.parametrize("app", APPS)
def test_traffic_matrix_follows_the_application(tmp: Path, app: str) -> None:
    out, flows, _ = run(tmp, app)
    model = load_app(app)
    edges = service_edges(out, flows)
    pod_to_pod = {(a, b) for (ka, a, kb, b), n in edges.items() if ka == kb == "pod" and n and "kube-dns" not in (a, b)}
    declared = model.edges()
    benign = declared | model.background_edges()  # the users' calls and the application's own timers and jobs
    allowed = benign | {(b, a) for a, b in benign}
    assert pod_to_pod <= allowed, pod_to_pod - allowed  # no edge between services that never call each other
    for caller, callee in declared:
        assert ("pod", caller, "pod", callee) in edges  # after DNAT, pod to pod
        assert ("pod", caller, "service", callee) in edges  # before DNAT, pod to the service VIP
        assert ("service", callee, "pod", caller) in edges  # the response, before un-DNAT
    if model.ingress.type == "service":
        assert ("outside", LOAD_GENERATOR_IP, "service", model.entry) in edges  # the load generator, through the VIP
    else:  # NodePort or load balancer: the half-NAT view shows the entry's pods answering the load generator
        assert ("pod", model.entry, "outside", LOAD_GENERATOR_IP) in edges
    resolvers = [caller for caller, _ in declared if model.services[caller].dns.resolves]
    assert any(
        k[:2] == ("pod", caller) and k[2:] == ("service", "kube-dns") for k in edges for caller in resolvers
    ) or (not resolvers)
    assert any(k[0] == "node" and k[2] == "pod" for k in edges)  # kubelet probes
    for r in model.replication:
        assert edges[("pod", r.service, "pod", r.service)] > 0
    for e in model.egress:
        if e.interval <= 240:  # a rarer timer may not fire in a 480 s run
            assert ("pod", e.source, "outside", e.to) in edges


def test_sockshop_edges_and_addressing(tmp: Path) -> None:
    out, flows, _ = run(tmp, "sockshop")
    edges = service_edges(out, flows)
    for caller, callee in [("front-end", "catalogue"), ("orders", "payment"), ("user", "user-db")]:
        assert edges[("pod", caller, "pod", callee)] > 0
    assert not edges.get(("pod", "catalogue", "pod", "payment"))
    entities = Entities(out / "entities.jsonl")
    for e in entities.events:
        for ip in e["ips"]:
            if e["kind"] == "node":  # the node's own address and its address on the pod bridge
                assert ip in (NODE_IP, POD_GATEWAY)
                continue
            network = {"pod": POD_NETWORK, "service": SERVICE_NETWORK}[e["kind"]]
            assert ipaddress.ip_address(ip) in ipaddress.ip_network(network)
    assert LOAD_GENERATOR_IP not in entities.spans  # the load generator is outside the cluster
    info = json.loads((out / "run.json").read_text())
    assert info["addresses"] == {"node": NODE_IP, "gateway": POD_GATEWAY, "load_generator": LOAD_GENERATOR_IP,
                                 "pod_network": POD_NETWORK, "service_network": SERVICE_NETWORK,
                                 "kube_dns": KUBE_DNS_VIP}  # fmt: skip


def test_autoscaling_adds_and_removes_pods(tmp: Path) -> None:
    out, _, _ = run(tmp, "sockshop", users=60, duration=2400)  # long enough for the 5-minute scale-down delay
    events = Entities(out / "entities.jsonl").events
    start = json.loads((out / "run.json").read_text())["start"]
    pods = [e for e in events if e["kind"] == "pod"]
    assert any(e["event"] == "added" and e["ts"] > start for e in pods)
    assert any(e["event"] == "deleted" for e in pods)
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def peak_request_bytes(out: Path, flows: pa.Table, entry: str) -> int:
    info = json.loads((out / "run.json").read_text())
    phase = (info["end"] - info["start"]) / PHASES
    lo, hi = info["start"] + 18 * phase, info["start"] + 19 * phase
    front = next(
        e["ips"][0] for e in Entities(out / "entities.jsonl").events if e["kind"] == "service" and e["name"] == entry
    )
    if load_app(info["app"]).ingress.type == "nodeport":
        front = NODE_IP  # users reach the node's port
    rows = flows.filter(
        pa.compute.and_(pa.compute.equal(flows["src"], LOAD_GENERATOR_IP), pa.compute.equal(flows["dst"], front))
    )
    return sum(r["bytes"] for r in rows.to_pylist() if lo <= r["ts"] < hi)


def test_doubling_users_doubles_peak_request_bytes(tmp: Path) -> None:
    single = peak_request_bytes(*run(tmp, "sockshop", users=20)[:2], "front-end")
    double = peak_request_bytes(*run(tmp, "sockshop", users=40)[:2], "front-end")
    assert 1.6 < double / single < 2.4
    assert daily_curve(100).max() == 100 and daily_curve(100).argmax() == 18


def test_no_buy_no_buy_only_path(tmp: Path) -> None:
    out, flows, _ = run(tmp, "sockshop", mix="browse=0.7,buy=0,register=0.3")
    edges = service_edges(out, flows)
    background = load_app("sockshop").background_edges()  # timers such as database heartbeats run whatever the mix
    background |= {(b, a) for a, b in background}
    user_traffic = {
        k
        for k, n in edges.items()
        if n and "node" not in (k[0], k[2]) and "kube-dns" not in (k[1], k[3]) and (k[1], k[3]) not in background
    }  # not the kubelet's probes, nor the lookups the timers make
    assert not any(k[1] == "orders" or k[3] in ("orders", "payment") for k in user_traffic)
    assert edges[("pod", "front-end", "pod", "catalogue")] > 0


def test_same_arguments_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    args = ["synth", "--app", "wordpress", "--duration", "120", "--users", "10", "--rotate", "60"]
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        run_mimir(*args, "--seed", seed, "-o", tmp_path / name, check=True)

    def contents(d: Path) -> dict[str, bytes]:
        return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    assert contents(tmp_path / "a") == contents(tmp_path / "b")
    assert (
        contents(tmp_path / "a")["capture/capture-00000.pcap"] != contents(tmp_path / "c")["capture/capture-00000.pcap"]
    )


@pytest.mark.parametrize(("shape", "seconds"), [("constant", 24), ("bursts", 12)])
def test_physical_exfiltration_is_in_the_capture_and_in_run_json(tmp_path: Path, shape: str, seconds: int) -> None:
    spec = f"path=user-db,user,front-end,outside;rate=600KB/min;start=200;duration=120;shape={shape}"
    cfg = config("sockshop", duration=400, users=10, exfil=(ExfilWindow.from_text(spec, load_app("sockshop")),))
    result = synthesize(cfg, tmp_path / "run", truth=True)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    (window,) = info["exfiltration"]
    assert window["path"] == ["user-db", "user", "front-end", "outside"] and len(window["pods"]) == 3
    assert window["bytes"] == pytest.approx(1.2e6, rel=0.01) and window["shape"] == shape
    assert window["start"] == info["start"] + 200 and window["end"] == info["start"] + 320
    flows, _ = ingest(result.files, progress=False)
    out_rows = [r for r in flows.to_pylist() if r["dst"] == EXFIL_DESTINATION]
    assert out_rows and all(window["start"] <= r["ts"] < window["end"] for r in out_rows)
    pod_ip = next(e["ips"][0] for e in Entities(tmp_path / "run" / "entities.jsonl").events
                  if e["name"] == window["pods"][2])  # fmt: skip
    sent = sum(r["bytes"] for r in out_rows if r["src"] == pod_ip)
    assert window["bytes"] < sent < 1.2 * window["bytes"]  # the payload plus headers and handshakes
    # a chunk every 5 s, or four bursts of 3 s: the same bytes in 12 of the window's seconds
    assert len({r["ts"] for r in out_rows if r["src"] == pod_ip}) == seconds


def edges_of(tmp_path: Path, name: str, *exfil: str) -> tuple[pd.DataFrame, dict]:
    """A short Sock Shop run through `mimir synth`, `mimir ingest` and `mimir edges`: its edges and its run.json."""
    run = tmp_path / name
    windows = [x for spec in exfil for x in ("--exfil", spec)]
    run_mimir("synth", "--app", "sockshop", "--duration", "240", "--users", "8", "-o", run, *windows, check=True)
    flows, edges = tmp_path / f"{name}.parquet", tmp_path / f"{name}.edges.parquet"
    run_mimir("ingest", *sorted((run / "capture").glob("*.pcap")), "-o", flows, check=True)
    run_mimir("edges", flows, run, "-o", edges, check=True)
    return pd.read_parquet(edges), json.loads((run / "run.json").read_text())


def test_policy_abiding_and_violating_windows_on_the_service_pairs(tmp_path: Path) -> None:
    """Pulled by a client through the front door, the data travels only service pairs benign traffic has; sent
    out from the front end, it makes a pair of its own."""
    abiding = "path=user-db,user,front-end,ingress;rate=600KB/min;start=60;duration=60"
    violating = "path=user-db,user,front-end,outside;rate=600KB/min;start=150;duration=60"
    edges, info = edges_of(tmp_path, "exfil", abiding, violating)
    benign, _ = edges_of(tmp_path, "benign")  # the same seed: the same benign traffic

    def pairs(e: pd.DataFrame) -> set[tuple[str, str]]:
        return set(zip(e["src_service"], e["dst_service"], strict=True))

    def sent(e: pd.DataFrame, a: str, b: str, window: dict) -> int:
        """What pods of `a` send to `b` within the window (the pods' view: not again as a VIP's)."""
        rows = (e["src_kind"] == "pod") & (e["src_service"] == a) & (e["dst_service"] == b)
        rows &= (e["ts"] >= window["start"]) & (e["ts"] < window["end"])
        return int(e.loc[rows, "bytes"].sum())

    assert pairs(edges) - pairs(benign) == {("front-end", "outside"), ("outside", "front-end")}  # and its answers
    for window, last in zip(info["exfiltration"], ("ingress", "outside"), strict=True):
        for a, b in [("user-db", "user"), ("user", "front-end"), ("front-end", last)]:
            extra = sent(edges, a, b, window) - sent(benign, a, b, window)
            assert window["bytes"] < extra < 1.1 * window["bytes"], (window["path"], a, b)


def test_exfiltration_windows_end_in_the_world_or_at_a_client() -> None:
    app = load_app("sockshop")
    text = ExfilWindow.from_text("path=user-db,user,front-end,ingress;rate=1MB/min;start=0;shape=bursts", app)
    entry = {"path": ["user-db", "user", "front-end", "ingress"], "rate": "1MB/min", "start": 0, "shape": "bursts"}
    mapping = ExfilWindow.from_mapping(entry, app, "runs.x.exfil[0]")
    assert text == mapping and text.shape == "bursts"
    assert ExfilWindow.from_text("path=user,kube-dns,outside;rate=1MB/min;start=0", app).shape == "constant"
    with pytest.raises(UsageError, match="12 s at least"):
        ExfilWindow.from_text("path=user,outside;rate=1MB/min;start=0;duration=10;shape=bursts", app)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--mix", "browse=1,fly=2"], "--mix"),
        (["--exfil", "path=user-db,nowhere;rate=1KB/min;start=0"], "--exfil"),
        (["--exfil", "path=user-db,user,ingress;rate=1KB/min;start=0"], "entry service 'front-end'"),
        (["--exfil", "path=user-db,kube-dns,user;rate=1KB/min;start=0"], "--exfil"),
        (["--exfil", "path=user-db,outside,user,outside;rate=1KB/min;start=0"], "--exfil"),
        (["--exfil", "path=user-db,outside;rate=1KB/min;start=0;shape=zigzag"], "shape: 'zigzag'"),
        (["--app", "no-such-app"], "no application"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], words: str) -> None:
    base = {"--app": "sockshop", "--duration": "60", "--users": "2", "-o": str(tmp_path / "r")}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    done = run_mimir("synth", *[x for kv in base.items() for x in kv])
    assert done.returncode in (2, 3) and words in done.stderr and not (tmp_path / "r").exists()


def test_a_bad_application_file_names_the_file_and_key(tmp_path: Path) -> None:
    text = (Path(__file__).parents[1] / "config" / "apps" / "sockshop.yaml").read_text()
    broken = tmp_path / "mine.yaml"
    broken.write_text(text.replace("name: sockshop", "name: mine").replace("port: 8079", "port: eighty", 1))
    done = run_mimir("synth", "--app", broken, "--duration", "60", "--users", "2", "-o", tmp_path / "r")
    assert done.returncode == 3 and str(broken) in done.stderr and "port" in done.stderr and "eighty" in done.stderr
    broken.write_text(text.replace("name: sockshop", "name: mine").replace("to: catalogue-db", "to: nowhere", 1))
    done = run_mimir("synth", "--app", broken, "--duration", "60", "--users", "2", "-o", tmp_path / "r")
    assert done.returncode == 3 and "calls.0.to" in done.stderr and "nowhere" in done.stderr


def test_application_file_that_is_not_yaml(tmp_path: Path) -> None:
    broken = tmp_path / "mine.yaml"
    broken.write_text("name: mine\n  bad: [")
    done = run_mimir("synth", "--app", broken, "--duration", "60", "--users", "2", "-o", tmp_path / "r")
    assert done.returncode == 3 and f"{broken}: line 2, column 6: not valid YAML" in done.stderr
