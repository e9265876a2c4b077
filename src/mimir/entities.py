"""Who held which address when (docs/architecture.md#entities), replayed from a run's `entities.jsonl`.

Addresses are reused: every lookup is by time, never by the last value seen. Pods belong to the service whose
selector matches their labels (else to the service their event names, else to their owner).
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd

from mimir.errors import EntitiesError, IOFailure
from mimir.network import DNS_SERVICE, INFRA, POD, VIP

INFRA_NAMESPACE = "kube-system"


@dataclass
class Addressing:
    """What a run says about its network: cluster ranges, the node and the load generator (run.json)."""

    cluster_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    load_generators: set[str] = field(default_factory=set)

    @classmethod
    def from_run(cls, run: dict[str, Any], where: Path | str = "run.json") -> Addressing:
        """The addressing of a run.json that `read_run` accepted; a range that is not a network names its key."""
        a = run.get("addresses") or {}
        ranges = [(k, a[k]) for k in ("pod_network", "service_network") if a.get(k)]
        ranges += [(f"cluster_networks.{k}", n) for k, n in enumerate(a.get("cluster_networks") or [])]
        nets = []
        for key, text in ranges:
            try:
                nets.append(ipaddress.ip_network(text))
            except ValueError as e:
                raise EntitiesError(f"{where}: addresses.{key}: {e}") from None
        gens = a.get("load_generator") or []
        listed = (
            [("load_generator", gens)]
            if isinstance(gens, str)
            else [(f"load_generator.{k}", address) for k, address in enumerate(gens)]
        )
        for key, address in listed:
            if not _is_address(address):
                raise EntitiesError(f"{where}: addresses.{key}: {_short(address)} is not an IP address")
        return cls(nets, {address for _, address in listed})

    def in_cluster(self, ips: np.ndarray) -> np.ndarray:
        out = np.zeros(ips.shape[0], bool)
        for k, ip in enumerate(ips):
            address = ipaddress.ip_address(ip)
            out[k] = any(address in net for net in self.cluster_networks)
        return out


_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean",
               type(None): "null"}  # fmt: skip
_ARTICLES = {"object": "an object", "array": "an array", "string": "a string", "number": "a number",
             "boolean": "a boolean", "null": "null"}  # fmt: skip
_BOM = b"\xef\xbb\xbf"


def _wrong(value: Any, expected: str) -> str:
    """`an array, not a string`: what a value is in JSON terms, and what it should be."""
    return f"{_ARTICLES.get(_JSON_TYPES.get(type(value), ''), type(value).__name__)}, not {expected}"


def _short(value: Any) -> str:
    """A value as JSON, cut to a length a message can quote."""
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_address(text: Any) -> bool:
    if not isinstance(text, str):
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _finite(text: str) -> float:
    """A JSON fraction as a float; `1e999` would be infinity, which no time or size is."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {_short(text)} is out of range")
    return value


def _int64(text: str) -> int:
    """A JSON integer that fits in 64 bits, as every count, size and time does (so it also converts to a float)."""
    value = int(text) if len(text) <= 20 else 2**63
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"the integer {_short(text)} does not fit in 64 bits")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(text: str, *, every_number: bool = True) -> Any:
    """Strict JSON: NaN and Infinity are refused (Python's json takes them), and so is nesting too deep to parse (a
    RecursionError otherwise); raises ValueError. With every_number, so is a number beyond 64 bits or float range;
    without, the caller checks the numbers it reads (an entity event's `ts`: a third faster on a long log)."""
    numbers = {"parse_float": _finite, "parse_int": _int64} if every_number else {}
    try:
        return json.loads(text, parse_constant=_no_constant, **numbers)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _ts(value: Any) -> str | None:
    if _is_number(value) and -(2.0**63) < value < 2.0**63:  # 1e999 parses to infinity, 10**400 to an int
        return None
    return f"{_short(value)} is not a number of epoch seconds"


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda value: None if value in choices else f"{_short(value)} is not one of {', '.join(choices)}"


def _of_type(kind: type, expected: str) -> Callable[[Any], str | None]:
    return lambda value: None if isinstance(value, kind) else _wrong(value, expected)


def _strings(value: Any) -> str | None:
    if not isinstance(value, dict):
        return _wrong(value, "an object of strings")
    bad = next((k for k, text in value.items() if not isinstance(text, str)), None)
    return None if bad is None else f"{bad!r} is {_wrong(value[bad], 'a string')}"


def _addresses(value: Any) -> str | None:
    if not isinstance(value, list):
        return _wrong(value, "an array of IP addresses")
    bad = next((k for k, address in enumerate(value) if not _is_address(address)), None)
    return None if bad is None else f"item {bad}, {_short(value[bad])}, is not an IP address"


