"""Application topologies (`config/apps/<app>.yaml`): loading, validation against the schema, and the model.

A user adds an application by writing one such file; a mistake is reported as `FILE:LINE: key.path: message`,
the line being where the key is written (the YAML node tree is composed once and walked along the key's path).
Every key beyond the first format (`name`, `services`, `requests`, ...) is optional, and its default reproduces
the first format's traffic or a documented, measured one (config/README.md), so files written for it still load.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, fields, replace
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from mimir import network
from mimir.errors import AppError
from mimir.loadmodel import BEHAVIOURS

CONFIG = Path(__file__).resolve().parents[2] / "config"
APP_SCHEMA = CONFIG / "schemas" / "app.schema.json"

DEFAULT_THINK_TIME = (2.0, 4.0)  # seconds, uniform: the prototype's locustfiles wait between(2, 4)
DEFAULT_NODE_PORT = 30080  # the entry's NodePort when `ingress.port` is left out (in 30000-32767)
DEFAULT_JOB_PORT = 443  # a job that sends to an address outside: HTTPS (object storage)
NODE_PORT_TYPES = ("nodeport", "loadbalancer")
CONNECTION_KEYS = {"keep-alive": ("idle",), "pool": ("size", "lifetime")}  # the keys each kind takes besides `kind`
THINK_KEYS = {"uniform": (), "exponential": ("mean",), "lognormal": ("median", "sigma")}

Key = tuple[str | int, ...]
T = TypeVar("T")


# --- the model ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Autoscale:
    """HPA-like scaling: replicas = ceil(calls per second served / calls_per_replica), within [min, max]."""

    min: int
    max: int
    calls_per_replica: float


@dataclass(frozen=True)
class ConnectionPolicy:
    """How a caller's pods reach a service: one connection per call (`per-call`), reused until idle for `idle`
    seconds (`keep-alive`), one per page to one member (`per-page`), `size` connections renewed every `lifetime`
    seconds (`pool`; 0 = never), or one long-lived stream per caller and callee pod (`stream`)."""

    kind: str = "per-call"
    idle: float = 60.0
    size: int = 1
    lifetime: float = 0.0


@dataclass(frozen=True)
class Probe:
    """A kubelet probe: `tcp` (connect and close), `http` (a small GET), `grpc` (the gRPC health check over
    HTTP/2), `exec` or `none` (no traffic)."""

    type: str = "tcp"
    period: float = 10.0


@dataclass(frozen=True)
class Probes:
    """Both probes of every pod of a service, each from the node's address on the pod bridge."""

    readiness: Probe = field(default_factory=Probe)
    liveness: Probe = field(default_factory=Probe)


@dataclass(frozen=True)
class ServiceDns:
    """Whether a service's pods look up the names they call, and whether those names are fully qualified (then
    no search-domain expansion)."""

    resolves: bool = True
    qualified: bool = False


@dataclass(frozen=True)
class Tcp:
    """TCP as the capture shows it: payload bytes per segment, the share of connections whose segments arrive
    coalesced by offloading (GSO/GRO), and the probability that a data segment is retransmitted."""

    mss: int = 1448
    offload_share: float = 0.0
    loss: float = 0.0


@dataclass(frozen=True)
class PodLife:
    """Pod churn: restarts and crash loops per pod and hour, rolling updates per day, and the image a new pod's
    node pulls from `registry` (an address outside; no pull when `image_bytes` is 0)."""

    restarts_per_hour: float = 0.0
    crash_loops_per_hour: float = 0.0
    rollouts_per_day: float = 0.0
    image_bytes: int = 0
    registry: str = ""


@dataclass(frozen=True)
class Service:
    """One Kubernetes service and its pods. `tcp` and `pod_life` are the application's settings with the
    service's own overrides applied."""

    name: str
    tier: str
    port: int
    replicas: int
    autoscale: Autoscale | None
    labels: dict[str, str]
    kind: str = "deployment"
    protocol: str = "tcp"
    connection: ConnectionPolicy = field(default_factory=ConnectionPolicy)
    probes: Probes = field(default_factory=Probes)
    dns: ServiceDns = field(default_factory=ServiceDns)
    tcp: Tcp = field(default_factory=Tcp)
    pod_life: PodLife = field(default_factory=PodLife)


