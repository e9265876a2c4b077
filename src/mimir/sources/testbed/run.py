"""`mimir testbed run`: one run on the testbed, from nothing to a run bundle and back to nothing.

The same bundle as a cluster collection (capture/, entities.jsonl, load/, run.json) and the same guarantees: the
testbed comes up, the node capture starts, one Locust process plays the daily curve from the load generator's
namespace while the autoscaler, the fault schedule and the physical exfiltration windows run beside it; whatever
happens (success, an error, Ctrl-C or SIGTERM) everything stops, the testbed is torn down, and run.json says
whether the bundle is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mimir import network
from mimir.errors import MimirError, TestbedError, UsageError
from mimir.io import Claim
from mimir.loadmodel import daily_curve
from mimir.sources.cluster import capture, load
from mimir.sources.cluster.collect import (
    LOCUSTFILES,
    RunRecord,
    Stopped,
    StopSwitch,
    finishing,
    stop_capture,
    tool_versions,
)
from mimir.sources.testbed.autoscale import Autoscaler
from mimir.sources.testbed.exfil import finish_window, start_window
from mimir.sources.testbed.faults import FaultSchedule
from mimir.sources.testbed.network import OUTSIDE_GATEWAY
from mimir.sources.testbed.processes import NETNS_ROOT, in_netns
from mimir.sources.testbed.testbed import APP_NAMESPACE, ENTRY_URL, Testbed
from mimir.spec import ExfilWindow, RunSpec, TestbedSpec

TOOLS = (
    "ip",
    "nft",
    "tcpdump",
    "mariadbd",
    "mariadb-install-db",
    "dnsmasq",
    "redis-server",
    "php-fpm8.2",
    "nginx",
    "php",
    "curl",
    "rsync",
)
EXFIL_MARGIN = 20.0  # seconds a window's last bytes may take to reach the end of its path


@dataclass
class TestbedConfig:
    """One testbed run: the run (application, load, capture settings, exfiltration windows), the testbed, where."""

    __test__ = False  # not a pytest class, whatever its name

    run: RunSpec
    testbed: TestbedSpec
    out: Path


def check_host() -> None:
    """What the testbed needs from the machine, checked before anything is made."""
    if os.geteuid() != 0:
        raise UsageError("mimir testbed needs root (network namespaces, nftables, daemons as their users)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise UsageError(f"mimir testbed needs {', '.join(missing)}: run `make setup` (Debian packages)")


def testbed_versions() -> dict[str, str]:
    """Versions of the daemons the run used, next to mimir's own tools."""
    versions = tool_versions()
    for name, command in (
        ("mariadb", ["mariadbd", "--version"]),
        ("nginx", ["nginx", "-v"]),
        ("php", ["php-fpm8.2", "-v"]),
        ("redis", ["redis-server", "--version"]),
        ("dnsmasq", ["dnsmasq", "--version"]),
    ):
        with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
            done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
            versions[name] = (done.stdout or done.stderr).splitlines()[0].strip()
    return versions


@dataclass
class _Run:
    cfg: TestbedConfig
    record: RunRecord
    testbed: Testbed
    progress: Callable[[str], None] | None
    switch: StopSwitch = field(default_factory=StopSwitch)
    halt: threading.Event = field(default_factory=threading.Event)
    capture: capture.NodeCapture | None = None
    scaler: Autoscaler | None = None
    faults: FaultSchedule | None = None
    windows: list[threading.Thread] = field(default_factory=list)
    exfiltration: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clock(self) -> dict[str, float]:
        return self.record.info["clock"]

    def log(self, text: str) -> None:
        if self.progress:
            self.progress(text)


def _run_info(cfg: TestbedConfig, name: str) -> dict[str, Any]:
    return {
        "app": cfg.run.app.name,
        "source": "testbed",
        "status": "starting",
        "start": None,
        "end": None,
        "load": {
            "users": cfg.run.users,
            "curve": "normal",
            "phases": daily_curve(cfg.run.users).tolist(),
            "spawn_rate": cfg.testbed.spawn_rate,
        },
        "mix": dict(cfg.run.mix),
        "sensitive": list(cfg.run.app.sensitive),
        "exfiltration": [],
        "planned_exfiltration": [asdict(w) for w in cfg.run.exfil],
        "seed": cfg.run.seed,
        "namespace": APP_NAMESPACE,
        "testbed": {"name": name, "spec": asdict(cfg.testbed)},
        "addresses": {
            "node": network.NODE_IP,
            "nodes": [network.NODE_IP, OUTSIDE_GATEWAY],
            "gateway": network.POD_GATEWAY,
            # the clients of the front door: Locust, and the attacker's web client in the world
            "load_generator": [network.LOAD_GENERATOR_IP, network.ATTACKER_CLIENT],
            "pod_network": network.POD_NETWORK,
            "cluster_networks": [],
            "service_network": network.SERVICE_NETWORK,
            "kube_dns": network.KUBE_DNS_VIP,
        },
        "target": ENTRY_URL,
        "tools": testbed_versions(),
        "clock": {"collect_started": time.time()},
    }


