"""The Kubernetes API as a collection uses it: connect, deploy manifests, scale, wait, describe and tear down.

Everything goes through the official `kubernetes` client. Objects stay plain dicts (JSON as the API sends it):
the generated models validate strictly and cost time, and a collection only reads a few fields. Discovery of
arbitrary kinds (a user's own manifests) uses the client's DynamicClient, kept in memory for one call.
Waiting is done on the API's watch, never by sleeping and polling; `ListWatch` is the one list-then-watch loop
that `wait_ready`, `teardown` and the entity watcher share.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import math
import os
import queue
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.discovery import LazyDiscoverer
from kubernetes.dynamic.exceptions import DynamicApiError, ResourceNotFoundError
from kubernetes.watch.watch import iter_resp_lines

from mimir.errors import EXIT_BAD_INPUT, ClusterError, IOFailure, MimirError, UsageError

REQUEST_TIMEOUT = (10.0, 60.0)  # connect, read (seconds) for one ordinary request
MERGE_PATCH = "application/merge-patch+json"
WATCH_WINDOW = 300.0  # a watch asks the server to end it after this long; it is then reopened where it stopped

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
# (kind, apiVersion, plural) of the workloads wait_ready follows
WORKLOADS = [("Deployment", "apps/v1", "deployments"), ("StatefulSet", "apps/v1", "statefulsets")]
JOBS = ("Job", "batch/v1", "jobs")


class ManifestError(MimirError):
    """A manifest file is not YAML, or a document in it is not a Kubernetes object."""

    exit_code = EXIT_BAD_INPUT


class ApiStatusError(ClusterError):
    """The API answered a request with an error status (kept apart so callers can react to 404, 409, 410)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(message)


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

    def as_dict(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "namespace": self.namespace, "name": self.name}


# --- connecting and raw requests --------------------------------------------------------------------------------


def connect(kubeconfig: Path | None = None, context: str | None = None, host: str | None = None) -> client.ApiClient:
    """A client for the cluster, checked by asking for its version.

    `host` alone is an unauthenticated URL (an emulator in tests, or `kubectl proxy`). Otherwise the kubeconfig
    (default: $KUBECONFIG, else ~/.kube/config) and its context, else the pod's in-cluster service account.
    """
    if host:
        configuration = client.Configuration()
        configuration.host = host.rstrip("/")
        api, where = client.ApiClient(configuration), host
    else:
        given = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG") or "~/.kube/config"
        files = [Path(p).expanduser() for p in given.split(os.pathsep) if p]
        where = f"kubeconfig {given}" + (f", context {context}" if context else "")
        try:
            if any(f.is_file() for f in files):
                api = config.new_client_from_config(config_file=given, context=context, persist_config=False)
            elif kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
                configuration = client.Configuration()
                config.load_incluster_config(client_configuration=configuration)
                api, where = client.ApiClient(configuration), "the in-cluster service account"
            else:
                raise ClusterError(f"{given}: no such kubeconfig file, and not running inside a cluster")
        except config.ConfigException as e:
            raise ClusterError(f"{where}: {e}") from None
    try:
        request_json(api, "GET", "/version", timeout=(10.0, 10.0))
    except ClusterError as e:
        api.close()
        raise ClusterError(
            f"{where}: the Kubernetes API at {api.configuration.host} did not answer as expected: {e}"
        ) from None
    return api


def open_request(
    api: client.ApiClient,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float | tuple[float, float] = REQUEST_TIMEOUT,
) -> urllib3.BaseHTTPResponse:
    """Send one request; the response is returned unread (a watch streams). An error status raises ApiStatusError."""
    serialized = api.param_serialize(
        method,
        path,
        query_params=list((query or {}).items()),
        header_params={"Accept": "application/json", "Content-Type": content_type},
        body=body,
        auth_settings=["BearerToken"],
    )
    try:
        response = api.call_api(*serialized, _request_timeout=timeout).response
    except (urllib3.exceptions.HTTPError, ApiException) as e:
        raise ClusterError(f"{method} {api.configuration.host}{path}: {e}") from None
    if not 200 <= response.status <= 299:
        try:
            status = json.loads(response.data)
        except ValueError:
            status = {}
        message = status.get("message") or response.data[:200].decode(errors="replace")
        raise ApiStatusError(response.status, status.get("reason", ""), f"{method} {path}: {response.status} {message}")
    return response


