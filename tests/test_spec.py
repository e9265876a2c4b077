"""The run specification: defaults defined once (the schema and the command line agree with it), structured
exfiltration windows, and config errors that name the key the user wrote."""

from __future__ import annotations

import copy
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from mimir.apps import load_app
from mimir.cli import build_parser
from mimir.detectors.registry import METHODS
from mimir.errors import ConfigError, UsageError
from mimir.loadmodel import DEFAULT_MIX
from mimir.spec import (
    DEFAULT_BIN_SECONDS,
    ClusterSpec,
    ExfilWindow,
    Fault,
    FeatureSpec,
    RunSpec,
    TestbedSpec,
    rate_name,
    split_method,
)
from mimir.workflow import run_spec, spec_on_testbed, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schemas" / "config.schema.yaml"
PROPERTIES = yaml.safe_load(SCHEMA.read_text())["properties"]
RUN = {"app": "sockshop", "users": 3}


def schema_defaults(section: str) -> dict:
    return {k: v["default"] for k, v in PROPERTIES[section]["properties"].items() if "default" in v}


def test_the_schema_repeats_the_specs_defaults() -> None:
    assert schema_defaults("defaults") == {
        "duration": RunSpec.duration,
        "rotate": RunSpec.rotate,
        "snaplen": RunSpec.snaplen,
    }
    cluster = schema_defaults("cluster")
    assert cluster and cluster == {k: getattr(ClusterSpec(), k) for k in cluster}
    features = FeatureSpec()
    assert schema_defaults("features") == {
        f.name: list(v) if isinstance(v := getattr(features, f.name), tuple) else v for f in fields(FeatureSpec)
    }
    assert schema_defaults("ingest") == {"bin": DEFAULT_BIN_SECONDS}
    assert schema_defaults("models")["methods"] == list(METHODS)
    assert schema_defaults("figures")["rate"] in features.rates
    run = PROPERTIES["runs"]["additionalProperties"]["properties"]
    assert run["exfil"]["items"]["properties"]["duration"]["default"] == ExfilWindow.duration
    assert run["faults"]["items"]["properties"]["down"]["default"] == Fault.down
    assert run["faults"]["items"]["properties"]["target"]["enum"] == list(Fault.TARGETS)
    testbed = schema_defaults("testbed")
    assert testbed == {f.name: getattr(TestbedSpec(), f.name) for f in fields(TestbedSpec) if f.name != "faults"}


def test_every_schema_key_of_the_cluster_is_a_field_of_the_spec() -> None:
    assert set(PROPERTIES["cluster"]["properties"]) <= {f.name for f in fields(ClusterSpec)}


def test_the_testbed_section_is_the_spec_but_its_faults() -> None:
    """Faults belong to a run (`runs.NAME.faults`), every other field of the spec to the `testbed` section."""
    assert set(PROPERTIES["testbed"]["properties"]) == {f.name for f in fields(TestbedSpec)} - {"faults"}


def test_the_command_line_takes_its_defaults_from_the_spec(tmp_path: Path) -> None:
    parser = build_parser()
    common = ["--app", "sockshop", "--users", "3", "--duration", "60", "-o", str(tmp_path)]
    synth = parser.parse_args(["synth", *common])
    assert (synth.snaplen, synth.rotate, synth.seed) == (RunSpec.snaplen, RunSpec.rotate, RunSpec.seed)
    collect = parser.parse_args(["collect", *common])
    spec = ClusterSpec()
    for name in ("capture_netns", "interface", "spawn_rate", "customers", "populate", "cpu_percent"):
        assert getattr(collect, name) == getattr(spec, name), name
    assert (collect.buffer, collect.service_network, collect.ready_timeout) == (
        spec.buffer_kib,
        spec.service_network,
        spec.ready_timeout,
    )
    assert collect.least_privilege_watch == spec.least_privilege_watch and collect.keep == spec.keep
    assert parser.parse_args(["ingest", "x.pcap", "-o", "f.parquet"]).bin == DEFAULT_BIN_SECONDS
    features = parser.parse_args(["features", "e.parquet", "run", "-o", "out"])
    assert features.tg == FeatureSpec.granularities and features.rates == FeatureSpec.rates
    assert features.split == "train=0.5,validation=0.5"
    assert synth.mix == ",".join(f"{k}={v:g}" for k, v in DEFAULT_MIX.items())


