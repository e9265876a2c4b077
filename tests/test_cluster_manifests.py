"""The pinned Kubernetes manifests and locustfiles of the three applications, checked without a cluster.

Each document is checked against the official client's own model of its kind (its field names and OpenAPI
types, recursively): an unknown field or a wrong type is refused; the application topologies of config/apps are
the reference for names, namespaces and the entry point. Locustfiles are read with `ast`, so Locust is never
imported here.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import models

from mimir.apps import BEHAVIOURS, load_app
from mimir.sources.cluster.collect import POPULATE_PHASE, app_secrets, split_populate

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "config" / "k8s"
LOCUSTFILES = ROOT / "src" / "mimir" / "sources" / "cluster" / "locustfiles"
ENTRY_NODE_PORTS = {"sockshop": 30001, "wordpress": 30080, "online-boutique": 30002}
APPS = sorted(ENTRY_NODE_PORTS)
KINDS = {
    ("v1", "Namespace"): models.V1Namespace,
    ("v1", "Service"): models.V1Service,
    ("v1", "ServiceAccount"): models.V1ServiceAccount,
    ("v1", "ConfigMap"): models.V1ConfigMap,
    ("v1", "Secret"): models.V1Secret,
    ("apps/v1", "Deployment"): models.V1Deployment,
    ("apps/v1", "StatefulSet"): models.V1StatefulSet,
    ("batch/v1", "Job"): models.V1Job,
}
WORKLOADS = ("Deployment", "StatefulSet")
LOCUST_IMPORTS = {"locust", "mimir.sources.cluster.locust_support", "mimir.sources.cluster.populate"}
LOCUST_HOOKS = {"on_start", "on_stop"}


PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "datetime": (str,),
    "date": (str,),
    "object": (object,),  # int-or-string ports, free-form JSON
}
QUANTITY = (str, int, float)  # `cpu: 1` is a quantity as much as `cpu: "1"` (the API server takes both)


def check_against(data: Any, kind: str, where: str) -> None:
    """Raise ValueError unless `data` fits the client's type `kind` ('V1Deployment', 'list[V1Container]',
    'dict(str, str)', 'int', ...): every key a field of the model, every value of its field's type."""
    if kind.startswith("list["):
        if not isinstance(data, list):
            raise ValueError(f"{where}: a list expected, not {data!r}")
        for i, item in enumerate(data):
            check_against(item, kind[5:-1], f"{where}[{i}]")
    elif kind.startswith("dict("):
        check_mapping(data, kind[5:-1].split(", ", 1)[1], where)
    elif kind in PRIMITIVES:
        wrong_bool = isinstance(data, bool) and kind in ("int", "float")
        if wrong_bool or not isinstance(data, PRIMITIVES[kind]):
            raise ValueError(f"{where}: {kind} expected, not {data!r}")
    else:
        check_model(data, getattr(models, kind), where)


