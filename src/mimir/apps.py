"""Application topologies (`config/apps/<app>.yaml`): loading, validation against the schema, and the model.

A user adds an application by writing one such file; a mistake is reported with the file and the key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mimir.errors import AppError
from mimir.loadmodel import BEHAVIOURS

CONFIG = Path(__file__).resolve().parents[2] / "config"
APP_SCHEMA = CONFIG / "schemas" / "app.schema.json"


@dataclass(frozen=True)
class Autoscale:
    min: int
    max: int
    calls_per_replica: float


@dataclass(frozen=True)
class Service:
    name: str
    tier: str
    port: int
    replicas: int
    autoscale: Autoscale | None
    labels: dict[str, str]


@dataclass(frozen=True)
class Call:
    """One request from the caller to a service and its response; `calls` are made while serving it."""

    to: str
    request: int
    response: int
    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Step:
    """One page of a session: the load generator's request to the entry service and what serving it calls."""

    name: str
    request: int
    response: int
    repeat: int
    calls: tuple[Call, ...]


@dataclass(frozen=True)
class Replication:
    service: str
    port: int
    bytes_per_second: float
    interval: float


@dataclass(frozen=True)
class Egress:
    source: str
    to: str
    port: int
    request: int
    response: int
    interval: float


@dataclass(frozen=True)
class App:
    name: str
    namespace: str
    entry: str
    sensitive: tuple[str, ...]
    think_time: tuple[float, float]
    services: dict[str, Service]
    requests: dict[str, tuple[Step, ...]]
    replication: tuple[Replication, ...]
    egress: tuple[Egress, ...]

    def edges(self, request_types: list[str] | None = None) -> set[tuple[str, str]]:
        """The (caller, callee) service pairs the given request types use (all when None)."""
        out: set[tuple[str, str]] = set()

        def walk(caller: str, calls: tuple[Call, ...]) -> None:
            for call in calls:
                out.add((caller, call.to))
                walk(call.to, call.calls)

        for name, steps in self.requests.items():
            if request_types is None or name in request_types:
                for step in steps:
                    walk(self.entry, step.calls)
        return out


@cache
def _schema() -> dict[str, Any]:
    return json.loads(APP_SCHEMA.read_text())


def find_app(name_or_path: str) -> Path:
    """A file path as given, else `config/apps/<name>.yaml` in the working folder, else in this project."""
    given = Path(name_or_path)
    if given.suffix in (".yaml", ".yml") or given.is_file():
        return given
    for base in (Path("config") / "apps", CONFIG / "apps"):
        candidate = base / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in (CONFIG / "apps").glob("*.yaml"))
    raise AppError(f"no application {name_or_path!r}: give a YAML file or one of {', '.join(known)}")


def load_app(name_or_path: str) -> App:
    path = find_app(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise AppError(f"{path}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise AppError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    errors = sorted(jsonschema.Draft202012Validator(_schema()).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        key = ".".join(str(k) for k in first.absolute_path) or "(top level)"
        raise AppError(f"{path}: {key}: {first.message}")
    return _build(path, data)


def _build(path: Path, data: dict[str, Any]) -> App:
    def fail(key: str, message: str) -> AppError:
        return AppError(f"{path}: {key}: {message}")

    if data["name"] != path.stem:
        raise fail("name", f"{data['name']!r} must equal the file name {path.stem!r}")
    services = {}
    for name, s in data["services"].items():
        auto = s.get("autoscale")
        scale = Autoscale(auto["min"], auto["max"], float(auto["calls_per_replica"])) if auto else None
        if scale and not scale.min <= scale.max:
            raise fail(f"services.{name}.autoscale", "min must not exceed max")
        services[name] = Service(name, s["tier"], s["port"], s["replicas"], scale, s.get("labels", {"name": name}))

    def service(key: str, name: str) -> str:
        if name not in services:
            raise fail(key, f"{name!r} is not a service of this application")
        return name

    def calls(key: str, items: list[dict[str, Any]]) -> tuple[Call, ...]:
        return tuple(
            Call(
                service(f"{key}.{i}.to", c["to"]),
                c["request"],
                c["response"],
                calls(f"{key}.{i}.calls", c.get("calls", [])),
            )
            for i, c in enumerate(items)
        )

    requests = {
        kind: tuple(
            Step(
                s["name"],
                s["request"],
                s["response"],
                s.get("repeat", 1),
                calls(f"requests.{kind}.steps.{i}.calls", s.get("calls", [])),
            )
            for i, s in enumerate(r["steps"])
        )
        for kind, r in data["requests"].items()
    }
    missing = [b for b in BEHAVIOURS if b not in requests]
    if missing:
        raise fail("requests", f"every application defines the behaviours {', '.join(BEHAVIOURS)}; missing {missing}")
    think = data.get("think_time", {"min": 2, "max": 4})
    if think["min"] > think["max"]:
        raise fail("think_time", "min must not exceed max")
    return App(
        name=data["name"],
        namespace=data["namespace"],
        entry=service("entry", data["entry"]),
        sensitive=tuple(service(f"sensitive.{i}", s) for i, s in enumerate(data.get("sensitive", []))),
        think_time=(float(think["min"]), float(think["max"])),
        services=services,
        requests=requests,
        replication=tuple(
            Replication(
                service(f"replication.{i}.service", r["service"]),
                r["port"],
                float(r["bytes_per_second"]),
                float(r.get("interval", 1.0)),
            )
            for i, r in enumerate(data.get("replication", []))
        ),
        egress=tuple(
            Egress(
                service(f"egress.{i}.from", e["from"]),
                e["to"],
                e["port"],
                e["request"],
                e["response"],
                float(e["interval"]),
            )
            for i, e in enumerate(data.get("egress", []))
        ),
    )
