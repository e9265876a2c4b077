"""A Kubernetes API server on loopback for tests: kmock's in-memory emulator, taught the apiserver's versioning.

kmock 0.8 stores objects and streams watch events, but it gives objects no resourceVersion, replays every object
on every watch and cannot say 410 Gone. A watcher that resumes from a resourceVersion cannot be tested against
that, so `ApiServerEmulator` adds what a real apiserver does, and no more:

- every change gets the next cluster-wide resourceVersion (also stored on the object, so lists and gets show it);
  objects get a uid and a creationTimestamp when created, and `metadata.generation` grows when `spec` changes;
- a list carries the current resourceVersion; a watch from version V replays the changes after V from the history,
  then streams live changes; a watch from a version older than the history answers with an ERROR event, code 410
  (what an apiserver sends once etcd compacted that version); `timeoutSeconds` ends a watch, with a BOOKMARK;
- `metadata.namespace` is set from the URL on create, and `/api/v1/namespaces[/NAME]` is routed to the
  Namespace resource (kmock 0.8 reads it as a namespace prefix and fails).

Test controls: `drop_watches()` closes every open watch connection abruptly (the TCP connection is closed without
ending the chunked stream, as when an apiserver restarts), `hold_watches()` makes new watch requests wait until the
block ends, `compact()` forgets the history so older versions get 410 Gone. PUT is not served (kmock 0.8 cannot);
updates are merge patches. Nothing is scheduled: tests play the controllers by patching `status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import kmock
from kmock._internal import aiobus, enums, parsing
from kubernetes import client

# (group/version/plural) -> (kind, namespaced): what the emulator's discovery announces
RESOURCES: dict[str, tuple[str, bool]] = {
    "v1/namespaces": ("Namespace", False),
    "v1/nodes": ("Node", False),
    "v1/pods": ("Pod", True),
    "v1/services": ("Service", True),
    "v1/endpoints": ("Endpoints", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/secrets": ("Secret", True),
    "v1/serviceaccounts": ("ServiceAccount", True),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "apps/v1/deployments": ("Deployment", True),
    "apps/v1/statefulsets": ("StatefulSet", True),
    "apps/v1/daemonsets": ("DaemonSet", True),
    "apps/v1/replicasets": ("ReplicaSet", True),
    "batch/v1/jobs": ("Job", True),
    "autoscaling/v2/horizontalpodautoscalers": ("HorizontalPodAutoscaler", True),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True),
    "discovery.k8s.io/v1/endpointslices": ("EndpointSlice", True),
}
VERBS = {"get", "list", "watch", "create", "patch", "delete"}

_kmock_parse_path = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    """kmock's URL parser, except that `/api/v1/namespaces[/NAME[/status]]` names the Namespace resource."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (len(parts) <= 4 or (len(parts) == 5 and parts[4] == "status")):
        name = parts[3] if len(parts) > 3 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, parts[4] if len(parts) > 4 else None)
    return _kmock_parse_path(path)


parsing.parse_path = _parse_path


@attrs.mutable(weakref_slot=True)
class _RecordingBus(aiobus.Bus[Any]):
    """kmock's event bus for one resource; every event is stamped with a resourceVersion before it is streamed."""

    stamp: Callable[[dict[str, Any]], None] = attrs.field(kw_only=True)

    async def put(self, *items: Any) -> None:
        for item in items:
            self.stamp(item)
        await super().put(*items)


