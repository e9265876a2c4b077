"""The address plan of a one-node Kubernetes cluster, defined once for every source of runs.

These are the defaults of kubeadm and minikube (docker driver): the synthetic source builds its addresses from
them, the collector assumes them unless told otherwise, and the prototype's imported runs used the same service
range.
"""

from __future__ import annotations

import ipaddress

DNS_SERVICE = "kube-dns"  # the cluster DNS service's name
# the classes of entity an address resolves to (docs/architecture.md#edges)
POD, VIP, INGRESS, OUTSIDE, INFRA, UNKNOWN = "pod", "vip", "ingress", "outside", "infra", "unknown"

SERVICE_NETWORK = "10.96.0.0/12"  # --service-cluster-ip-range of kubeadm and minikube
POD_NETWORK = "10.244.0.0/16"  # the bridge CNI's pod range on minikube
KUBE_DNS_VIP = "10.96.0.10"  # the tenth address of the service range, by convention
NODE_IP = "192.168.49.2"  # minikube's node on its docker network
POD_GATEWAY = "10.244.0.1"  # the node's address on the pod bridge: kubelet probes and SNAT-ed NodePort traffic
API_VIP = "10.96.0.1"  # the `kubernetes` service: the first address of the service range
API_PORT = 8443  # minikube's API server port on the node, behind the `kubernetes` VIP's port 443
LOOPBACK = "127.0.0.1"  # the node's loopback: the API server talks to etcd there
LOAD_GENERATOR_IP = "192.168.49.1"  # the host side of that network, where Locust runs
EXFIL_DESTINATION = "203.0.113.66"  # TEST-NET-3: the world, as the attacker's server
ATTACKER_CLIENT = "203.0.113.77"  # the world, as the attacker's web client pulling data through the front door
EPHEMERAL_PORTS = (32768, 61000)  # Linux's ip_local_port_range, as [low, high): the client ports of connections


def ipv4_int(text: str) -> int:
    """An IPv4 address as the integer the synthetic source computes with."""
    return int(ipaddress.IPv4Address(text))
