"""The application's workloads during a collection: replicas, autoscalers, and waiting until they are ready.

Readiness is followed on the API's watch (`ListWatch`), never by sleeping and polling.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client

from mimir.errors import ApiStatusError, ClusterError, UsageError
from mimir.sources.cluster.kube import ListWatch, collection_path, request_json
from mimir.sources.cluster.objects import ObjectRef, deploy

# (kind, apiVersion, plural) of the workloads wait_ready follows
WORKLOADS = [("Deployment", "apps/v1", "deployments"), ("StatefulSet", "apps/v1", "statefulsets")]
JOBS = ("Job", "batch/v1", "jobs")


def _workload(api: client.ApiClient, namespace: str, name: str) -> tuple[str, str]:
    """(kind, object path) of the Deployment or StatefulSet called name."""
    for kind, api_version, plural in WORKLOADS:
        path = f"{collection_path(api_version, plural, namespace)}/{name}"
        try:
            request_json(api, "GET", path)
        except ApiStatusError as e:
            if e.status == 404:
                continue
            raise
        return kind, path
    raise ClusterError(f"namespace {namespace}: no Deployment or StatefulSet named {name}")


def scale(api: client.ApiClient, namespace: str, replicas: dict[str, int]) -> None:
    """Set the replica count of Deployments and StatefulSets, by name."""
    for name, count in replicas.items():
        if count < 0:
            raise UsageError(f"replicas of {name}: {count} is negative")
        _, path = _workload(api, namespace, name)
        request_json(api, "PATCH", path, body={"spec": {"replicas": count}})


def autoscale(api: client.ApiClient, namespace: str, targets: dict[str, tuple[int, int, int]]) -> list[ObjectRef]:
    """One autoscaling/v2 HorizontalPodAutoscaler per workload, name -> (min, max, cpu percent); created or updated."""
    objects = []
    for name, (low, high, cpu) in targets.items():
        if not 1 <= low <= high or cpu < 1:
            raise UsageError(f"autoscaling of {name}: need 1 <= min <= max and cpu > 0, got {low}, {high}, {cpu}")
        kind, _ = _workload(api, namespace, name)
        objects.append(
            {
                "apiVersion": "autoscaling/v2",
                "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": name},
                    "minReplicas": low,
                    "maxReplicas": high,
                    "metrics": [
                        {
                            "type": "Resource",
                            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}},
                        }
                    ],
                },
            }
        )
    return deploy(api, objects, namespace)


def _state(kind: str, obj: dict[str, Any]) -> tuple[bool, str]:
    """(ready, how it stands) of a workload; a failed Job raises."""
    meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
    name = meta.get("name")
    if kind == "Job":
        conditions = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
        if "Failed" in conditions:
            failed = conditions["Failed"]
            raise ClusterError(
                f"namespace {meta.get('namespace')}: job/{name} failed: "
                f"{failed.get('reason', '')} {failed.get('message', '')}".rstrip()
            )
        return "Complete" in conditions, f"job/{name} {'complete' if 'Complete' in conditions else 'not complete'}"
    want, have = spec.get("replicas", 1), status.get("readyReplicas", 0)
    observed = status.get("observedGeneration", 0) >= meta.get("generation", 0)
    note = "" if observed else f" (generation {meta.get('generation')} not yet observed)"
    return observed and have >= want, f"{kind.lower()}/{name} {have}/{want} ready{note}"


def _not_ready(
    objects: dict[str, dict[str, dict[str, Any]]], names: list[str] | None, announce: Callable[[str], None]
) -> list[str]:
    """How each named workload that is not ready stands (a missing one too); the ready ones are announced."""
    pending = []
    for kind, named in objects.items():
        for name, obj in named.items():
            if names is not None and name not in names:
                continue
            ready, how = _state(kind, obj)
            if ready:
                announce(how)
            else:
                pending.append(how)
    found = {name for named in objects.values() for name in named}
    return pending + [f"{name} (no Deployment, StatefulSet or Job)" for name in names or [] if name not in found]


def _apply(named: dict[str, dict[str, Any]], change: str, obj: Any) -> None:
    """One watch event (or a relisting) applied to the objects of its kind, by name."""
    if change == "RELIST":
        named.clear()
        named.update({o["metadata"]["name"]: o for o in obj})
    elif change == "DELETED":
        named.pop(obj["metadata"]["name"], None)
    else:
        named[obj["metadata"]["name"]] = obj


def wait_ready(
    api: client.ApiClient,
    namespace: str,
    names: list[str] | None,
    timeout: float,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Return once every named workload (all when names is None) is ready: Deployments and StatefulSets with
    readyReplicas >= replicas at the current generation, Jobs complete. Follows the API's watch, never polls.

    A failed Job, or the timeout, raises ClusterError naming what is not ready with its ready/desired counts.
    """
    kinds = [*WORKLOADS, JOBS]
    watches = {kind: ListWatch(api, collection_path(v, plural, namespace), window=60) for kind, v, plural in kinds}
    objects = {kind: {o["metadata"]["name"]: o for o in watch.list()} for kind, watch in watches.items()}
    changes: queue.Queue[tuple[str, str, Any]] = queue.Queue()

    def follow(kind: str, watch: ListWatch) -> None:
        watch.follow(lambda t, o: changes.put((kind, t, o)), lambda items: changes.put((kind, "RELIST", items)))

    announced: set[str] = set()

    def announce(how: str) -> None:
        if how not in announced and progress is not None:
            announced.add(how)
            progress(how)

    threads = [
        threading.Thread(target=follow, args=item, daemon=True, name=f"wait-{item[0]}") for item in watches.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    try:
        while pending := _not_ready(objects, names, announce):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(f"namespace {namespace}: not ready after {timeout:g} s: {', '.join(pending)}")
            try:
                kind, change, obj = changes.get(timeout=remaining)
            except queue.Empty:
                continue
            _apply(objects[kind], change, obj)
    finally:
        for watch in watches.values():
            watch.stop()
        for thread in threads:
            thread.join(5)
