"""The load plan, and one real Locust process playing it against an HTTP server the test runs on loopback."""

from __future__ import annotations

import csv
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mimir.errors import ClusterError, UsageError
from mimir.loadmodel import daily_curve
from mimir.sources.cluster.load import ENV, LoadPlan, run_locust


def plan(**changes: object) -> LoadPlan:
    values: dict = {
        "users": 100,
        "duration": 240.0,
        "spawn_rate": 10.0,
        "mix": {"browse": 0.5, "buy": 0.3, "register": 0.2},
        "seed": 7,
        "think_min": 1.0,
        "think_max": 2.0,
        "params": {"password": "s3cret"},
        "events": "",
    }
    values.update(changes)
    return LoadPlan(**values)


def curve_formula(users: int) -> list[int]:
    """The prototype's "normal" curve: round(users * r_h / max r) with r_h = -sin(pi h / 12) / 2 + 1.1."""
    r = [-0.5 * math.sin(math.pi * h / 12) + 1.1 for h in range(24)]
    return [round(users * x / max(r)) for x in r]


@pytest.mark.parametrize("users", [100, 37, 1])
def test_phase_users_follow_the_daily_curve(users: int) -> None:
    p = plan(users=users)
    assert p.phases == 24
    assert p.phase_users() == curve_formula(users) == daily_curve(users).tolist()
    assert max(p.phase_users()) == users


def test_several_days_repeat_the_curve() -> None:
    assert plan(phases=48).phase_users() == curve_formula(100) * 2


def test_users_at_phase_boundaries() -> None:
    p = plan(duration=240.0)
    users = p.phase_users()
    step = p.duration / p.phases
    assert p.users_at(0) == users[0]
    for i in range(1, p.phases):
        assert p.users_at(i * step) == users[i]
        assert p.users_at(i * step - 1e-6) == users[i - 1]
    assert p.users_at(p.duration - 1e-6) == users[-1]
    assert p.users_at(p.duration) == 0
    assert p.users_at(-1) == 0


def test_env_round_trip(tmp_path: Path) -> None:
    p = plan(events=str(tmp_path / "phases.jsonl"))
    env = p.to_env()
    assert list(env) == [ENV]
    assert LoadPlan.from_env(env) == p


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "not set"),
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({"users": 5}), "missing"),
        (json.dumps({**json.loads(plan().to_env()[ENV]), "colour": "red"}), "unknown key"),
        (json.dumps({**json.loads(plan().to_env()[ENV]), "users": 0}), "users"),
        (json.dumps({**json.loads(plan().to_env()[ENV]), "mix": {"a": -1}}), "mix"),
    ],
)
def test_malformed_env_is_a_usage_error(value: str | None, message: str) -> None:
    env = {} if value is None else {ENV: value}
    with pytest.raises(UsageError, match=message) as caught:
        LoadPlan.from_env(env)
    assert ENV in str(caught.value) or "load plan" in str(caught.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"phases": 10},
        {"think_min": 3.0},
        {"spawn_rate": 0},
        {"duration": math.inf},
        {"mix": {}},
        {"think_distribution": "pareto"},
        {"think_max": math.inf},
    ],
)
def test_impossible_plans_are_refused(changes: dict) -> None:
    with pytest.raises(UsageError, match="load plan"):
        plan(**changes)


def test_the_collector_side_does_not_import_locust() -> None:
    code = "import sys, mimir.sources.cluster.load; print('locust' in sys.modules or 'gevent' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "False"


CHOICES = """
import json, os, sys
from locust.env import Environment
from mimir.sources.cluster.locust_support import MixUser

class Picker(MixUser):
    host = "http://127.0.0.1:9"
    def __init__(self, environment):
        super().__init__(environment)
        self.seen = []
    def a(self): self.seen.append("a")
    def b(self): self.seen.append("b")
    def c(self): self.seen.append("c")

env = Environment(user_classes=[Picker])
users = [Picker(env) for _ in range(3)]
for user in users:
    for _ in range(50):
        user.behave()
print(json.dumps([[u.seen, [round(u.wait_time(), 9) for _ in range(5)]] for u in users]))
"""


