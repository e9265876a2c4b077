"""What a run is and what an experiment computes: one typed specification, every default defined once.

The command line, the workflow's config and the collector all build these objects, so a run means the same
whichever way it was asked for. The config schema (config/schemas/config.schema.yaml) repeats the defaults for the
users who read it; the test suite checks that it repeats them faithfully.

Every builder names the place the user wrote a bad value: a config key such as `runs.shop.mix.buy` or a
command-line option such as `--mix`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mimir.entities import DNS_SERVICE, INGRESS, OUTSIDE
from mimir.errors import UsageError
from mimir.loadmodel import DEFAULT_MIX, normalise_mix
from mimir.network import SERVICE_NETWORK

if TYPE_CHECKING:
    from mimir.apps import App

DEFAULT_START = 1_767_225_600  # 2026-01-01T00:00:00Z: synthetic runs start at a fixed, documented instant
DEFAULT_BIN_SECONDS = 1  # flows are binned per second unless the config says otherwise
GRANULARITY_SEPARATOR = "@"  # `mimir@10`: a method restricted to one granularity of the feature tables

_RATE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMG]?B)/(s|min)\s*")
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def parse_rate(text: str, where: str) -> float:
    """`100KB/min` or `1MB/s` → bytes per minute."""
    match = _RATE.fullmatch(str(text))
    if not match:
        raise UsageError(f"{where}: {text!r}: a rate looks like 100KB/min or 1MB/s")
    per_minute = float(match.group(1)) * _UNITS[match.group(2)] * (60 if match.group(3) == "s" else 1)
    if not math.isfinite(per_minute) or per_minute <= 0:
        raise UsageError(f"{where}: {text!r}: the rate must be positive")
    return per_minute


def _seconds(value: Any, where: str, *, positive: bool) -> float:
    """A time in seconds as the user wrote it: finite, not negative, and above 0 where `positive`."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0 or (positive and seconds == 0):
        raise UsageError(f"{where}: {value!r} must be a {'positive' if positive else 'non-negative'} number of seconds")
    return seconds


BURSTS, BURST_SECONDS = 4, 3  # a `bursts` exfiltration (window or injected attack): 4 bursts of 3 s


@dataclass(frozen=True)
class ExfilWindow:
    """A physical exfiltration written into a synthetic capture: `bytes_per_minute` along `path` for a window.

    `path` lists services of the application and ends with `outside` (sent out of the cluster; `kube-dns, outside`
    at the end: tunnelled through DNS lookups) or with the entry service and `ingress` (pulled by a client through
    the front door); `start` counts seconds from the run's start. `shape`: `constant` spreads the bytes evenly over
    the window, `bursts` sends them in four bursts of three seconds.
    """

    path: tuple[str, ...]
    bytes_per_minute: float
    start: float
    duration: float = 60.0
    shape: str = "constant"

    SHAPES = ("constant", "bursts")
    EXITS = (OUTSIDE, INGRESS)  # the world: an address outside the cluster, or a client of the entry service

    @classmethod
    def from_text(cls, text: str, app: App, where: str = "--exfil") -> ExfilWindow:
        """The command line's form: `path=user-db,user,front-end,outside;rate=100KB/min;start=1200;duration=120`."""
        fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
        unknown = set(fields) - {"path", "rate", "start", "duration", "shape"}
        if unknown or not {"path", "rate", "start"} <= set(fields):
            raise UsageError(
                f"{where} {text!r}: use path=SVC,...,outside|ingress;rate=100KB/min;start=S[;duration=S]"
                f"[;shape={'|'.join(cls.SHAPES)}]"
            )
        entry: dict[str, Any] = {**fields, "path": [p.strip() for p in fields["path"].split(",")]}
        return cls.from_mapping(entry, app, f"{where} {text!r}")

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any], app: App, where: str) -> ExfilWindow:
        """The config's form: `{path: [user-db, user, front-end, outside], rate: 100KB/min, start: 1200}`."""
        path = tuple(str(p) for p in entry["path"])
        cls._check_path(path, app, where)
        start = _seconds(entry["start"], f"{where}: start", positive=False)
        duration = _seconds(entry.get("duration", cls.duration), f"{where}: duration", positive=True)
        shape = str(entry.get("shape", cls.shape)).strip()
        if shape not in cls.SHAPES:
            raise UsageError(f"{where}: shape: {shape!r} is not one of {', '.join(cls.SHAPES)}")
        if shape == "bursts" and duration < BURSTS * BURST_SECONDS:
            raise UsageError(f"{where}: shape bursts: {BURSTS} bursts of {BURST_SECONDS:g} s need a duration "
                             f"of {BURSTS * BURST_SECONDS:g} s at least, not {duration:g}")  # fmt: skip
        return cls(path, parse_rate(entry["rate"], f"{where}: rate"), start, duration, shape)

    @classmethod
    def _check_path(cls, path: tuple[str, ...], app: App, where: str) -> None:
        """Services of the app, then `outside`; `kube-dns` only just before `outside`; `ingress` only after the entry
        (a client reaches nothing else)."""
        services = list(path[:-1])
        if len(path) >= 3 and path[-2] == DNS_SERVICE and path[-1] == "outside":
            services.pop()
        bad = (
            len(services) < 1
            or path[-1] not in cls.EXITS
            or any(p not in app.services for p in services)
            or (path[-1] == "ingress" and path[-2] != app.entry)
        )
        if bad:
            raise UsageError(
                f"{where}: the path lists services of {app.name} and ends with 'outside' "
                f"(or '{DNS_SERVICE}, outside'), or with its entry service {app.entry!r} and 'ingress', not {path}"
            )


