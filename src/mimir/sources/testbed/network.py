"""The testbed's network: a node namespace, pods as namespaces on its bridge, Services as nftables DNAT VIPs.

The node holds the pod bridge (the pod range's first address, as on a minikube node), routes between the pods,
the load generator's link (the minikube docker network: node 192.168.49.2, host 192.168.49.1) and an uplink to
the `outside` namespace (the world, behind SNAT). Nothing links to the root namespace and the node has no default
route, so no packet can leave the testbed. Each Service is a VIP whose nftables rule picks an endpoint at random
for every new connection, as kube-proxy does; a NodePort on every node address reaches the entry Service with
SNAT, so the pod sees the bridge gateway (docs/architecture.md#testbed).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from mimir import network
from mimir.errors import TestbedError
from mimir.sources.testbed.processes import NETNS_ETC, State, in_netns, kill_namespace, run

BRIDGE = "cni0"
UPLINK = "uplink"  # the node's link to the world
LOADGEN_LINK = "eth0"  # the node's link to the load generator (the minikube docker network)
OUTSIDE_GATEWAY = "203.0.113.1"  # the node's address on the uplink: what the world sees after SNAT
OUTSIDE_RESOLVER = "203.0.113.53"  # the upstream resolver cluster DNS forwards to
OUTSIDE_NETWORK = "203.0.113.0/24"  # TEST-NET-3: the world (network.EXFIL_DESTINATION is in it)
NODE_PORT = 30080
NODEPORT_MARK = 0x4000  # kube-proxy's masquerade mark


@dataclass
class Service:
    """A Service: its VIP, ports (VIP port -> target port, per protocol) and current endpoint addresses."""

    name: str
    namespace: str
    vip: str
    ports: list[tuple[str, int, int]]  # (tcp|udp, port, target port)
    selector: dict[str, str]
    endpoints: list[str] = field(default_factory=list)
    node_port: int | None = None


@dataclass
class Pod:
    name: str
    namespace: str  # the Kubernetes namespace (default, kube-system)
    netns: str
    ip: str
    link: str  # its veth's name on the node
    labels: dict[str, str]
    owner: str  # deployment/NAME or statefulset/NAME

    @property
    def service(self) -> str:
        """The Service whose selector picks this pod (the testbed's selectors use `app`, or `k8s-app` for DNS)."""
        return self.labels.get("app") or self.labels.get("k8s-app") or ""


class Network:
    """Namespaces, links and VIP rules of one testbed; every namespace is recorded in `state` before it exists."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.prefix = state.name
        self.node = f"{self.prefix}-node"
        self.loadgen = f"{self.prefix}-lg"
        self.outside = f"{self.prefix}-out"
        self.pods: dict[str, Pod] = {}
        self.services: dict[str, Service] = {}
        self._pod_net = ipaddress.ip_network(network.POD_NETWORK)
        self._free: list[str] = []  # released pod addresses, reused lowest first (a restarted pod may get its own)
        self._next = 2
        self._links = 0

    # namespaces --------------------------------------------------------------------------------------------------
    def _add_netns(self, name: str, etc: dict[str, str] | None = None) -> None:
        self.state.namespaces.append(name)
        self.state.save()
        folder = NETNS_ETC / name
        for file, text in (etc or {}).items():
            (folder / file).parent.mkdir(parents=True, exist_ok=True)
            (folder / file).write_text(text)
        run(["ip", "netns", "add", name], what=f"creating namespace {name}")
        # no router solicitations or neighbour discovery in the capture; loopback up for local daemons
        run(
            in_netns(
                name, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
            ),
            what=f"{name}: sysctl",
        )
        run(["ip", "-n", name, "link", "set", "lo", "up"], what=f"{name}: loopback")

    def create(self) -> None:
        """The node (bridge, forwarding, NAT), the load generator and the world, linked to the node only."""
        self._add_netns(self.node)
        self._add_netns(self.loadgen)
        self._add_netns(self.outside)
        gateway = f"{network.POD_GATEWAY}/{self._pod_net.prefixlen}"
        node_batch = [
            f"link add {BRIDGE} type bridge",
            f"addr add {gateway} dev {BRIDGE}",
            f"link set {BRIDGE} up",
        ]
        run(["ip", "-n", self.node, "-b", "-"], input="\n".join(node_batch) + "\n", what="node bridge")
        for peer, link, node_ip, peer_ips in (
            (self.loadgen, LOADGEN_LINK, network.NODE_IP, [network.LOAD_GENERATOR_IP]),
            (
                self.outside,
                UPLINK,
                OUTSIDE_GATEWAY,
                [network.EXFIL_DESTINATION, OUTSIDE_RESOLVER, network.ATTACKER_CLIENT],
            ),
        ):
            run(
                ["ip", "link", "add", "eth0", "netns", peer, "type", "veth", "peer", "name", link, "netns", self.node],
                what=f"link {link}",
            )
            run(["ip", "-n", self.node, "addr", "add", f"{node_ip}/24", "dev", link], what=f"node {link}")
            run(["ip", "-n", self.node, "link", "set", link, "up"], what=f"node {link} up")
            for ip in peer_ips:
                run(["ip", "-n", peer, "addr", "add", f"{ip}/24", "dev", "eth0"], what=f"{peer} address")
            run(["ip", "-n", peer, "link", "set", "eth0", "up"], what=f"{peer} up")
        # the load generator reaches the node only (a NodePort, like minikube's host); the world answers SNAT-ed
        # traffic on its own network and has no route anywhere else
        run(
            in_netns(
                self.node, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"]
            ),
            what="node forwarding",
        )
        run(in_netns(self.node, ["nft", "-f", "-"]), input=self._base_rules(), what="node NAT rules")

    def _base_rules(self) -> str:
        return f"""
table ip kube {{
    set hairpin {{ type ipv4_addr . ipv4_addr; }}
    chain services {{ }}
    chain nodeports {{ }}
    chain prerouting {{
        type nat hook prerouting priority -100; policy accept;
        ip daddr {network.SERVICE_NETWORK} jump services
        fib daddr type local jump nodeports
    }}
    chain output {{
        type nat hook output priority -100; policy accept;
        ip daddr {network.SERVICE_NETWORK} jump services
        fib daddr type local jump nodeports
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        meta mark & {NODEPORT_MARK:#x} == {NODEPORT_MARK:#x} masquerade
        ip saddr . ip daddr @hairpin masquerade
        oifname "{UPLINK}" masquerade
    }}
}}
"""

    # pods ----------------------------------------------------------------------------------------------------------
    def _address(self) -> str:
        if self._free:
            self._free.sort(key=lambda a: int(ipaddress.ip_address(a)))
            return self._free.pop(0)
        ip = str(self._pod_net.network_address + self._next)
        self._next += 1
        return ip

    def add_pod(
        self,
        name: str,
        namespace: str,
        labels: dict[str, str],
        owner: str,
        resolv: str,
        etc: dict[str, str] | None = None,
    ) -> Pod:
        """A pod: its namespace with /etc/netns files (resolv.conf first), its veth on the bridge, its address."""
        if len(self.pods) >= 250:
            raise TestbedError("the testbed's pod range is full (250 pods)")
        netns = f"{self.prefix}-{name}"
        self._add_netns(netns, {"resolv.conf": resolv, "hostname": f"{name}\n", **(etc or {})})
        self._links += 1
        link = f"veth{self._links}"
        ip = self._address()
        run(
            [
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                netns,
                "address",
                pod_mac(ip),
                "type",
                "veth",
                "peer",
                "name",
                link,
                "netns",
                self.node,
            ],
            what=f"pod {name}: link",
        )
        run(
            ["ip", "-n", netns, "-b", "-"],
            what=f"pod {name}: address",
            input=(
                f"addr add {ip}/{self._pod_net.prefixlen} dev eth0\nlink set eth0 up\n"
                f"route add default via {network.POD_GATEWAY}\n"
            ),
        )
        run(
            ["ip", "-n", self.node, "-b", "-"],
            what=f"pod {name}: bridge port",
            input=(
                f"link set {link} master {BRIDGE}\nlink set {link} up\nlink set {link} type bridge_slave hairpin on\n"
            ),
        )
        pod = Pod(name, namespace, netns, ip, link, labels, owner)
        self.pods[name] = pod
        run(
            in_netns(self.node, ["nft", "add", "element", "ip", "kube", "hairpin", f"{{ {ip} . {ip} }}"]),
            what=f"pod {name}: hairpin",
        )
        return pod

    def remove_pod(self, name: str) -> Pod:
        """Delete a pod's namespace (its processes must be stopped) and free its address for reuse."""
        pod = self.pods.pop(name)
        run(
            in_netns(self.node, ["nft", "delete", "element", "ip", "kube", "hairpin", f"{{ {pod.ip} . {pod.ip} }}"]),
            what=f"pod {name}: hairpin",
        )
        kill_namespace(pod.netns)  # its veth goes with it
        self.state.namespaces.remove(pod.netns)
        self.state.save()
        self._free.append(pod.ip)
        return pod

    # services ------------------------------------------------------------------------------------------------------
    def add_service(self, service: Service) -> None:
        self.services[service.name] = service
        self.sync_rules()

    def set_endpoints(self, name: str, endpoints: list[str]) -> None:
        self.services[name].endpoints = list(endpoints)
        self.sync_rules()

    def sync_rules(self) -> None:
        """Rewrite the VIP and NodePort chains in one atomic nft transaction."""
        lines = ["flush chain ip kube services", "flush chain ip kube nodeports"]
        for svc in self.services.values():
            if not svc.endpoints:
                continue  # kube-proxy rejects; here the connection just gets no answer
            for proto, port, target in svc.ports:
                pick = _pick(svc.endpoints)
                lines.append(
                    f"add rule ip kube services ip daddr {svc.vip} {proto} dport {port} dnat to {pick} : {target}"
                )
                if svc.node_port is not None:
                    lines.append(
                        f"add rule ip kube nodeports {proto} dport {svc.node_port} "
                        f"meta mark set meta mark | {NODEPORT_MARK:#x} dnat to {pick} : {target}"
                    )
        run(in_netns(self.node, ["nft", "-f", "-"]), input="\n".join(lines) + "\n", what="service rules")


def pod_mac(ip: str) -> str:
    """A pod's MAC from its address (0a:58 and the address, as OVN-Kubernetes does): a pod that takes a released
    address has its predecessor's MAC, so the neighbour caches of the node and the pods stay right."""
    return "0a:58:" + ":".join(f"{int(part):02x}" for part in ip.split("."))


def _pick(endpoints: list[str]) -> str:
    """One endpoint, or kube-proxy's random choice among several (a fresh draw per new connection)."""
    if len(endpoints) == 1:
        return endpoints[0]
    choices = ", ".join(f"{k} : {ip}" for k, ip in enumerate(endpoints))
    return f"numgen random mod {len(endpoints)} map {{ {choices} }}"