@dataclass(frozen=True)
class Call:
    """One request from the caller to a service and its response; `calls` are made while serving it. It happens
    with `probability` (a cache miss) and makes `queries` exchanges on its connection (sizes are their totals)."""

    to: str
    request: int
    response: int
    calls: tuple[Call, ...]
    probability: float = 1.0
    queries: int = 1


@dataclass(frozen=True)
class Step:
    """One page of a session: the load generator's request to the entry service and what serving it calls, then
    `assets_count` static files of `assets_response` bytes. A page mix is a step named "choose" with sizes 0
    whose `alternatives` hold (weight, page): one is picked by weight at each visit."""

    name: str
    request: int
    response: int
    repeat: int
    calls: tuple[Call, ...]
    assets_count: int = 0
    assets_response: int = 0
    alternatives: tuple[tuple[float, Step], ...] = ()


@dataclass(frozen=True)
class ThinkTime:
    """Seconds a user waits between pages: uniform in [min, max], or exponential (`mean`) or log-normal
    (`median`, `sigma`) draws clipped to [min, max]."""

    distribution: str
    min: float
    max: float
    mean: float = 0.0
    median: float = 0.0
    sigma: float = 0.0


@dataclass(frozen=True)
class Sizes:
    """Every request and response size is multiplied by exp(N(0, sigma)); a share `tail_share` of responses is
    instead multiplied by a Pareto(`tail_alpha`) draw: the heavy tail of real responses."""

    sigma: float = 0.2
    tail_share: float = 0.0
    tail_alpha: float = 1.5


@dataclass(frozen=True)
class Errors:
    """A share of pages fails (4xx/5xx): a `response`-byte answer, and only the first call of the page is made."""

    share: float = 0.0
    response: int = 350


@dataclass(frozen=True)
class Ingress:
    """How users reach the entry: its VIP (`service`), a NodePort with SNAT (`nodeport`, `port` the node port), a
    load balancer in front of one (`loadbalancer`), or an ingress-controller pod (`ingress-controller`). `segment`:
    payload bytes per captured segment on the node's external interface (0: as inside the node)."""

    type: str = "service"
    port: int = 0
    segment: int = 0


@dataclass(frozen=True)
class Dns:
    """The pods' resolver: answers reused for `ttl` seconds, `ndots` and `search` domains of resolv.conf, and the
    upstream resolver CoreDNS forwards external names to (an address outside; "" = none modelled)."""

    ttl: float = 30.0
    ndots: int = 5
    search: int = 3
    upstream: str = ""


@dataclass(frozen=True)
class Metrics:
    """Who scrapes metrics (`none`, `metrics-server`: the kubelets, `prometheus`: every pod), every `interval` s."""

    scraper: str = "none"
    interval: float = 15.0


@dataclass(frozen=True)
class Logs:
    """A log shipper pod sending `bytes_per_second` to `to` (a service or an address outside)."""

    bytes_per_second: float = 0.0
    to: str = ""


@dataclass(frozen=True)
class Platform:
    """The cluster's own traffic besides probes and DNS: API-server watches, node-local chatter, metrics, logs."""

    api_watchers: int = 0
    metrics: Metrics = field(default_factory=Metrics)
    node_local: bool = False
    logs: Logs = field(default_factory=Logs)


@dataclass(frozen=True)
class StateTransfer:
    """Bytes a restarted member receives from a donor on `port`: `ist` when it comes back, `sst` when it is new."""

    port: int = 4568
    ist: int = 0
    sst: int = 0


