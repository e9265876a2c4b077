"""`mimir collect`: one run on a real Kubernetes cluster, from deployment to a run bundle.

The order is what makes the run trustworthy (docs/architecture.md#prototype-bugs-not-copied): deploy from pinned
manifests and wait for readiness through the API (no fixed sleeps), populate, probe the entry point, then start the
entity watch (a full listing), the node capture and one Locust process, each stamping its own events in UTC epoch
seconds. Whatever happens (success, an error, Ctrl-C or SIGTERM), the load, the capture and the watch are stopped, the
application is torn down, and run.json says whether the bundle is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import platform
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from mimir import __version__
from mimir.apps import CONFIG, App
from mimir.errors import ClusterError, Interrupted, MimirError, UsageError
from mimir.io import Claim, atomic_path
from mimir.loadmodel import daily_curve
from mimir.network import POD_NETWORK
from mimir.sources.cluster import capture, facts, kube, load, manifests, objects, populate, watcher, workloads
from mimir.spec import ClusterSpec, RunSpec

POPULATE_PHASE = "mimir.io/phase"
RBAC_MANIFEST = CONFIG / "k8s" / "rbac" / "watcher.yaml"
LOCUSTFILES = Path(__file__).with_name("locustfiles")


@dataclass
class CollectConfig:
    """One collection: the run (application, load, capture settings), how to reach and use the cluster, where to
    write. The command line and the workflow's `source: cluster` build it from the same specification."""

    run: RunSpec
    cluster: ClusterSpec
    out: Path

    @property
    def manifest_folder(self) -> Path:
        return self.cluster.manifests or CONFIG / "k8s" / self.run.app.name

    @property
    def locust_path(self) -> Path:
        return self.cluster.locustfile or LOCUSTFILES / f"{self.run.app.name.replace('-', '_')}.py"


class Stopped(Exception):
    """Raised in the main thread by the first Ctrl-C or SIGTERM."""


@dataclass
class StopSwitch:
    """Set by the first SIGINT/SIGTERM. While `unwind` is true the signal also raises, to leave a blocking API call;
    while the load runs it only sets `event`, and the load stops Locust itself so its statistics are written."""

    event: threading.Event = field(default_factory=threading.Event)
    unwind: bool = True


