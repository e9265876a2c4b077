"""One testbed: the network, the application's pods and Services, brought up in order and always torn down.

Order matters (../docs/architecture.md#testbed): the world's resolver and cluster DNS first (every pod's resolver
points there, and a lookup without an answer stalls Galera's state transfer for seconds), then the database
members one after the other, Redis, the WordPress pods, and the site's content. Each pod and Service is written
to the entity log as it appears, each endpoint only once its daemon answers.
"""

from __future__ import annotations

import ipaddress
import json
import math
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mimir import network
from mimir.errors import TestbedError
from mimir.sources.testbed import services
from mimir.sources.testbed.entities import EntityLog
from mimir.sources.testbed.network import OUTSIDE_GATEWAY, Network, Pod, Service
from mimir.sources.testbed.processes import WORK_ROOT, Daemon, State, in_netns, run, sweep
from mimir.spec import TestbedSpec

APP_NAMESPACE, DNS_NAMESPACE = "default", "kube-system"
DATABASE, WORDPRESS, REDIS, DNS = "my-release-pxc", "wordpress", "redis", "kube-dns"
MEMBERS = 3
BIN_MIDDLE = 0.5  # where in each second `mimir edges` looks up who held an address (its 1 s bins)
ENTRY_URL = f"http://{network.NODE_IP}:30080"
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # what Kubernetes uses in generated names


def _token(rng: random.Random, size: int) -> str:
    return "".join(rng.choice(_NAME_CHARS) for _ in range(size))


@dataclass
class Deployment:
    """A Deployment's pods share a template hash; each pod gets its own suffix."""

    name: str
    template: str
    rng: random.Random

    def pod_name(self) -> str:
        return f"{self.name}-{self.template}-{_token(self.rng, 5)}"