def test_an_exfiltration_window_reads_the_same_from_the_command_line_and_from_yaml() -> None:
    app = load_app("sockshop")
    text = ExfilWindow.from_text("path=user-db,user,front-end,outside;rate=100KB/min;start=1200;duration=120", app)
    mapping = ExfilWindow.from_mapping(
        {"path": ["user-db", "user", "front-end", "outside"], "rate": "100KB/min", "start": 1200, "duration": 120},
        app,
        "runs.x.exfil[0]",
    )
    assert text == mapping == ExfilWindow(("user-db", "user", "front-end", "outside"), 100e3, 1200.0, 120.0)
    short = ExfilWindow.from_mapping({"path": ["user", "outside"], "rate": "1MB/s", "start": 0}, app, "w")
    assert short.bytes_per_minute == 60e6 and short.duration == ExfilWindow.duration


def test_a_fault_reads_the_same_from_the_command_line_and_from_yaml() -> None:
    text = Fault.from_text("target=database;at=300;down=45")
    assert text == Fault.from_mapping({"target": "database", "at": 300, "down": 45}, "runs.x.faults[0]")
    assert text == Fault("database", 300.0, 45.0)
    assert Fault.from_text("target=wordpress;at=0").down == Fault.down


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("target=cache;at=30", "--fault 'target=cache;at=30': target: 'cache' is not one of database, wordpress"),
        ("target=database", "use target=database|wordpress;at=S[;down=S]"),
        ("target=database;at=30;colour=red", "use target="),
        ("target=database;at=-1", "at: '-1' is outside the documented range [0, 604800) s"),
        ("target=database;at=30;down=0", "down: '0' is outside the documented range (0, 86400] s"),
        ("target=database;at=soon", "at: 'soon' is not a number"),
    ],
)
def test_a_bad_fault_on_the_command_line_says_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(UsageError) as error:
        Fault.from_text(text)
    assert words in str(error.value)


def test_a_bad_fault_in_the_config_names_its_place() -> None:
    with pytest.raises(UsageError, match=r"^runs\.x\.faults\[2\]: down: "):
        Fault.from_mapping({"target": "wordpress", "at": 10, "down": -5}, "runs.x.faults[2]")
    with pytest.raises(UsageError, match=r"^runs\.x\.faults\[0\]: at: None"):
        Fault.from_mapping({"target": "wordpress"}, "runs.x.faults[0]")


def test_the_testbed_section_refuses_a_maximum_below_the_minimum() -> None:
    with pytest.raises(UsageError, match=r"^testbed\.max_wordpress_pods: 2 is below wordpress_pods 3"):
        TestbedSpec.from_config({"wordpress_pods": 3, "max_wordpress_pods": 2})
    assert TestbedSpec.from_config({}) == TestbedSpec()


def test_the_testbed_experiment_builds_its_runs_as_the_testbed_will() -> None:
    """config/testbed.yaml as the rule builds it: the section's settings with each run's own faults."""
    config = validate_config(yaml.safe_load((REPO / "config" / "testbed.yaml").read_text()), SCHEMA)
    built = {}
    on_testbed = {name: run for name, run in config["runs"].items() if run["source"] == "testbed"}
    for name, settings in on_testbed.items():
        spec = run_spec(name, settings, config["defaults"], config["seed"])
        built[name] = (spec, spec_on_testbed(name, settings, config["testbed"], spec))
    assert {name: spec.app.name for name, (spec, _) in built.items()} == dict.fromkeys(on_testbed, "wordpress")
    assert len({spec.seed for spec, _ in built.values()}) == len(built)
    assert [len(spec.exfil) for spec, _ in built.values()] == [0, 2, 1]
    assert built["testbed-eval-2"][1].faults == (Fault("database", 450.0, 60.0),)
    assert built["testbed-eval-1"][1] == TestbedSpec.from_config(config["testbed"])


