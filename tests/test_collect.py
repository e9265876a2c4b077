"""`mimir collect` end to end, with every part real except the cluster.

The API server is the kmock-based emulator (tests/kmockserver.py: nothing is scheduled there, so a thread here plays
the controllers: it marks workloads ready and creates their pods); the application is an HTTP server on loopback
answering the Sock Shop paths; the capture is the real tcpdump on `lo`; the load is one real Locust process running
the Sock Shop locustfile. The deploy step applies the repository's real Sock Shop manifests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from kmockserver import KubeServer, node_object

from mimir.apps import load_app
from mimir.entities import load_run, read_events
from mimir.errors import ApiStatusError, EntitiesError
from mimir.sources.cluster import kube

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("tcpdump"), reason="the capture needs root and tcpdump"
)

APP = load_app("sockshop")
WATCHER = ("mimir", "mimir-watcher")  # config/k8s/rbac/watcher.yaml
NS = APP.namespace


class Shop:
    """Answers every path the Sock Shop locustfile and population use, and counts what it was asked."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.ids = count(1)


def shop_handler(shop: Shop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            return

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            if length:
                self.rfile.read(length)
            path = self.path.split("?")[0]
            with shop.lock:
                shop.hits[f"{self.command} {path}"] += 1
                ident = next(shop.ids)
            body: Any = {"id": f"id{ident}"}
            if path == "/catalogue":
                body = [{"id": f"sock-{k}", "name": f"sock {k}", "price": 9.5} for k in range(3)]
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Set-Cookie", f"md.sid=s{ident}; Path=/")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_DELETE(self) -> None:
            self._answer()

    return Handler


@pytest.fixture
def shop() -> Iterator[tuple[Shop, str]]:
    state = Shop()
    server = ThreadingHTTPServer(("127.0.0.1", 0), shop_handler(state))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Controllers:
    """Plays the cluster's controllers: workloads become ready at their generation and get pods with addresses."""

    def __init__(self, server: KubeServer):
        self.api = server.client()
        self.stop = threading.Event()
        self.pods: dict[str, list[str]] = {}
        self.addresses = count(10)
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Controllers:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            for plural in ("deployments", "statefulsets"):
                try:
                    items = kube.request_json(self.api, "GET", f"/apis/apps/v1/namespaces/{NS}/{plural}")["items"]
                except ApiStatusError:
                    continue
                for workload in items:
                    self._play(plural, workload)

    def _play(self, plural: str, workload: dict[str, Any]) -> None:
        name, spec = workload["metadata"]["name"], workload["spec"]
        replicas = spec.get("replicas", 1)
        status = workload.get("status") or {}
        if status.get("readyReplicas") != replicas or status.get("observedGeneration") != workload["metadata"].get(
            "generation"
        ):
            path = f"/apis/apps/v1/namespaces/{NS}/{plural}/{name}/status"
            ready = {"readyReplicas": replicas, "observedGeneration": workload["metadata"].get("generation")}
            kube.request_json(self.api, "PATCH", path, body={"status": ready})
        if name in self.pods:
            return
        labels = dict(spec["template"]["metadata"]["labels"])
        self.pods[name] = []
        for k in range(replicas):
            pod_name = f"{name}-{k}" if plural == "statefulsets" else f"{name}-5d8f9c-{k}"
            owner = {"kind": "StatefulSet", "name": name} if plural == "statefulsets" else {"kind": "ReplicaSet"}
            if plural == "deployments":
                labels["pod-template-hash"] = "5d8f9c"
                owner["name"] = f"{name}-5d8f9c"
            ip = f"10.244.0.{next(self.addresses)}"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod_name, "labels": labels, "ownerReferences": [owner]},
                "spec": {"nodeName": "minikube", "containers": [{"name": name, "image": "x"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
            }
            kube.request_json(self.api, "POST", f"/api/v1/namespaces/{NS}/pods", body=pod)
            self.pods[name].append(ip)


def cluster_basics(api: Any) -> None:
    """What minikube has before anything is deployed: the node and kube-dns."""
    node = node_object("minikube", "127.0.0.1", ("v1.31.0", "docker://27.2.0", "Ubuntu 22.04.4 LTS"))
    kube.request_json(api, "POST", "/api/v1/nodes", body=node)
    dns = {
        "metadata": {"name": "kube-dns", "labels": {"k8s-app": "kube-dns"}},
        "spec": {"clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"], "selector": {"k8s-app": "kube-dns"}},
    }
    kube.request_json(api, "POST", "/api/v1/namespaces/kube-system/services", body=dns)


def issue_token(request: Any, issued: list[dict[str, Any]]) -> dict[str, Any]:
    """What an API server answers a TokenRequest for the watcher's ServiceAccount (the emulator has no tokens)."""
    issued.append(request.data)
    status = {"token": f"token-for-{WATCHER[1]}", "expirationTimestamp": "2030-01-01T00:00:00Z"}
    kind = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
    return {**kind, "spec": request.data["spec"], "status": status}


def collect_command(server: str, target: str, out: Path, duration: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mimir.cli",
        "collect",
        "--app",
        "sockshop",
        "--users",
        "4",
        "--spawn-rate",
        "50",
        "--duration",
        str(duration),
        "--seed",
        "3",
        "-o",
        str(out),
        "--server",
        server,
        "--target",
        target,
        "--customers",
        "3",
        "--capture-netns",
        "host",
        "--interface",
        "lo",
        "--rotate",
        "2",
        "--ready-timeout",
        "60",
        *extra,
    ]


def remaining_workloads(api: Any) -> list[str]:
    return [
        item["metadata"]["name"]
        for plural in ("deployments", "statefulsets")
        for item in kube.request_json(api, "GET", f"/apis/apps/v1/namespaces/{NS}/{plural}")["items"]
    ]


@pytest.fixture
def cluster() -> Iterator[tuple[KubeServer, Any]]:
    with KubeServer() as server:
        api = server.client()
        cluster_basics(api)
        with Controllers(server):
            yield server, api


def check_clock(run: dict[str, Any]) -> None:
    """One clock: every step in order, in UTC epoch seconds."""
    clock = run["clock"]
    order = ["collect_started", "ready", "populated", "entities_listed", "capture_started"]
    stamps = [clock[k] for k in order] + [run["start"], run["end"], clock["capture_stopped"], clock["collect_stopped"]]
    assert stamps == sorted(stamps)
    assert run["end"] - run["start"] >= 8


def check_load(run: dict[str, Any], state: Shop, out: Path) -> None:
    """Population and load reached the application; Locust's numbers match the server's."""
    assert state.hits["POST /register"] >= 3
    load = run["load"]
    assert load["requests"] > 0
    population = 3 * 4  # per customer: register, login, card, address
    probe = 1  # the entry point's health probe before t0
    in_flight = sum(state.hits.values()) - population - probe - load["requests"]
    assert 0 <= in_flight <= 4  # Locust does not count a request its stopping user never saw answered
    assert load["phases"] == [int(v) for v in load["phases"]] and len(load["phases"]) == 24
    assert (out / "load" / "locust_stats_history.csv").is_file()


def check_facts(run: dict[str, Any]) -> None:
    """Versions and addresses for the later stages."""
    assert run["cluster"]["nodes"][0]["kubelet_version"] == "v1.31.0"
    assert {w["name"] for w in run["cluster"]["workloads"]} >= set(APP.services)
    assert run["tools"]["tcpdump"] and run["tools"]["locust"]
    assert run["addresses"]["load_generator"] == "127.0.0.1"
    assert run["addresses"]["kube_dns"] == "10.96.0.10"
    assert run["addresses"]["pod_network"] == "10.244.0.0/24"


def check_capture(run: dict[str, Any], out: Path, target: str, tmp_path: Path) -> None:
    """Rotated files that mimir reads, holding the load's packets; statistics recorded."""
    capture = run["capture"]
    assert capture["files"] and all((out / f).is_file() for f in capture["files"])
    assert capture["link_type"] == 1  # on `lo` tcpdump writes Ethernet framing (on `any`, Linux cooked v2)
    assert capture["packets"] > 0 and capture["dropped"] == 0
    flows_path = tmp_path / "flows.parquet"
    ingest = subprocess.run(
        [sys.executable, "-m", "mimir.cli", "ingest", *[str(out / f) for f in capture["files"]], "-o", str(flows_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ingest.returncode == 0, ingest.stderr
    flows = pq.read_table(flows_path).to_pandas()
    port = int(target.rsplit(":", 1)[1])
    to_shop = flows[(flows["dport"] == port) & (flows["ts"] >= int(run["start"]))]
    assert to_shop["packets"].sum() > 0


def check_entities(run: dict[str, Any], out: Path) -> None:
    """A full listing at t0 (services and the pods the controllers made), then the teardown's deletions."""
    events = read_events(out / "entities.jsonl")
    listed = [e for e in events if e["ts"] == events[0]["ts"]]
    assert {e["name"] for e in listed if e["kind"] == "service" and e["namespace"] == NS} >= set(APP.services)
    pods = [e for e in listed if e["kind"] == "pod" and e["namespace"] == NS]
    assert {e["owner"] for e in pods} >= {f"deployment/{name}" for name in ("front-end", "carts", "orders")}
    assert run["entities"]["events"]


def check_least_privilege(server: KubeServer, issued: list[dict[str, Any]]) -> None:
    """The watcher's ServiceAccount got a token, and the watcher listed and watched with it (the emulator checks
    no credentials: what the token may do is the ClusterRole's test in test_cluster_api)."""
    assert len(issued) == 1
    entity_paths = {f"/api/v1/{plural}" for plural in ("pods", "services", "endpoints", "nodes")}
    token_request = next(r.id for r in server.emulator["post"] if str(r.url).endswith("/token"))
    watcher = [r for r in server.emulator["get"] if r.url.path in entity_paths and r.id > token_request]
    assert any(r.params.get("watch") == "true" for r in watcher)
    assert {r.headers.get("Authorization") for r in watcher} == {"Bearer token-for-mimir-watcher"}
    assert not any(r.headers.get("Authorization") for r in server.emulator["post"] if "/token" not in str(r.url))


def test_collect_writes_a_complete_run_bundle_and_tears_down(
    cluster: tuple[KubeServer, Any], shop: tuple[Shop, str], tmp_path: Path
) -> None:
    server, api = cluster
    state, target = shop
    issued: list[dict[str, Any]] = []
    server.emulator[f"post /api/v1/namespaces/{WATCHER[0]}/serviceaccounts/{WATCHER[1]}/token"] << (
        lambda request: issue_token(request, issued)
    )
    out = tmp_path / "runs" / "sockshop-4"
    done = subprocess.run(
        collect_command(server.url, target, out, 8),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "complete" in done.stdout
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "complete", run.get("problems")
    assert (run["source"], run["app"]) == ("cluster", "sockshop")
    check_clock(run)
    check_load(run, state, out)
    check_facts(run)
    check_capture(run, out, target, tmp_path)
    check_entities(run, out)
    check_least_privilege(server, issued)
    assert remaining_workloads(api) == []  # teardown: nothing of the application is left in the cluster
    assert run["teardown"]["left"] == []


def test_ctrl_c_during_the_load_stops_everything_and_marks_the_run_incomplete(
    cluster: tuple[KubeServer, Any], shop: tuple[Shop, str], tmp_path: Path
) -> None:
    server, api = cluster
    _, target = shop
    out = tmp_path / "run"
    process = subprocess.Popen(
        [*collect_command(server.url, target, out, 300), "--no-least-privilege-watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    events = out / "load" / "phases.jsonl"
    deadline = time.monotonic() + 120
    while not (events.is_file() and events.read_text().strip()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the load never started"
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "incomplete" in stderr
    assert "Traceback" not in stderr
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "incomplete"
    assert any("interrupted" in p for p in run["problems"])
    assert run["capture"]["complete"] and run["capture"]["files"]  # tcpdump stopped cleanly: its files are whole
    assert run["load"]["ended_by"] == "stop"
    assert remaining_workloads(api) == []


def test_a_failure_after_deploying_tears_down_and_names_the_cause(
    cluster: tuple[KubeServer, Any], shop: tuple[Shop, str], tmp_path: Path
) -> None:
    """Unless taught (see the first test), the emulator issues no ServiceAccount tokens: the watch cannot start."""
    server, api = cluster
    _, target = shop
    out = tmp_path / "run"
    done = subprocess.run(
        collect_command(server.url, target, out, 8), capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 7, done.stderr
    assert "mimir-watcher" in done.stderr and "--no-least-privilege-watch" in done.stderr
    assert "Traceback" not in done.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "incomplete"
    assert "capture" not in run  # it failed before the capture started
    assert remaining_workloads(api) == []


def test_an_existing_run_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")
    command = collect_command("http://127.0.0.1:9", "http://127.0.0.1:9", out, 5)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "exists and is not empty" in done.stderr
    assert (out / "run.json").read_text() == "{}"


@pytest.mark.parametrize(
    ("status", "problems", "reason"),
    [
        ("incomplete", ["interrupted (SIGTERM)"], "interrupted (SIGTERM)"),
        ("loading", [], "the collection stopped while loading"),
    ],
)
def test_later_stages_refuse_an_incomplete_run(tmp_path: Path, status: str, problems: list[str], reason: str) -> None:
    (tmp_path / "entities.jsonl").write_text("")
    (tmp_path / "run.json").write_text(json.dumps({"status": status, "problems": problems, "source": "cluster"}))
    with pytest.raises(EntitiesError, match=f"the run is incomplete \\({re.escape(reason)}"):
        load_run(tmp_path)


def test_an_unreachable_cluster_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = subprocess.run(
        collect_command("http://127.0.0.1:9", "http://127.0.0.1:9", out, 5), capture_output=True, text=True, check=False
    )
    assert done.returncode == 7, done.stderr
    assert "http://127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()