def run_testbed(cfg: TestbedConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Make one run into cfg.out; return run.json. Raises TestbedError or Interrupted after tearing down."""
    if cfg.run.app.name != "wordpress":
        raise UsageError(f"--app {cfg.run.app.name}: the testbed runs WordPress only")
    cfg = dataclasses.replace(cfg, out=cfg.out.resolve())  # Locust and the daemons run in folders of their own
    check_host()
    Claim("testbed run").check(cfg.out, folder=True)  # the command line's --force removed its previous bundle
    try:
        (cfg.out / "capture").mkdir(parents=True, exist_ok=True)
        (cfg.out / "load").mkdir(exist_ok=True)
    except OSError as e:
        raise UsageError(f"{cfg.out}: cannot create the output folder: {e.strerror}") from None
    testbed = Testbed(cfg.testbed, cfg.run.seed, cfg.out / "entities.jsonl", progress)
    run = _Run(cfg, RunRecord(cfg.out, _run_info(cfg, testbed.name)), testbed, progress)
    with finishing(lambda failure: _finish(run, failure), run.switch, TestbedError, cfg.out, "testbed run"):
        run.record.update(testbed={**run.record.info["testbed"], **testbed.up()})
        run.clock["ready"] = time.time()
        _start_capture(run)
        _load(run)
    return run.record.info


def _start_capture(run: _Run) -> None:
    options = capture.TcpdumpOptions(
        interface="any",
        rotate_seconds=run.cfg.run.rotate,
        snaplen=run.cfg.run.snaplen,
        buffer_kib=run.cfg.testbed.buffer_kib,
        netns=NETNS_ROOT / run.testbed.net.node,
    )
    run.capture = capture.NodeCapture(run.cfg.out / "capture", options)
    run.clock["capture_started"] = run.capture.start()


def _load(run: _Run) -> None:
    """The load, with the autoscaler, the faults and the exfiltration windows timed from its start."""
    cfg, record = run.cfg, run.record
    params = {"admin_user": "mimir", "admin_password": run.testbed.admin_password}
    plan = load.LoadPlan.for_run(cfg.run, cfg.testbed.spawn_rate, params, cfg.out / "load" / "phases.jsonl")
    record.update(status="loading")
    run.log(f"load: {cfg.run.users} users at peak for {cfg.run.duration:.0f} s against {ENTRY_URL}")
    t0 = time.time()
    run.scaler = Autoscaler(run.testbed)
    run.scaler.start()
    run.faults = FaultSchedule(run.testbed, cfg.testbed.faults, run.halt)
    run.faults.start(t0)
    for k, window in enumerate(cfg.run.exfil):
        thread = threading.Thread(target=_exfiltrate, args=(run, window, k, t0), name=f"exfil-{k}", daemon=True)
        run.windows.append(thread)
        thread.start()
    run.switch.unwind = False
    result = load.run_locust(
        LOCUSTFILES / "wordpress.py",
        ENTRY_URL,
        plan,
        cfg.out / "load",
        stop=run.switch.event,
        progress=run.progress,
        wrapper=in_netns(run.testbed.net.loadgen, []),
    )
    run.switch.unwind = True
    record.update(start=result.start, end=result.end, load={**record.info["load"], **result.to_json()})
    if run.switch.event.is_set():
        raise Stopped("a signal stopped the load")


def _exfiltrate(run: _Run, window: ExfilWindow, index: int, t0: float) -> None:
    """One window: its chain starts at its time, runs for its duration, and its record joins run.json."""
    planned = {"path": list(window.path), "bytes_per_minute": window.bytes_per_minute, "shape": window.shape}
    if run.halt.wait(max(t0 + window.start - time.time(), 0)):
        run.exfiltration.append({**planned, "problems": ["the run stopped before the window began"]})
        return
    try:
        run.log(f"exfiltration {index}: {' > '.join(window.path)} at {window.bytes_per_minute / 1e6:g} MB/min")
        chain = start_window(
            run.testbed.net,
            run.testbed.work,
            window,
            index,
            lambda pod: run.testbed.work / pod.name / "mysqld.sock",
            run.cfg.run.seed,
        )
        run.halt.wait(window.duration)
        entry = finish_window(chain, EXFIL_MARGIN)
    except MimirError as e:
        entry = {**planned, "problems": [str(e)]}
    run.exfiltration.append(entry)


def _finish(run: _Run, failure: str | None) -> None:
    """Stop what runs (exfiltration, faults, autoscaler, capture), tear the testbed down, say how the run ended."""
    problems = [failure] if failure else []
    run.halt.set()
    for thread in run.windows:
        thread.join(run.cfg.testbed.ready_timeout)
    info = run.record.info
    info["exfiltration"] = sorted((w for w in run.exfiltration if "start" in w), key=lambda w: w["start"])
    problems += [f"exfiltration {' > '.join(w['path'])}: {p}" for w in run.exfiltration for p in w.get("problems", [])]
    if run.faults is not None:
        info["faults"] = run.faults.stop()
        problems += [f"fault {f['target']}: {f['problem']}" for f in info["faults"] if "problem" in f]
    if run.scaler is not None:
        info["autoscaler"] = run.scaler.stop()
        problems += info["autoscaler"]["problems"]
    problems += stop_capture(run)
    run.log(f"testbed {run.testbed.name}: tearing down")
    with contextlib.suppress(OSError):
        shutil.copytree(run.testbed.work / "logs", run.cfg.out / "testbed-logs", dirs_exist_ok=True)
    problems += run.testbed.down()
    info["testbed"] = {**info["testbed"], **run.testbed.facts}
    run.clock["collect_stopped"] = time.time()
    if problems:
        run.record.update(status="incomplete", problems=problems)
    else:
        run.record.update(status="complete")
    run.log(f"{run.cfg.out}: {run.record.info['status']}")
