"""What a collection learns from the cluster: the load generator's entry URL, and what run.json records (versions,
nodes and their pod ranges, workload images, the service network's known addresses)."""

from __future__ import annotations

import ipaddress
from typing import Any

from kubernetes import client

from mimir.errors import ApiStatusError, ClusterError
from mimir.sources.cluster.kube import collection_path, request_json
from mimir.sources.cluster.workloads import JOBS, WORKLOADS


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