@dataclass
class Testbed:
    """The testbed of one run. `up()` returns once the site answers; `down()` removes everything and never raises."""

    spec: TestbedSpec
    seed: int
    entities: Path | None = None  # default: the work folder's (`mimir testbed up`)
    progress: Callable[[str], None] | None = None
    name: str = field(default_factory=lambda: f"mtb-{secrets.token_hex(3)}")
    daemons: dict[str, list[Daemon]] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)  # noqa: S311 - names and addresses, not secrets
        self.work = WORK_ROOT / self.name
        self.entities = self.entities or self.work / "entities.jsonl"
        self.state = State(self.name, folders=[str(self.work)])
        self.net = Network(self.state)
        self.log: EntityLog | None = None
        self.db_password = secrets.token_urlsafe(18)
        self.admin_password = secrets.token_urlsafe(18)
        self.wordpress = Deployment(WORDPRESS, _token(self.rng, 10), self.rng)
        self.redis = Deployment(REDIS, _token(self.rng, 10), self.rng)
        self.coredns = Deployment("coredns", _token(self.rng, 10), self.rng)
        self.vips = self._vips()
        self.facts: dict[str, Any] = {}
        self.replacing = 0  # WordPress pods killed by a fault whose replacement is still to come

    def entity_log(self) -> EntityLog:
        if self.log is None:
            raise TestbedError(f"testbed {self.name} is not up")
        return self.log

    def say(self, text: str) -> None:
        if self.progress:
            self.progress(text)

    def _vips(self) -> dict[str, str]:
        """Cluster IPs drawn from the service range as the API server allocates them; kube-dns has the tenth."""
        base = network.ipv4_int(network.SERVICE_NETWORK.split("/")[0])
        taken = {network.ipv4_int(network.API_VIP), network.ipv4_int(network.KUBE_DNS_VIP)}
        out = {DNS: network.KUBE_DNS_VIP}
        for name in (DATABASE, REDIS, WORDPRESS):
            ip = base + self.rng.randrange(11, 1 << 20)
            while ip in taken:
                ip += 1
            taken.add(ip)
            out[name] = str(ipaddress.IPv4Address(ip))
        return out

    # bring-up ------------------------------------------------------------------------------------------------------
    def up(self) -> dict[str, Any]:
        """Network, DNS, database, cache, web pods and content, in that order; the facts run.json records."""
        self.state.save()
        self.work.mkdir(parents=True, exist_ok=True)
        self.work.chmod(0o755)
        self.log = EntityLog(self.entities)
        self.say(f"testbed {self.name}: network")
        self.net.create()
        self.log.node([network.NODE_IP, network.POD_GATEWAY, OUTSIDE_GATEWAY])
        self.daemons["world"] = [services.world(self.net.outside, self.work)]
        for name, ports, selector, node_port in (
            (DNS, [("udp", 53, 53), ("tcp", 53, 53)], {"k8s-app": DNS}, None),
            (DATABASE, [("tcp", 3306, 3306)], {"app": DATABASE}, None),
            (REDIS, [("tcp", 6379, 6379)], {"app": REDIS}, None),
            (WORDPRESS, [("tcp", 80, 80)], {"app": WORDPRESS}, 30080),
        ):
            namespace = DNS_NAMESPACE if name == DNS else APP_NAMESPACE
            svc = Service(name, namespace, self.vips[name], ports, selector, node_port=node_port)
            self.net.services[name] = svc
            self.log.service(svc)
            self.log.endpoints(svc, "added")
        self.say(f"testbed {self.name}: cluster DNS")
        dns = self.new_pod(self.coredns.pod_name(), DNS_NAMESPACE, {"k8s-app": DNS}, "deployment/coredns")
        names = {
            f"{n}.{self.net.services[n].namespace}.svc.{services.CLUSTER_DOMAIN}": ip for n, ip in self.vips.items()
        }
        self.daemons[dns.name] = [services.dns(dns, self.work, names)]
        self.mark_ready(DNS, dns)
        self._database()
        self.say(f"testbed {self.name}: redis")
        cache = self.new_pod(self.redis.pod_name(), APP_NAMESPACE, {"app": REDIS}, "deployment/redis")
        self.daemons[cache.name] = [services.redis(cache, self.work)]
        self.mark_ready(REDIS, cache)
        self._site_files()
        for _ in range(self.spec.wordpress_pods):
            self.add_wordpress_pod()
        self._populate()
        return self.facts

    def new_pod(
        self, name: str, namespace: str, labels: dict[str, str], owner: str, etc: dict[str, str] | None = None
    ) -> Pod:
        resolv = services.resolv_conf(namespace, network.KUBE_DNS_VIP)
        with self.lock:
            pod = self.net.add_pod(name, namespace, labels, owner, resolv, etc)
            self.entity_log().pod(pod, "added", phase="Pending")
        # `mimir edges` resolves an address at the middle of its 1 s bin: a pod born after the middle of a second
        # sends its first packet in the next one, or they would belong to no one
        _sleep_until(math.floor(time.time()) + 1 if time.time() % 1 > BIN_MIDDLE else 0)
        return pod

    def mark_ready(self, service: str, pod: Pod) -> None:
        """The pod is Running and serves its Service: the log says so, then the VIP may pick it."""
        with self.lock:
            self.entity_log().pod(pod, "modified")
            svc = self.net.services[service]
            self.net.set_endpoints(service, [*svc.endpoints, pod.ip])
            self.entity_log().endpoints(svc)

    def mark_unready(self, service: str, pod: Pod) -> None:
        with self.lock:
            svc = self.net.services[service]
            self.net.set_endpoints(service, [ip for ip in svc.endpoints if ip != pod.ip])
            self.entity_log().endpoints(svc)

    def pods_of(self, service: str) -> list[Pod]:
        """The pods of a Service now, oldest first (other threads add and remove pods)."""
        with self.lock:
            return [p for p in self.net.pods.values() if p.service == service]

    def wordpress_pods(self) -> list[Pod]:
        return self.pods_of(WORDPRESS)

    def _database(self) -> None:
        addresses = []
        pods = []
        for k in range(MEMBERS):
            pods.append(self.new_pod(f"{DATABASE}-{k}", APP_NAMESPACE, {"app": DATABASE}, f"statefulset/{DATABASE}"))
            addresses.append(pods[-1].ip)
        self.say(f"testbed {self.name}: database ({MEMBERS} Galera members)")
        services.galera_conf(pods[0], 0, addresses, self.work)
        services.install_database(pods[0], self.work)
        for k, pod in enumerate(pods):
            conf = services.galera_conf(pod, k, addresses, self.work)
            self.daemons[pod.name] = [
                services.start_member(pod, conf, self.work, bootstrap=k == 0, timeout=self.spec.ready_timeout)
            ]
            if k == 0:
                services.create_schema(pod, self.work, self.db_password)
            self.mark_ready(DATABASE, pod)
            self.say(f"testbed {self.name}: {pod.name} synced")
        self.facts["galera"] = {"members": MEMBERS, "cluster_size": services.cluster_size(pods[0], self.work)}

    def _site_files(self) -> None:
        salts = {
            k: secrets.token_urlsafe(32)
            for k in (
                "AUTH_KEY",
                "SECURE_AUTH_KEY",
                "LOGGED_IN_KEY",
                "NONCE_KEY",
                "AUTH_SALT",
                "SECURE_AUTH_SALT",
                "LOGGED_IN_SALT",
                "NONCE_SALT",
            )
        }
        services.content_folder(self.work)
        self._wordpress_etc = {
            "wordpress/config-default.php": services.wordpress_config(self.work, self.db_password, salts)
        }

    def add_wordpress_pod(self) -> Pod:
        """A new WordPress pod (a new namespace and address, perhaps a released one), in the VIP once it answers."""
        pod = self.new_pod(
            self.wordpress.pod_name(), APP_NAMESPACE, {"app": WORDPRESS}, f"deployment/{WORDPRESS}", self._wordpress_etc
        )
        self.daemons[pod.name] = services.wordpress(pod, self.work)
        services.wait_for(
            lambda: self._answers(pod), f"WordPress pod {pod.name}", self.spec.ready_timeout, self.daemons[pod.name][-1]
        )
        self.mark_ready(WORDPRESS, pod)
        self.say(f"testbed {self.name}: {pod.name} ready at {pod.ip}")
        return pod

    def remove_pod(self, pod: Pod, service: str) -> None:
        """Take a pod out of its Service, stop its daemons and delete it (its address becomes free)."""
        self.mark_unready(service, pod)
        for daemon in reversed(self.daemons.pop(pod.name, [])):
            daemon.stop()
        with self.lock:
            self.entity_log().pod(pod, "modified", phase="Succeeded")
            self.net.remove_pod(pod.name)
            # its last packets, earlier in this second, are resolved at the second's middle: delete after it
            _sleep_until(math.floor(time.time()) + BIN_MIDDLE + 0.01 if time.time() % 1 <= BIN_MIDDLE else 0)
            self.entity_log().pod(pod, "deleted", phase="Succeeded")

    def _answers(self, pod: Pod) -> bool:
        try:
            code = run(
                in_netns(
                    self.net.node,
                    ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "3", f"http://{pod.ip}/wp-login.php"],
                ),
                timeout=5,
            )
        except TestbedError:
            return False
        return code.strip() not in ("", "000", "502", "504")

    def _populate(self) -> None:
        self.say(f"testbed {self.name}: populating WordPress")
        plan = self.work / "populate.json"
        plan.write_text(json.dumps(site_plan(self.spec, self.seed, self.admin_password)))
        plan.chmod(0o644)
        made = services.php(self.wordpress_pods()[0], services.FILES / "populate.php", str(plan), timeout=600)
        self.facts["site"] = json.loads(made.strip().splitlines()[-1])
        self.say(f"testbed {self.name}: site has {self.facts['site']}")

    # teardown ------------------------------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every daemon (last started first), then remove namespaces and folders; problems, never raises."""
        problems = []
        for name in reversed(list(self.daemons)):
            for daemon in reversed(self.daemons[name]):
                try:
                    daemon.stop()
                except Exception as e:  # teardown goes on whatever one daemon does
                    problems.append(f"stopping {daemon.name}: {e}")
        self.daemons.clear()
        if self.log is not None:
            self.facts["entities"] = self.log.close()
        try:
            sweep(self.state)
        except Exception as e:
            problems.append(f"removing testbed {self.name}: {e}")
        return problems