@dataclass(frozen=True)
class Replication:
    """Traffic between every pair of a service's members: a floor of `bytes_per_second`, plus `per_write` bytes
    per request byte the member serves, in `frame`-byte messages (0: one message per `interval`)."""

    service: str
    port: int
    bytes_per_second: float
    interval: float
    frame: int = 0
    per_write: float = 0.0
    state_transfer: StateTransfer = field(default_factory=StateTransfer)


@dataclass(frozen=True)
class Egress:
    """Benign calls from every pod of `source` to an address outside the cluster, every `interval` seconds."""

    source: str
    to: str
    port: int
    request: int
    response: int
    interval: float


@dataclass(frozen=True)
class Periodic:
    """A timer in every pod of `source` calling a service or an address outside (`to`) every `interval` seconds:
    heartbeats, tracing spans, metrics pushes, a cron's loopback HTTP (`to` = `source`)."""

    source: str
    to: str
    port: int
    request: int
    response: int
    interval: float
    protocol: str = "tcp"
    connection: str = "per-call"


@dataclass(frozen=True)
class Job:
    """A Job pod started at `at` s (then every `every` s if > 0) that reads `bytes` from `reads_from` on `port`
    and sends them to `to` (a service or an address outside) on `to_port`: a backup, exfiltration's look-alike."""

    name: str
    at: float
    every: float
    reads_from: str
    port: int
    bytes: int
    to: str
    to_port: int


@dataclass(frozen=True)
class App:
    name: str
    namespace: str
    entry: str
    sensitive: tuple[str, ...]
    think_time: ThinkTime
    services: dict[str, Service]
    requests: dict[str, tuple[Step, ...]]
    replication: tuple[Replication, ...]
    egress: tuple[Egress, ...]
    sizes: Sizes = field(default_factory=Sizes)
    errors: Errors = field(default_factory=Errors)
    ingress: Ingress = field(default_factory=Ingress)
    tcp: Tcp = field(default_factory=Tcp)
    dns: Dns = field(default_factory=Dns)
    platform: Platform = field(default_factory=Platform)
    pod_life: PodLife = field(default_factory=PodLife)
    periodic: tuple[Periodic, ...] = ()
    jobs: tuple[Job, ...] = ()

    def edges(self, request_types: list[str] | None = None) -> set[tuple[str, str]]:
        """The (caller, callee) service pairs the given request types use (all when None): every call that may
        happen, in every alternative of a page mix, whatever its probability."""
        out: set[tuple[str, str]] = set()

        def walk(caller: str, calls: tuple[Call, ...]) -> None:
            for call in calls:
                out.add((caller, call.to))
                walk(call.to, call.calls)

        for name, steps in self.requests.items():
            if request_types is None or name in request_types:
                for step in steps:
                    for _, page in step.alternatives or ((1.0, step),):
                        walk(self.entry, page.calls)
        return out

    def background_edges(self) -> set[tuple[str, str]]:
        """The (client, server) pairs of the application's own background traffic, benign whatever the users do:
        replication (a service with itself), periodic calls to a service, and jobs (the job's name, which is its
        pods' `app` label, with the service it reads from and the service it sends to). Addresses outside are
        left out (as `egress` is)."""
        out = {(r.service, r.service) for r in self.replication}
        out |= {(p.source, p.to) for p in self.periodic if p.to in self.services}
        for job in self.jobs:
            out.add((job.name, job.reads_from))
            if job.to in self.services:
                out.add((job.name, job.to))
        return out


# --- loading ------------------------------------------------------------------------------------------------


@cache
def _schema() -> dict[str, Any]:
    return json.loads(APP_SCHEMA.read_text())


def find_app(name_or_path: str) -> Path:
    """A YAML file's path as given (`.yaml` or `.yml`, anywhere), else `config/apps/<name>.yaml` in the working
    folder, else in this project: a name is never a path (`../../etc/passwd` names nothing)."""
    given = Path(name_or_path)
    if given.suffix in (".yaml", ".yml"):
        return given
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", name_or_path):  # longer is no file name an app has
        for base in (Path("config") / "apps", CONFIG / "apps"):
            candidate = base / f"{name_or_path}.yaml"
            if candidate.is_file():
                return candidate
    known = sorted(p.stem for p in (CONFIG / "apps").glob("*.yaml"))
    raise AppError(f"no application {name_or_path[:80]!r}: give a YAML file or one of {', '.join(known)}")