class _Buses(dict):
    def __init__(self, emulator: ApiServerEmulator) -> None:
        super().__init__()
        self.emulator = emulator

    def __missing__(self, resource: kmock.resource) -> _RecordingBus:
        bus = _RecordingBus(stamp=lambda event: self.emulator._stamp(resource, event))
        self[resource] = bus
        return bus


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """kmock's KubernetesEmulator with resourceVersions, watch history, 410 Gone and server-side watch timeouts."""

    _revision: int = attrs.field(default=0, init=False)
    _history: dict[Any, list[tuple[int, dict[str, Any]]]] = attrs.field(factory=dict, init=False)
    _compacted: int = attrs.field(default=0, init=False)
    _specs: dict[Any, Any] = attrs.field(factory=dict, init=False)
    _drops: set[asyncio.Event] = attrs.field(factory=set, init=False)
    _gate: asyncio.Event | None = attrs.field(default=None, init=False)
    watch_requests: list[tuple[str, str | None]] = attrs.field(factory=list, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = _Buses(self)
        for key, (kind, namespaced) in RESOURCES.items():
            self.resources[key] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs=VERBS, subresources={"status"}
            )

    @property
    def revision(self) -> int:
        return self._revision

    def _stamp(self, resource: kmock.resource, event: dict[str, Any]) -> None:
        obj = event["object"]
        meta = dict(obj.get("metadata") or {})
        self._revision += 1
        meta["resourceVersion"] = str(self._revision)
        key = (resource, meta.get("namespace"), meta.get("name"))
        spec = copy.deepcopy(obj.get("spec"))
        if event["type"] == "ADDED":
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", _now())
            meta["generation"] = 1
        elif event["type"] == "MODIFIED" and key in self._specs and self._specs[key] != spec:
            meta["generation"] = int(meta.get("generation", 1)) + 1
        event["object"] = {**obj, "metadata": meta}
        if event["type"] == "DELETED":
            self._specs.pop(key, None)
        else:
            self._specs[key] = spec
            self.objects[key].last["metadata"] = meta  # so that gets and lists show the version too
        self._history.setdefault(resource, []).append((self._revision, copy.deepcopy(event)))

    async def _handle(self, request: kmock.Request) -> Any:
        if request.action == enums.action.CREATE and request.namespace and isinstance(request.data, dict):
            request.data.setdefault("metadata", {})["namespace"] = request.namespace
        return await super()._handle(request)

    def _current(self, request: kmock.Request) -> list[dict[str, Any]]:
        return [
            obj.raw
            for (resource, namespace, _), obj in self.objects.items()
            if resource == request.resource
            and not obj.deleted
            and (request.namespace is None or namespace == request.namespace)
        ]

    async def _serve_list(self, request: kmock.Request) -> dict[str, Any]:
        async with self._lock:
            items = self._current(request)
            revision = self._revision
        return {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(revision)}, "items": items}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        self.watch_requests.append((request.resource.plural, request.params.get("resourceVersion")))
        if self._gate is not None:
            await self._gate.wait()
        yield b""  # send the headers: the watch is open
        since = request.params.get("resourceVersion") or "0"
        timeout = float(request.params["timeoutSeconds"]) if "timeoutSeconds" in request.params else None
        bookmarks = request.params.get("allowWatchBookmarks") == "true"
        dropped = asyncio.Event()
        self._drops.add(dropped)
        async with self._lock:
            bus = self._buses[request.resource]
            mark = await bus.mark()
            if since == "0":
                backlog = [{"type": "ADDED", "object": raw} for raw in self._current(request)]
            elif int(since) < self._compacted:
                backlog = [{"type": "ERROR", "object": _gone(since, self._compacted)}]
            else:
                history = self._history.get(request.resource, [])
                backlog = [e for rv, e in history if rv > int(since) and self._wanted(request, e)]
        try:
            for event in backlog:
                yield event
            if backlog and backlog[0]["type"] == "ERROR":
                return
            async for event in self._live(bus, mark, request, dropped, timeout):
                yield event
            if dropped.is_set():
                request._raw_request.transport.close()  # an abrupt drop, not the end of the stream
                return
            if bookmarks:
                yield {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": str(self._revision)}}}
        finally:
            self._drops.discard(dropped)
            await bus.unmark(mark)

    async def _live(
        self, bus: aiobus.Bus[Any], mark: Any, request: kmock.Request, dropped: asyncio.Event, timeout: float | None
    ) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        events = bus.stream(since=mark).__aiter__()
        drop = asyncio.ensure_future(dropped.wait())
        try:
            while True:
                following = asyncio.ensure_future(events.__anext__())
                remaining = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait({following, drop}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if following not in done:
                    following.cancel()
                    return
                event = following.result()
                if self._wanted(request, event):
                    yield event
        finally:
            drop.cancel()

    @staticmethod
    def _wanted(request: kmock.Request, event: dict[str, Any]) -> bool:
        namespace = event["object"].get("metadata", {}).get("namespace")
        return request.namespace is None or namespace == request.namespace

    def drop(self) -> None:
        for dropped in list(self._drops):
            dropped.set()

    def hold(self, held: bool) -> None:
        if held:
            self._gate = asyncio.Event()
        elif self._gate is not None:
            self._gate.set()
            self._gate = None

    def compact(self) -> None:
        self._compacted = self._revision
        self._history.clear()

    def open_watches(self) -> int:
        return len(self._drops)


def _gone(since: str, compacted: int) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f"too old resource version: {since} ({compacted})",
        "reason": "Expired",
        "code": 410,
    }


class KubeServer:
    """The emulator served over HTTP on 127.0.0.1 from its own thread and event loop, with a client for it."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kmock", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.emulator: ApiServerEmulator | None = None
        self.url = ""
        self._clients: list[client.ApiClient] = []

    def _serve(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            async with ApiServerEmulator() as emulator, kmock.Server(emulator) as server:
                self.emulator = emulator
                self.url = str(server.url).rstrip("/")
                self._ready.set()
                await self._stop.wait()
                emulator.drop()

        asyncio.run(main())

    def __enter__(self) -> KubeServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes emulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        for api in self._clients:
            api.close()
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def client(self) -> client.ApiClient:
        """A fresh ApiClient for the server (closed when the server stops)."""
        configuration = client.Configuration()
        configuration.host = self.url
        api = client.ApiClient(configuration)
        self._clients.append(api)
        return api

    def run(self, fn: Callable[[], Any]) -> Any:
        """Run fn in the server's event loop (the emulator is not thread-safe) and return its result."""
        assert self._loop is not None

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(10)

    def drop_watches(self) -> None:
        self.run(self.emulator.drop)

    @contextlib.contextmanager
    def hold_watches(self) -> Iterator[None]:
        """Drop every open watch and keep new ones waiting until the block ends."""
        self.run(lambda: self.emulator.hold(True))
        try:
            self.drop_watches()
            yield
        finally:
            self.run(lambda: self.emulator.hold(False))

    def compact(self) -> None:
        self.run(self.emulator.compact)

    def open_watches(self) -> int:
        return self.run(self.emulator.open_watches)


def node_object(name: str, internal_ip: str, info: tuple[str, str, str], *, hostname: bool = False) -> dict[str, Any]:
    """A Node as the kubelet reports it: what facts.cluster_facts and facts.entry_url read (tests play the kubelet).

    `info` is (kubelet version, container runtime, OS image)."""
    kubelet, runtime, os_image = info
    addresses = [{"type": "Hostname", "address": name}] if hostname else []
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {
            "addresses": [*addresses, {"type": "InternalIP", "address": internal_ip}],
            "nodeInfo": {
                "kubeletVersion": kubelet,
                "containerRuntimeVersion": runtime,
                "osImage": os_image,
                "kernelVersion": "6.1.0",
            },
        },
    }