def check_mapping(data: Any, values: str, where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a mapping expected, not {data!r}")
    quantities = values == "str" and where.endswith(("limits", "requests"))
    for key, value in data.items():
        if not quantities:
            check_against(value, values, f"{where}.{key}")
        elif not isinstance(value, QUANTITY):
            raise ValueError(f"{where}.{key}: a quantity expected, not {value!r}")


def check_model(data: Any, model: type, where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a {model.__name__} mapping expected, not {data!r}")
    fields = {name: attribute for attribute, name in model.attribute_map.items()}
    for key, value in data.items():
        if key not in fields:
            raise ValueError(f"{where}: {key!r} is not a field of {model.__name__}")
        if value is not None:
            check_against(value, model.openapi_types[fields[key]], f"{where}.{key}")


def documents(app: str) -> list[tuple[Path, dict[str, Any]]]:
    """Every document of the app's manifests, in the order the collector applies them (file name order)."""
    found = []
    for path in sorted((MANIFESTS / app).glob("*.yaml")):
        found += [(path, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return found


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in (*WORKLOADS, "Job"):
        return [doc["spec"]["template"]["spec"]]
    return []


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for spec in pod_specs(doc) for c in spec.get("initContainers", []) + spec["containers"]]


def named(app: str, kind: str, name: str) -> dict[str, Any] | None:
    matches = [d for _, d in documents(app) if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) <= 1, f"{app}: {len(matches)} {kind} objects named {name}"
    return matches[0] if matches else None


@pytest.mark.parametrize("app", APPS)
def test_every_document_is_a_known_kind_the_client_accepts(app: str) -> None:
    docs = documents(app)
    assert docs, f"no manifests for {app}"
    for path, doc in docs:
        where = f"{path.name}: {doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        assert {"apiVersion", "kind", "metadata"} <= doc.keys(), where
        assert doc["metadata"].get("name"), where
        key = (doc["apiVersion"], doc["kind"])
        assert key in KINDS, f"{where}: unexpected {key}"
        check_against(doc, KINDS[key].__name__, where)


def test_the_client_model_rejects_a_misspelt_field() -> None:
    """The validation above is a real check: a typo in a probe is refused."""
    doc = named("sockshop", "Deployment", "front-end")
    assert doc is not None
    broken = yaml.safe_load(yaml.safe_dump(doc))
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessprobe"] = container.pop("readinessProbe")
    with pytest.raises(ValueError, match="readinessprobe"):
        check_against(broken, "V1Deployment", "front-end")


@pytest.mark.parametrize("app", APPS)
def test_images_are_pinned(app: str) -> None:
    for path, doc in documents(app):
        for container in containers(doc):
            image = container["image"]
            where = f"{path.name}: {doc['metadata']['name']}/{container['name']}: {image}"
            if "@sha256:" in image:
                continue
            name, _, tag = image.rpartition(":")
            assert name and "/" not in tag, f"{where}: no tag"
            assert tag != "latest", f"{where}: 'latest' is not a version"
            assert any(ch.isdigit() for ch in tag), f"{where}: the tag names no version"


@pytest.mark.parametrize("app", APPS)
def test_every_service_of_the_topology_has_a_workload_and_a_service(app: str) -> None:
    topology = load_app(app)
    namespaced = [d for _, d in documents(app) if d["kind"] != "Namespace"]
    assert {d["metadata"].get("namespace", topology.namespace) for d in namespaced} == {topology.namespace}
    for name in topology.services:
        service = named(app, "Service", name)
        workloads = [w for kind in WORKLOADS if (w := named(app, kind, name))]
        assert service is not None, f"{app}: no Service {name}"
        assert len(workloads) == 1, f"{app}: no Deployment or StatefulSet {name}"
        workload = workloads[0]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"] == labels, f"{app}: Service {name} selects other pods"
        assert workload["spec"]["selector"]["matchLabels"] == labels, f"{app}: {name} selector"
        # The model's port is the Service's (or, for the Sock Shop front-end, the pods' port behind it).
        ports = {p["port"] for p in service["spec"]["ports"]} | {p.get("targetPort") for p in service["spec"]["ports"]}
        assert topology.services[name].port in ports, f"{app}: Service {name} lacks port {topology.services[name].port}"


@pytest.mark.parametrize("app", APPS)
def test_the_entry_is_a_fixed_node_port(app: str) -> None:
    topology = load_app(app)
    entry = named(app, "Service", topology.entry)
    assert entry is not None
    assert entry["spec"]["type"] == "NodePort"
    assert [p.get("nodePort") for p in entry["spec"]["ports"]] == [ENTRY_NODE_PORTS[app]]
    others = [d for _, d in documents(app) if d["kind"] == "Service" and d["metadata"]["name"] != topology.entry]
    assert all(d["spec"].get("type", "ClusterIP") == "ClusterIP" for d in others)


@pytest.mark.parametrize("app", APPS)
def test_every_container_requests_cpu_and_memory(app: str) -> None:
    for path, doc in documents(app):
        for container in containers(doc):
            requests = (container.get("resources") or {}).get("requests") or {}
            assert {"cpu", "memory"} <= requests.keys(), f"{path.name}: {container['name']} requests {requests}"


@pytest.mark.parametrize("app", APPS)
def test_no_secret_values_and_no_autoscalers_in_the_repository(app: str) -> None:
    for path, doc in documents(app):
        assert doc["kind"] != "HorizontalPodAutoscaler", f"{path.name}: the collector creates the autoscalers"
        if doc["kind"] == "Secret":
            assert not doc.get("data") and not doc.get("stringData"), f"{path.name}: a Secret with values"


@pytest.mark.parametrize("app", APPS)
def test_referenced_secrets_are_the_ones_the_collector_creates(app: str) -> None:
    created, _ = app_secrets(load_app(app))
    provided = {(s["metadata"]["name"], key) for s in created for key in s["stringData"]}
    for path, doc in documents(app):
        for container in containers(doc):
            for variable in container.get("env", []):
                ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in provided, f"{path.name}: {container['name']} needs {ref}"


@pytest.mark.parametrize("app", APPS)
def test_only_the_wordpress_populate_job_waits_for_the_populate_phase(app: str) -> None:
    docs = documents(app)
    _, later = split_populate([d for _, d in docs])
    if app != "wordpress":
        assert later == []
        return
    assert [(d["kind"], d["metadata"]["name"]) for d in later] == [("Job", "wordpress-populate")]
    assert later[0]["metadata"]["annotations"][POPULATE_PHASE] == "populate"
    assert docs[-1][1] is later[0], "the populate Job must be in the file applied last"
    env = {e["name"] for c in containers(later[0]) for e in c.get("env", [])}
    assert {"WORDPRESS_USERS", "WORDPRESS_POSTS", "WORDPRESS_COMMENTS"} <= env


def locust_user_classes(path: Path) -> tuple[ast.Module, list[ast.ClassDef]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    users = [
        node
        for node in tree.body
        if isinstance(node, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id == "MixUser" for b in node.bases)
    ]
    return tree, users


@pytest.mark.parametrize("app", APPS)
def test_locustfile_defines_one_user_with_exactly_the_apps_behaviours(app: str) -> None:
    path = LOCUSTFILES / f"{app.replace('-', '_')}.py"
    tree, users = locust_user_classes(path)
    assert len(users) == 1, f"{path.name}: {len(users)} MixUser subclasses"
    public = {
        node.name
        for node in users[0].body
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("_") and node.name not in LOCUST_HOOKS
    }
    behaviours = set(load_app(app).requests)
    assert behaviours == set(BEHAVIOURS)
    assert public == behaviours, f"{path.name}: behaviours {sorted(public)}"
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module != "__future__"
    } | {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    third_party = {m for m in imported if m.split(".")[0] not in {"re", "typing", "urllib"}}
    assert third_party <= LOCUST_IMPORTS, f"{path.name}: imports {sorted(third_party - LOCUST_IMPORTS)}"
    shape = [
        node
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        and node.module == "mimir.sources.cluster.locust_support"
        and any(a.name == "DailyCurveShape" for a in node.names)
    ]
    assert shape, f"{path.name}: DailyCurveShape is not imported, so Locust would not follow the daily curve"


def shell_scripts(doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(where, shell, text) of every script a document carries: ConfigMap files with a shebang, `sh -c` commands."""
    found = []
    if doc["kind"] == "ConfigMap":
        for key, text in (doc.get("data") or {}).items():
            if text.startswith("#!"):
                found.append((key, Path(text.splitlines()[0][2:].split()[0]).name, text))
    for container in containers(doc):
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if len(argv) >= 3 and Path(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
            found.append((container["name"], Path(argv[0]).name, argv[2]))
    return found


@pytest.mark.parametrize("app", APPS)
def test_embedded_shell_scripts_parse(app: str) -> None:
    """The scripts run in containers only on a real cluster; here the shell at least parses each (dash for sh)."""
    for path, doc in documents(app):
        for where, shell, text in shell_scripts(doc):
            checker = "dash" if shell == "sh" else "bash"
            done = subprocess.run([checker, "-n"], input=text, capture_output=True, text=True, check=False)
            assert done.returncode == 0, f"{path.name}: {doc['metadata']['name']}: {where}: {done.stderr}"