# entities.jsonl (docs/architecture.md#entity-events): the keys a line must hold, and a check of every key it may
# hold (other keys are ignored)
EVENT_TYPES = ("added", "modified", "deleted")
ENTITY_KINDS = ("pod", "service", "node", "endpoints")
REQUIRED = ("ts", "event", "kind", "name")
EVENT_FIELDS: dict[str, Callable[[Any], str | None]] = {
    "ts": _ts,
    "event": _one_of(EVENT_TYPES),
    "kind": _one_of(ENTITY_KINDS),
    **dict.fromkeys(
        ("namespace", "name", "owner", "app", "uid", "resource_version", "phase", "node", "host_ip", "type"),
        _of_type(str, "a string"),
    ),
    **dict.fromkeys(("deleting", "host_network"), _of_type(bool, "true or false")),
    **dict.fromkeys(("labels", "selector"), _strings),
    **dict.fromkeys(("ips", "not_ready_ips"), _addresses),
    "ports": _of_type(list, "an array"),
}


def _event_problem(event: Any) -> str | None:
    """What keeps a parsed line from being an entity event, naming the key; None when it is one."""
    if not isinstance(event, dict):
        return f"the line is {_wrong(event, 'an object')}"
    missing = next((key for key in REQUIRED if key not in event), None)
    if missing is not None:
        return f"no key {missing!r} (an event needs {', '.join(REQUIRED)})"
    for key, value in event.items():
        check = EVENT_FIELDS.get(key)
        problem = check(value) if check else None
        if problem:
            return f"key {key!r}: {problem}"
    return None


def parse_event(raw: bytes, path: Path, number: int) -> dict[str, Any] | None:
    """One line of an entities.jsonl as an event (None for a blank line), checked against the format: an error
    names the file, the line and the key. `ts` becomes a float."""
    try:  # an editor's byte order mark is not part of the data
        line = (raw[len(_BOM) :] if number == 1 and raw.startswith(_BOM) else raw).decode()
    except UnicodeDecodeError as e:
        raise EntitiesError(f"{path}: line {number}: not UTF-8 text (byte {e.start + 1})") from None
    if not line.strip():
        return None
    try:
        event = parse_json(line, every_number=False)
    except json.JSONDecodeError as e:
        raise EntitiesError(f"{path}: line {number}, column {e.pos + 1}: not JSON: {e.msg}") from None
    except ValueError as e:
        raise EntitiesError(f"{path}: line {number}: not JSON: {e}") from None
    problem = _event_problem(event)
    if problem:
        raise EntitiesError(f"{path}: line {number}: {problem}")
    event["ts"] = float(event["ts"])
    return event


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of an entities.jsonl in time order, each line checked against the format (an error names the
    file, the line and the key). Lines may come a little out of order (the watcher's threads stamp before they
    write): they are sorted by `ts`, stably, so same-second events keep their file order."""
    events = []
    try:
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, 1):
                event = parse_event(raw, path, number)
                if event is not None:
                    events.append(event)
    except FileNotFoundError:
        raise EntitiesError(f"{path}: no such file: not a run bundle") from None
    except OSError as e:
        raise IOFailure(f"{path}: cannot read: {e.strerror}") from None
    if not events:
        raise EntitiesError(f"{path}: no entity events (an empty file): every address would be unknown")
    return sorted(events, key=lambda e: e["ts"])


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def timeline(events: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (address, span): ip, start, end, entity, kind (pod/vip/infra), service, namespace."""
    services: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, name) -> selector, as of now
    open_spans: dict[tuple[str, str, str], dict[str, list[Any]]] = {}  # (kind, namespace, name) -> ip -> row
    rows: list[list[Any]] = []
    for e in events:
        if e["kind"] == "endpoints":  # who serves a service: pod addresses, which the pods' own events place
            continue
        namespace = e.get("namespace", "")
        if e["kind"] == "service":
            services[(namespace, e["name"])] = e.get("selector") or {}
            service = e["name"]
            kind = VIP
        elif e["kind"] == "node":
            service, kind = "", INFRA
        else:
            labels = e.get("labels") or {}
            matched = sorted(n for (ns, n), sel in services.items() if ns == namespace and _matches(sel, labels))
            owner = (e.get("owner") or "").rsplit("/", 1)[-1]
            service = matched[0] if matched else (e.get("app") or owner or e["name"])
            kind = INFRA if namespace == INFRA_NAMESPACE and service != DNS_SERVICE else POD
        if e["kind"] == "service" and namespace == INFRA_NAMESPACE and e["name"] != DNS_SERVICE:
            kind = INFRA
        ips = set(e.get("ips") or [])
        mine = open_spans.setdefault((e["kind"], namespace, e["name"]), {})
        for ip in [ip for ip in mine if e["event"] == "deleted" or ip not in ips]:  # close what this event ends
            mine.pop(ip)[2] = e["ts"]
        if e["event"] != "deleted":
            for ip in sorted(ips - mine.keys()):
                mine[ip] = [ip, e["ts"], np.inf, f"{namespace}/{e['name']}", kind, service, namespace]
                rows.append(mine[ip])
    spans = pd.DataFrame(rows, columns=["ip", "start", "end", "entity", "kind", "service", "namespace"])
    return spans.astype({"start": float, "end": float})


