"""The load of a cluster run: one plan (the daily curve, the request mix) and one Locust process that plays it.

The prototype started a fresh Locust for each of its 24 phases, so every user logged in again at each boundary and
the phase times went unrecorded. Here a single Locust runs the whole curve
through a load shape (locust_support.DailyCurveShape) that stamps every phase change in a JSON-lines file.
This module does not import locust: Locust monkey-patches with gevent, which the collector process must not be.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mimir.errors import ClusterError, UsageError
from mimir.loadmodel import PHASES, daily_curve

if TYPE_CHECKING:
    from mimir.spec import RunSpec

ENV = "MIMIR_LOAD"
CSV_PREFIX = "locust"  # locust_stats.csv, locust_stats_history.csv, locust_failures.csv, locust_exceptions.csv
BEHAVIOURS_SUFFIX = "_behaviours.json"  # written by locust_support when Locust quits


@dataclass
class LoadPlan:
    """What Locust plays: `users` at the curve's peak for `duration` seconds, each user picking behaviours by `mix`."""

    users: int
    duration: float
    spawn_rate: float
    mix: dict[str, float]
    seed: int
    think_min: float
    think_max: float
    think_distribution: str = "uniform"  # or exponential (think_mean) or lognormal (think_median, think_sigma)
    think_mean: float = 0.0
    think_median: float = 0.0
    think_sigma: float = 0.0
    phases: int = PHASES
    params: dict[str, str] = field(default_factory=dict)
    events: str = ""

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.users, int) or self.users < 1:
            problems.append(f"users {self.users!r} is not a whole number >= 1")
        if not _positive(self.duration):
            problems.append(f"duration {self.duration!r} is not a positive number of seconds")
        if not _positive(self.spawn_rate):
            problems.append(f"spawn_rate {self.spawn_rate!r} is not a positive number of users per second")
        if not isinstance(self.phases, int) or self.phases < 1 or self.phases % PHASES:
            problems.append(f"phases {self.phases!r} is not a whole number of {PHASES}-phase days")
        unbounded = self.think_distribution != "uniform" and self.think_max == math.inf  # no clipping above
        if not ((unbounded or _positive(self.think_max, zero=True)) and _positive(self.think_min, zero=True)) or (
            self.think_min > self.think_max
        ):
            problems.append(f"think times {self.think_min!r}..{self.think_max!r} are not 0 <= min <= max")
        if self.think_distribution not in ("uniform", "exponential", "lognormal"):
            problems.append(
                f"think-time distribution {self.think_distribution!r} is not uniform, exponential or lognormal"
            )
        if not isinstance(self.mix, dict) or not self.mix:
            problems.append("mix is empty: name at least one behaviour")
        elif any(not _positive(p, zero=True) for p in self.mix.values()) or sum(self.mix.values()) <= 0:
            problems.append(f"mix {self.mix!r}: probabilities must be >= 0 with a positive sum")
        if not isinstance(self.params, dict) or not all(isinstance(v, str) for v in self.params.values()):
            problems.append("params must map names to strings")
        if problems:
            raise UsageError(f"load plan: {'; '.join(problems)}")

    @classmethod
    def for_run(cls, run: RunSpec, spawn_rate: float, params: dict[str, str], events: Path) -> LoadPlan:
        """The plan of a run as collected (cluster or testbed): its users, curve, mix, seed and think times."""
        think = run.app.think_time
        return cls(
            users=run.users,
            duration=run.duration,
            spawn_rate=spawn_rate,
            mix=dict(run.mix),
            seed=run.seed,
            think_min=think.min,
            think_max=think.max,
            think_distribution=think.distribution,
            think_mean=think.mean,
            think_median=think.median,
            think_sigma=think.sigma,
            params=params,
            events=str(events),
        )

    @property
    def phase_seconds(self) -> float:
        return self.duration / self.phases

    def phase_users(self) -> list[int]:
        """Users in each phase: the load model's daily curve (repeated when the plan spans several days)."""
        return np.tile(daily_curve(self.users), self.phases // PHASES).tolist()

    def phase_at(self, elapsed: float) -> int | None:
        """The phase running `elapsed` seconds after the load began, or None outside [0, duration)."""
        if not 0 <= elapsed < self.duration:
            return None
        return min(int(elapsed // self.phase_seconds), self.phases - 1)

    def users_at(self, elapsed: float) -> int:
        """Users that should be active `elapsed` seconds after the load began (0 before and after the run)."""
        phase = self.phase_at(elapsed)
        return 0 if phase is None else self.phase_users()[phase]

    def to_env(self) -> dict[str, str]:
        """The plan for the Locust process, in one environment variable (the prototype used a pickle in the cwd)."""
        return {ENV: json.dumps(asdict(self), sort_keys=True)}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LoadPlan:
        """Read the plan that run_locust put in the environment; a clear UsageError if it is missing or malformed."""
        text = environ.get(ENV)
        if not text:
            raise UsageError(f"{ENV} is not set: run this locustfile through `mimir collect` (load.run_locust)")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"{ENV}: not JSON ({e.msg} at character {e.pos})") from None
        if not isinstance(data, dict):
            raise UsageError(f"{ENV}: expected a JSON object, found {type(data).__name__}")
        known = set(cls.__dataclass_fields__)
        if unknown := sorted(set(data) - known):
            raise UsageError(f"{ENV}: unknown key(s) {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise UsageError(f"{ENV}: {e}") from None


@dataclass
class LoadResult:
    """How the load went: its epoch window, the request totals, and what Locust wrote into the run's folder."""

    start: float
    end: float
    requests: int
    failures: int
    failure_ratio: float
    median_ms: float | None
    p95_ms: float | None
    endpoints: dict[str, dict[str, int]]
    behaviours: dict[str, int]
    phase_events: list[dict[str, Any]]
    files: list[str]
    exit_code: int
    ended_by: str  # "shape" (the curve ran out), "stop" (the stop event) or "deadline" (Locust overran)
    killed: bool
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def locust_executable() -> Path:
    """The locust next to this interpreter (the venv's bin), else the one on PATH."""
    beside = Path(sys.executable).with_name("locust")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    if found := shutil.which("locust"):
        return Path(found)
    raise ClusterError(f"no locust executable next to {sys.executable} or on PATH: install mimir's dependencies")


def run_locust(  # noqa: PLR0913 - the plan, where, and how the process is stopped and wrapped
    locustfile: Path,
    host: str,
    plan: LoadPlan,
    folder: Path,
    stop: threading.Event | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    stop_timeout: float = 10,
    grace: float | None = None,
    wrapper: Sequence[str] = (),
) -> LoadResult:
    """Play the plan with one Locust process against `host`; its statistics and log land in `folder`.

    The shape ends Locust when the curve runs out. Setting `stop` (a signal, an error elsewhere) sends SIGINT so
    Locust still writes its statistics. Locust ignores --run-time when a shape drives it, so the deadline
    (duration + `grace`, by default the time to spawn every user plus a margin) is enforced here the same way.
    `wrapper` prefixes the command (the testbed runs Locust with `ip netns exec` in its load generator namespace).
    """
    if not locustfile.is_file():
        raise UsageError(f"{locustfile}: no such locustfile")
    folder = folder.resolve()  # Locust runs in `folder`: a relative path would point below it
    folder.mkdir(parents=True, exist_ok=True)
    if plan.events:  # the shape appends to it: start this run's log afresh
        Path(plan.events).parent.mkdir(parents=True, exist_ok=True)
        Path(plan.events).unlink(missing_ok=True)
    prefix = folder / CSV_PREFIX
    command = [
        *wrapper,
        str(locust_executable()),
        "-f",
        str(locustfile),
        "--headless",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--csv-full-history",
        "--json-file",
        str(prefix),  # locust.json: exact final counts, written after every user stopped
        "--stop-timeout",
        f"{stop_timeout:g}",
        "--loglevel",
        "INFO",
        "--logfile",
        str(folder / "locust.log"),
        "--only-summary",
    ]
    margin = plan.users / plan.spawn_rate + stop_timeout + 30 if grace is None else grace
    console = folder / "locust.out"
    _say(progress, f"locust: {plan.users} users at peak, {plan.phases} phases of {plan.phase_seconds:.1f} s")
    start = time.time()
    with console.open("w") as out:
        try:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=folder,
                env={**os.environ, **plan.to_env()},
                process_group=0,  # the collector's signal handling decides when Locust stops
            )
        except OSError as e:
            raise ClusterError(f"cannot run {command[0]}: {e.strerror}") from None
        ended_by, killed = _supervise(proc, plan, start + plan.duration + margin, stop, stop_timeout, progress)
    end = time.time()
    result = _result(folder, plan, start, end, proc.returncode, ended_by, killed)
    _say(progress, f"locust: {result.requests} requests, {result.failures} failures, ended by {ended_by}")
    return result


KILL_GRACE = 15.0  # seconds after the stop timeout for Locust to write its statistics before it is killed


def _supervise(
    proc: subprocess.Popen[bytes],
    plan: LoadPlan,
    deadline: float,
    stop: threading.Event | None,
    stop_timeout: float,
    progress: Callable[[str], None] | None,
) -> tuple[str, bool]:
    """Wait for Locust; on `stop` or past the deadline, interrupt it (SIGKILL if it does not finish). Report phases."""
    ended_by = "shape"
    seen = 0
    try:
        while proc.poll() is None:
            if _stop_requested(stop, 0.25):
                ended_by = "stop"
            elif time.time() > deadline:
                ended_by = "deadline"
            seen = _report_phases(plan, seen, progress)
            if ended_by != "shape":
                _say(progress, f"locust: stopping ({'stop requested' if ended_by == 'stop' else 'past its deadline'})")
                return ended_by, _terminate(proc, stop_timeout + KILL_GRACE)
        _report_phases(plan, seen, progress)
        return ended_by, False
    except BaseException:
        _terminate(proc, stop_timeout + KILL_GRACE)
        raise


def _stop_requested(stop: threading.Event | None, seconds: float) -> bool:
    """Wait up to `seconds` for the stop event (or just sleep without one); True once it is set."""
    if stop is None:
        time.sleep(seconds)
        return False
    return stop.wait(seconds)


def _terminate(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """SIGINT makes Locust stop its users and write its final files; True if it had to be killed.

    Not SIGTERM: Locust installs its SIGTERM handler only after a shape-driven run has ended, so before that
    SIGTERM kills it without statistics.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout)
        return False
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return True


def _report_phases(plan: LoadPlan, seen: int, progress: Callable[[str], None] | None) -> int:
    """Pass the shape's new phase events to `progress`; return how many have been reported."""
    if progress is None or not plan.events:
        return seen
    events = _read_events(Path(plan.events))
    for event in events[seen:]:
        if event["phase"] < plan.phases:
            _say(progress, f"load: phase {event['phase'] + 1}/{plan.phases}, {event['users']} users")
    return len(events)


def _read_events(path: Path) -> list[dict[str, Any]]:
    """The complete lines of the shape's JSON-lines log (a line being written is left for later)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n") and line.strip()]


def _result(
    folder: Path, plan: LoadPlan, start: float, end: float, exit_code: int, ended_by: str, killed: bool
) -> LoadResult:
    """Read what Locust wrote; no aggregated statistics at all means Locust never ran the load."""
    prefix = folder / CSV_PREFIX
    aggregated = _aggregated_row(prefix.with_name(CSV_PREFIX + "_stats.csv"))
    if aggregated is None:
        raise ClusterError(
            f"{folder}: Locust (exit status {exit_code}) wrote no statistics; its output: {_tail(folder)}"
        )
    warnings = []
    endpoints = _final_counts(prefix.with_name(CSV_PREFIX + ".json"))
    if endpoints is None:
        warnings.append("locust.json is missing (Locust was killed): totals are from the last CSV snapshot")
        requests, failures = _count(aggregated["Request Count"]), _count(aggregated["Failure Count"])
        endpoints = {}
    else:
        requests = sum(e["requests"] for e in endpoints.values())
        failures = sum(e["failures"] for e in endpoints.values())
    warnings += _check_history(prefix.with_name(CSV_PREFIX + "_stats_history.csv"), start, end)
    behaviours_file = prefix.with_name(CSV_PREFIX + BEHAVIOURS_SUFFIX)
    behaviours = json.loads(behaviours_file.read_text()) if behaviours_file.is_file() else {}
    events = _read_events(Path(plan.events)) if plan.events else []
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    if plan.events and Path(plan.events).parent == folder:
        files = sorted({*files, Path(plan.events).name})
    return LoadResult(
        start=start,
        end=end,
        requests=requests,
        failures=failures,
        failure_ratio=failures / requests if requests else 0.0,
        median_ms=_number(aggregated["Median Response Time"]),
        p95_ms=_number(aggregated["95%"]),
        endpoints=endpoints,
        behaviours=behaviours,
        phase_events=events,
        files=files,
        exit_code=exit_code,
        ended_by=ended_by,
        killed=killed,
        warnings=warnings,
    )


def _aggregated_row(path: Path) -> dict[str, str] | None:
    if not path.is_file():
        return None
    with path.open(newline="") as f:
        return next((row for row in csv.DictReader(f) if row.get("Name") == "Aggregated"), None)


def _final_counts(path: Path) -> dict[str, dict[str, int]] | None:
    """Requests and failures per "METHOD name" from Locust's final JSON (the CSV lags it by up to a second)."""
    if not path.is_file():
        return None
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return {
        f"{e['method']} {e['name']}": {"requests": int(e["num_requests"]), "failures": int(e["num_failures"])}
        for e in entries
    }


def _check_history(path: Path, start: float, end: float) -> list[str]:
    """The history must carry epoch seconds inside the run's window, or it cannot be lined up with the capture."""
    if not path.is_file():
        return [f"{path.name} is missing"]
    with path.open(newline="") as f:
        stamps = [row["Timestamp"] for row in csv.DictReader(f)]
    if not stamps:
        return [f"{path.name} has no rows"]
    try:
        values = [int(s) for s in stamps]
    except ValueError:
        return [f"{path.name}: timestamps are not epoch seconds"]
    if min(values) < math.floor(start) or max(values) > math.ceil(end):
        return [f"{path.name}: timestamps {min(values)}..{max(values)} fall outside the run {start:.0f}..{end:.0f}"]
    return []


def _count(text: str) -> int:
    return int(text) if text.isdigit() else 0


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None  # "N/A" before any request
    return value if math.isfinite(value) else None


def _tail(folder: Path, lines: int = 15) -> str:
    """The end of Locust's console output and log, where a locustfile error or a bad plan shows."""
    parts = []
    for name in ("locust.out", "locust.log"):
        path = folder / name
        if path.is_file() and (text := path.read_text(errors="replace").strip()):
            parts.append(f"[{name}] " + " | ".join(text.splitlines()[-lines:]))
    return " ".join(parts) or "(nothing)"


def _positive(value: object, zero: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value >= 0 if zero else value > 0


def _say(progress: Callable[[str], None] | None, message: str) -> None:
    if progress is not None:
        progress(message)
