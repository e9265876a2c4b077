"""Import of the prototype's experiments (docs/architecture.md#import-source): pcap + pickled cluster-creation log
(+ analysis JSON) into a run bundle.

The cluster-creation log is a Python 2 pickle of `{second: {name: (ip, '+'/'-', namespace, 'pod'/'svc',
labels_or_selector, status_or_ip)}}`. It is untrusted input: it is read by a bounded interpreter of data opcodes
(mimir.sources.legacy_pickle), which refuses every global and every limit crossed, and then every field is checked
against that format, so a hostile log ends in exit 3 naming the file and the second, entity and field.
"""

from __future__ import annotations

import ipaddress
import json
import re
import reprlib
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from mimir import __version__
from mimir.capture.formats import ByteStream, FileReport, RecordBlock, read_records
from mimir.errors import LegacyError
from mimir.io import Claim, atomic_dir
from mimir.network import SERVICE_NETWORK
from mimir.sources.legacy_pickle import read_data_pickle

# the prototype's minikube: docker's bridge for pods, the default service range
LEGACY_CLUSTER_NETWORKS = ["172.17.0.0/16", SERVICE_NETWORK]


# The prototype's experiments last minutes to hours; a log second beyond a year is not one of its logs.
MAX_LOG_SECOND = 366 * 24 * 3600
_NO_ADDRESS = frozenset({"", "None", "<none>"})  # kubectl's column for a headless service (or an unscheduled pod)

Entry = tuple[str, str, str, str, str, str]  # (ip or "", '+'/'-', namespace, 'pod'/'svc', labels, status)


def read_cluster_log(path: Path) -> dict[int | float, dict[str, tuple]]:
    """The log, its shape checked: seconds are numbers from 0 to MAX_LOG_SECOND, each holding a dict of entries by
    name (a non-empty string). log_events checks the entries' fields."""
    log = read_data_pickle(path)
    if type(log) is not dict:
        raise LegacyError(f"{path}: not a cluster-creation log: expected {{second: {{name: entry}}}}, found a "
                          f"{type(log).__name__}")  # fmt: skip
    for second, entries in log.items():
        if type(second) not in (int, float) or not 0 <= second <= MAX_LOG_SECOND:  # NaN fails the range too
            raise LegacyError(
                f"{path}: second {reprlib.repr(second)}: not a number of seconds from 0 to {MAX_LOG_SECOND}"
            )
        if type(entries) is not dict:
            raise LegacyError(f"{path}: second {second}: expected {{name: entry}}, found a {type(entries).__name__}")
        for name in entries:
            if type(name) is not str or not name:
                raise LegacyError(f"{path}: second {second}: the name {reprlib.repr(name)} is not a non-empty string")
    return log


def _entry(entry: Any, where: str) -> Entry:
    """One (ip, '+'/'-', namespace, 'pod'/'svc', labels[, status]) tuple, checked field by field: the address
    canonical ("" for none), labels and status strings ("" for None)."""
    if type(entry) is not tuple or len(entry) not in (5, 6):
        raise LegacyError(f"{where}: expected (ip, +/-, namespace, kind, labels, status), found {reprlib.repr(entry)}")
    ip, sign, namespace, kind, labels = entry[:5]
    status = entry[5] if len(entry) == 6 else ""
    if type(ip) is not str:
        raise LegacyError(f"{where}: field ip: {reprlib.repr(ip)} is not an address string")
    if ip not in _NO_ADDRESS:
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise LegacyError(f"{where}: field ip: {reprlib.repr(ip)} is not an IPv4 or IPv6 address") from None
    if type(sign) is not str or sign not in ("+", "-"):
        raise LegacyError(f"{where}: field sign: {reprlib.repr(sign)} is neither '+' nor '-'")
    if type(namespace) is not str or not namespace:
        raise LegacyError(f"{where}: field namespace: {reprlib.repr(namespace)} is not a non-empty string")
    if type(kind) is not str or kind not in ("pod", "svc"):
        raise LegacyError(f"{where}: field kind: {reprlib.repr(kind)} is neither pod nor svc")
    for field, value in (("labels", labels), ("status", status)):
        if value is not None and type(value) is not str:
            raise LegacyError(f"{where}: field {field}: {reprlib.repr(value)} is not a string")
    return ("" if ip in _NO_ADDRESS else ip, sign, namespace, kind, labels or "", status or "")