def load_app(name_or_path: str) -> App:
    path = find_app(name_or_path)
    root, data = _read(path)
    lines = _Lines(path, root)
    errors = [_describe(e) for e in jsonschema.Draft202012Validator(_schema()).iter_errors(data)]
    if errors:
        key, message = min(errors, key=lambda e: (lines.line(e[0]) or 0, [str(k) for k in e[0]]))
        raise lines.error(key, message)
    return _Builder(lines).app(data)


def _read(path: Path) -> tuple[yaml.Node | None, Any]:
    """The file's YAML node tree (for line numbers) and its data, from one parse."""
    try:
        text = path.read_text()
    except OSError as e:
        raise AppError(f"{path}: cannot read: {e.strerror}") from None
    loader = yaml.CSafeLoader(text)  # libyaml: the workflow reads an app once per run it checks
    try:
        root = loader.get_single_node()
        # constructing flattens `<<` merges into the nodes, so merged keys are found where they were written
        return root, (loader.construct_document(root) if root is not None else None)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise AppError(f"{path}:{where} not valid YAML: {getattr(e, 'problem', e)}") from None
    finally:
        loader.dispose()


def _describe(error: jsonschema.ValidationError) -> tuple[Key, str]:
    """A schema error as (key path, message); an unknown or badly named key is pointed at itself."""
    key: Key = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in known)
        if extra:
            return (*key, extra[0]), f"unknown key {extra[0]!r} (known here: {', '.join(known)})"
    if "propertyNames" in error.schema_path and isinstance(error.instance, str):  # a name, not a value, is wrong
        return (*key, error.instance), error.message
    if not key and error.instance is None:
        return key, "the file is empty"
    if not key and not isinstance(error.instance, dict):  # not an application: say what, never echo its content
        kind = {str: "text", list: "a list", bool: "a boolean"}.get(type(error.instance), "a number")
        return key, f"the file holds {kind}, not an application (a mapping of keys such as name and services)"
    return key, error.message


class _Lines:
    """Where each key of one file is written: its composed YAML node tree, walked along a key path."""

    def __init__(self, path: Path, root: yaml.Node | None):
        self.path, self.root = path, root

    def line(self, key: Key) -> int | None:
        """The 1-based line of the key (of the nearest enclosing key the file has), None when not even its first
        part is in the file."""
        node, mark = self.root, None
        for k in key:
            if isinstance(node, yaml.MappingNode):
                found = [(kn, vn) for kn, vn in node.value if isinstance(kn, yaml.ScalarNode) and kn.value == str(k)]
                if not found:
                    break
                key_node, node = found[-1]  # the last one wins, as when the data were built (merges, repeats)
                mark = key_node.start_mark
            elif isinstance(node, yaml.SequenceNode) and isinstance(k, int) and 0 <= k < len(node.value):
                node = node.value[k]
                mark = node.start_mark
            else:
                break
        return mark.line + 1 if mark is not None else None

    def error(self, key: Key, message: str) -> AppError:
        line = self.line(key)
        name = ".".join(str(k) for k in key) or "(top level)"
        return AppError(f"{self.path}{f':{line}' if line else ''}: {name}: {message}")


_CLUSTER_RANGES = (
    (ipaddress.IPv4Network(network.POD_NETWORK), "the pod network"),
    (ipaddress.IPv4Network(network.SERVICE_NETWORK), "the service network"),
    (ipaddress.IPv4Network(f"{network.NODE_IP}/32"), "the node"),
)


