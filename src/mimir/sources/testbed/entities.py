"""entities.jsonl of a testbed run, line for line as the cluster watcher writes it from the Kubernetes API.

The testbed has no API server, so it describes what it does (a pod created, a Service's endpoints changed) as the
objects Kubernetes would hold, and writes them through the watcher's own `entity_event`: `mimir edges` cannot tell
the two sources apart.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

from mimir.sources.cluster.watcher import entity_event
from mimir.sources.testbed.network import Pod, Service

NODE_NAME = "testbed-node"


class EntityLog:
    """Appends one JSON line per event and flushes it at once, so a crash loses nothing already written."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = path.open("a")
        self._lock = threading.Lock()
        self._version = 0
        self._uids: dict[tuple[str, str, str], str] = {}
        self.counts: dict[str, int] = {}

    def _write(self, kind: str, event: str, obj: dict[str, Any]) -> None:
        with self._lock:
            if self._file is None:
                return
            self._version += 1
            meta = obj["metadata"]
            key = (kind, meta.get("namespace", ""), meta["name"])
            meta["uid"] = self._uids.setdefault(key, str(uuid.uuid4()))
            meta["resourceVersion"] = str(self._version)
            line = entity_event(kind, event, obj, time.time())
            self._file.write(json.dumps(line, sort_keys=True) + "\n")
            self._file.flush()
            self.counts[kind] = self.counts.get(kind, 0) + 1
            if event == "deleted":
                self._uids.pop(key, None)

    def node(self, addresses: list[str]) -> None:
        self._write(
            "node",
            "added",
            {
                "metadata": {"name": NODE_NAME, "labels": {"kubernetes.io/hostname": NODE_NAME}},
                "status": {"addresses": [{"type": "InternalIP", "address": a} for a in addresses]},
            },
        )

    def pod(self, pod: Pod, event: str, phase: str = "Running") -> None:
        kind, _, name = pod.owner.partition("/")
        owner = {
            "kind": "StatefulSet" if kind == "statefulset" else "ReplicaSet",
            "controller": True,
            "name": name if kind == "statefulset" else pod.name.rsplit("-", 1)[0],
        }
        labels = dict(pod.labels)
        if kind == "deployment":
            labels["pod-template-hash"] = pod.name.rsplit("-", 2)[1]
        self._write(
            "pod",
            event,
            {
                "metadata": {
                    "name": pod.name,
                    "namespace": pod.namespace,
                    "labels": labels,
                    "ownerReferences": [owner],
                },
                "spec": {"nodeName": NODE_NAME},
                "status": {"phase": phase, "podIP": pod.ip, "podIPs": [{"ip": pod.ip}], "hostIP": ""},
            },
        )

    def service(self, svc: Service, event: str = "added") -> None:
        ports = [
            {"protocol": proto.upper(), "port": port, "targetPort": target}
            | ({"nodePort": svc.node_port} if svc.node_port else {})
            for proto, port, target in svc.ports
        ]
        self._write(
            "service",
            event,
            {
                "metadata": {"name": svc.name, "namespace": svc.namespace, "labels": dict(svc.selector)},
                "spec": {
                    "clusterIP": svc.vip,
                    "clusterIPs": [svc.vip],
                    "selector": dict(svc.selector),
                    "type": "NodePort" if svc.node_port else "ClusterIP",
                    "ports": ports,
                },
            },
        )

    def endpoints(self, svc: Service, event: str = "modified") -> None:
        addresses = [{"ip": ip} for ip in svc.endpoints]
        self._write(
            "endpoints",
            event,
            {
                "metadata": {"name": svc.name, "namespace": svc.namespace, "labels": dict(svc.selector)},
                "subsets": [{"addresses": addresses}] if addresses else [],
            },
        )

    def close(self) -> dict[str, int]:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
        return dict(self.counts)