def test_a_run_from_the_config_is_the_run_the_command_line_builds() -> None:
    app = load_app("sockshop")
    entry = {"app": "sockshop", "users": 7, "mix": {"browse": 2, "buy": 1, "register": 1}}
    spec = RunSpec.from_config("r", entry, {"duration": 300, "rotate": 100, "snaplen": 96}, 4, app)
    assert (spec.users, spec.duration, spec.rotate, spec.snaplen, spec.seed) == (7, 300.0, 100, 96, 4)
    assert spec.mix == {"browse": 0.5, "buy": 0.25, "register": 0.25}


def config_with(**change: object) -> dict:
    config = {"seed": 1, "runs": {"x": dict(RUN)}}
    for key, value in change.items():
        config[key] = value
    return copy.deepcopy(config)


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (config_with(runs={"x": {**RUN, "mix": {"browse": 1, "shop": 2}}}), "runs.x.mix.shop"),
        (config_with(runs={"x": {**RUN, "mix": {"browse": -1}}}), "runs.x.mix"),
        (config_with(runs={"x": {**RUN, "app": "no-such-app"}}), "runs.x.app"),
        (
            config_with(runs={"x": {**RUN, "exfil": [{"path": ["user", "nowhere"], "rate": "1MB/s", "start": 0}]}}),
            "runs.x.exfil[0]",
        ),
        (
            config_with(runs={"x": {**RUN, "exfil": [{"path": ["user", "outside"], "rate": "fast", "start": 0}]}}),
            "runs.x.exfil.0.rate",
        ),
        (config_with(runs={"x": {**RUN, "exfil": ["path=user,outside;rate=1MB/s;start=0"]}}), "runs.x.exfil.0"),
        (config_with(features={"rates": [0.1234567, 0.1234568]}, figures={"rate": 0.1234567}), "features.rates"),
        (config_with(ingest={"bin": 4}), "features.granularities"),
        (config_with(models={"methods": ["mimir@30"]}), "models.methods"),
        (config_with(figures={"rate": 3}), "figures.rate"),
        (config_with(defaults={"rotate": 0.5}), "defaults.rotate"),
    ],
)
def test_a_bad_value_names_the_key_the_user_wrote(config: dict, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        validate_config(config, SCHEMA, source="my.yaml")
    assert str(error.value).startswith("my.yaml: ") and words in str(error.value)


def test_a_valid_config_gets_the_specs_defaults_filled_in() -> None:
    config = validate_config(
        config_with(runs={"x": {**RUN, "exfil": [{"path": ["user", "outside"], "rate": "1MB/s", "start": 5}]}}),
        SCHEMA,
    )
    assert config["runs"]["x"]["exfil"][0]["duration"] == ExfilWindow.duration
    assert config["cluster"]["capture_netns"] == ClusterSpec.capture_netns


def test_method_names_and_rate_names() -> None:
    assert split_method("mimir@10") == ("mimir", 10) and split_method("lasso") == ("lasso", None)
    with pytest.raises(UsageError, match="METHOD@SECONDS"):
        split_method("mimir@ten")
    assert [rate_name(r) for r in FeatureSpec.rates] == ["10", "1", "0.1", "0.05", "0.01"]


def test_rates_are_floats_whatever_the_yaml_says() -> None:
    """`10` and `10.0` are one rate: the injection's seed is drawn from the value, so both must give the same."""
    config = validate_config(config_with(features={"rates": [10, 0.1]}, figures={"rate": 10}), SCHEMA)
    assert config["features"]["rates"] == [10.0, 0.1] and all(type(r) is float for r in config["features"]["rates"])
    assert type(config["figures"]["rate"]) is float