@dataclass(frozen=True)
class RunSpec:
    """One run of an application under load, whatever makes it (the synthetic source or a cluster).

    `mix` holds the request mix normalised over the application's behaviours; `start` only applies to synthetic
    runs (a cluster's clock is its own), `exfil` to synthetic and testbed runs (written into the capture, or sent
    by real processes).
    """

    app: App
    users: int
    duration: float = 1800.0
    mix: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    seed: int = 0
    snaplen: int = 128
    rotate: int = 600
    start: int = DEFAULT_START
    exfil: tuple[ExfilWindow, ...] = ()

    MIN_SNAPLEN = 68  # the link, IP and TCP headers: less and ports are lost (the schema's minimum, and --snaplen's)

    @classmethod
    def from_config(
        cls, name: str, entry: Mapping[str, Any], defaults: Mapping[str, Any], seed: int, app: App
    ) -> RunSpec:
        """A run of the workflow's config (`runs.NAME`), with the config's `defaults` and seed where it is silent."""
        where = f"runs.{name}"
        exfil = tuple(
            ExfilWindow.from_mapping(window, app, f"{where}.exfil[{i}]")
            for i, window in enumerate(entry.get("exfil", []))
        )
        return cls(
            app=app,
            users=int(entry["users"]),
            duration=float(entry.get("duration", defaults.get("duration", cls.duration))),
            mix=normalise_mix(entry.get("mix") or DEFAULT_MIX, list(app.requests), f"{where}.mix"),
            seed=int(entry.get("seed", seed)),
            snaplen=int(defaults.get("snaplen", cls.snaplen)),
            rotate=int(defaults.get("rotate", cls.rotate)),
            exfil=exfil,
        )


@dataclass(frozen=True)
class ClusterSpec:
    """How a run is collected on a Kubernetes cluster (`mimir collect`, or `source: cluster` in the workflow)."""

    kubeconfig: Path | None = None
    context: str | None = None
    server: str | None = None  # an API server URL without authentication, instead of a kubeconfig
    manifests: Path | None = None  # default: config/k8s/<APP>
    locustfile: Path | None = None  # default: the built-in behaviours of the application
    target: str | None = None  # the entry URL, when the entry service's NodePort is not reachable
    capture_netns: str = "container:minikube"
    interface: str = "any"
    buffer_kib: int = 32768
    spawn_rate: float = 10.0
    customers: int = 1000
    populate: bool = True
    cpu_percent: int = 50
    ready_timeout: float = 900.0
    service_network: str = SERVICE_NETWORK
    least_privilege_watch: bool = True
    keep: bool = False

    @classmethod
    def from_config(cls, cluster: Mapping[str, Any]) -> ClusterSpec:
        """The workflow's `cluster` section (already checked against the schema)."""
        values = dict(cluster)
        for key in ("kubeconfig", "manifests", "locustfile"):
            if values.get(key) is not None:
                values[key] = Path(values[key])
        return cls(**values)


