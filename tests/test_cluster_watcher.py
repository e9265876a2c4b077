"""The entity watcher against an emulated API server (tests/kmockserver.py): the address timeline it records, and
how it survives dropped streams, expired versions and a least-privilege account."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kmockserver import KubeServer
from test_cluster_api import NS, wait_until

from mimir.entities import read_events, resolve, timeline
from mimir.sources.cluster import kube, manifests, objects
from mimir.sources.cluster.watcher import EntityWatcher, entity_event

REPO = Path(__file__).resolve().parents[1]


def pod(name: str, ip: str | None = None, labels: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running" if ip else "Pending"}
    if ip:
        status |= {"podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.49.2"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}, **meta},
        "spec": {"nodeName": "node-1", "containers": [{"name": "c", "image": "i"}]},
        "status": status,
    }


def service(name: str, ip: str, selector: dict[str, str]) -> dict[str, Any]:
    spec = {"type": "ClusterIP", "clusterIP": ip, "clusterIPs": [ip], "selector": selector, "ports": [{"port": 80}]}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def create(api: Any, plural: str, obj: dict[str, Any], namespace: str | None = NS) -> None:
    kube.request_json(api, "POST", kube.collection_path("v1", plural, namespace), body=obj)


def change(api: Any, plural: str, name: str, body: dict[str, Any]) -> None:
    path = f"{kube.collection_path('v1', plural, NS)}/{name}"
    kube.request_json(api, "PATCH", path, body=body)


def delete(api: Any, plural: str, name: str) -> None:
    kube.open_request(api, "DELETE", f"{kube.collection_path('v1', plural, NS)}/{name}")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_lines(path: Path, count: int) -> list[dict[str, Any]]:
    return wait_until(lambda: (found := lines(path)) and len(found) >= count and found, f"{count} lines in {path}")


def ticking() -> Callable[[], float]:
    """A clock that advances one second per reading: every event gets its own, increasing time."""
    counter = itertools.count()
    return lambda: 1_700_000_000.0 + next(counter)


def test_watcher_records_the_address_timeline(server: KubeServer, api: Any, tmp_path: Path) -> None:
    create(
        api,
        "nodes",
        {"metadata": {"name": "node-1"}, "status": {"addresses": [{"type": "InternalIP", "address": "192.168.49.2"}]}},
        namespace=None,
    )
    create(api, "namespaces", {"metadata": {"name": NS}}, namespace=None)
    create(api, "services", service("web", "10.96.0.20", {"app": "web"}))
    create(api, "pods", pod("other", "10.244.0.9"), namespace="elsewhere")  # not a watched namespace
    out = tmp_path / "run" / "entities.jsonl"
    watcher = EntityWatcher(api, [NS], out, clock=ticking())
    t0 = watcher.start()
    assert [(e["kind"], e["name"], e["ts"]) for e in lines(out)] == [("node", "node-1", t0), ("service", "web", t0)]

    rs_owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d4b9", "controller": True, "uid": "u"}
    create(
        api, "pods", pod("web-7d4b9-x1", None, {"app": "web", "pod-template-hash": "7d4b9"}, ownerReferences=[rs_owner])
    )
    change(
        api,
        "pods",
        "web-7d4b9-x1",
        {"status": {"phase": "Running", "podIP": "10.244.0.5", "podIPs": [{"ip": "10.244.0.5"}]}},
    )
    create(
        api,
        "endpoints",
        {
            "metadata": {"name": "web"},
            "subsets": [{"addresses": [{"ip": "10.244.0.5"}], "notReadyAddresses": [{"ip": "10.244.0.6"}]}],
        },
    )
    delete(api, "pods", "web-7d4b9-x1")
    found = wait_lines(out, 6)
    stats = watcher.stop()

    pods = [e for e in found if e["kind"] == "pod"]
    assert [(e["event"], e["ips"], e["phase"]) for e in pods] == [
        ("added", [], "Pending"),
        ("modified", ["10.244.0.5"], "Running"),
        ("deleted", ["10.244.0.5"], "Running"),
    ]
    assert {(e["owner"], e["app"], e["namespace"], e["node"]) for e in pods} == {
        ("deployment/web", "web", NS, "node-1")
    }
    endpoints = next(e for e in found if e["kind"] == "endpoints")
    assert (endpoints["ips"], endpoints["not_ready_ips"], endpoints["app"]) == (["10.244.0.5"], ["10.244.0.6"], "web")
    times = [e["ts"] for e in found]
    assert times[2:] == sorted(times[2:]) and len(set(times[2:])) == len(times[2:])
    assert stats["events"] == {"node": 1, "service": 1, "pod": 3, "endpoints": 1}
    assert stats["start"] == t0 and stats["stop"] > times[-1]

    spans = timeline(read_events(out))  # endpoints are accepted and stay out of the address timeline
    modified, deleted = pods[1]["ts"], pods[2]["ts"]
    pod_span = spans[spans["ip"] == "10.244.0.5"]
    assert pod_span[["start", "end", "kind", "service"]].values.tolist() == [[modified, deleted, "pod", "web"]]
    assert spans[spans["ip"] == "10.96.0.20"][["start", "end", "kind"]].values.tolist() == [[t0, np.inf, "vip"]]
    assert spans[spans["ip"] == "192.168.49.2"]["start"].tolist() == [t0]
    held = resolve(pd.Series(["10.244.0.5"] * 3), pd.Series([modified - 0.5, modified + 0.5, deleted]), spans)
    assert held["entity"].isna().tolist() == [True, False, True]
    assert held["entity"][1] == f"{NS}/web-7d4b9-x1"


def test_entity_events_for_other_owners_and_host_network() -> None:
    owner = [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": True}]
    stateful = entity_event(
        "pod", "added", pod("db-0", "10.244.0.7", {"k8s-app": "database"}, namespace=NS, ownerReferences=owner), 5.0
    )
    assert (stateful["owner"], stateful["app"], stateful["ips"]) == ("statefulset/db", "database", ["10.244.0.7"])
    host = pod("kube-proxy-abc", "192.168.49.2", namespace="kube-system")
    host["spec"]["hostNetwork"] = True
    proxy = entity_event("pod", "added", host, 5.0)
    assert (proxy["ips"], proxy["host_network"], proxy["host_ip"]) == ([], True, "192.168.49.2")
    headless = entity_event("service", "added", service("db", "None", {"app": "db"}), 5.0)
    assert (headless["ips"], headless["selector"], headless["type"]) == ([], {"app": "db"}, "ClusterIP")


def test_watcher_resumes_a_dropped_stream_without_loss_or_repetition(
    server: KubeServer, api: Any, tmp_path: Path
) -> None:
    create(api, "services", service("web", "10.96.0.20", {"app": "web"}))
    out = tmp_path / "entities.jsonl"
    watcher = EntityWatcher(api, [NS], out, clock=ticking())
    watcher.start()
    create(api, "pods", pod("a", "10.244.0.5"))
    wait_lines(out, 2)
    wait_until(lambda: server.open_watches() == 4, "all four watches open")
    with server.hold_watches():  # connections cut; the watcher cannot get back in while we change things
        change(api, "pods", "a", {"metadata": {"labels": {"v": "2"}}})
        create(api, "pods", pod("b", "10.244.0.6"))
        delete(api, "services", "web")
    wait_lines(out, 5)
    stats = watcher.stop()
    found = lines(out)  # everything written, read after the watches ended: no repetition can hide

    # each resource's stream keeps its order; the streams reconnect independently of each other
    assert [(e["event"], e["name"]) for e in found if e["kind"] == "pod"] == [
        ("added", "a"),
        ("modified", "a"),
        ("added", "b"),
    ]
    assert [(e["event"], e["name"]) for e in found if e["kind"] == "service"] == [("added", "web"), ("deleted", "web")]
    assert len(found) == 5
    assert next(e for e in found if e["event"] == "modified")["labels"] == {"v": "2"}
    assert stats["reconnects"] >= 4 and stats["relists"] == 0
    resumed = [version for plural, version in server.emulator.watch_requests if plural == "pods"]
    assert resumed[-1] == found[1]["resource_version"]  # resumed where it stopped, not from the start


def test_watcher_relists_after_410_gone_and_writes_the_difference(server: KubeServer, api: Any, tmp_path: Path) -> None:
    create(api, "pods", pod("a", "10.244.0.5"))
    create(api, "pods", pod("b", "10.244.0.6"))
    create(api, "pods", pod("c", "10.244.0.7"))
    out = tmp_path / "entities.jsonl"
    watcher = EntityWatcher(api, [NS], out, clock=ticking())
    t0 = watcher.start()
    wait_until(lambda: server.open_watches() == 4, "all four watches open")
    with server.hold_watches():
        delete(api, "pods", "a")
        change(api, "pods", "b", {"status": {"podIP": "10.244.0.16", "podIPs": [{"ip": "10.244.0.16"}]}})
        delete(api, "pods", "c")
        create(api, "pods", pod("c", "10.244.0.8"))  # same name, a new pod
        create(api, "pods", pod("d", "10.244.0.9"))
        server.compact()  # the versions the watcher holds are gone from the server's history
    found = wait_lines(out, 8)
    wait_until(lambda: watcher.stats["relists"] == 4, "every stream to relist")  # only pods had differences
    stats = watcher.stop()

    relisted = found[3:]
    assert [(e["event"], e["name"], e["ips"]) for e in relisted] == [
        ("deleted", "a", ["10.244.0.5"]),
        ("deleted", "c", ["10.244.0.7"]),
        ("modified", "b", ["10.244.0.16"]),
        ("added", "c", ["10.244.0.8"]),
        ("added", "d", ["10.244.0.9"]),
    ]
    assert len({e["ts"] for e in relisted}) == 1 and relisted[0]["ts"] > t0  # stamped at the relisting
    assert stats["relists"] == 4 and lines(out) == found
    spans = timeline(read_events(out))
    c_spans = spans[spans["entity"] == f"{NS}/c"].sort_values("start")
    assert c_spans["ip"].tolist() == ["10.244.0.7", "10.244.0.8"]
    assert c_spans["end"].tolist() == [relisted[0]["ts"], np.inf]


def test_watcher_lists_every_namespace_when_none_is_given(api: Any, tmp_path: Path) -> None:
    create(api, "pods", pod("a", "10.244.0.5"))
    create(api, "pods", pod("dns", "10.244.0.2"), namespace="kube-system")
    watcher = EntityWatcher(api, None, tmp_path / "e.jsonl")
    watcher.start()
    stats = watcher.stop()
    assert sorted((e["namespace"], e["name"]) for e in lines(tmp_path / "e.jsonl")) == [
        ("kube-system", "dns"),
        (NS, "a"),
    ]
    assert set(stats["resource_versions"]) == {"pods", "services", "endpoints", "nodes"}


# --- RBAC ------------------------------------------------------------------------------------------------------


def test_watcher_rbac_allows_only_list_and_watch(api: Any) -> None:
    documents = manifests.load_manifests(REPO / "config" / "k8s" / "rbac")
    roles = [o for o in documents if o["kind"] in ("ClusterRole", "Role")]
    assert roles and all(set(rule["verbs"]) == {"list", "watch"} for role in roles for rule in role["rules"])
    covered = {(g, r) for role in roles for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("", "pods"), ("", "services"), ("", "endpoints"), ("", "nodes")} <= covered
    binding = next(o for o in documents if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mimir-watcher", "namespace": "mimir"}]
    refs = objects.deploy(api, documents, "default")
    assert [r.kind for r in refs] == ["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding"]
    assert objects.teardown(api, refs, timeout=10) == []
