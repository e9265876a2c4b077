"""The Kubernetes layer of the cluster source, against an emulated API server on loopback (tests/kmockserver.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kmockserver import KubeServer, node_object

from mimir.errors import ApiStatusError, ClusterError, IOFailure, ManifestError, UsageError
from mimir.sources.cluster import facts, kube, manifests, objects, workloads

NS = "shop"


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 20) -> Any:
    """Wait for a condition another thread brings about (the emulator or a watcher)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return value


def workload(kind: str, name: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": f"shop/{name}:1.2"}]}}
    spec: dict[str, Any] = {"template": template}
    if kind != "Job":
        spec |= {"replicas": replicas, "selector": {"matchLabels": labels}}
    api_version = "batch/v1" if kind == "Job" else "apps/v1"
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}


def write_manifests(folder: Path) -> None:
    """A small application in three files, deliberately out of dependency order."""
    folder.mkdir()
    (folder / "10-workloads.yaml").write_text(
        yaml.safe_dump_all([workload("Deployment", "web"), workload("StatefulSet", "db", 1), workload("Job", "seed")])
    )
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 3,
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {
            "type": "NodePort",
            "selector": {"app": "web"},
            "ports": [{"port": 80, "targetPort": 8080, "nodePort": 30080}],
        },
    }
    (folder / "20-rest.yaml").write_text(
        yaml.safe_dump_all(
            [hpa, service, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "data": {"k": "1"}}]
        )
        + "---\n"  # an empty trailing document is allowed
    )
    (folder / "00-namespace.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    )


def get(api: Any, path: str) -> dict[str, Any] | None:
    try:
        return kube.request_json(api, "GET", path)
    except ApiStatusError as e:
        assert e.status == 404
        return None


def patch_status(api: Any, api_version: str, plural: str, name: str, status: dict[str, Any]) -> None:
    path = f"{kube.collection_path(api_version, plural, NS)}/{name}/status"
    kube.request_json(api, "PATCH", path, body={"status": status})


# --- manifests, deploy, scale, autoscale, teardown --------------------------------------------------------------


def test_manifests_load_in_file_order_and_bad_ones_are_named(tmp_path: Path) -> None:
    write_manifests(tmp_path / "app")
    documents = manifests.load_manifests(tmp_path / "app")
    assert [o["kind"] for o in documents] == [
        "Namespace",
        "Deployment",
        "StatefulSet",
        "Job",
        "HorizontalPodAutoscaler",
        "Service",
        "ConfigMap",
    ]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  labels: [unclosed\n")
    with pytest.raises(ManifestError, match=r"a\.yaml, line \d+"):
        manifests.load_manifests(bad)
    (bad / "a.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\nkind: Service\n")
    with pytest.raises(ManifestError, match=r"a\.yaml: document 1: .*metadata\.name"):
        manifests.load_manifests(bad)
    with pytest.raises(IOFailure, match="nowhere"):
        manifests.load_manifests(tmp_path / "nowhere")


def test_deploy_creates_in_dependency_order_reruns_and_tears_down(api: Any, tmp_path: Path) -> None:
    write_manifests(tmp_path / "app")
    documents = manifests.load_manifests(tmp_path / "app")
    refs = objects.deploy(api, documents, NS)
    assert [r.kind for r in refs] == [
        "Namespace",
        "ConfigMap",
        "Service",
        "Deployment",
        "StatefulSet",
        "HorizontalPodAutoscaler",
        "Job",
    ]
    assert refs[0].namespace is None and all(r.namespace == NS for r in refs[1:])
    for ref in refs[1:]:
        plural = {"HorizontalPodAutoscaler": "horizontalpodautoscalers", "StatefulSet": "statefulsets"}.get(
            ref.kind, ref.kind.lower() + "s"
        )
        found = get(api, f"{kube.collection_path(ref.api_version, plural, NS)}/{ref.name}")
        assert found is not None and found["metadata"]["namespace"] == NS, ref

    changed = [dict(o, data={"k": "2"}) if o["kind"] == "ConfigMap" else o for o in documents]
    assert objects.deploy(api, changed, NS) == refs  # a rerun updates what exists
    assert get(api, f"/api/v1/namespaces/{NS}/configmaps/cfg")["data"] == {"k": "2"}

    assert objects.teardown(api, refs, timeout=10) == []
    assert get(api, f"/apis/apps/v1/namespaces/{NS}/deployments/web") is None
    assert get(api, f"/api/v1/namespaces/{NS}") is None
    assert objects.teardown(api, refs, timeout=10) == []  # already gone is fine


def test_deploy_names_an_unknown_kind(api: Any) -> None:
    thing = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(ClusterError, match=r"Widget in example\.com/v1"):
        objects.deploy(api, [thing], NS)


def test_scale_and_autoscale(api: Any, tmp_path: Path) -> None:
    write_manifests(tmp_path / "app")
    refs = objects.deploy(api, manifests.load_manifests(tmp_path / "app"), NS)
    workloads.scale(api, NS, {"web": 4, "db": 3})
    assert get(api, f"/apis/apps/v1/namespaces/{NS}/deployments/web")["spec"]["replicas"] == 4
    assert get(api, f"/apis/apps/v1/namespaces/{NS}/statefulsets/db")["spec"]["replicas"] == 3
    with pytest.raises(ClusterError, match="no Deployment or StatefulSet named nope"):
        workloads.scale(api, NS, {"nope": 1})
    with pytest.raises(UsageError, match="web"):
        workloads.scale(api, NS, {"web": -1})

    hpas = workloads.autoscale(api, NS, {"web": (2, 6, 70), "db": (1, 2, 50)})
    assert [(r.kind, r.name, r.namespace) for r in hpas] == [
        ("HorizontalPodAutoscaler", "web", NS),
        ("HorizontalPodAutoscaler", "db", NS),
    ]
    hpa_path = f"/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers"
    web = get(api, f"{hpa_path}/web")["spec"]
    assert (web["minReplicas"], web["maxReplicas"]) == (2, 6)  # the manifest's HPA was updated, not duplicated
    assert web["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}
    assert web["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert get(api, f"{hpa_path}/db")["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    with pytest.raises(UsageError, match="db"):
        workloads.autoscale(api, NS, {"db": (3, 2, 50)})
    assert objects.teardown(api, refs + hpas, timeout=10) == []
    assert get(api, f"{hpa_path}/db") is None


# --- readiness -------------------------------------------------------------------------------------------------


def deploy_app(api: Any, tmp_path: Path) -> list[objects.ObjectRef]:
    write_manifests(tmp_path / "app")
    return objects.deploy(api, manifests.load_manifests(tmp_path / "app"), NS)


def in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_wait_ready_returns_when_the_workloads_become_ready(server: KubeServer, api: Any, tmp_path: Path) -> None:
    deploy_app(api, tmp_path)
    workloads.scale(api, NS, {"web": 3})  # a new generation: readiness must be observed at it
    controller = server.client()

    def play_controllers() -> None:
        wait_until(lambda: server.open_watches() >= 3, "wait_ready to watch")
        patch_status(controller, "apps/v1", "deployments", "web", {"readyReplicas": 3, "observedGeneration": 1})
        patch_status(controller, "apps/v1", "statefulsets", "db", {"readyReplicas": 1, "observedGeneration": 1})
        patch_status(controller, "batch/v1", "jobs", "seed", {"conditions": [{"type": "Complete", "status": "True"}]})
        patch_status(controller, "apps/v1", "deployments", "web", {"observedGeneration": 2})

    seen: list[str] = []
    thread = in_thread(play_controllers)
    workloads.wait_ready(api, NS, None, timeout=60, progress=seen.append)
    thread.join()
    assert sorted(seen) == ["deployment/web 3/3 ready", "job/seed complete", "statefulset/db 1/1 ready"]
    deployment = get(api, f"/apis/apps/v1/namespaces/{NS}/deployments/web")
    assert deployment["status"]["observedGeneration"] == deployment["metadata"]["generation"] == 2


def test_wait_ready_timeout_names_what_is_not_ready(api: Any, tmp_path: Path) -> None:
    deploy_app(api, tmp_path)
    patch_status(api, "apps/v1", "deployments", "web", {"readyReplicas": 1, "observedGeneration": 1})
    patch_status(api, "apps/v1", "statefulsets", "db", {"readyReplicas": 1, "observedGeneration": 1})
    with pytest.raises(ClusterError, match=r"deployment/web 1/2 ready.*missing \(no Deployment") as caught:
        workloads.wait_ready(api, NS, ["web", "db", "missing"], timeout=0.5)
    assert "statefulset/db" not in str(caught.value)


def test_wait_ready_raises_on_a_failed_job(server: KubeServer, api: Any, tmp_path: Path) -> None:
    deploy_app(api, tmp_path)
    controller = server.client()

    def fail_the_job() -> None:
        wait_until(lambda: server.open_watches() >= 3, "wait_ready to watch")
        failed = {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "3 failures"}
        patch_status(controller, "batch/v1", "jobs", "seed", {"conditions": [failed]})

    thread = in_thread(fail_the_job)
    with pytest.raises(ClusterError, match="job/seed failed: BackoffLimitExceeded"):
        workloads.wait_ready(api, NS, ["seed"], timeout=60)
    thread.join()


def test_entry_url_and_cluster_facts(api: Any, tmp_path: Path) -> None:
    deploy_app(api, tmp_path)
    node = node_object("node-1", "192.168.49.2", ("v1.30.4", "containerd://1.7.2", "Debian 12"), hostname=True)
    kube.request_json(api, "POST", "/api/v1/nodes", body=node)
    dns = {"metadata": {"name": "kube-dns"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53}]}}
    kube.request_json(api, "POST", "/api/v1/namespaces/kube-system/services", body=dns)
    assert facts.entry_url(api, NS, "web") == "http://192.168.49.2:30080"
    assert facts.entry_url(api, NS, "web", node_address="fd00::2") == "http://[fd00::2]:30080"
    kube.request_json(
        api,
        "POST",
        f"/api/v1/namespaces/{NS}/services",
        body={"metadata": {"name": "db"}, "spec": {"ports": [{"port": 3306}]}},
    )
    with pytest.raises(ClusterError, match="service db in namespace shop is ClusterIP"):
        facts.entry_url(api, NS, "db")

    found = facts.cluster_facts(api, [NS])
    assert found["server_version"]  # whatever the server reports
    assert found["nodes"] == [
        {
            "name": "node-1",
            "kubelet_version": "v1.30.4",
            "container_runtime": "containerd://1.7.2",
            "os_image": "Debian 12",
            "kernel": "6.1.0",
            "internal_ip": "192.168.49.2",
            "internal_ips": ["192.168.49.2"],
            "pod_cidrs": ["10.244.0.0/24"],
        }
    ]
    images = {(w["kind"], w["name"]): w["images"] for w in found["workloads"]}
    assert images == {
        ("Deployment", "web"): ["shop/web:1.2"],
        ("StatefulSet", "db"): ["shop/db:1.2"],
        ("Job", "seed"): ["shop/seed:1.2"],
    }
    assert found["kubernetes_service_ip"] is None  # the emulator has no `kubernetes` service
    assert found["kube_dns"] == "10.96.0.10"


def test_connect_names_what_failed(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"http://127\.0\.0\.1:9.*did not answer"):
        kube.connect(host="http://127.0.0.1:9")
    with pytest.raises(ClusterError, match="no-such-config"):
        kube.connect(kubeconfig=tmp_path / "no-such-config")
    broken = tmp_path / "config"
    broken.write_text(
        yaml.safe_dump(
            {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": [], "current-context": ""}
        )
    )
    with pytest.raises(ClusterError, match=r"kubeconfig .*config, context elsewhere"):
        kube.connect(kubeconfig=broken, context="elsewhere")