@contextlib.contextmanager
def stop_on_signals(switch: StopSwitch) -> Iterator[None]:
    def handle(signum: int, _frame: Any) -> None:
        if switch.event.is_set():
            return
        switch.event.set()
        if switch.unwind:
            raise Stopped(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def finishing(
    finish: Callable[[str | None], None], switch: StopSwitch, failure: type[MimirError], out: Path, what: str
) -> Iterator[None]:
    """Run a collection's steps under the stop signals, then always `finish` it with how it ended: None, the
    error, or the signal. A step's error becomes `failure` (a signal, Interrupted), saying the run is incomplete."""
    try:
        with stop_on_signals(switch):
            yield
    except Stopped as e:
        finish(f"interrupted ({e})")
        raise Interrupted(f"{out}: {what} interrupted ({e}); the run is marked incomplete") from None
    except MimirError as e:
        finish(str(e))
        raise failure(f"{out}: {e}; the run is marked incomplete") from None
    except BaseException as e:
        finish(f"{type(e).__name__}: {e}")
        raise
    finish(None)


def source_address(url: str) -> str:
    """The local address this host uses to reach the entry point: the load generator's address in the capture."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return str(probe.getsockname()[0])
    except OSError as e:
        raise ClusterError(f"entry point {url}: cannot route to it: {e}") from None


def probe_entry(url: str, timeout: float, stop: threading.Event) -> float:
    """Wait until the entry point answers below 500 (a real request, not a sleep); return how long that took."""
    began = time.monotonic()
    last = "no answer"
    while time.monotonic() - began < timeout and not stop.is_set():
        try:
            answer = requests.get(url, timeout=5, allow_redirects=False)
            if answer.status_code < 500:
                return time.monotonic() - began
            last = f"HTTP {answer.status_code}"
        except requests.RequestException as e:
            last = type(e).__name__
        stop.wait(1.0)
    raise ClusterError(f"entry point {url} did not answer within {timeout:.0f} s (last: {last})")


def tool_versions() -> dict[str, str]:
    versions = {"mimir": __version__, "python": platform.python_version()}
    for package in ("kubernetes", "locust"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        text = subprocess.run(
            ["tcpdump", "--version"],
            check=False,
            capture_output=True,
            text=True,
            timeout=10,
        )
        versions["tcpdump"] = (text.stdout or text.stderr).splitlines()[0].split()[-1]
    return versions


def _secret(name: str, namespace: str, values: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "Opaque",
        "stringData": values,
    }


def app_secrets(app: App) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Secrets the manifests reference but the repository must not hold, and the load parameters drawn from them."""
    if app.name != "wordpress":
        return [], {}
    values = {
        "mysql-root-password": secrets.token_urlsafe(18),
        "mysql-password": secrets.token_urlsafe(18),
        "xtrabackup-password": secrets.token_urlsafe(18),
        "wordpress-admin-password": secrets.token_urlsafe(18),
    }
    params = {"admin_user": "mimir", "admin_password": values["wordpress-admin-password"]}
    return [_secret("wordpress-db", app.namespace, values)], params


def split_populate(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The application's objects, and the ones that populate it once it is ready (annotated with the phase)."""

    def phase(doc: dict[str, Any]) -> str:
        return ((doc.get("metadata") or {}).get("annotations") or {}).get(POPULATE_PHASE, "")

    return [d for d in objects if phase(d) != "populate"], [d for d in objects if phase(d) == "populate"]


class RunRecord:
    """run.json, rewritten atomically at every milestone so a crash leaves the bundle clearly marked incomplete."""

    def __init__(self, out: Path, info: dict[str, Any]):
        self.path = out / "run.json"
        self.info = info
        self.write()

    def update(self, **values: Any) -> None:
        self.info.update(values)
        self.write()

    def write(self) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(self.info, indent=2, default=str) + "\n")


def _log(progress: Callable[[str], None] | None, text: str) -> None:
    if progress:
        progress(text)


def _prepare_output(out: Path) -> None:
    try:
        (out / "capture").mkdir(parents=True, exist_ok=True)
        (out / "load").mkdir(exist_ok=True)
    except OSError as e:
        raise UsageError(f"{out}: cannot create the output folder: {e.strerror}") from None


@dataclass
class _Collection:
    """One collection under way: what it started, so that whatever happens it can be stopped and torn down."""

    cfg: CollectConfig
    api: Any
    record: RunRecord
    progress: Callable[[str], None] | None
    switch: StopSwitch = field(default_factory=StopSwitch)
    refs: list[objects.ObjectRef] = field(default_factory=list)
    watch: watcher.EntityWatcher | None = None
    capture: capture.NodeCapture | None = None

    @property
    def clock(self) -> dict[str, float]:
        return self.record.info["clock"]

    def log(self, text: str) -> None:
        _log(self.progress, text)


def _check_inputs(cfg: CollectConfig) -> None:
    """What can be checked before touching the cluster or the disk: the app's files and the service network."""
    if not cfg.manifest_folder.is_dir():
        raise UsageError(f"{cfg.manifest_folder}: no manifests for application {cfg.run.app.name!r}")
    if not cfg.locust_path.is_file():
        raise UsageError(f"{cfg.locust_path}: no locustfile for application {cfg.run.app.name!r}")
    try:
        ipaddress.ip_network(cfg.cluster.service_network)
    except ValueError as e:
        raise UsageError(f"--service-network {cfg.cluster.service_network}: {e}") from None


def _run_info(cfg: CollectConfig) -> dict[str, Any]:
    """run.json as a collection starts: what was asked for, marked as still collecting."""
    return {
        "app": cfg.run.app.name,
        "source": "cluster",
        "status": "collecting",
        "start": None,
        "end": None,
        "load": {
            "users": cfg.run.users,
            "curve": "normal",
            "phases": daily_curve(cfg.run.users).tolist(),
            "spawn_rate": cfg.cluster.spawn_rate,
        },
        "mix": cfg.run.mix,
        "sensitive": list(cfg.run.app.sensitive),
        "exfiltration": [],
        "seed": cfg.run.seed,
        "namespace": cfg.run.app.namespace,
        "tools": tool_versions(),
        "clock": {"collect_started": time.time()},
    }


def collect(cfg: CollectConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Collect one run into cfg.out; return run.json. Raises ClusterError or Interrupted after cleaning up."""
    cfg = dataclasses.replace(cfg, out=cfg.out.resolve())  # the load runs in a folder of its own
    _check_inputs(cfg)
    netns = capture.namespace_file(cfg.cluster.capture_netns)
    app_manifests = manifests.load_manifests(cfg.manifest_folder)
    Claim("collect").check(cfg.out, folder=True)  # the command line's --force removed its previous bundle
    # connect before writing any file: a wrong cluster leaves nothing behind
    api = kube.connect(cfg.cluster.kubeconfig, cfg.cluster.context, cfg.cluster.server)
    _prepare_output(cfg.out)
    run = _Collection(cfg, api, RunRecord(cfg.out, _run_info(cfg)), progress)
    with finishing(lambda failure: _finish(run, failure), run.switch, ClusterError, cfg.out, "collection"):
        target, params = _deploy(run, app_manifests)
        _start_recording(run, netns)
        _load(run, target, params)
    return run.record.info


def _deploy(run: _Collection, app_manifests: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    """Deploy, scale and wait for the application, probe and populate it, and record the cluster's facts.

    Returns the entry point the load targets and the load's parameters (from secrets and population).
    """
    cfg, api = run.cfg, run.api
    app_objects, populate_objects = split_populate(app_manifests)
    extra_secrets, params = app_secrets(cfg.run.app)
    rbac = manifests.load_manifests(RBAC_MANIFEST.parent) if cfg.cluster.least_privilege_watch else []
    run.log(f"deploying {cfg.run.app.name}: {len(app_objects)} objects from {cfg.manifest_folder}")
    run.refs += objects.deploy(api, rbac + extra_secrets + app_objects, cfg.run.app.namespace)
    workloads.scale(api, cfg.run.app.namespace, {name: s.replicas for name, s in cfg.run.app.services.items()})
    targets = {
        name: (s.autoscale.min, s.autoscale.max, cfg.cluster.cpu_percent)
        for name, s in cfg.run.app.services.items()
        if s.autoscale
    }
    run.refs += workloads.autoscale(api, cfg.run.app.namespace, targets)
    names = [d["metadata"]["name"] for d in app_objects if d["kind"] in ("Deployment", "StatefulSet")]
    workloads.wait_ready(api, cfg.run.app.namespace, names, cfg.cluster.ready_timeout, run.progress)
    run.clock["ready"] = time.time()
    target = cfg.cluster.target or facts.entry_url(api, cfg.run.app.namespace, cfg.run.app.entry)
    probe_entry(target, cfg.cluster.ready_timeout, run.switch.event)
    if cfg.cluster.populate:
        params.update(_populate(run, target, populate_objects))
        run.clock["populated"] = time.time()
    cluster = facts.cluster_facts(api, [cfg.run.app.namespace])
    run.record.update(cluster=cluster, addresses=_addresses(cfg, cluster, target), target=target)
    return target, params


def _start_recording(run: _Collection, netns: Path | None) -> None:
    """Start the entity watch (its full listing first), then the node capture, each stamping the clock."""
    cfg = run.cfg
    api = (
        watcher.least_privilege_client(run.api, cfg.run.duration + 7200)
        if cfg.cluster.least_privilege_watch
        else run.api
    )
    run.watch = watcher.EntityWatcher(api, None, cfg.out / "entities.jsonl")
    run.clock["entities_listed"] = run.watch.start()
    options = capture.TcpdumpOptions(
        interface=cfg.cluster.interface,
        rotate_seconds=cfg.run.rotate,
        snaplen=cfg.run.snaplen,
        buffer_kib=cfg.cluster.buffer_kib,
        netns=netns,
    )
    run.capture = capture.NodeCapture(cfg.out / "capture", options)
    run.clock["capture_started"] = run.capture.start()


def _load(run: _Collection, target: str, params: dict[str, str]) -> None:
    """The one Locust process. A signal meanwhile only sets the stop event: Locust stops and writes its statistics."""
    cfg, record = run.cfg, run.record
    plan = load.LoadPlan.for_run(cfg.run, cfg.cluster.spawn_rate, params, cfg.out / "load" / "phases.jsonl")
    record.update(status="loading")
    run.log(f"load: {cfg.run.users} users at peak for {cfg.run.duration:.0f} s against {target}")
    stop = run.switch.event
    run.switch.unwind = False
    result = load.run_locust(cfg.locust_path, target, plan, cfg.out / "load", stop=stop, progress=run.progress)
    run.switch.unwind = True
    record.update(start=result.start, end=result.end, load={**record.info["load"], **result.to_json()})
    if stop.is_set():
        raise Stopped("a signal stopped the load")


def _populate(run: _Collection, target: str, populate_objects: list[dict[str, Any]]) -> dict[str, str]:
    """Fill the application with data before t0 (the prototype ignored its own customer count)."""
    cfg = run.cfg
    if cfg.run.app.name == "sockshop":
        run.log(f"populating sockshop: {cfg.cluster.customers} customers")
        populate.populate_sockshop(target, cfg.cluster.customers, cfg.run.seed, progress=run.progress)
        return {"customers": str(cfg.cluster.customers), "customer_seed": str(cfg.run.seed)}
    if populate_objects:
        names = [d["metadata"]["name"] for d in populate_objects]
        run.log(f"populating {cfg.run.app.name}: {', '.join(names)}")
        run.refs += objects.deploy(run.api, populate.seeded_jobs(populate_objects, cfg.run.seed), cfg.run.app.namespace)
        workloads.wait_ready(run.api, cfg.run.app.namespace, names, cfg.cluster.ready_timeout, run.progress)
    return {}


def _addresses(cfg: CollectConfig, cluster: dict[str, Any], target: str) -> dict[str, Any]:
    nodes = cluster.get("nodes") or []
    node_ips = [n.get("internal_ip") for n in nodes if n.get("internal_ip")]
    pod_cidrs = [c for n in nodes for c in (n.get("pod_cidrs") or [])]
    return {
        "node": node_ips[0] if node_ips else None,
        "nodes": node_ips,
        "load_generator": source_address(target),
        "pod_network": pod_cidrs[0] if pod_cidrs else POD_NETWORK,
        "cluster_networks": pod_cidrs[1:],
        "service_network": cfg.cluster.service_network,
        "kube_dns": cluster.get("kube_dns"),
    }


def stop_capture(run: Any) -> list[str]:
    """Stop tcpdump (stop() never raises once start() ran) and record its files; return its problems. `run` is a
    collection under way, here or on the testbed: its `capture`, `record`, `clock` and `cfg.out`."""
    if run.capture is None:
        return []
    stats = run.capture.stop()
    files = list(stats.files)
    run.record.info["capture"] = {
        **stats.to_json(),
        "files": [f"capture/{name}" for name in files],
        "packets": stats.packets_captured,
        "dropped": stats.packets_dropped_kernel,
        "link_type": capture.link_type(run.cfg.out / "capture" / files[0]) if files else None,
    }
    run.clock["capture_stopped"] = stats.end
    problems = [f"capture: {problem}" for problem in stats.problems]
    if not stats.complete and not stats.problems:
        problems.append("capture: tcpdump did not stop cleanly; the last file may be cut short")
    return problems


def _stop_watch(run: _Collection) -> list[str]:
    if run.watch is None:
        return []
    try:
        run.record.info["entities"] = run.watch.stop()
        run.clock["entities_stopped"] = time.time()
    except MimirError as e:
        return [f"entity watch: {e}"]
    return []


def _tear_down(run: _Collection) -> list[str]:
    if not run.refs or run.cfg.cluster.keep:
        return []
    run.log(f"tearing down {len(run.refs)} objects")
    try:
        left = objects.teardown(run.api, run.refs, timeout=300)
    except MimirError as e:
        return [f"teardown: {e}"]
    run.record.info["teardown"] = {"deleted": len(run.refs) - len(left), "left": [str(r) for r in left]}
    return []


def _finish(run: _Collection, failure: str | None) -> None:
    """Stop what runs, in the reverse order of starting, tear the application down, and say how the run ended."""
    problems = [failure] if failure else []
    problems += stop_capture(run)
    problems += _stop_watch(run)
    problems += _tear_down(run)
    run.clock["collect_stopped"] = time.time()
    if problems:
        run.record.update(status="incomplete", problems=problems)
    else:
        run.record.update(status="complete")
    run.log(f"{run.cfg.out}: {run.record.info['status']}")


def progress_printer(stream: Any = sys.stderr) -> Callable[[str], None]:
    """One timestamped status line per step (a terminal or a log file alike)."""

    def show(text: str) -> None:
        stamp = time.strftime("%H:%M:%S", time.gmtime())
        print(f"[{stamp}Z] {text}", file=stream, flush=True)

    return show