def request_json(api: client.ApiClient, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
    """One request whose answer is a JSON object."""
    response = open_request(api, method, path, **kwargs)
    try:
        return json.loads(response.data)
    except (ValueError, urllib3.exceptions.HTTPError) as e:
        raise ClusterError(f"{method} {path}: the answer is not JSON: {e}") from None


def collection_path(api_version: str, plural: str, namespace: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"


def _watch_events(response: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    for line in iter_resp_lines(response):
        if line.strip():
            yield json.loads(line)


class _Expired(Exception):
    """The resourceVersion a watch asked for is older than the server keeps (410 Gone)."""


class ListWatch:
    """One collection, listed, then followed through the watch from the list's resourceVersion.

    When a stream ends or breaks (server timeout, dropped connection, apiserver restart) it is reopened from the
    last resourceVersion seen, after a short backoff, so no change is lost or repeated. When that version is too
    old (410 Gone), the collection is listed again and the new state handed to `on_relist`.
    """

    def __init__(self, api: client.ApiClient, path: str, *, window: float = WATCH_WINDOW) -> None:
        self.api, self.path, self.window = api, path, window
        self.resource_version = ""
        self.reconnects = self.relists = self.errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._response: urllib3.BaseHTTPResponse | None = None

    def list(self) -> list[dict[str, Any]]:
        answer = request_json(self.api, "GET", self.path)
        self.resource_version = (answer.get("metadata") or {}).get("resourceVersion", "")
        return answer.get("items") or []

    def follow(
        self,
        on_event: Callable[[str, dict[str, Any]], None],
        on_relist: Callable[[list[dict[str, Any]]], None],
        backoff: tuple[float, float] = (0.2, 5.0),
    ) -> None:
        """Deliver every change (type, object) until stop(); blocks, so run it in a thread."""
        delay, expired = backoff[0], False
        while not self._stop.is_set():
            try:
                if expired:
                    items = self.list()
                    self.relists += 1
                    expired = False
                    on_relist(items)
                self._stream(on_event)
                delay = backoff[0]
            except _Expired:
                expired = True
                continue
            except (ClusterError, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
                if self._stop.is_set():
                    break
                self.errors += 1
                self.last_error = str(e)
                self._stop.wait(delay)
                delay = min(delay * 2, backoff[1])
            if not self._stop.is_set():
                self.reconnects += 1

    def _stream(self, on_event: Callable[[str, dict[str, Any]], None]) -> None:
        query = {
            "watch": "true",
            "resourceVersion": self.resource_version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(max(1, int(self.window))),
        }
        try:
            response = open_request(self.api, "GET", self.path, query=query, timeout=(10.0, self.window + 30))
        except ApiStatusError as e:
            if e.status == 410:
                raise _Expired from None
            raise
        with self._lock:
            if self._stop.is_set():
                response.close()
                return
            self._response = response
        try:
            for event in _watch_events(response):
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Expired
                    raise ApiStatusError(obj.get("code", 500), obj.get("reason", ""), obj.get("message", str(obj)))
                if kind != "BOOKMARK":
                    on_event(kind, obj)
                self.resource_version = (obj.get("metadata") or {}).get("resourceVersion") or self.resource_version
                if self._stop.is_set():
                    return
        finally:
            with self._lock:
                self._response = None
            response.close()

    def stop(self) -> None:
        """End follow() promptly: the open stream's socket is shut down, which unblocks its read."""
        with self._lock:
            self._stop.set()
            if self._response is not None:
                self._response.shutdown()


# --- manifests and deployment ------------------------------------------------------------------------------------


def load_manifests(folder: Path) -> list[dict[str, Any]]:
    """Every object in the folder's *.yaml files, by file name then document order (`kind: List` is expanded)."""
    if not folder.is_dir():
        raise IOFailure(f"{folder}: no such manifest folder")
    objects: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except OSError as e:
            raise IOFailure(f"{path}: cannot read: {e.strerror}") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f", line {mark.line + 1}" if mark is not None else ""
            raise ManifestError(f"{path}{where}: not YAML: {getattr(e, 'problem', None) or e}") from None
        for index, document in enumerate(documents):
            if document is None:
                continue
            items = document.get("items") if isinstance(document, dict) and document.get("kind") == "List" else None
            for obj in items if isinstance(items, list) else [document]:
                name = obj.get("metadata", {}).get("name") if isinstance(obj, dict) else None
                if not (isinstance(obj, dict) and obj.get("apiVersion") and obj.get("kind") and name):
                    raise ManifestError(
                        f"{path}: document {index}: not a Kubernetes object (apiVersion, kind, "
                        "metadata.name are required)"
                    )
                objects.append(obj)
    if not objects:
        raise ManifestError(f"{folder}: no Kubernetes objects in any *.yaml file")
    return objects


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
                request_json(api, "PATCH", f"{path}/{name}", body=body, content_type=MERGE_PATCH)
            except ApiStatusError as again:
                raise ClusterError(f"{ref} exists and cannot be updated: {again}") from None
        refs.append(ref)
    return refs


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
        request_json(api, "PATCH", path, body={"spec": {"replicas": count}}, content_type=MERGE_PATCH)


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


# --- readiness -----------------------------------------------------------------------------------------------------


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
    objects: dict[str, dict[str, dict[str, Any]]] = {}
    for kind, watch in watches.items():
        objects[kind] = {o["metadata"]["name"]: o for o in watch.list()}
    changes: queue.Queue[tuple[str, str, Any]] = queue.Queue()

    def follow(kind: str, watch: ListWatch) -> None:
        watch.follow(lambda t, o: changes.put((kind, t, o)), lambda items: changes.put((kind, "RELIST", items)))

    threads = [
        threading.Thread(target=follow, args=item, daemon=True, name=f"wait-{item[0]}") for item in watches.items()
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    announced: set[str] = set()
    try:
        while True:
            pending = []
            for kind, named in objects.items():
                for name, obj in named.items():
                    if names is not None and name not in names:
                        continue
                    ready, how = _state(kind, obj)
                    if not ready:
                        pending.append(how)
                    elif how not in announced and progress is not None:
                        announced.add(how)
                        progress(how)
            found = {name for named in objects.values() for name in named}
            pending += [f"{name} (no Deployment, StatefulSet or Job)" for name in names or [] if name not in found]
            if not pending:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClusterError(f"namespace {namespace}: not ready after {timeout:g} s: {', '.join(pending)}")
            try:
                kind, change, obj = changes.get(timeout=remaining)
            except queue.Empty:
                continue
            if change == "RELIST":
                objects[kind] = {o["metadata"]["name"]: o for o in obj}
            elif change == "DELETED":
                objects[kind].pop(obj["metadata"]["name"], None)
            else:
                objects[kind][obj["metadata"]["name"]] = obj
    finally:
        for watch in watches.values():
            watch.stop()
        for thread in threads:
            thread.join(5)


# --- facts and entry point -----------------------------------------------------------------------------------------


def _internal_ips(node: dict[str, Any]) -> list[str]:
    addresses = (node.get("status") or {}).get("addresses") or []
    return [a["address"] for a in addresses if a.get("type") == "InternalIP" and a.get("address")]


def entry_url(
    api: client.ApiClient, namespace: str, service: str, scheme: str = "http", node_address: str | None = None
) -> str:
    """scheme://NODE:NODEPORT of a NodePort or LoadBalancer service's first port, on the first node's InternalIP."""
    svc = request_json(api, "GET", f"{collection_path('v1', 'services', namespace)}/{service}")
    kind = (svc.get("spec") or {}).get("type", "ClusterIP")
    ports = (svc.get("spec") or {}).get("ports") or []
    if kind not in ("NodePort", "LoadBalancer") or not ports or not ports[0].get("nodePort"):
        raise ClusterError(
            f"service {service} in namespace {namespace} is {kind} with no node port: "
            "the load generator cannot reach it from outside the cluster"
        )
    if node_address is None:
        nodes = request_json(api, "GET", "/api/v1/nodes").get("items") or []
        addresses = [ip for node in nodes for ip in _internal_ips(node)]
        if not addresses:
            raise ClusterError("no node reports an InternalIP address")
        node_address = addresses[0]
    host = f"[{node_address}]" if ipaddress.ip_address(node_address).version == 6 else node_address
    return f"{scheme}://{host}:{ports[0]['nodePort']}"


def _images(obj: dict[str, Any]) -> list[str]:
    pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    return [c.get("image", "") for c in (pod.get("initContainers") or []) + (pod.get("containers") or [])]


def cluster_facts(api: client.ApiClient, namespaces: list[str]) -> dict[str, Any]:
    """What run.json records about the cluster: versions, nodes and their pod ranges, workload images."""
    version = request_json(api, "GET", "/version")
    nodes = []
    for node in request_json(api, "GET", "/api/v1/nodes").get("items") or []:
        info = (node.get("status") or {}).get("nodeInfo") or {}
        spec = node.get("spec") or {}
        nodes.append(
            {
                "name": node["metadata"]["name"],
                "kubelet_version": info.get("kubeletVersion"),
                "container_runtime": info.get("containerRuntimeVersion"),
                "os_image": info.get("osImage"),
                "kernel": info.get("kernelVersion"),
                "internal_ip": next(iter(_internal_ips(node)), None),
                "internal_ips": _internal_ips(node),
                "pod_cidrs": spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else []),
            }
        )
    workloads = []
    for namespace in namespaces:
        for kind, api_version, plural in [*WORKLOADS, ("DaemonSet", "apps/v1", "daemonsets"), JOBS]:
            for obj in request_json(api, "GET", collection_path(api_version, plural, namespace)).get("items") or []:
                workloads.append(
                    {"namespace": namespace, "kind": kind, "name": obj["metadata"]["name"], "images": _images(obj)}
                )
    return {
        "server_version": version.get("gitVersion"),
        "platform": version.get("platform"),
        "nodes": nodes,
        "workloads": workloads,
        "kubernetes_service_ip": _cluster_ip(api, "default", "kubernetes"),  # an address in the service network
        "kube_dns": _cluster_ip(api, "kube-system", "kube-dns"),
    }


def _cluster_ip(api: client.ApiClient, namespace: str, name: str) -> str | None:
    try:
        found = request_json(api, "GET", f"{collection_path('v1', 'services', namespace)}/{name}")
    except ApiStatusError:
        return None
    return (found.get("spec") or {}).get("clusterIP")


# --- teardown ------------------------------------------------------------------------------------------------------


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
            response = open_request(api, "GET", collection, query=query, timeout=(10.0, remaining + 10))
        except ApiStatusError as e:
            if e.status == 410:
                continue
            raise
        try:
            for event in _watch_events(response):
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
