"""The objects a collection creates: deployed in dependency order (a rerun updates what exists) and torn down in
reverse order, waiting on the API's watch until they are gone.

Arbitrary kinds (a user's own manifests) are found through the client's DynamicClient, its discovery kept in memory
for one call.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.discovery import LazyDiscoverer
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError

from mimir.errors import ApiStatusError, ClusterError
from mimir.sources.cluster.kube import open_request, request_json, watch_events

# creation order: what others refer to comes first; kinds not listed follow, in manifest order
CREATION_ORDER = [
    "Namespace",
    "CustomResourceDefinition",
    "ServiceAccount",
    "ClusterRole",
    "Role",
    "ClusterRoleBinding",
    "RoleBinding",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "Service",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "HorizontalPodAutoscaler",
    "Job",
]


@dataclass(frozen=True)
class ObjectRef:
    """One object a collection created: enough to find it again and delete it."""

    api_version: str
    kind: str
    namespace: str | None
    name: str

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"{self.kind} {self.name}{where}"


class _SessionDiscoverer(LazyDiscoverer):
    """API discovery kept in memory. The client's default caches it in /tmp keyed only by the server URL, so a
    rebuilt cluster (or another emulator on a reused port) would be served a stale list of resources."""

    def __init__(self, dynamic: DynamicClient, cache_file: str | None) -> None:
        unused = Path(tempfile.gettempdir()) / f"mimir-discovery-{uuid.uuid4().hex}.json"  # never read or written
        super().__init__(dynamic, cache_file or str(unused))

    def _write_cache(self) -> None:
        pass


def _discovery(api: client.ApiClient) -> DynamicClient:
    return DynamicClient(api, discoverer=_SessionDiscoverer)


def _resource(dynamic: DynamicClient, api_version: str, kind: str) -> Any:
    try:
        return dynamic.resources.get(api_version=api_version, kind=kind)
    except ResourceNotFoundError:
        raise ClusterError(f"the cluster serves no {kind} in {api_version}") from None
    except (DynamicApiError, ApiException, urllib3.exceptions.HTTPError) as e:
        raise ClusterError(f"discovering {api_version} {kind}: {e}") from None


def _rank(kind: str) -> int:
    return CREATION_ORDER.index(kind) if kind in CREATION_ORDER else len(CREATION_ORDER)


def deploy(api: client.ApiClient, objects: list[dict[str, Any]], namespace: str) -> list[ObjectRef]:
    """Create the objects in dependency order; one that exists is merge-patched, so a rerun works.

    Namespaced objects without a namespace go to `namespace`. Returns references in creation order.
    """
    dynamic = _discovery(api)
    refs = []
    for obj in sorted(objects, key=lambda o: _rank(o["kind"])):
        resource = _resource(dynamic, obj["apiVersion"], obj["kind"])
        body = copy.deepcopy(obj)
        name = body["metadata"]["name"]
        target = None
        if resource.namespaced:
            target = body["metadata"].get("namespace") or namespace
            body["metadata"]["namespace"] = target
        ref = ObjectRef(obj["apiVersion"], obj["kind"], target, name)
        path = resource.path(namespace=target)
        try:
            request_json(api, "POST", path, body=body)
        except ApiStatusError as e:
            if e.status != 409:
                raise ClusterError(f"cannot create {ref}: {e}") from None
            try:
                request_json(api, "PATCH", f"{path}/{name}", body=body)
            except ApiStatusError as again:
                raise ClusterError(f"{ref} exists and cannot be updated: {again}") from None
        refs.append(ref)
    return refs


def _gone(api: client.ApiClient, collection: str, name: str, deadline: float) -> bool:
    """Whether the object disappears before the deadline, followed by a watch from its current version."""
    while True:
        try:
            obj = request_json(api, "GET", f"{collection}/{name}")
        except ApiStatusError as e:
            if e.status == 404:
                return True
            raise
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        query = {
            "watch": "true",
            "resourceVersion": obj["metadata"].get("resourceVersion", ""),
            "fieldSelector": f"metadata.name={name}",
            "timeoutSeconds": str(max(1, math.ceil(remaining))),
        }
        try:
            response = open_request(api, "GET", collection, query=query)
        except ApiStatusError as e:
            if e.status == 410:
                continue
            raise
        try:
            for event in watch_events(response):
                if event.get("type") == "DELETED" and event["object"]["metadata"].get("name") == name:
                    return True
                if event.get("type") == "ERROR":
                    break
        except (urllib3.exceptions.HTTPError, OSError, ValueError):
            pass  # a dropped stream: look again
        finally:
            response.close()


def teardown(api: client.ApiClient, refs: list[ObjectRef], timeout: float) -> list[ObjectRef]:
    """Delete in reverse creation order (foreground: dependents first) and wait until they are gone.

    Objects already gone are fine. Returns what is still there at the timeout, or could not be deleted.
    """
    dynamic = _discovery(api)
    deadline = time.monotonic() + timeout
    deleting: list[tuple[ObjectRef, str]] = []
    left = []
    for ref in reversed(refs):
        try:
            collection = _resource(dynamic, ref.api_version, ref.kind).path(namespace=ref.namespace)
            open_request(api, "DELETE", f"{collection}/{ref.name}", query={"propagationPolicy": "Foreground"})
        except ApiStatusError as e:
            if e.status != 404:
                left.append(ref)
            continue
        except ClusterError:
            left.append(ref)
            continue
        deleting.append((ref, collection))
    for ref, collection in deleting:
        try:
            if not _gone(api, collection, ref.name, deadline):
                left.append(ref)
        except ClusterError:
            left.append(ref)
    return left
