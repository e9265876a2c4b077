"""The Kubernetes API as a collection speaks to it: connect, one request, and the list-then-watch loop.

Everything goes through the official `kubernetes` client. Objects stay plain dicts (JSON as the API sends it):
the generated models validate strictly and cost time, and a collection only reads a few fields. Waiting is done
on the API's watch, never by sleeping and polling; `ListWatch` is the one list-then-watch loop that
`workloads.wait_ready` and the entity watcher share. The other steps of a collection live beside this module:
`manifests` (reading them), `objects` (deploy and teardown), `workloads` (scale, autoscale, readiness) and
`facts` (what run.json records about the cluster).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from mimir.errors import ApiStatusError, ClusterError

REQUEST_TIMEOUT = (10.0, 60.0)  # connect, read (seconds) for one ordinary request
WATCH_MARGIN = 30.0  # a watch's read may wait this much longer than the server's own end of it (timeoutSeconds)
MERGE_PATCH = "application/merge-patch+json"  # every PATCH mimir sends is a JSON merge patch
WATCH_WINDOW = 300.0  # a watch asks the server to end it after this long; it is then reopened where it stopped


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
        request_json(api, "GET", "/version")
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
) -> urllib3.BaseHTTPResponse:
    """Send one request; the response is returned unread (a watch streams). An error status raises ApiStatusError.

    A PATCH is a JSON merge patch. A watch (`watch=true`) may stay silent until the server ends it after its
    `timeoutSeconds`, so its read waits that long plus a margin; any other request waits REQUEST_TIMEOUT.
    """
    query = query or {}
    content_type = MERGE_PATCH if method == "PATCH" else "application/json"
    timeout = REQUEST_TIMEOUT
    if query.get("watch") == "true":
        timeout = (REQUEST_TIMEOUT[0], float(query["timeoutSeconds"]) + WATCH_MARGIN)
    try:
        # the raw urllib3 response (unread): `_preload_content=False` leaves reading it to the caller
        response = api.call_api(
            path,
            method,
            query_params=list(query.items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
            _request_timeout=timeout,
        )
    except ApiException as e:
        if not e.status:  # no answer at all (a refused connection, a TLS failure)
            raise ClusterError(f"{method} {api.configuration.host}{path}: {e.reason}") from None
        response = e
    except urllib3.exceptions.HTTPError as e:
        raise ClusterError(f"{method} {api.configuration.host}{path}: {e}") from None
    if not 200 <= response.status <= 299:
        data = response.body if isinstance(response, ApiException) else response.data
        data = data.encode() if isinstance(data, str) else (data or b"")
        try:
            status = json.loads(data)
        except ValueError:
            status = {}
        status = status if isinstance(status, dict) else {}
        message = status.get("message") or data[:200].decode(errors="replace")
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


def watch_events(response: urllib3.BaseHTTPResponse) -> Iterator[dict[str, Any]]:
    """The events of an open watch, one JSON object per line, as they arrive."""
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
            response = open_request(self.api, "GET", self.path, query=query)
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
            for event in watch_events(response):
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