def test_each_user_has_a_reproducible_choice_sequence(tmp_path: Path) -> None:
    env = {**os.environ, **plan(mix={"a": 0.6, "b": 0.4, "c": 0.0}, think_min=0.5, think_max=1.5).to_env()}

    def sequences() -> list:
        done = subprocess.run(
            [sys.executable, "-c", CHOICES],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = sequences()
    assert sequences() == first
    for seen, waits in first:
        assert set(seen) <= {"a", "b"}
        assert all(0.5 <= w <= 1.5 for w in waits)
    assert first[0][0] != first[1][0]


WAITS = """
import json
from locust.env import Environment
from mimir.sources.cluster.locust_support import MixUser

class Waiter(MixUser):
    host = "http://127.0.0.1:9"
    def a(self): pass

user = Waiter(Environment(user_classes=[Waiter]))
print(json.dumps([user.wait_time() for _ in range(4000)]))
"""


@pytest.mark.parametrize(
    ("think", "median"),
    [
        ({"think_distribution": "lognormal", "think_median": 2.0, "think_sigma": 0.5}, 2.0),
        ({"think_distribution": "exponential", "think_mean": 3.0}, 3.0 * math.log(2)),
    ],
)
def test_locust_users_wait_as_the_application_says(tmp_path: Path, think: dict, median: float) -> None:
    """The collector's users draw think times from the same distributions as the synthetic users."""
    env = {**os.environ, **plan(mix={"a": 1.0}, think_min=0.2, think_max=30.0, **think).to_env()}
    done = subprocess.run(
        [sys.executable, "-c", WAITS], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    waits = sorted(json.loads(done.stdout))
    assert waits[0] >= 0.2 and waits[-1] <= 30.0
    assert waits[len(waits) // 2] == pytest.approx(median, rel=0.08)


class Hits(http.server.BaseHTTPRequestHandler):
    counts: Counter[str]

    def do_GET(self) -> None:
        self.counts[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, Counter[str]]]:
    """An HTTP server on loopback that counts hits by path."""
    counts: Counter[str] = Counter()
    handler = type("CountingHits", (Hits,), {"counts": counts})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", counts
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)


LOCUSTFILE = """
from mimir.sources.cluster.locust_support import DailyCurveShape, MixUser


class Visitor(MixUser):
    def a(self):
        self.client.get("/a")

    def b(self):
        self.client.get("/b")

    def c(self):
        self.client.get("/c")
"""


@pytest.fixture
def locustfile(tmp_path: Path) -> Path:
    path = tmp_path / "visitor.py"
    path.write_text(LOCUSTFILE)
    return path


def history_stamps(folder: Path) -> list[int]:
    with (folder / "locust_stats_history.csv").open(newline="") as f:
        return [int(row["Timestamp"]) for row in csv.DictReader(f)]


def test_one_locust_plays_the_whole_curve(tmp_path: Path, server, locustfile: Path) -> None:
    host, counts = server
    folder = tmp_path / "load"
    p = plan(
        users=6,
        duration=8.0,
        spawn_rate=100.0,
        mix={"a": 1.0, "b": 0.0, "c": 0.0},
        think_min=0.05,
        think_max=0.1,
        events=str(folder / "phases.jsonl"),
    )
    messages: list[str] = []
    result = run_locust(locustfile, host, p, folder, progress=messages.append)

    assert set(counts) == {"/a"}
    assert result.ended_by == "shape" and not result.killed
    assert result.exit_code == 0
    assert result.warnings == []
    assert result.failures == 0 and result.failure_ratio == 0.0
    assert result.requests > 0
    assert result.endpoints == {"GET /a": {"requests": result.requests, "failures": 0}}
    assert 0 <= counts["/a"] - result.requests <= p.users  # at most one request in flight per user at the end
    assert set(result.behaviours) == {"a"}
    assert 0 <= result.behaviours["a"] - result.requests <= p.users  # iterations begun, requests finished
    assert result.median_ms is not None

    events = result.phase_events
    assert events == [json.loads(line) for line in (folder / "phases.jsonl").read_text().splitlines()]
    stamps = [e["ts"] for e in events]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    assert events[0]["phase"] == 0 and events[0]["users"] == p.phase_users()[0]
    assert events[-1] == {"ts": stamps[-1], "phase": p.phases, "users": 0}
    for e in events[:-1]:
        assert e["users"] == p.phase_users()[e["phase"]]
    assert result.start <= stamps[0] and stamps[-1] <= result.end
    assert any(m.startswith("load: phase 1/24") for m in messages)

    for name in ("locust_stats.csv", "locust_stats_history.csv", "locust.log", "phases.jsonl"):
        assert name in result.files and (folder / name).is_file()
    history = history_stamps(folder)
    assert history and all(math.floor(result.start) <= t <= math.ceil(result.end) for t in history)
    assert result.to_json()["requests"] == result.requests


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_the_stop_event_ends_a_long_run_with_its_statistics(
    tmp_path: Path, server, locustfile: Path, sigint: str
) -> None:
    """Also when the collector's own parent ignores SIGINT (Locust inherits that across exec)."""
    if sigint == "ignored":
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            _stop_a_long_run(tmp_path, server, locustfile)
        finally:
            signal.signal(signal.SIGINT, previous)
    else:
        _stop_a_long_run(tmp_path, server, locustfile)


def _stop_a_long_run(tmp_path: Path, server, locustfile: Path) -> None:
    host, counts = server
    folder = tmp_path / "load"
    events = folder / "phases.jsonl"
    p = plan(users=4, duration=600.0, spawn_rate=100.0, mix={"b": 1.0}, think_min=0.05, think_max=0.1)
    p.events = str(events)
    stop = threading.Event()

    def stop_after_twenty_hits() -> None:
        while counts["/b"] < 20 and not stop.wait(0.1):
            pass
        stop.set()

    stopper = threading.Thread(target=stop_after_twenty_hits)
    stopper.start()
    try:
        result = run_locust(locustfile, host, p, folder, stop=stop)
    finally:
        stop.set()
        stopper.join()

    assert result.ended_by == "stop" and not result.killed
    assert set(counts) == {"/b"}
    assert result.requests >= 20
    assert 0 <= counts["/b"] - result.requests <= p.users
    assert result.warnings == []
    assert all(e["phase"] < p.phases for e in result.phase_events)  # the curve was cut short
    assert history_stamps(folder)
    assert (folder / "locust_stats.csv").read_text().count("Aggregated") == 1


def test_a_behaviour_the_user_lacks_stops_locust_with_a_clear_error(tmp_path: Path, server, locustfile: Path) -> None:
    host, counts = server
    p = plan(users=2, duration=5.0, mix={"a": 0.5, "checkout": 0.5}, think_min=0.05, think_max=0.1)
    with pytest.raises(ClusterError, match="checkout"):
        run_locust(locustfile, host, p, tmp_path / "load")
    assert not counts


def test_a_missing_locustfile_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such locustfile"):
        run_locust(tmp_path / "absent.py", "http://127.0.0.1:9", plan(), tmp_path / "load")
