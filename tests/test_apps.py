"""Application files (`mimir.apps`): the shipped ones load, files of the first format load with every later key at
its default, each key lands in its dataclass, and mistakes are reported at their line with their key."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from mimir.apps import (
    App,
    Autoscale,
    Call,
    ConnectionPolicy,
    Dns,
    Egress,
    Errors,
    Ingress,
    Job,
    Logs,
    Metrics,
    Periodic,
    Platform,
    PodLife,
    Probe,
    Probes,
    Replication,
    ServiceDns,
    Sizes,
    StateTransfer,
    Step,
    Tcp,
    ThinkTime,
    load_app,
)
from mimir.errors import AppError

# A file written for the first format (before probabilities, connections, probes, platform, ...): it must load
# unchanged, with every later key at its default.
FIRST_FORMAT = """\
name: shop
description: A front end over a catalogue and its database.
namespace: shop
entry: front
sensitive: [db]
think_time: {min: 2, max: 4}
services:
  front:
    tier: frontend
    port: 8080
    replicas: 2
    autoscale: {min: 2, max: 6, calls_per_replica: 6}
  catalogue:
    tier: business
    port: 80
    replicas: 1
    labels: {app: catalogue}
  db:
    tier: database
    port: 3306
    replicas: 3
requests:
  browse:
    description: window shopping
    steps:
      - name: GET /
        request: 400
        response: 12000
        calls:
          - to: catalogue
            request: 300
            response: 1800
            calls:
              - {to: db, request: 250, response: 1500}
      - {name: GET /item, request: 420, response: 9000, repeat: 5}
  buy:
    steps:
      - {name: POST /cart, request: 600, response: 300, calls: [{to: db, request: 500, response: 200}]}
  register:
    steps:
      - {name: POST /register, request: 500, response: 300}
replication:
  - {service: db, port: 4567, bytes_per_second: 16000, interval: 1}
egress:
  - {from: front, to: 198.51.100.10, port: 443, request: 600, response: 9000, interval: 600}
"""


def write(tmp_path: Path, text: str, name: str = "shop") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def with_keys(**changes: Any) -> dict[str, Any]:
    """The first-format application as data, with top-level keys set and services' keys updated."""
    data = yaml.safe_load(FIRST_FORMAT)
    for key, value in changes.items():
        if key in data["services"]:
            data["services"][key].update(value)
        else:
            data[key] = value
    return data


def load(tmp_path: Path, data: dict[str, Any]) -> App:
    return load_app(str(write(tmp_path, yaml.safe_dump(data, sort_keys=False))))


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(AppError) as caught:
        load_app(str(write(tmp_path, text)))
    return str(caught.value)