def _labels(text: str) -> dict[str, str]:
    if text in ("", "<none>"):
        return {}
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def log_events(log: dict[int | float, dict[str, tuple]], start: float, source: Path) -> list[dict[str, Any]]:
    """Entity events of a log from read_cluster_log, each entry checked (LegacyError names source, the second, the
    entity and the field): an entity is added when first seen, modified when its address or labels change, deleted
    when marked '-'. Ticks are full or partial listings; absence alone deletes nothing."""
    current: dict[str, tuple] = {}
    events = []
    for second in sorted(log):
        for name in sorted(log[second]):
            where = f"{source}: second {second}, {reprlib.repr(name)}"
            ip, sign, namespace, kind, labels, _ = _entry(log[second][name], where)
            kind = "pod" if kind == "pod" else "service"
            state = (ip, namespace, kind, labels)
            body = {
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "ips": [ip] if ip else [],
                "labels": _labels(labels) if kind == "pod" else {},
                "selector": _labels(labels) if kind == "service" else {},
                "owner": "",
                "app": "",
            }
            if sign == "-":
                if name in current:
                    events.append({"ts": start + second, "event": "deleted", **body})
                    del current[name]
            elif current.get(name) != state:
                events.append({"ts": start + second, "event": "modified" if name in current else "added", **body})
                current[name] = state
    return events


def first_timestamp(path: Path) -> float:
    records = RecordBlock(1024)
    with ByteStream(path) as stream:
        for n in read_records(stream, records, FileReport(path=str(path))):
            if n:
                return float(records.sec[0] + records.nsec[0] / 1e9)
    raise LegacyError(f"{path}: the capture holds no packets, so the log cannot be placed in time")


def import_legacy(
    pcap: Path, cluster_log: Path, analysis: Path | None, out: Path, *, force: bool = False
) -> dict[str, Any]:
    """Write the run bundle; the log's second 0 is the capture's first packet (the prototype started both).

    `out` is a new or empty folder, or with force a previous import; never a folder holding one of the inputs.
    """
    claim = Claim("import-legacy", force, inputs=(pcap, cluster_log, *([analysis] if analysis else [])))
    claim.check(out, folder=True)
    log = read_cluster_log(cluster_log)
    config: dict[str, Any] = {}
    if analysis is not None:
        try:
            config = json.loads(analysis.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LegacyError(f"{analysis}: not an analysis JSON: {e}") from None
    start = first_timestamp(pcap)
    events = log_events(log, start, cluster_log)
    interfaces = config.get("VM_interfaces_info", {})
    length = config.get("experiment_length_sec") or max(log, default=0)
    run = {
        "app": config.get("application_name", "unknown"),
        "source": "import",
        "start": start,
        "end": start + float(length),
        "load": {"users": int(config.get("experiment", {}).get("number_background_locusts", 0) or 0)},
        "sensitive": config.get("exfiltration_info", {}).get("sensitive_ms", []),
        "exfiltration": [],
        "addresses": {
            "cluster_networks": LEGACY_CLUSTER_NETWORKS,
            "node": config.get("minikube_ip", ""),
            "load_generator": sorted(i["addr"] for i in interfaces.values() if "addr" in i),
        },
        "imported_from": {
            "pcap": pcap.name,
            "cluster_log": cluster_log.name,
            "analysis": analysis.name if analysis else None,
        },
        "tools": {"mimir": __version__},
        "capture": {"files": [f"capture/{pcap.name}"]},
    }
    with atomic_dir(out, claim) as tmp:
        (tmp / "capture").mkdir()
        shutil.copyfile(pcap, tmp / "capture" / pcap.name)
        (tmp / "entities.jsonl").write_text("".join(json.dumps(e, sort_keys=True) + "\n" for e in events))
        (tmp / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    return run


_UNITS = {"bytes": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "KiB": 1024, "MiB": 1 << 20, "GiB": 1 << 30}
_NUMBER = re.compile(r"^[0-9]+(\.[0-9]+)?$")


def parse_conversations(text: str) -> pd.DataFrame:
    """A `tshark -z conv,ip` table: one row per address pair, byte counts exact or unit-suffixed ("63 kB")."""
    rows = []
    for line in text.splitlines():
        if "<->" not in line:
            continue
        left, right = line.split("<->", 1)
        tokens = right.split()
        b, values = tokens[0], []
        k = 1
        while k < len(tokens):
            token = tokens[k].replace(",", "")
            if not _NUMBER.match(token):
                k += 1
                continue
            value = float(token)
            if k + 1 < len(tokens) and tokens[k + 1] in _UNITS:
                value *= _UNITS[tokens[k + 1]]
                k += 1
            values.append(value)
            k += 1
        if len(values) < 8:
            raise LegacyError(f"conversation line has {len(values)} numbers, expected 8: {line.strip()!r}")
        frames_ba, bytes_ba, frames_ab, bytes_ab = values[:4]
        rows.append((left.strip(), b, int(frames_ba), int(bytes_ba), int(frames_ab), int(bytes_ab), *values[6:8]))
    return pd.DataFrame(
        rows,
        columns=[
            "a",
            "b",
            "frames_b_to_a",
            "bytes_b_to_a",
            "frames_a_to_b",
            "bytes_a_to_b",
            "relative_start",
            "duration",
        ],
    )
