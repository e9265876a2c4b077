"""The testbed as a source of runs: one real run (real WordPress, Galera, Redis, dnsmasq, Locust, tcpdump, real
exfiltration processes) made once per session with the installed `mimir testbed run`, then checked against tshark,
`mimir ingest`, `edges` and `features`; and the promise that nothing is left behind after a normal end, SIGTERM,
or a failure in the middle.

Needs root and the Debian packages of `make setup`; the run is made once per session, whatever the xdist workers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import MIMIR, run_mimir
from filelock import FileLock

from mimir import network
from mimir.entities import load_run, resolve
from mimir.errors import EXIT_CLUSTER, EXIT_INTERRUPTED
from mimir.sources.testbed.autoscale import Autoscaler
from mimir.sources.testbed.processes import NETNS_ETC, NETNS_ROOT, STATE_ROOT, WORK_ROOT
from mimir.sources.testbed.run import TOOLS
from mimir.sources.testbed.testbed import site_plan
from mimir.spec import TestbedSpec

_missing = [tool for tool in (*TOOLS, "tshark") if shutil.which(tool) is None]
needs_testbed = pytest.mark.skipif(
    os.geteuid() != 0 or bool(_missing),
    reason=f"the testbed needs root and {', '.join(_missing) or 'its Debian packages'} (make setup)",
)

SMALL = ["--posts", "60", "--pages", "5", "--accounts", "5", "--scale-period", "10"]
INGRESS_WINDOW = "path=my-release-pxc,wordpress,ingress;rate=0.3MB/min;start=15;duration=20"
TUNNEL_WINDOW = "path=my-release-pxc,wordpress,kube-dns,outside;rate=0.06MB/min;start=45;duration=15;shape=bursts"


def leftovers(name: str) -> list[str]:
    """Whatever of testbed `name` still exists: namespaces, /etc/netns entries, processes, folders, mounts."""
    found = [f"namespace {p.name}" for p in NETNS_ROOT.glob(f"{name}-*")] if NETNS_ROOT.is_dir() else []
    found += [f"/etc/netns/{p.name}" for p in NETNS_ETC.glob(f"{name}-*")] if NETNS_ETC.is_dir() else []
    found += [str(p) for p in (WORK_ROOT / name, STATE_ROOT / f"{name}.json") if p.exists()]
    found += [line for line in Path("/proc/mounts").read_text().splitlines() if name in line]
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if name in command:
                found.append(f"process {proc.name}: {command[:120]}")
    return found


def tshark_fields(files: list[Path], fields: list[str], display: str = "") -> pd.DataFrame:
    """The oracle: tshark's own reading of the capture, one row per packet."""
    rows = []
    for file in files:
        command = ["tshark", "-r", str(file), "-n", "-T", "fields", *(x for f in fields for x in ("-e", f))]
        if display:
            command += ["-Y", display]
        out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600).stdout
        rows += [line.split("\t") for line in out.splitlines() if line]
    return pd.DataFrame(rows, columns=fields)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One testbed run of 75 s: two exfiltration windows (the front door, a DNS tunnel in bursts), a Galera member
    killed and back, and the autoscaler at work. Made once for all xdist workers (the first makes it under a file
    lock, the others read it); `mimir testbed run` tears the testbed down itself, as its tests check."""
    if os.geteuid() != 0 or _missing:
        pytest.skip(f"the testbed needs root and {', '.join(_missing) or 'its Debian packages'} (make setup)")
    shared = tmp_path_factory.getbasetemp().parent  # one folder for every worker of this session
    out = shared / "testbed-run"
    with FileLock(str(shared / "testbed-run.lock")):
        if not (out / "run.json").is_file():
            done = run_mimir("testbed", "run", "--app", "wordpress", "--users", "6", "--duration", "75", "--seed",
                             "5", *SMALL, "--exfil", INGRESS_WINDOW, "--exfil", TUNNEL_WINDOW,
                             "--fault", "target=database;at=20;down=8", "-o", out)  # fmt: skip
            (shared / "testbed-run.stderr").write_text(done.stderr)
    assert _run(out)["status"] == "complete", (shared / "testbed-run.stderr").read_text()[-3000:]
    return out


def _run(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "run.json").read_text())


def _captures(bundle: Path) -> list[Path]:
    return [bundle / f for f in _run(bundle)["capture"]["files"]]


@needs_testbed
def test_the_run_is_complete_and_left_nothing_behind(bundle: Path) -> None:
    run = _run(bundle)
    assert run["status"] == "complete", run.get("problems")
    assert run["source"] == "testbed" and run["capture"]["dropped"] == 0 and run["capture"]["packets"] > 10_000
    assert leftovers(run["testbed"]["name"]) == []


@needs_testbed
def test_galera_has_three_synced_members_and_a_killed_member_rejoins_by_state_transfer(bundle: Path) -> None:
    run = _run(bundle)
    assert run["testbed"]["galera"] == {"members": 3, "cluster_size": 3}
    (fault,) = run["faults"]
    assert fault["target"] == "database" and fault["killed"] < fault["restarted"] < fault["synced"]
    # the joiner listens on 4568 for the incremental state transfer (4444 for a full one): the donor connects
    transfer = "tcp.flags.syn == 1 && tcp.flags.ack == 0 && (tcp.dstport == 4568 || tcp.dstport == 4444)"
    syns = tshark_fields(_captures(bundle), ["frame.time_epoch", "ip.dst", "tcp.dstport"], transfer)
    after = syns[
        (syns["frame.time_epoch"].astype(float) >= fault["restarted"]) & (syns["ip.dst"] == fault["new_address"])
    ]
    assert len(after) > 0


@needs_testbed
def test_vips_balance_over_endpoints_and_the_capture_shows_both_views_of_a_call(bundle: Path) -> None:
    spans, _, _ = load_run(bundle)
    vip = spans.loc[spans["entity"] == "default/my-release-pxc", "ip"].iloc[0]
    syns = tshark_fields(_captures(bundle), ["frame.time_epoch", "ip.src", "ip.dst", "tcp.srcport"],
                         "tcp.flags.syn == 1 && tcp.flags.ack == 0 && tcp.dstport == 3306")  # fmt: skip
    at = syns["frame.time_epoch"].astype(float)
    who = resolve(syns["ip.dst"], at, spans)
    to_vip = syns[syns["ip.dst"] == vip]
    to_member = syns[(who["service"] == "my-release-pxc").to_numpy() & (syns["ip.dst"] != vip).to_numpy()]
    assert len(to_vip) >= 30
    # both views of one call: the client's SYN to the VIP and, after DNAT, the same port's SYN to a member
    views = to_vip.merge(to_member, on=["ip.src", "tcp.srcport"], suffixes=("_vip", "_member"))
    assert len(views) >= 0.9 * len(to_vip)
    # kube-proxy's random choice: every member serves, none gets nearly all
    shares = Counter(resolve(views["ip.dst_member"], views["frame.time_epoch_member"].astype(float), spans)["entity"])
    assert len(shares) == 3 and max(shares.values()) < 0.8 * sum(shares.values()), shares


@needs_testbed
def test_locust_requests_succeed(bundle: Path) -> None:
    load = _run(bundle)["load"]
    assert load["requests"] > 50
    assert load["failures"] <= 0.02 * load["requests"], json.dumps(load["endpoints"])[:2000]
    assert set(load["behaviours"]) <= {"browse", "buy", "register"} and sum(load["behaviours"].values()) > 0


@needs_testbed
def test_the_entity_log_resolves_every_address_but_the_worlds(bundle: Path, tmp_path: Path) -> None:
    run_mimir("ingest", *_captures(bundle), "-o", tmp_path / "flows.parquet", check=True)
    run_mimir("edges", tmp_path / "flows.parquet", bundle, "-o", tmp_path / "edges.parquet", check=True)
    summary = json.loads((tmp_path / "edges.summary.json").read_text())
    # the only cluster addresses no entity holds are those of deleted pods, still called by their peers (the
    # killed Galera member's, until it is back)
    spans, _, _ = load_run(bundle)
    released = set(spans.loc[spans["kind"] == "pod"].query("end != inf")["ip"])
    assert set(summary["unknown_in_cluster_addresses"]) <= released
    edges = pd.read_parquet(tmp_path / "edges.parquet")
    services = set(edges["src_service"]) | set(edges["dst_service"])
    assert {"wordpress", "my-release-pxc", "redis", "kube-dns", "ingress"} <= services
    # what no entity holds is the world: the resolver cluster DNS forwards to, and nothing else in this run
    outside = edges[(edges["src_kind"] == "outside") | (edges["dst_kind"] == "outside")]
    assert set(outside["src_service"]) | set(outside["dst_service"]) <= {"outside", "kube-dns"}
    # the run bundle is what `mimir features` reads
    run_mimir("features", tmp_path / "edges.parquet", bundle, "-o", tmp_path / "features", "--tg", "10",
              "--rates", "1", "--seeds", "1", check=True)  # fmt: skip
    table = pd.read_parquet(tmp_path / "features" / "features" / "10s" / "1.parquet")
    assert table["label"].sum() > 0


@needs_testbed
def test_physical_exfiltration_appears_in_the_capture_with_the_declared_bytes_and_path(bundle: Path) -> None:
    spans, _, run = load_run(bundle)
    front, tunnel = sorted(run["exfiltration"], key=lambda w: w["start"])
    for window in (front, tunnel):
        assert window["problems"] == []
        assert window["bytes"] == window["bytes_received"] > 0 and window["sha256_sent"] == window["sha256_received"]
    assert front["path"] == ["my-release-pxc", "wordpress", "ingress"]
    assert tunnel["path"] == ["my-release-pxc", "wordpress", "kube-dns", "outside"]
    packets = tshark_fields(_captures(bundle), ["frame.time_epoch", "ip.src", "ip.dst", "frame.len"], "ip")
    packets["t"] = packets["frame.time_epoch"].astype(float)
    packets["bytes"] = packets["frame.len"].astype(int)
    src, dst = (resolve(packets[c], packets["t"], spans)["entity"].fillna(packets[c]) for c in ("ip.src", "ip.dst"))
    packets["src"], packets["dst"] = src.to_numpy(), dst.to_numpy()

    def carried(window: dict[str, Any], a: str, b: str) -> int:
        inside = packets[(packets["t"] >= window["start"] - 1) & (packets["t"] <= window["end"] + 5)]
        return int(inside.loc[(inside["src"] == a) & (inside["dst"] == b), "bytes"].sum())

    member, web = (f"default/{pod}" for pod in front["pods"][:2])
    # every hop of the front door's path carried at least the bytes sent: database pod to web pod (pulled in
    # responses), then web pod to the attacker's client in the world (the responses' half-NAT view)
    assert carried(front, member, web) >= front["bytes"]
    assert carried(front, web, network.ATTACKER_CLIENT) >= front["bytes"]
    # the tunnel: queries from the web pod to the DNS VIP, forwarded by cluster DNS to the world's resolver
    member, web = (f"default/{pod}" for pod in tunnel["pods"][:2])
    assert carried(tunnel, member, web) >= tunnel["bytes"]
    assert carried(tunnel, web, "kube-system/kube-dns") >= tunnel["bytes"]
    resolvers = {e for e in packets["src"] if e.startswith("kube-system/coredns")}
    assert sum(carried(tunnel, r, "203.0.113.53") for r in resolvers) >= tunnel["bytes"]


@needs_testbed
def test_the_exfiltration_windows_label_the_intervals(bundle: Path, tmp_path: Path) -> None:
    run_mimir("ingest", *_captures(bundle), "-o", tmp_path / "flows.parquet", check=True)
    run_mimir("edges", tmp_path / "flows.parquet", bundle, "-o", tmp_path / "edges.parquet", check=True)
    done = run_mimir("features", tmp_path / "edges.parquet", bundle, "-o", tmp_path / "f", "--tg", "10", "--rates",
                     "0.01", "--seeds", "1", "--attacked-share", "0.01", check=True)  # fmt: skip
    table = pd.read_parquet(tmp_path / "f" / "features" / "10s" / "0.01.parquet")
    for window in _run(bundle)["exfiltration"]:
        inside = table[(table["start"] < window["end"]) & (table["start"] + 10 > window["start"])]
        assert (inside["label"] == 1).all()
        own = inside[inside["path"] == ">".join(window["path"])]
        assert len(own) and (own["policy"] == "physical").all()  # judged as their own class
    # the front door rides benign calls and the clients' exit: as an injected attack it would abide (the tunnel
    # abides only if benign traffic had cluster DNS forward upstream, which a short run may not show)
    assert "my-release-pxc>wordpress>ingress: labelled physical (as an injected attack: abiding)" in done.stdout
    assert "my-release-pxc>wordpress>kube-dns>outside: labelled physical" in done.stdout


def _wait_for_status(out: Path, status: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            run = json.loads((out / "run.json").read_text())
        except (OSError, json.JSONDecodeError):
            run = {}
        if run.get("status") == status:
            return run
        time.sleep(0.5)
    raise AssertionError(f"{out}: never {status}")


@needs_testbed
def test_sigterm_in_the_middle_tears_everything_down(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([str(MIMIR), "testbed", "run", "--app", "wordpress", "--users", "3", "--duration",
                             "600", *SMALL, "-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        run = _wait_for_status(out, "loading", 300)
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED and "Traceback" not in stderr
    run = _run(out)
    assert run["status"] == "incomplete" and "interrupted" in run["problems"][0]
    assert leftovers(run["testbed"]["name"]) == []


@needs_testbed
def test_a_failure_in_the_middle_tears_everything_down(tmp_path: Path) -> None:
    # a member given far too little time to join: the bring-up fails half-way, with pods and daemons running
    done = run_mimir("testbed", "run", "--app", "wordpress", "--users", "2", "--duration", "60", *SMALL,
                     "--ready-timeout", "0.5", "-o", tmp_path / "run")  # fmt: skip
    assert done.returncode == EXIT_CLUSTER
    run = _run(tmp_path / "run")
    assert run["status"] == "incomplete" and "database member my-release-pxc-" in run["problems"][0]
    assert "marked incomplete" in done.stderr
    assert leftovers(run["testbed"]["name"]) == []


@needs_testbed
def test_down_removes_what_up_left_running() -> None:
    up = run_mimir("testbed", "up", *SMALL, "--wordpress-pods", "1", check=True)
    name = json.loads(up.stdout[: up.stdout.rindex("}") + 1])["name"]
    try:
        assert leftovers(name) != []
        page = subprocess.run(["ip", "netns", "exec", f"{name}-lg", "curl", "-s", "-o", "/dev/null", "-w",
                               "%{http_code}", "http://192.168.49.2:30080/"], capture_output=True, text=True,
                              timeout=30, check=False)  # fmt: skip
        assert page.stdout == "200"
    finally:
        run_mimir("testbed", "down", name, check=True)
    assert leftovers(name) == []


def test_the_autoscaler_follows_the_cpu_like_a_horizontal_pod_autoscaler() -> None:
    class Bed:
        spec = TestbedSpec(wordpress_pods=2, max_wordpress_pods=5, cpu_per_pod=0.2)

    scaler = Autoscaler(Bed())  # type: ignore[arg-type]
    assert scaler.desired(2, 0.21) == 2  # within the 10 % tolerance
    assert scaler.desired(2, 0.5) == 5  # ceil(2 * 0.5 / 0.2)
    # down only to the highest recommendation of the last five minutes: 20 periods of 15 s
    assert [scaler.desired(5, 0.05) for _ in range(20)] == [5] * 19 + [2]
    assert scaler.desired(2, 9.0) == 5  # never above the maximum


def test_the_sites_content_comes_from_the_seed_and_its_pages_differ_in_size() -> None:
    spec = TestbedSpec(posts=200, pages=10, accounts=12)
    one, again, other = (site_plan(spec, seed, "pw") for seed in (3, 3, 4))
    assert [p["content"] for p in one["posts"]] == [p["content"] for p in again["posts"]]
    assert [p["content"] for p in one["posts"]] != [p["content"] for p in other["posts"]]
    sizes = sorted(len(p["content"]) for p in one["posts"])
    assert len(one["posts"]) == 200 and len(one["accounts"]) == 12 and sizes[-1] > 10 * sizes[len(sizes) // 10]


def test_down_names_what_it_cannot_find_and_asks_for_a_name() -> None:
    done = run_mimir("testbed", "down", "mtb-nosuch")
    assert done.returncode == 2 and "no testbed named 'mtb-nosuch' is up" in done.stderr
    done = run_mimir("testbed", "down")
    assert done.returncode == 2 and "--all" in done.stderr