def _outside_problem(text: str) -> str | None:
    """Why `text` is not an IPv4 address outside the cluster (None when it is one)."""
    try:
        address = ipaddress.IPv4Address(text)
    except ValueError:
        return f"{text!r} is not an IPv4 address"
    for net, what in _CLUSTER_RANGES:
        if address in net:
            return f"{text} is inside the cluster ({what}, {net}): name a service of this application instead"
    if address.is_loopback or address.is_multicast or address.is_unspecified or address.is_reserved:
        return f"{text} cannot be the address of a host outside the cluster"
    return None


class _Builder:
    """Builds the model from schema-valid data, with the cross-checks the schema cannot make."""

    def __init__(self, lines: _Lines):
        self.lines = lines
        self.services: dict[str, Service] = {}

    def fail(self, key: Key, message: str) -> AppError:
        return self.lines.error(key, message)

    def service(self, key: Key, name: str) -> str:
        if name not in self.services:
            raise self.fail(key, f"{name!r} is not a service of this application")
        return name

    def address(self, key: Key, text: str) -> str:
        problem = _outside_problem(text)
        if problem:
            raise self.fail(key, problem)
        return text

    def target(self, key: Key, text: str) -> str:
        """A service of the application, or an IPv4 address outside the cluster."""
        if text in self.services:
            return text
        try:
            ipaddress.IPv4Address(text)
        except ValueError:
            raise self.fail(key, f"{text!r} is neither a service of this application nor an IPv4 address") from None
        return self.address(key, text)

    def app(self, data: dict[str, Any]) -> App:
        path = self.lines.path
        if data["name"] != path.stem:
            raise self.fail(("name",), f"{data['name']!r} must equal the file name {path.stem!r}")
        tcp = _make(Tcp, data.get("tcp", {}))
        pod_life = self._pod_life(("pod_life",), PodLife(), data.get("pod_life", {}))
        for name, s in data["services"].items():
            self.services[name] = self._service(name, s, tcp, pod_life)
        requests = {
            kind: tuple(self._step(("requests", kind, "steps", i), s) for i, s in enumerate(r["steps"]))
            for kind, r in data["requests"].items()
        }
        missing = [b for b in BEHAVIOURS if b not in requests]
        if missing:
            raise self.fail(
                ("requests",), f"every application defines the behaviours {', '.join(BEHAVIOURS)}; missing {missing}"
            )
        return App(
            name=data["name"],
            namespace=data["namespace"],
            entry=self.service(("entry",), data["entry"]),
            sensitive=tuple(self.service(("sensitive", i), s) for i, s in enumerate(data.get("sensitive", []))),
            think_time=self._think_time(data.get("think_time")),
            services=self.services,
            requests=requests,
            replication=tuple(self._replication(i, r) for i, r in enumerate(data.get("replication", []))),
            egress=tuple(self._egress(i, e) for i, e in enumerate(data.get("egress", []))),
            sizes=_make(Sizes, data.get("sizes", {})),
            errors=_make(Errors, data.get("errors", {})),
            ingress=self._ingress(data.get("ingress", {})),
            tcp=tcp,
            dns=self._dns(data.get("dns", {})),
            platform=self._platform(data.get("platform", {})),
            pod_life=pod_life,
            periodic=tuple(self._periodic(i, p) for i, p in enumerate(data.get("periodic", []))),
            jobs=self._jobs(data.get("jobs", [])),
        )

    # --- services ---------------------------------------------------------------------------------------------
    def _service(self, name: str, s: dict[str, Any], tcp: Tcp, life: PodLife) -> Service:
        key: Key = ("services", name)
        auto = s.get("autoscale")
        scale = Autoscale(auto["min"], auto["max"], float(auto["calls_per_replica"])) if auto else None
        if scale and not scale.min <= scale.max:
            raise self.fail((*key, "autoscale"), "min must not exceed max")
        probes = s.get("probes", {})
        return Service(
            name,
            s["tier"],
            s["port"],
            s["replicas"],
            scale,
            s.get("labels", {"name": name}),
            kind=s.get("kind", "deployment"),
            protocol=s.get("protocol", "tcp"),
            connection=self._connection((*key, "connection"), s.get("connection", "per-call")),
            probes=Probes(**{k: _make(Probe, v) for k, v in probes.items()}),
            dns=_make(ServiceDns, s.get("dns", {})),
            tcp=_override(tcp, s.get("tcp", {})),
            pod_life=self._pod_life((*key, "pod_life"), life, s.get("pod_life", {})),
        )

    def _connection(self, key: Key, raw: str | dict[str, Any]) -> ConnectionPolicy:
        if isinstance(raw, str):
            return ConnectionPolicy(kind=raw)
        kind = raw["kind"]
        allowed = CONNECTION_KEYS.get(kind, ())
        for k in raw:
            if k != "kind" and k not in allowed:
                owner = [c for c, keys in CONNECTION_KEYS.items() if k in keys]
                raise self.fail((*key, k), f"applies to the {owner[0]} connection only, not to {kind}")
        return _make(ConnectionPolicy, raw)

    def _pod_life(self, key: Key, base: PodLife, raw: dict[str, Any]) -> PodLife:
        life = _override(base, raw)
        if raw and life.image_bytes > 0 and not life.registry:
            raise self.fail(key, "image_bytes needs a registry (the address the node pulls the image from)")
        if "registry" in raw and raw["registry"] is not None:
            self.address((*key, "registry"), raw["registry"])
        return life

    # --- requests ---------------------------------------------------------------------------------------------
    def _step(self, key: Key, s: dict[str, Any]) -> Step:
        if "choose" in s:
            pages = tuple(
                (float(a["weight"]), self._page((*key, "choose", i), a, 1)) for i, a in enumerate(s["choose"])
            )
            return Step("choose", 0, 0, s.get("repeat", 1), (), alternatives=pages)
        return self._page(key, s, s.get("repeat", 1))

    def _page(self, key: Key, s: dict[str, Any], repeat: int) -> Step:
        assets = s.get("assets", {})
        return Step(
            s["name"],
            s["request"],
            s["response"],
            repeat,
            self._calls((*key, "calls"), s.get("calls", [])),
            assets_count=assets.get("count", 0),
            assets_response=assets.get("response", 0),
        )

    def _calls(self, key: Key, items: list[dict[str, Any]]) -> tuple[Call, ...]:
        return tuple(
            Call(
                self.service((*key, i, "to"), c["to"]),
                c["request"],
                c["response"],
                self._calls((*key, i, "calls"), c.get("calls", [])),
                probability=float(c.get("probability", 1.0)),
                queries=c.get("queries", 1),
            )
            for i, c in enumerate(items)
        )

    def _think_time(self, raw: dict[str, Any] | None) -> ThinkTime:
        key: Key = ("think_time",)
        if raw is None:
            return ThinkTime("uniform", *DEFAULT_THINK_TIME)
        distribution = raw.get("distribution", "uniform")
        for k in ("mean", "median", "sigma"):
            if k in raw and k not in THINK_KEYS[distribution]:
                raise self.fail((*key, k), f"does not apply to the {distribution} distribution")
        think = ThinkTime(
            distribution,
            float(raw.get("min", 0.0)),
            float(raw.get("max", float("inf"))),
            **{k: float(raw[k]) for k in THINK_KEYS[distribution]},
        )
        if think.min > think.max:
            raise self.fail(key, "min must not exceed max")
        return think

    # --- background -------------------------------------------------------------------------------------------
    def _replication(self, i: int, r: dict[str, Any]) -> Replication:
        return Replication(
            self.service(("replication", i, "service"), r["service"]),
            r["port"],
            float(r["bytes_per_second"]),
            float(r.get("interval", 1.0)),
            frame=r.get("frame", 0),
            per_write=float(r.get("per_write", 0.0)),
            state_transfer=_make(StateTransfer, r.get("state_transfer", {})),
        )

    def _egress(self, i: int, e: dict[str, Any]) -> Egress:
        key: Key = ("egress", i)
        return Egress(
            self.service((*key, "from"), e["from"]),
            self.address((*key, "to"), e["to"]),
            e["port"],
            e["request"],
            e["response"],
            float(e["interval"]),
        )

    def _periodic(self, i: int, p: dict[str, Any]) -> Periodic:
        key: Key = ("periodic", i)
        to = self.target((*key, "to"), p["to"])
        if "port" not in p and to not in self.services:
            raise self.fail((*key, "to"), f"a call to an address ({to}) needs a port")
        return Periodic(
            self.service((*key, "from"), p["from"]),
            to,
            p.get("port") or self.services[to].port,
            p["request"],
            p["response"],
            float(p["interval"]),
            protocol=p.get("protocol", "tcp"),
            connection=p.get("connection", "per-call"),
        )

    def _jobs(self, items: list[dict[str, Any]]) -> tuple[Job, ...]:
        jobs: list[Job] = []
        for i, j in enumerate(items):
            key: Key = ("jobs", i)
            if j["name"] in self.services or j["name"] in [job.name for job in jobs]:
                raise self.fail((*key, "name"), f"{j['name']!r} is taken (by a service or another job)")
            reads_from = self.service((*key, "reads_from"), j["reads_from"])
            to = self.target((*key, "to"), j["to"])
            default_to_port = self.services[to].port if to in self.services else DEFAULT_JOB_PORT
            jobs.append(
                Job(
                    j["name"],
                    float(j["at"]),
                    float(j.get("every", 0.0)),
                    reads_from,
                    j.get("port", self.services[reads_from].port),
                    j["bytes"],
                    to,
                    j.get("to_port", default_to_port),
                )
            )
        return tuple(jobs)

    # --- the cluster ------------------------------------------------------------------------------------------
    def _ingress(self, raw: dict[str, Any]) -> Ingress:
        kind = raw.get("type", "service")
        for k in ("port", "segment"):
            if k in raw and kind not in NODE_PORT_TYPES:
                raise self.fail(("ingress", k), f"applies to {' and '.join(NODE_PORT_TYPES)} only (a node port)")
        return Ingress(
            kind, raw.get("port", DEFAULT_NODE_PORT if kind in NODE_PORT_TYPES else 0), raw.get("segment", 0)
        )

    def _dns(self, raw: dict[str, Any]) -> Dns:
        upstream = raw.get("upstream") or ""
        if upstream:
            self.address(("dns", "upstream"), upstream)
        return _make(Dns, {**raw, "upstream": upstream})

    def _platform(self, raw: dict[str, Any]) -> Platform:
        logs = raw.get("logs", {})
        to = logs.get("to") or ""
        if to:
            self.target(("platform", "logs", "to"), to)
        elif logs.get("bytes_per_second", 0) > 0:
            raise self.fail(("platform", "logs"), "bytes_per_second needs `to` (a service or an address outside)")
        return Platform(
            api_watchers=raw.get("api_watchers", 0),
            metrics=_make(Metrics, raw.get("metrics", {})),
            node_local=raw.get("node_local", False),
            logs=Logs(float(logs.get("bytes_per_second", 0.0)), to),
        )


def _values(cls: type, raw: dict[str, Any]) -> dict[str, Any]:
    """`raw`'s values as the dataclass's fields take them: numbers as floats where a field is a float (YAML writes
    `1` for 1.0), and null as "" where a field is an optional address or name."""
    types = {f.name: f.type for f in fields(cls)}
    out = {}
    for k, v in raw.items():
        if types[k] == "float":
            out[k] = float(v)
        elif types[k] == "str" and v is None:
            out[k] = ""
        else:
            out[k] = v
    return out


def _make(cls: type[T], raw: dict[str, Any]) -> T:
    return cls(**_values(cls, raw))


def _override(base: T, raw: dict[str, Any]) -> T:
    """`base` with the keys `raw` names replaced (a service's `tcp:` and `pod_life:` over the application's)."""
    return replace(base, **_values(type(base), raw))  # type: ignore[type-var]
