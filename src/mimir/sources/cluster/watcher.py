"""Who held which address when, from the cluster's API into `entities.jsonl` (docs/architecture.md#entity-events).

The prototype scraped `kubectl get -w` text and lost deletions; here pods, services, endpoints and nodes are
listed once (an "added" event for everything that exists, stamped with the listing time) and then followed through
the API's watch, one thread per resource and namespace. Every change becomes one JSON line, written and flushed
at once, so a crash loses nothing already seen. A dropped stream resumes from the last resourceVersion; when that
version has expired (410 Gone) the resource is listed again and the differences from the last known state are
written as events stamped with the relisting time.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kubernetes import client

from mimir.errors import ClusterError, IOFailure, MimirError
from mimir.sources.cluster.kube import ListWatch, collection_path

# entity kind -> (plural, namespaced) of the core/v1 resource it comes from
RESOURCES = {
    "node": ("nodes", False),
    "service": ("services", True),
    "endpoints": ("endpoints", True),
    "pod": ("pods", True),
}
APP_LABELS = ("app.kubernetes.io/name", "app", "name", "k8s-app")
EVENTS = {"ADDED": "added", "MODIFIED": "modified", "DELETED": "deleted"}
WATCHER_ACCOUNT = ("mimir", "mimir-watcher")  # config/k8s/rbac/watcher.yaml: may list and watch, nothing else


def _owner(meta: dict[str, Any]) -> str:
    """kind/name of the controlling owner; a ReplicaSet stands for its Deployment (drop the template hash)."""
    refs = meta.get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if ref is None:
        return ""
    kind, name = ref.get("kind", ""), ref.get("name", "")
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return f"deployment/{name[: -len(template_hash) - 1]}"
    return f"{kind.lower()}/{name}"


def entity_event(kind: str, event: str, obj: dict[str, Any], ts: float) -> dict[str, Any]:
    """One line of entities.jsonl for an API object of the given entity kind."""
    meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
    labels = meta.get("labels") or {}
    owner = _owner(meta)
    line: dict[str, Any] = {
        "ts": ts,
        "event": event,
        "kind": kind,
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "ips": [],
        "labels": labels,
        "selector": {},
        "owner": owner,
        "app": "",
        "uid": meta.get("uid", ""),
        "resource_version": meta.get("resourceVersion", ""),
        "deleting": bool(meta.get("deletionTimestamp")),
    }
    if kind == "pod":
        ips = [p["ip"] for p in status.get("podIPs") or [] if p.get("ip")]
        if not ips and status.get("podIP"):
            ips = [status["podIP"]]
        host_network = bool(spec.get("hostNetwork"))
        # a host-network pod shows its node's address: the node holds it, not the pod
        line["ips"] = [] if host_network else ips
        line |= {
            "phase": status.get("phase", ""),
            "node": spec.get("nodeName", ""),
            "host_ip": status.get("hostIP", ""),
            "host_network": host_network,
        }
        line["app"] = next((labels[k] for k in APP_LABELS if labels.get(k)), owner.rsplit("/", 1)[-1])
    elif kind == "service":
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        line["ips"] = [ip for ip in ips if ip and ip != "None"]
        line["selector"] = spec.get("selector") or {}
        line |= {"type": spec.get("type", "ClusterIP"), "ports": spec.get("ports") or []}
        line["app"] = line["name"]
    elif kind == "endpoints":
        subsets = obj.get("subsets") or []
        line["ips"] = sorted({a["ip"] for s in subsets for a in s.get("addresses") or [] if a.get("ip")})
        line["not_ready_ips"] = sorted(
            {a["ip"] for s in subsets for a in s.get("notReadyAddresses") or [] if a.get("ip")}
        )
        line["app"] = line["name"]
    else:
        line["ips"] = [a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"]
    return line


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return meta.get("namespace", ""), meta.get("name", "")


class EntityWatcher:
    """Records pods, services, endpoints and nodes of the namespaces (all when None) into `out`, until stop()."""

    def __init__(
        self,
        api: client.ApiClient,
        namespaces: list[str] | None,
        out: Path,
        clock: Callable[[], float] = time.time,
        *,
        window: float = 300.0,
    ) -> None:
        self.out, self._clock = out, clock
        self._streams: list[tuple[str, str, ListWatch]] = []  # (entity kind, stream name, watch)
        for kind, (plural, namespaced) in RESOURCES.items():
            for namespace in (namespaces or [None]) if namespaced else [None]:
                name = f"{plural}@{namespace}" if namespace else plural
                self._streams.append(
                    (kind, name, ListWatch(api, collection_path("v1", plural, namespace), window=window))
                )
        self._known: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._file: IO[str] | None = None
        self._threads: list[threading.Thread] = []
        self._failures: list[str] = []
        self._counts: Counter[str] = Counter()
        self.started: float | None = None
        self.stopped: float | None = None

    def start(self) -> float:
        """List everything (one "added" event each, at the listing time), start the watches; the listing time."""
        listed = [(kind, name, watch, watch.list()) for kind, name, watch in self._streams]
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.out.open("w")
        except OSError as e:
            raise IOFailure(f"{self.out}: cannot write: {e.strerror}") from None
        with self._lock:
            self.started = self._clock()
            for kind, name, _, items in listed:
                self._known[name] = {_key(obj): obj for obj in items}
                for obj in sorted(items, key=_key):
                    self._write(kind, "added", obj, self.started)
        for kind, name, watch, _ in listed:
            thread = threading.Thread(target=self._follow, args=(kind, name, watch), name=f"watch-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self.started

    def _follow(self, kind: str, name: str, watch: ListWatch) -> None:
        try:
            watch.follow(
                lambda change, obj: self._on_event(kind, name, change, obj),
                lambda items: self._on_relist(kind, name, items),
            )
        except MimirError as e:  # the file cannot be written: nothing more can be recorded
            self._failures.append(f"{name}: {e}")

    def _write(self, kind: str, event: str, obj: dict[str, Any], ts: float) -> None:
        if self._file is None:  # stopped: a late event from a stream that was ending
            return
        try:
            self._file.write(json.dumps(entity_event(kind, event, obj, ts), sort_keys=True) + "\n")
            self._file.flush()
        except OSError as e:
            raise IOFailure(f"{self.out}: cannot write: {e.strerror}") from None
        self._counts[kind] += 1

    def _on_event(self, kind: str, name: str, change: str, obj: dict[str, Any]) -> None:
        if change not in EVENTS:
            return
        with self._lock:
            if change == "DELETED":
                self._known[name].pop(_key(obj), None)
            else:
                self._known[name][_key(obj)] = obj
            self._write(kind, EVENTS[change], obj, self._clock())

    def _on_relist(self, kind: str, name: str, items: list[dict[str, Any]]) -> None:
        """Write what changed while the watch could not tell: the new listing against the last known state."""
        with self._lock:
            ts = self._clock()
            known, fresh = self._known[name], {_key(obj): obj for obj in items}

            def uid(obj: dict[str, Any]) -> str:
                return (obj.get("metadata") or {}).get("uid", "")

            def version(obj: dict[str, Any]) -> str:
                return (obj.get("metadata") or {}).get("resourceVersion", "")

            for key in sorted(known):
                if key not in fresh or uid(fresh[key]) != uid(known[key]):
                    self._write(kind, "deleted", known[key], ts)
            for key in sorted(fresh):
                if key not in known or uid(fresh[key]) != uid(known[key]):
                    self._write(kind, "added", fresh[key], ts)
                elif version(fresh[key]) != version(known[key]):
                    self._write(kind, "modified", fresh[key], ts)
            self._known[name] = fresh

    @property
    def stats(self) -> dict[str, Any]:
        """For run.json: events written per kind, stream reconnects and relists, where each stream stopped."""
        return {
            "events": dict(self._counts),
            "reconnects": sum(w.reconnects for _, _, w in self._streams),
            "relists": sum(w.relists for _, _, w in self._streams),
            "errors": sum(w.errors for _, _, w in self._streams),
            "last_errors": {name: w.last_error for _, name, w in self._streams if w.last_error},
            "resource_versions": {name: w.resource_version for _, name, w in self._streams},
            "start": self.started,
            "stop": self.stopped,
        }

    def stop(self, timeout: float = 5) -> dict[str, Any]:
        """End the watches, close the file and return the stats; a stream that could not write raises."""
        for _, _, watch in self._streams:
            watch.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        with self._lock:
            self.stopped = self._clock()
            if self._file is not None:
                self._file.close()
                self._file = None
        if self._failures:
            raise IOFailure("; ".join(self._failures))
        if stuck:
            raise ClusterError(f"watches did not stop within {timeout:g} s: {', '.join(stuck)}")
        return self.stats


def least_privilege_client(api: client.ApiClient, seconds: float) -> client.ApiClient:
    """A client holding only the watcher ServiceAccount's token, valid for `seconds`, when the cluster issues one."""
    namespace, name = WATCHER_ACCOUNT
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=int(seconds))
    )
    try:
        token = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request).status.token
    except client.ApiException as e:
        raise ClusterError(
            f"cannot get a token for the ServiceAccount {namespace}/{name} ({e.status} {e.reason}); "
            "pass --no-least-privilege-watch to watch with your own credentials"
        ) from None
    settings = client.Configuration()
    source = api.configuration
    settings.host, settings.verify_ssl, settings.ssl_ca_cert = source.host, source.verify_ssl, source.ssl_ca_cert
    settings.api_key = {"authorization": token}
    settings.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(settings)