def line_of(text: str, marker: str) -> int:
    """The 1-based line of the first line of `text` containing `marker`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


@pytest.mark.parametrize("name", ["sockshop", "wordpress", "online-boutique"])
def test_the_shipped_applications_load(name: str) -> None:
    app = load_app(name)
    assert app.name == name and app.entry in app.services
    assert {"browse", "buy", "register"} <= set(app.requests)
    assert app.edges() and all(a in app.services and b in app.services for a, b in app.edges())


def test_a_first_format_file_loads_with_every_new_key_at_its_default(tmp_path: Path) -> None:
    app = load_app(str(write(tmp_path, FIRST_FORMAT)))
    assert app.think_time == ThinkTime("uniform", 2.0, 4.0)
    assert (app.think_time.min, app.think_time.max) == (2.0, 4.0)
    assert (app.sizes, app.errors, app.ingress, app.tcp) == (Sizes(), Errors(), Ingress(), Tcp())
    assert (app.dns, app.platform, app.pod_life) == (Dns(), Platform(), PodLife())
    assert app.periodic == () and app.jobs == ()
    front = app.services["front"]
    assert front.autoscale == Autoscale(2, 6, 6.0) and front.labels == {"name": "front"}
    for service in app.services.values():
        assert (service.kind, service.protocol) == ("deployment", "tcp")
        assert service.connection == ConnectionPolicy() and service.probes == Probes()
        assert service.dns == ServiceDns() and service.tcp == Tcp() and service.pod_life == PodLife()
    assert app.services["catalogue"].labels == {"app": "catalogue"}
    home, item = app.requests["browse"]
    assert home.calls == (Call("catalogue", 300, 1800, (Call("db", 250, 1500, (), 1.0, 1),), 1.0, 1),)
    assert (item.repeat, item.assets_count, item.assets_response, item.alternatives) == (5, 0, 0, ())
    assert app.replication == (Replication("db", 4567, 16000.0, 1.0, 0, 0.0, StateTransfer()),)
    assert app.egress == (Egress("front", "198.51.100.10", 443, 600, 9000, 600.0),)
    assert app.edges() == {("front", "catalogue"), ("catalogue", "db"), ("front", "db")}
    assert app.background_edges() == {("db", "db")}


def test_the_defaults_are_the_documented_ones() -> None:
    assert Sizes() == Sizes(sigma=0.2, tail_share=0.0, tail_alpha=1.5)
    assert Errors() == Errors(share=0.0, response=350)
    assert Ingress() == Ingress(type="service", port=0, segment=0)
    assert Tcp() == Tcp(mss=1448, offload_share=0.0, loss=0.0)  # 1500 - 20 (IP) - 20 (TCP) - 12 (timestamps)
    assert Dns() == Dns(ttl=30.0, ndots=5, search=3, upstream="")
    assert Platform() == Platform(0, Metrics("none", 15.0), node_local=False, logs=Logs(0.0, ""))
    assert PodLife() == PodLife(0.0, 0.0, 0.0, 0, "")
    assert ConnectionPolicy() == ConnectionPolicy(kind="per-call", idle=60.0, size=1, lifetime=0.0)
    assert Probes() == Probes(Probe("tcp", 10.0), Probe("tcp", 10.0))
    assert ServiceDns() == ServiceDns(resolves=True, qualified=False)
    assert StateTransfer() == StateTransfer(port=4568, ist=0, sst=0)


EVERY_KEY = """\
think_time: {distribution: lognormal, median: 4, sigma: 0.8, min: 1, max: 60}
sizes: {sigma: 0.1, tail_share: 0.05, tail_alpha: 1.2}
errors: {share: 0.02, response: 500}
ingress: {type: nodeport, segment: 7240}
tcp: {mss: 1460, offload_share: 0.3, loss: 0.001}
dns: {ttl: 0, ndots: 2, search: 4, upstream: 192.168.49.1}
platform:
  api_watchers: 3
  metrics: {scraper: prometheus, interval: 30}
  node_local: true
  logs: {bytes_per_second: 2000, to: 198.51.100.30}
pod_life: {restarts_per_hour: 0.1, image_bytes: 40000000, registry: 198.51.100.20}
periodic:
  - {from: front, to: front, request: 300, response: 200, interval: 60}
  - {from: catalogue, to: 198.51.100.40, port: 9411, request: 900, response: 0, interval: 5, protocol: udp,
     connection: keep-alive}
jobs:
  - {name: backup, at: 3600, every: 86400, reads_from: db, bytes: 5000000000, to: 198.51.100.50}
  - {name: reindex, at: 60, reads_from: db, port: 3307, bytes: 1000, to: catalogue, to_port: 8080}
services:
  front: {connection: {kind: keep-alive, idle: 5}, dns: {resolves: false}}
  catalogue:
    tier: infrastructure
    protocol: udp
    connection: {kind: pool, size: 4, lifetime: 300}
    probes: {readiness: {type: http, period: 5}}
    dns: {qualified: true}
  db: {kind: statefulset, connection: per-page, autoscale: {min: 3, max: 5, calls_per_replica: 9}}
replication:
  - {frame: 180, per_write: 0.35, state_transfer: {ist: 2000000, sst: 50000000}}
browse:
  - name: GET /
    request: 400
    response: 12000
    assets: {count: 12, response: 8000}
    calls: [{to: catalogue, request: 300, response: 1800, probability: 0.1, queries: 3}]
  - choose:
      - {weight: 3, name: GET /a, request: 400, response: 5000}
      - {weight: 1, name: GET /b, request: 410, response: 7000, assets: {count: 2},
         calls: [{to: db, request: 100, response: 900}]}
    repeat: 4
