"""Who held which address when (docs/architecture.md#entities), replayed from a run's `entities.jsonl`.

Addresses are reused: every lookup is by time, never by the last value seen. Pods belong to the service whose
selector matches their labels (else to the service their event names, else to their owner).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mimir.errors import EntitiesError

DNS_SERVICE = "kube-dns"
INFRA_NAMESPACE = "kube-system"

# entity classes
POD, VIP, INGRESS, OUTSIDE, INFRA, UNKNOWN = "pod", "vip", "ingress", "outside", "infra", "unknown"


@dataclass
class Addressing:
    """What a run says about its network: cluster ranges, the node and the load generator (run.json)."""

    cluster_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)
    load_generators: set[str] = field(default_factory=set)

    @classmethod
    def from_run(cls, run: dict[str, Any]) -> Addressing:
        a = run.get("addresses", {})
        nets = [ipaddress.ip_network(a[k]) for k in ("pod_network", "service_network") if a.get(k)]
        nets += [ipaddress.ip_network(n) for n in a.get("cluster_networks", [])]
        gens = a.get("load_generator") or []
        return cls(nets, {gens} if isinstance(gens, str) else set(gens))

    def in_cluster(self, ips: np.ndarray) -> np.ndarray:
        out = np.zeros(ips.shape[0], bool)
        for k, ip in enumerate(ips):
            address = ipaddress.ip_address(ip)
            out[k] = any(address in net for net in self.cluster_networks)
        return out


def read_events(path: Path) -> list[dict[str, Any]]:
    events = []
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise EntitiesError(f"{path}: cannot read: {e.strerror}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
            ts, kind, what, name = float(event["ts"]), event["event"], event["kind"], event["name"]
        except (ValueError, KeyError, TypeError) as e:
            raise EntitiesError(f"{path}: line {number}: not an entity event ({e})") from None
        if kind not in ("added", "modified", "deleted") or what not in ("pod", "service", "node", "endpoints"):
            raise EntitiesError(f"{path}: line {number}: unknown event {kind!r} or kind {what!r}")
        event["ts"], event["name"] = ts, name
        events.append(event)
    return sorted(events, key=lambda e: e["ts"])  # stable: same-second events keep their file order


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def timeline(events: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (address, span): ip, start, end, entity, kind (pod/vip/infra), service, namespace."""
    services: dict[tuple[str, str], dict[str, str]] = {}  # (namespace, name) -> selector, as of now
    open_spans: dict[tuple[str, str, str, str], list[Any]] = {}  # (kind, namespace, name, ip) -> row
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
        mine = {k: v for k, v in open_spans.items() if k[:3] == (e["kind"], namespace, e["name"])}
        for key, row in mine.items():  # close what this event ends
            if e["event"] == "deleted" or key[3] not in ips:
                row[2] = e["ts"]
                del open_spans[key]
        if e["event"] != "deleted":
            for ip in sorted(ips):
                key = (e["kind"], namespace, e["name"], ip)
                if key not in open_spans:
                    row = [ip, e["ts"], np.inf, f"{namespace}/{e['name']}", kind, service, namespace]
                    open_spans[key] = row
                    rows.append(row)
    spans = pd.DataFrame(rows, columns=["ip", "start", "end", "entity", "kind", "service", "namespace"])
    return spans.astype({"start": float, "end": float})


def resolve(ips: pd.Series, at: pd.Series, spans: pd.DataFrame) -> pd.DataFrame:
    """The entity that held each address at each time (NaN where none did): entity, kind, service."""
    left = pd.DataFrame({"ip": ips.to_numpy(), "t": at.to_numpy(dtype=float), "row": np.arange(len(ips))})
    left = left.sort_values(["t", "row"], kind="stable")
    right = spans.sort_values("start", kind="stable")
    merged = pd.merge_asof(left, right, left_on="t", right_on="start", by="ip", direction="backward")
    held = merged["end"] > merged["t"]
    for column in ("entity", "kind", "service"):
        merged[column] = merged[column].where(held)
    return merged.sort_values("row")[["entity", "kind", "service"]].reset_index(drop=True)


def load_run(run_dir: Path) -> tuple[pd.DataFrame, Addressing, dict[str, Any]]:
    """The address timeline, addressing and run.json of a run bundle."""
    try:
        run = json.loads((run_dir / "run.json").read_text())
    except FileNotFoundError:
        raise EntitiesError(f"{run_dir}: no run.json: not a run bundle") from None
    except json.JSONDecodeError as e:
        raise EntitiesError(f"{run_dir / 'run.json'}: line {e.lineno}: {e.msg}") from None
    status = run.get("status", "complete")  # synthetic and imported runs are complete when written
    if status != "complete":
        why = "; ".join(run.get("problems", [])) or f"the collection stopped while {status}"
        raise EntitiesError(f"{run_dir / 'run.json'}: the run is incomplete ({why}); collect it again")
    return timeline(read_events(run_dir / "entities.jsonl")), Addressing.from_run(run), run