def _sleep_until(moment: float) -> None:
    time.sleep(max(moment - time.time(), 0))


_WORDS = (
    "data",
    "graph",
    "service",
    "packet",
    "cluster",
    "pod",
    "flow",
    "edge",
    "load",
    "user",
    "node",
    "query",
    "cache",
    "replica",
    "network",
    "traffic",
    "anomaly",
    "model",
    "interval",
    "feature",
    "request",
    "page",
)


def site_plan(spec: TestbedSpec, seed: int, admin_password: str) -> dict[str, Any]:
    """The site's content from the seed: accounts, pages and posts whose lengths spread over two orders of
    magnitude (log-normal), so pages differ in size, each post with a few approved comments."""
    rng = random.Random(seed)  # noqa: S311 - the site's content, not secrets

    def text(words: int) -> str:
        paragraphs = []
        while words > 0:
            n = min(words, rng.randint(40, 120))
            paragraphs.append(" ".join(rng.choice(_WORDS) for _ in range(n)).capitalize() + ".")
            words -= n
        return "\n\n".join(f"<p>{p}</p>" for p in paragraphs)

    def item(k: int) -> dict[str, Any]:
        day = 1 + k % 28
        return {
            "title": " ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))).capitalize(),
            "content": text(int(min(max(rng.lognormvariate(5.5, 0.9), 30), 5000))),
            "author": rng.randrange(1 << 16),
            "date": f"2025-{1 + k % 12:02d}-{day:02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00",
            "comments": [
                {"author": f"reader{rng.randrange(1000)}", "content": text(rng.randint(10, 80))}
                for _ in range(rng.choice((0, 0, 1, 2, 3, 5, 8)))
            ],
        }

    accounts = [
        {
            "login": f"author{k}" if k < 5 else f"reader{k}",
            "email": f"user{k}@example.org",
            "password": secrets.token_urlsafe(12),
            "role": "author" if k < 5 else "subscriber",
            "bio": text(rng.randint(5, 40)),
        }
        for k in range(spec.accounts)
    ]
    return {
        "host": f"{network.NODE_IP}:30080",
        "url": ENTRY_URL,
        "title": "mimir testbed",
        "admin": {"login": "mimir", "email": "mimir@example.org", "password": admin_password},
        "accounts": accounts,
        "pages": [item(k) for k in range(spec.pages)],
        "posts": [item(k) for k in range(spec.posts)],
    }