@dataclass(frozen=True)
class Fault:
    """A pod killed `at` seconds after the load began and restarted `down` seconds later (`mimir testbed`):
    `target` is `database` (a Galera member, which rejoins by state transfer) or `wordpress` (one web pod)."""

    target: str
    at: float
    down: float = 30.0

    TARGETS = ("database", "wordpress")

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any], where: str) -> Fault:
        target = str(entry.get("target", ""))
        if target not in cls.TARGETS:
            raise UsageError(f"{where}: target: {target!r} is not one of {', '.join(cls.TARGETS)}")
        at = _seconds(entry.get("at"), f"{where}: at", positive=False)
        return cls(target, at, _seconds(entry.get("down", cls.down), f"{where}: down", positive=True))

    @classmethod
    def from_text(cls, text: str, where: str = "--fault") -> Fault:
        """The command line's form: `target=database;at=300;down=30`."""
        fields = dict(part.split("=", 1) for part in text.split(";") if "=" in part)
        if set(fields) - {"target", "at", "down"} or not {"target", "at"} <= set(fields):
            raise UsageError(f"{where} {text!r}: use target={'|'.join(cls.TARGETS)};at=S[;down=S]")
        return cls.from_mapping(fields, f"{where} {text!r}")


@dataclass(frozen=True)
class TestbedSpec:
    """How a run is made on the testbed (`mimir testbed run`, or `source: testbed` in the workflow): WordPress pods
    between `wordpress_pods` and `max_wordpress_pods`, scaled every `scale_period` seconds towards `cpu_per_pod`
    of a core (php-fpm and nginx) each, as a CPU autoscaler does; the site populated with `posts`, `pages` and
    `accounts`. Faults are a run's own: the workflow adds each run's to the section's settings."""

    __test__ = False  # not a pytest class, whatever its name

    wordpress_pods: int = 2
    max_wordpress_pods: int = 4
    cpu_per_pod: float = 0.05
    scale_period: float = 15.0
    posts: int = 300
    pages: int = 20
    accounts: int = 40
    spawn_rate: float = 10.0
    buffer_kib: int = 32768
    ready_timeout: float = 240.0
    faults: tuple[Fault, ...] = ()

    @classmethod
    def from_config(cls, testbed: Mapping[str, Any]) -> TestbedSpec:
        """The workflow's `testbed` section (already checked against the schema)."""
        values = dict(testbed)
        values["faults"] = tuple(
            Fault.from_mapping(f, f"testbed.faults[{i}]") for i, f in enumerate(values.get("faults", []))
        )
        spec = cls(**values)
        if spec.max_wordpress_pods < spec.wordpress_pods:
            raise UsageError(
                f"testbed.max_wordpress_pods: {spec.max_wordpress_pods} is below wordpress_pods {spec.wordpress_pods}"
            )
        return spec


# a training run: fit on the first half, thresholds on the second (evaluation runs are all `test`)
TRAINING_SPLIT = MappingProxyType({"train": 0.5, "validation": 0.5})


@dataclass(frozen=True)
class FeatureSpec:
    """How attacks are injected and feature tables computed (`mimir features`, or `features` in the workflow)."""

    granularities: tuple[int, ...] = (10, 60)
    rates: tuple[float, ...] = (10.0, 1.0, 0.1, 0.05, 0.01)  # MB per minute: the paper's five
    attack_seconds: int = 60
    attacked_share: float = 0.2  # of the run's time
    rate_sd: float = 0.1  # an attack's rate spread, as a share of the rate
    max_path_length: int = 5  # services on an attack path, `ingress` and `outside` excluded
    seeds: int = 3  # injections per run and rate, each from its own seed, stacked in one table
    split: Mapping[str, float] = field(default_factory=lambda: dict(TRAINING_SPLIT))


def rate_name(rate: float) -> str:
    """A rate as it appears in file names (`0.1.parquet`); config validation makes these unique."""
    return f"{rate:g}"


def split_method(name: str) -> tuple[str, int | None]:
    """`mimir@10` → ("mimir", 10); `lasso` → ("lasso", None)."""
    base, sep, tg = name.partition(GRANULARITY_SEPARATOR)
    if not sep:
        return base, None
    if not tg.isdigit() or int(tg) < 1:
        raise UsageError(f"{name!r}: a method on one granularity is written METHOD@SECONDS, such as mimir@10")
    return base, int(tg)


def check_granularities(granularities: Sequence[int], bin_seconds: int, where: str) -> None:
    """Intervals are built from whole flow bins: every granularity must be a multiple of the bin."""
    bad = [tg for tg in granularities if tg % bin_seconds]
    if bad:
        raise UsageError(f"{where}: {bad} s is not a multiple of the flows' {bin_seconds} s bin")