def resolve(ips: pd.Series, at: pd.Series, spans: pd.DataFrame) -> pd.DataFrame:
    """The entity that held each address at each time (NaN where none did): entity, kind, service."""
    left = pd.DataFrame({"ip": ips.to_numpy(), "t": at.to_numpy(dtype=float), "row": np.arange(len(ips))})
    left = left.astype({"ip": str}).sort_values(["t", "row"], kind="stable")
    right = spans.astype({"ip": str}).sort_values("start", kind="stable")  # one key type, also when either is empty
    merged = pd.merge_asof(left, right, left_on="t", right_on="start", by="ip", direction="backward")
    held = merged["end"] > merged["t"]
    for column in ("entity", "kind", "service"):
        merged[column] = merged[column].where(held)
    return merged.sort_values("row")[["entity", "kind", "service"]].reset_index(drop=True)


_TEXTS = {"type": "array", "items": {"type": "string"}}
_NETWORK = {"type": ["string", "null"]}
# run.json (docs/architecture.md#run-record): the keys later stages read, with their types; other keys are free
RUN_SCHEMA = {
    "type": "object",
    "properties": {
        "status": {"type": "string"},
        "problems": _TEXTS,
        "start": {"type": ["number", "null"]},  # null until a collection has started, and stopped
        "end": {"type": ["number", "null"]},
        "sensitive": _TEXTS,
        "exfiltration": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["start", "end", "path"],
                "properties": {
                    "start": {"type": "number"},
                    "end": {"type": "number"},
                    "path": {**_TEXTS, "minItems": 1},
                    "shape": {"type": "string"},
                },
            },
        },
        "addresses": {
            "type": "object",
            "properties": {
                "pod_network": _NETWORK,
                "service_network": _NETWORK,
                "cluster_networks": _TEXTS,
                "load_generator": {"type": ["string", "null", "array"], "items": {"type": "string"}},
            },
        },
        "capture": {"type": "object", "properties": {"files": _TEXTS}},
    },
}
_RUN_VALIDATOR = jsonschema.Draft202012Validator(RUN_SCHEMA)
MAX_RUN_SECONDS = 366 * 86400  # longer is a mistake (a time in ms, a lost digit), and its intervals would not fit


def read_run(run_dir: Path, *, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """A run bundle's run.json, checked against the keys later stages read (an error names the file and the key);
    a run whose collection did not complete is refused."""
    where = run_dir / "run.json"
    if not run_dir.is_dir():
        raise IOFailure(f"{run_dir}: no such folder" if not run_dir.exists() else f"{run_dir}: not a folder")
    try:
        run = parse_json(where.read_bytes().decode("utf-8-sig"))
    except FileNotFoundError:
        raise EntitiesError(f"{run_dir}: no run.json: not a run bundle") from None
    except OSError as e:
        raise IOFailure(f"{where}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise EntitiesError(f"{where}: not UTF-8 text (byte {e.start + 1})") from None
    except json.JSONDecodeError as e:
        raise EntitiesError(f"{where}: line {e.lineno}: not JSON: {e.msg}") from None
    except ValueError as e:
        raise EntitiesError(f"{where}: not JSON: {e}") from None
    error = min(_RUN_VALIDATOR.iter_errors(run), key=lambda e: list(map(str, e.absolute_path)), default=None)
    if error is not None:
        key = ".".join(map(str, error.absolute_path)) or "(the whole file)"
        raise EntitiesError(f"{where}: {key}: {_short_message(error)}")
    status = run.get("status", "complete")  # synthetic and imported runs are complete when written
    if status != "complete":
        why = "; ".join(run.get("problems", [])) or f"the collection stopped while {status}"
        raise EntitiesError(f"{where}: the run is incomplete ({why}); collect it again")
    for key in required:
        if run.get(key) is None:
            raise EntitiesError(f"{where}: no {key!r}")
    windows = [("", run)] if run.get("start") is not None and run.get("end") is not None else []
    windows += [(f"exfiltration.{k}: ", w) for k, w in enumerate(run.get("exfiltration", []))]
    for key, window in windows:
        if not 0 <= window["end"] - window["start"] <= MAX_RUN_SECONDS:
            raise EntitiesError(
                f"{where}: {key}start {window['start']} and end {window['end']}: not a time window (the end comes "
                f"at or after the start, at most {MAX_RUN_SECONDS // 86400} days later)"
            )
    return run


def _short_message(error: jsonschema.ValidationError) -> str:
    """The schema's complaint, without quoting a huge value whole."""
    if error.validator == "type":
        types = [error.validator_value] if isinstance(error.validator_value, str) else error.validator_value
        return _wrong(error.instance, " or ".join(_ARTICLES[t] for t in types))
    message = error.message
    return message if len(message) <= 120 else message[:117] + "..."


def load_run(run_dir: Path) -> tuple[pd.DataFrame, Addressing, dict[str, Any]]:
    """The address timeline, addressing and run.json of a run bundle (run.json first: an incomplete run's events
    are not read)."""
    run = read_run(run_dir)
    addressing = Addressing.from_run(run, run_dir / "run.json")
    return timeline(read_events(run_dir / "entities.jsonl")), addressing, run
