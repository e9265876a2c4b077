"""Import of the prototype's experiments (docs/architecture.md#import-source): pcap + pickled cluster-creation log
(+ analysis JSON) into a run bundle.

The cluster-creation log is a Python 2 pickle of `{second: {name: (ip, '+'/'-', namespace, 'pod'/'svc',
labels_or_selector, status_or_ip)}}`. It is read with an unpickler that refuses every global, so a pickle that
names any callable (the way pickles run code) is rejected instead of executed.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from mimir import __version__
from mimir.capture.formats import ByteStream, FileReport, RecordBlock, read_records
from mimir.errors import LegacyError
from mimir.io import atomic_dir
from mimir.network import SERVICE_NETWORK

# the prototype's minikube: docker's bridge for pods, the default service range
LEGACY_CLUSTER_NETWORKS = ["172.17.0.0/16", SERVICE_NETWORK]


class _NoGlobals(pickle.Unpickler):
    """Builtin containers and scalars only: any global (class, function) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing to load the global {module}.{name}: a cluster log holds only data")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refusing a persistent id")


def read_cluster_log(path: Path) -> dict[int, dict[str, tuple]]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LegacyError(f"{path}: cannot read: {e.strerror}") from None
    try:
        log = _NoGlobals(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as e:
        raise LegacyError(f"{path}: not a cluster-creation log: {e}") from None
    if not isinstance(log, dict) or not all(isinstance(k, int) and isinstance(v, dict) for k, v in log.items()):
        raise LegacyError(f"{path}: not a cluster-creation log: expected {{second: {{name: entry}}}}")
    return log


def _labels(text: Any) -> dict[str, str]:
    if not isinstance(text, str) or text in ("", "<none>"):
        return {}
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def log_events(log: dict[int, dict[str, tuple]], start: float, source: Path) -> list[dict[str, Any]]:
    """Entity events: an entity is added when first seen, modified when its address or labels change, deleted
    when marked '-'. Ticks are full or partial listings; absence alone deletes nothing."""
    current: dict[str, tuple] = {}
    events = []
    for second in sorted(log):
        for name in sorted(log[second]):
            entry = log[second][name]
            if not isinstance(entry, tuple) or len(entry) < 5:
                raise LegacyError(
                    f"{source}: second {second}, {name!r}: expected (ip, +/-, namespace, kind, labels, ...)"
                )
            ip, sign, namespace, kind, labels = entry[:5]
            kind = {"pod": "pod", "svc": "service"}.get(kind)
            if kind is None:
                raise LegacyError(f"{source}: second {second}, {name!r}: kind {entry[3]!r} is neither pod nor svc")
            state = (ip, namespace, kind, labels)
            body = {
                "kind": kind,
                "namespace": namespace,
                "name": name,
                "ips": [ip] if ip and ip != "None" else [],
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


def import_legacy(pcap: Path, cluster_log: Path, analysis: Path | None, out: Path) -> dict[str, Any]:
    """Write the run bundle; the log's second 0 is the capture's first packet (the prototype started both)."""
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
    with atomic_dir(out) as tmp:
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