"""


def test_every_new_key_loads_into_its_dataclass(tmp_path: Path) -> None:
    extra = yaml.safe_load(EVERY_KEY)
    data = with_keys(**{k: v for k, v in extra.items() if k not in ("services", "replication", "browse")})
    for name, keys in extra["services"].items():
        data["services"][name] |= keys
    data["replication"][0] |= extra["replication"][0]
    data["requests"]["browse"]["steps"] = extra["browse"]
    app = load(tmp_path, data)

    assert app.think_time == ThinkTime("lognormal", 1.0, 60.0, median=4.0, sigma=0.8)
    assert app.sizes == Sizes(0.1, 0.05, 1.2) and app.errors == Errors(0.02, 500)
    assert app.ingress == Ingress("nodeport", 30080, 7240)
    assert app.tcp == Tcp(1460, 0.3, 0.001)
    assert app.dns == Dns(0.0, 2, 4, "192.168.49.1")
    assert app.platform == Platform(3, Metrics("prometheus", 30.0), True, Logs(2000.0, "198.51.100.30"))
    assert app.pod_life == PodLife(0.1, 0.0, 0.0, 40_000_000, "198.51.100.20")
    assert app.periodic == (
        Periodic("front", "front", 8080, 300, 200, 60.0),  # the port of the service called
        Periodic("catalogue", "198.51.100.40", 9411, 900, 0, 5.0, "udp", "keep-alive"),
    )
    assert app.jobs == (
        Job("backup", 3600.0, 86400.0, "db", 3306, 5_000_000_000, "198.51.100.50", 443),
        Job("reindex", 60.0, 0.0, "db", 3307, 1000, "catalogue", 8080),
    )
    front, catalogue, db = (app.services[s] for s in ("front", "catalogue", "db"))
    assert front.connection == ConnectionPolicy("keep-alive", idle=5.0) and front.dns == ServiceDns(False, False)
    assert (catalogue.tier, catalogue.protocol) == ("infrastructure", "udp")
    assert catalogue.connection == ConnectionPolicy("pool", size=4, lifetime=300.0)
    assert catalogue.probes == Probes(readiness=Probe("http", 5.0), liveness=Probe("tcp", 10.0))
    assert catalogue.dns == ServiceDns(True, True)
    assert db.kind == "statefulset" and db.autoscale == Autoscale(3, 5, 9.0)  # a StatefulSet may autoscale
    assert db.connection == ConnectionPolicy("per-page")
    assert all(s.tcp == app.tcp and s.pod_life == app.pod_life for s in app.services.values())

    page, mix = app.requests["browse"]
    assert (page.assets_count, page.assets_response) == (12, 8000)
    assert page.calls == (Call("catalogue", 300, 1800, (), probability=0.1, queries=3),)
    assert (mix.name, mix.request, mix.response, mix.repeat, mix.calls) == ("choose", 0, 0, 4, ())
    (wa, a), (wb, b) = mix.alternatives
    assert (wa, wb) == (3.0, 1.0)
    assert a == Step("GET /a", 400, 5000, 1, ())
    assert b == Step("GET /b", 410, 7000, 1, (Call("db", 100, 900, ()),), assets_count=2, assets_response=0)
    assert app.replication[0] == Replication(
        "db", 4567, 16000.0, 1.0, frame=180, per_write=0.35, state_transfer=StateTransfer(4568, 2_000_000, 50_000_000)
    )


def test_a_service_overrides_only_the_keys_it_names(tmp_path: Path) -> None:
    app = load(
        tmp_path,
        with_keys(
            tcp={"offload_share": 0.3, "loss": 0.01},
            pod_life={"restarts_per_hour": 0.5, "image_bytes": 1000, "registry": "198.51.100.20"},
            db={"tcp": {"offload_share": 0.0}, "pod_life": {"restarts_per_hour": 0, "registry": "198.51.100.21"}},
        ),
    )
    assert app.services["db"].tcp == Tcp(1448, 0.0, 0.01)
    assert app.services["db"].pod_life == PodLife(0.0, 0.0, 0.0, 1000, "198.51.100.21")
    assert app.services["front"].tcp == Tcp(1448, 0.3, 0.01) and app.services["front"].pod_life == app.pod_life


@pytest.mark.parametrize(
    ("think", "expected"),
    [
        ({"min": 1, "max": 3}, ThinkTime("uniform", 1.0, 3.0)),
        ({"distribution": "uniform", "min": 1, "max": 3}, ThinkTime("uniform", 1.0, 3.0)),
        ({"distribution": "exponential", "mean": 5}, ThinkTime("exponential", 0.0, math.inf, mean=5.0)),
        (
            {"distribution": "exponential", "mean": 5, "min": 0.5, "max": 60},
            ThinkTime("exponential", 0.5, 60.0, mean=5.0),
        ),
        (
            {"distribution": "lognormal", "median": 4, "sigma": 0.8},
            ThinkTime("lognormal", 0.0, math.inf, median=4.0, sigma=0.8),
        ),
    ],
)
def test_think_time_forms(tmp_path: Path, think: dict[str, Any], expected: ThinkTime) -> None:
    assert load(tmp_path, with_keys(think_time=think)).think_time == expected


@pytest.mark.parametrize("kind", ["per-call", "keep-alive", "per-page", "pool", "stream"])
def test_the_short_connection_form_equals_the_mapping(tmp_path: Path, kind: str) -> None:
    short = load(tmp_path, with_keys(db={"connection": kind})).services["db"].connection
    mapping = load(tmp_path, with_keys(db={"connection": {"kind": kind}})).services["db"].connection
    assert short == mapping == ConnectionPolicy(kind)


def test_edges_include_page_mixes_and_probabilistic_calls(tmp_path: Path) -> None:
    data = with_keys(periodic=[{"from": "catalogue", "to": "db", "request": 90, "response": 90, "interval": 10}])
    data["services"]["cache"] = {"tier": "cache", "port": 6379, "replicas": 1}
    data["services"]["search"] = {"tier": "business", "port": 80, "replicas": 1}
    data["requests"]["buy"]["steps"].append(
        yaml.safe_load("""
          choose:
            - weight: 1
              name: GET /search
              request: 400
              response: 900
              calls:
                - to: search
                  request: 300
                  response: 800
                  calls: [{to: cache, request: 50, response: 700, probability: 0.05}]
            - {weight: 9, name: GET /, request: 400, response: 900}
        """)
    )
    data["jobs"] = [{"name": "backup", "at": 10, "reads_from": "db", "bytes": 100, "to": "198.51.100.9"}]
    app = load(tmp_path, data)
    assert {("front", "search"), ("search", "cache")} <= app.edges()
    assert {("front", "search"), ("search", "cache")} <= app.edges(["buy"])
    assert ("front", "search") not in app.edges(["browse", "register"])
    assert app.background_edges() == {("db", "db"), ("catalogue", "db"), ("backup", "db")}


def test_anchors_and_aliases_work(tmp_path: Path) -> None:
    text = FIRST_FORMAT.replace(
        "services:\n  front:\n",
        "services:\n  front: &web\n    probes: {readiness: {type: http}, liveness: {type: http}}\n",
    ).replace(
        "  catalogue:\n    tier: business\n",
        "  catalogue:\n    <<: *web\n    tier: business\n",
    )
    item = "      - {name: GET /item, request: 420, response: 9000, repeat: 5}"
    text = text.replace(item, item.replace("- {", "- &item {") + "\n      - *item")
    app = load_app(str(write(tmp_path, text)))
    catalogue = app.services["catalogue"]
    assert catalogue.probes == app.services["front"].probes == Probes(Probe("http"), Probe("http"))
    assert (catalogue.tier, catalogue.port, catalogue.autoscale) == ("business", 80, Autoscale(2, 6, 6.0))
    assert app.requests["browse"][1] == app.requests["browse"][2]


# --- errors -------------------------------------------------------------------------------------------------


def test_a_schema_error_names_the_line_and_the_key(tmp_path: Path) -> None:
    text = FIRST_FORMAT.replace("    replicas: 3", "    replicas: three")
    message = error(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'shop.yaml'}:{line_of(text, 'replicas: three')}: services.db.replicas: ")
    assert "'three' is not of type 'integer'" in message


def test_an_unknown_key_is_pointed_at_itself(tmp_path: Path) -> None:
    text = FIRST_FORMAT.replace("    port: 80\n", "    port: 80\n    conection: keep-alive\n")
    message = error(tmp_path, text)
    assert f":{line_of(text, 'conection')}: services.catalogue.conection: unknown key 'conection'" in message
    assert "connection" in message  # the keys it could have meant


def test_a_cross_check_error_names_the_line_and_the_key(tmp_path: Path) -> None:
    text = FIRST_FORMAT.replace("{to: db, request: 250", "{to: nowhere, request: 250")
    message = error(tmp_path, text)
    key = "requests.browse.steps.0.calls.0.calls.0.to"
    assert f":{line_of(text, 'to: nowhere')}: {key}: 'nowhere' is not a service of this application" in message


def test_an_error_in_a_page_mix_names_the_alternative(tmp_path: Path) -> None:
    text = FIRST_FORMAT.replace(
        "      - {name: POST /cart, request: 600, response: 300, calls: [{to: db, request: 500, response: 200}]}",
        "      - choose:\n"
        "          - {weight: 2, name: POST /cart, request: 600, response: 300}\n"
        "          - {weight: 1, name: GET /cart, request: 400, response: 300,\n"
        "             calls: [{to: dbx, request: 1, response: 1}]}",
    )
    message = error(tmp_path, text)
    assert f":{line_of(text, 'to: dbx')}: requests.buy.steps.0.choose.1.calls.0.to: 'dbx'" in message
    message = error(tmp_path, text.replace("weight: 2", "weight: 0"))
    assert f":{line_of(text, 'weight: 2')}: requests.buy.steps.0.choose.0.weight: 0 is less than or equal" in message


APPENDED = [
    # (text appended to the first-format file, the marker of the line the error names, its key, words of the message)
    ("periodic:\n  - {from: front, to: 10.244.0.9, port: 80, request: 1, response: 1, interval: 5}\n",
     "10.244.0.9", "periodic.0.to", "inside the cluster (the pod network"),
    ("periodic:\n  - {from: front, to: 198.51.100.1, request: 1, response: 1, interval: 5}\n",
     "198.51.100.1", "periodic.0.to", "needs a port"),
    ("periodic:\n  - {from: front, to: db.example.com, port: 80, request: 1, response: 1, interval: 5}\n",
     "db.example.com", "periodic.0.to", "neither a service of this application nor an IPv4 address"),
    ("periodic:\n  - {from: ghost, to: db, request: 1, response: 1, interval: 5}\n",
     "ghost", "periodic.0.from", "not a service of this application"),
    ("jobs:\n  - {name: backup, at: 1, reads_from: front, bytes: 1, to: 10.96.0.10}\n",
     "backup", "jobs.0.to", "the service network"),
    ("jobs:\n  - {name: db, at: 1, reads_from: db, bytes: 1, to: 198.51.100.1}\n",
     "name: db", "jobs.0.name", "is taken"),
    ("jobs:\n  - {name: backup, at: 1, reads_from: nothing, bytes: 1, to: 198.51.100.1}\n",
     "backup", "jobs.0.reads_from", "not a service of this application"),
    ("ingress: {type: service, port: 30080}\n", "ingress:", "ingress.port", "applies to nodeport and loadbalancer"),
    ("ingress: {type: ingress-controller, segment: 9000}\n", "ingress:", "ingress.segment", "applies to nodeport"),
    ("ingress: {type: nodeport, port: 8080}\n", "ingress:", "ingress.port", "less than the minimum of 30000"),
    ("dns:\n  upstream: 127.0.0.53\n", "127.0.0.53", "dns.upstream", "cannot be the address of a host outside"),
    ("pod_life:\n  image_bytes: 1000\n", "pod_life:", "pod_life", "needs a registry"),
    ("platform:\n  logs: {bytes_per_second: 10}\n", "logs:", "platform.logs", "needs `to`"),
    ("platform:\n  metrics: {scraper: datadog}\n", "scraper", "platform.metrics.scraper", "is not one of"),
    ("think_time_x: 1\n", "think_time_x", "think_time_x", "unknown key"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "marker", "key", "words"), APPENDED)
def test_cross_checks_of_the_new_keys(tmp_path: Path, extra: str, marker: str, key: str, words: str) -> None:
    text = FIRST_FORMAT + extra
    message = error(tmp_path, text)
    at = max(i for i, line in enumerate(text.splitlines(), 1) if marker in line)
    assert f"shop.yaml:{at}: {key}: " in message and words in message


SERVICE_ERRORS = [
    # (the db service's extra lines, the marker of the line the error names, its key, words of the message)
    ("    connection: {kind: pool, idle: 5}\n", "idle", "services.db.connection.idle", "keep-alive connection only"),
    ("    connection: keepalive\n", "keepalive", "services.db.connection", "is not one of"),
    ("    kind: daemonset\n", "daemonset", "services.db.kind", "is not one of"),
    ("    probes: {readiness: {type: ping}}\n", "ping", "services.db.probes.readiness.type", "is not one of"),
    ("    pod_life: {image_bytes: 5}\n", "pod_life", "services.db.pod_life", "needs a registry"),
    ("    pod_life: {registry: 10.244.0.3}\n", "registry", "services.db.pod_life.registry", "inside the cluster"),
    ("    tcp: {mss: 100}\n", "mss", "services.db.tcp.mss", "less than the minimum"),
    ("    autoscale: {min: 4, max: 2, calls_per_replica: 1}\n", "min: 4", "services.db.autoscale",
     "min must not exceed max"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "marker", "key", "words"), SERVICE_ERRORS)
def test_service_errors_name_their_line(tmp_path: Path, extra: str, marker: str, key: str, words: str) -> None:
    text = FIRST_FORMAT.replace("    port: 3306\n", "    port: 3306\n" + extra)
    message = error(tmp_path, text)
    assert f"shop.yaml:{line_of(text, marker)}: {key}: " in message and words in message


def test_think_time_errors(tmp_path: Path) -> None:
    text = FIRST_FORMAT.replace("think_time: {min: 2, max: 4}", "think_time:\n  min: 2\n  max: 4\n  mean: 3")
    assert f":{line_of(text, 'mean')}: think_time.mean: does not apply to the uniform" in error(tmp_path, text)
    text = FIRST_FORMAT.replace("think_time: {min: 2, max: 4}", "think_time: {distribution: exponential}")
    assert f":{line_of(text, 'think_time')}: think_time: 'mean' is a required property" in error(tmp_path, text)
    text = FIRST_FORMAT.replace("think_time: {min: 2, max: 4}", "think_time: {min: 5, max: 4}")
    assert f":{line_of(text, 'think_time')}: think_time: min must not exceed max" in error(tmp_path, text)


def test_errors_in_merged_or_missing_keys(tmp_path: Path) -> None:
    # a key that comes from an anchor is reported where it is written
    text = FIRST_FORMAT.replace("  front:\n    tier: frontend\n", "  front: &web\n    tier: frontend\n    kind: pod\n")
    text = text.replace("  catalogue:\n    tier: business\n", "  catalogue:\n    <<: *web\n    tier: business\n")
    assert f"shop.yaml:{line_of(text, 'kind: pod')}: services.catalogue.kind: " in error(tmp_path, text)
    # a missing key is reported at the mapping that misses it; a missing top-level key names no line
    text = FIRST_FORMAT.replace("    replicas: 3\n", "")
    assert f"shop.yaml:{line_of(text, '  db:')}: services.db: 'replicas' is a required property" in error(
        tmp_path, text
    )
    message = error(tmp_path, FIRST_FORMAT.replace("entry: front\n", ""))
    assert message == f"{tmp_path / 'shop.yaml'}: (top level): 'entry' is a required property"
    text = FIRST_FORMAT.replace("name: shop", "name: other")
    assert "shop.yaml:1: name: 'other' must equal the file name 'shop'" in error(tmp_path, text)


def test_not_yaml_names_line_and_column(tmp_path: Path) -> None:
    message = error(tmp_path, "name: shop\n  bad: [")
    where = f"{tmp_path / 'shop.yaml'}: line 2, column 6"
    assert message == f"{where}: not valid YAML: mapping values are not allowed in this context"


def test_a_bad_name_is_pointed_at_itself_and_an_empty_file_said_so(tmp_path: Path) -> None:
    text = FIRST_FORMAT.replace("  db:\n", "  DB:\n")
    assert f"shop.yaml:{line_of(text, 'DB:')}: services.DB: 'DB' does not match" in error(tmp_path, text)
    assert error(tmp_path, "") == f"{tmp_path / 'shop.yaml'}: (top level): the file is empty"


def test_a_name_too_long_for_a_file_is_no_application() -> None:
    """A name no file can have (the system refuses names over 255 bytes) is named, cut short, as no application."""
    with pytest.raises(AppError, match=r"no application 'x{80}': give a YAML file or one of"):
        load_app("x" * 300)
