"""What a run is and what an experiment computes: one typed specification, every default defined once.

The command line, the workflow's config and the collector all build these objects, so a run means the same
whichever way it was asked for. The config schema (config/schemas/config.schema.yaml) repeats the defaults for the
users who read it; the test suite checks that it repeats them faithfully.

Every builder names the place the user wrote a bad value: a config key such as `runs.shop.mix.buy` or a
command-line option such as `--mix`.
"""

from __future__ import annotations

import argparse
import math
import re
import reprlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from mimir.errors import UsageError
from mimir.loadmodel import DEFAULT_MIX, normalise_mix
from mimir.network import DNS_SERVICE, INGRESS, OUTSIDE, SERVICE_NETWORK

if TYPE_CHECKING:
    from mimir.apps import App

DEFAULT_START = 1_767_225_600  # 2026-01-01T00:00:00Z: synthetic runs start at a fixed, documented instant
DEFAULT_BIN_SECONDS = 1  # flows are binned per second unless the config says otherwise
GRANULARITY_SEPARATOR = "@"  # `mimir@10`: a method restricted to one granularity of the feature tables


def _number(x: float) -> str:
    """A bound as the help and the README show it: whole numbers in full (4294967295, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Range:
    """The documented range of a numeric setting, checked before any work by the command line's option types and by
    the specs the workflow's config builds: outside it a value overflows, allocates without bound or runs until
    killed. `above`/`below`: the bound itself is excluded; `whole`: integers only (1e3 is 1000, 0.5 is refused)."""

    low: float
    high: float
    unit: str = ""
    whole: bool = False
    above: bool = False
    below: bool = False

    def __str__(self) -> str:
        unit = f" {self.unit}" if self.unit else ""
        if self.whole:
            return f"{_number(self.low)}..{_number(self.high)}{unit}"
        return (
            f"{'(' if self.above else '['}{_number(self.low)}, {_number(self.high)}{')' if self.below else ']'}{unit}"
        )

    def _parse(self, value: Any) -> tuple[int | float | None, str]:
        """The value as a number in the range, or None and what is wrong with it."""
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text) if self.whole else float(text)
            except ValueError:
                try:
                    value = float(text)
                except ValueError:
                    return None, f"is not a number (documented range {self})"
        if isinstance(value, bool) or not isinstance(value, Real):
            return None, f"is not a number (documented range {self})"
        if not isinstance(value, Integral) and not math.isfinite(value):
            return None, f"is not a finite number (documented range {self})"
        if self.whole and not isinstance(value, Integral) and not float(value).is_integer():
            return None, f"is not a whole number (documented range {self})"
        low_ok = value > self.low if self.above else value >= self.low  # exact, for ints of any size
        high_ok = value < self.high if self.below else value <= self.high
        if not (low_ok and high_ok):
            return None, f"is outside the documented range {self}"
        return (int(value) if self.whole else float(value)), ""

    def check(self, value: Any, where: str) -> Any:
        """`value` (a number, or text as the user wrote it) as an int or a float; a UsageError naming `where` (an
        option or a config key) if it is not in the range."""
        number, problem = self._parse(value)
        if number is None:
            raise UsageError(f"{where}: {reprlib.repr(value)} {problem}")
        return number

    def option(self, text: str) -> Any:
        """An argparse type: argparse names the option and exits 2 before the command runs."""
        number, problem = self._parse(text)
        if number is None:
            raise argparse.ArgumentTypeError(f"{reprlib.repr(text)} {problem}")
        return number


MAX_DURATION = 604_800.0  # a week: the longest run, and every time within one
SEED = Range(0, 2**32 - 1, whole=True)  # every seed of a run or an injection (numpy takes non-negative seeds)
BIN = Range(1, 86_400, "s", whole=True)  # a flows bin and a feature granularity: whole seconds up to a day
RATE = Range(0, 60e9, "bytes/min", above=True)  # an exfiltration rate: at most 1 GB/s, a 10 Gbit/s link's worth
JOBS = Range(1, 256, whole=True)  # processes in parallel
WINDOW = Range(1, 86_400, "s", whole=True)  # a realism window
CLOCK = Range(0, 2**32, "s", below=True)  # a time on a log's clock (log seconds or epoch seconds of a 32-bit pcap)
SPAWN_RATE = Range(0.01, 10_000, "users/s")  # Locust's; the load's grace period is users / spawn rate
READY_TIMEOUT = Range(0, 86_400, "s", above=True)  # a day: longer is beyond what a thread may wait for
# what the synthetic source simulates in reasonable memory: 2000 users peak at 0.6 GB for 60 s and 1.2 GB for
# 300 s (about 1.3 KB a user-second above 0.3 GB: some 7 GB at the budget), and a packet per 1448 bytes of
# exfiltration on every hop
SYNTH_USER_SECONDS = 5_000_000
SYNTH_EXFIL_BYTES = 10e9


def check_fields(ranges: Mapping[str, Range], values: Mapping[str, Any], key: Callable[[str], str]) -> dict[str, Any]:
    """`values` with every ranged one checked and converted (each item of a tuple, list or mapping of them too);
    `key` names a field as the user wrote it: a config key (`runs.shop.users`) or an option (`--users`)."""
    out = dict(values)
    for name, value in values.items():
        if name not in ranges:
            continue
        where = key(name)
        if isinstance(value, Mapping):
            out[name] = {k: ranges[name].check(v, f"{where}.{k}") for k, v in value.items()}
        elif isinstance(value, (list, tuple)):
            out[name] = tuple(ranges[name].check(v, f"{where}[{i}]") for i, v in enumerate(value))
        else:
            out[name] = ranges[name].check(value, where)
    return out


_RATE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([KMG]?B)/(s|min)\s*")
_UNITS = {"B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9}


def parse_rate(text: str, where: str) -> float:
    """`100KB/min` or `1MB/s` → bytes per minute, in RATE (so that a window's bytes fit in 64 bits)."""
    match = _RATE.fullmatch(str(text))
    if not match:
        raise UsageError(f"{where}: {text!r}: a rate looks like 100KB/min or 1MB/s")
    per_minute = float(match.group(1)) * _UNITS[match.group(2)] * (60 if match.group(3) == "s" else 1)
    if not RATE.low < per_minute <= RATE.high:
        raise UsageError(f"{where}: {text!r} is outside the documented range (0, 1GB/s] (60GB/min)")
    return per_minute


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
    RANGES = MappingProxyType(
        {"start": Range(0, MAX_DURATION, "s", below=True), "duration": Range(0, MAX_DURATION, "s", above=True)}
    )

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
        start = cls.RANGES["start"].check(entry["start"], f"{where}: start")
        duration = cls.RANGES["duration"].check(entry.get("duration", cls.duration), f"{where}: duration")
        shape = str(entry.get("shape", cls.shape)).strip()
        if shape not in cls.SHAPES:
            raise UsageError(f"{where}: shape: {shape!r} is not one of {', '.join(cls.SHAPES)}")
        if shape == "bursts" and duration < BURSTS * BURST_SECONDS:
            raise UsageError(f"{where}: shape bursts: {BURSTS} bursts of {BURST_SECONDS:g} s need a duration "
                             f"of {BURSTS * BURST_SECONDS:g} s at least, not {duration:g}")  # fmt: skip
        return cls(path, parse_rate(entry["rate"], f"{where}: rate"), start, duration, shape)

    def check_within(self, run_duration: float, where: str) -> None:
        """A window the run does not cover would be cut short, its bytes squeezed into what is left (or lost)."""
        if self.start + self.duration > run_duration:
            raise UsageError(
                f"{where}: start {self.start:g} s + duration {self.duration:g} s ends after the run's "
                f"{run_duration:g} s"
            )

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

    RANGES = MappingProxyType(
        {
            "users": Range(1, 100_000, whole=True),
            "duration": Range(1, MAX_DURATION, "s"),  # the load's 24 phases and the platform's timers need 1 s
            "seed": SEED,
            # at least the link, IP and TCP headers (less and ports are lost), at most tcpdump's largest
            "snaplen": Range(68, 262_144, "bytes", whole=True),
            "rotate": Range(1, MAX_DURATION, "s", whole=True),  # whole seconds, as tcpdump -G takes them
            # a synthetic run ends before 2106-02-07, where a classic pcap's 32-bit seconds end
            "start": Range(0, 2**32 - 1 - MAX_DURATION, "s", whole=True),
        }
    )

    @classmethod
    def from_config(
        cls, name: str, entry: Mapping[str, Any], defaults: Mapping[str, Any], seed: int, app: App
    ) -> RunSpec:
        """A run of the workflow's config (`runs.NAME`), with the config's `defaults` and seed where it is silent."""
        where = f"runs.{name}"
        given = {
            "users": f"{where}.users",
            "duration": f"{where}.duration" if "duration" in entry else "defaults.duration",
            "seed": f"{where}.seed" if "seed" in entry else "seed",
            "snaplen": "defaults.snaplen",
            "rotate": "defaults.rotate",
        }
        values = check_fields(
            cls.RANGES,
            {
                "users": entry["users"],
                "duration": entry.get("duration", defaults.get("duration", cls.duration)),
                "seed": entry.get("seed", seed),
                "snaplen": defaults.get("snaplen", cls.snaplen),
                "rotate": defaults.get("rotate", cls.rotate),
            },
            given.__getitem__,
        )
        exfil = tuple(
            ExfilWindow.from_mapping(window, app, f"{where}.exfil[{i}]")
            for i, window in enumerate(entry.get("exfil", []))
        )
        for i, window in enumerate(exfil):
            window.check_within(values["duration"], f"{where}.exfil[{i}]")
        mix = normalise_mix(entry.get("mix") or DEFAULT_MIX, list(app.requests), f"{where}.mix")
        return cls(app=app, mix=mix, exfil=exfil, **values)

    def check_synthetic(self, key: Callable[[str], str]) -> None:
        """What the synthetic source can simulate in reasonable memory; `key` names a field as the user wrote it
        (`--users`, `runs.shop.users`)."""
        load = self.users * self.duration
        if load > SYNTH_USER_SECONDS:
            raise UsageError(
                f"{key('users')} {self.users} times {key('duration')} {self.duration:g} s is {load:g} user-seconds, "
                f"more than the synthetic source's documented {SYNTH_USER_SECONDS} (about 1.3 KB of memory each)"
            )
        sent = sum(w.bytes_per_minute * w.duration / 60 for w in self.exfil)
        if sent > SYNTH_EXFIL_BYTES:
            raise UsageError(
                f"{key('exfil')}: the windows send {sent:g} bytes in all (rate times duration), more than the "
                f"documented {SYNTH_EXFIL_BYTES:g} a synthetic run holds"
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

    RANGES = MappingProxyType(
        {
            "buffer_kib": Range(1, 4_194_304, "KiB", whole=True),  # up to 4 GiB, as tcpdump -B takes it
            "spawn_rate": SPAWN_RATE,
            "customers": Range(0, 100_000, whole=True),
            "cpu_percent": Range(1, 100, "percent", whole=True),
            "ready_timeout": READY_TIMEOUT,
        }
    )

    @classmethod
    def from_config(cls, cluster: Mapping[str, Any]) -> ClusterSpec:
        """The workflow's `cluster` section (already checked against the schema)."""
        values = check_fields(cls.RANGES, cluster, "cluster.{}".format)
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
    RANGES = MappingProxyType(
        {"at": Range(0, MAX_DURATION, "s", below=True), "down": Range(0, 86_400, "s", above=True)}
    )

    @classmethod
    def from_mapping(cls, entry: Mapping[str, Any], where: str) -> Fault:
        target = str(entry.get("target", ""))
        if target not in cls.TARGETS:
            raise UsageError(f"{where}: target: {target!r} is not one of {', '.join(cls.TARGETS)}")
        at = cls.RANGES["at"].check(entry.get("at"), f"{where}: at")
        return cls(target, at, cls.RANGES["down"].check(entry.get("down", cls.down), f"{where}: down"))

    def check_within(self, run_duration: float, where: str) -> None:
        """A fault after the load's end would never happen."""
        if self.at >= run_duration:
            raise UsageError(f"{where}: at {self.at:g} s is not within the run's {run_duration:g} s")

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

    PODS = Range(1, 64, whole=True)  # each a network namespace with nginx and php-fpm
    SITE = Range(0, 100_000, whole=True)  # posts, pages, accounts: populated one by one before the load
    RANGES = MappingProxyType(
        {
            "wordpress_pods": PODS,
            "max_wordpress_pods": PODS,
            "cpu_per_pod": Range(0, 64, "cores", above=True),
            "scale_period": Range(0.1, 3_600, "s"),  # the autoscaler's window is 300 s / period decisions
            "posts": SITE,
            "pages": SITE,
            "accounts": SITE,
            "spawn_rate": SPAWN_RATE,
            "buffer_kib": ClusterSpec.RANGES["buffer_kib"],
            "ready_timeout": READY_TIMEOUT,
        }
    )

    @classmethod
    def from_config(cls, testbed: Mapping[str, Any]) -> TestbedSpec:
        """The workflow's `testbed` section (already checked against the schema)."""
        values = check_fields(cls.RANGES, testbed, "testbed.{}".format)
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

    RANGES = MappingProxyType(
        {
            "granularities": BIN,
            "rates": Range(0, RATE.high / 1e6, "MB/min", above=True),  # as an exfiltration window's
            "attack_seconds": Range(1, 86_400, "s", whole=True),
            "attacked_share": Range(0, 1, below=True),
            "rate_sd": Range(0, 10),
            "max_path_length": Range(1, 16, whole=True),  # attack paths are enumerated up to it
            "seeds": Range(1, 100, whole=True),
            "split": Range(0, 1),  # each share
        }
    )

    @classmethod
    def from_config(cls, features: Mapping[str, Any], where: str = "features") -> FeatureSpec:
        """The workflow's `features` section (already checked against the schema); `where` prefixes its keys."""
        values = check_fields(cls.RANGES, features, f"{where}.{{}}".format)
        split = values.get("split", TRAINING_SPLIT)
        if abs(sum(split.values()) - 1) > 1e-9:
            raise UsageError(f"{where}.split: the shares add up to {sum(split.values()):g}, not 1")
        return cls(**values)


def rate_name(rate: float) -> str:
    """A rate as it appears in file names (`0.1.parquet`); config validation makes these unique."""
    return f"{rate:g}"


def check_rate_names(rates: Sequence[float], where: str) -> None:
    """Rates name their files: two with one name would write one file, the second over the first."""
    names: dict[str, float] = {}
    for rate in rates:
        if rate_name(rate) in names:
            raise UsageError(
                f"{where}: {names[rate_name(rate)]!r} and {rate!r} have the same name {rate_name(rate)!r} in file "
                "names; give each rate once, differing in the first six significant digits"
            )
        names[rate_name(rate)] = rate


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
