"""The workflow's config under hostile input: every value the config decides is checked before the first job, with
the file and the key, through the one loader rules/common.smk calls (mimir.workflow.load_config); never a
traceback, never a job that fails on a value the config could have refused, never a blow-up from a few lines.

Most cases go through load_config in process (what the Snakefile runs); a few through a real `snakemake -n`, to
show that the message reaches the user as it is, with mimir's exit code, before anything is made.
"""

from __future__ import annotations

import copy
import math
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mimir.errors import ConfigError, IOFailure
from mimir.workflow import MAX_BYTES, MAX_VALUES, config_from_text, load_config, validate_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schemas" / "config.schema.yaml"
CORPUS = REPO / "tests" / "fuzz" / "corpus" / "config"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SMALL: dict[str, Any] = {
    "seed": 1,
    "defaults": {"duration": 240, "rotate": 120},
    "runs": {
        "shop-train": {"app": "sockshop", "users": 8, "role": "train"},
        "shop-eval": {"app": "sockshop", "users": 4, "training": "shop-train"},
    },
    "features": {"rates": [1], "granularities": [10, 60], "attack_seconds": 20},
    "models": {"methods": ["mimir", "commsvc"]},
    "figures": {"rate": 1},
}
EXFIL = {"path": ["user", "outside"], "rate": "1MB/min", "start": 10}
TESTBED = {"source": "testbed", "app": "wordpress", "users": 3}


def refused(text: str) -> str:
    """The message load_config gives for a config file's text: a ConfigError that starts with the file."""
    with pytest.raises(ConfigError) as error:
        config_from_text(text, "my.yaml")
    message = str(error.value)
    assert message.startswith("my.yaml: "), message
    return message


def with_run(**entry: Any) -> str:
    """SMALL with `shop-eval` replaced (its training kept unless given)."""
    config = copy.deepcopy(SMALL)
    config["runs"]["shop-eval"] = {"training": "shop-train", **entry}
    return yaml.safe_dump(config)


def changed(**sections: Any) -> str:
    return yaml.safe_dump({**copy.deepcopy(SMALL), **sections})


# --- the corpus seeds: each hostile one refused with its key, each valid one accepted --------------------------

SEEDS = {
    "alias-bomb-lists.yaml": f"past {MAX_VALUES} values",
    "alias-bomb-mappings.yaml": f"past {MAX_VALUES} values",
    "alias-self-reference.yaml": "the alias *p is inside its own anchor",
    "app-path-traversal.yaml": "runs.shop-eval.app: no application",
    "cluster-service-network.yaml": "cluster.service_network",
    "date-run-name.yaml": "runs.2024-01-01: the key 2024-01-01 is a date, not text",
    "duplicate-run.yaml": "line 9, column 1: not valid YAML: key 'runs' is given twice",
    "duration-inf.yaml": "defaults.duration: inf is not a finite number",
    "exfil-bad-path-testbed.yaml": "runs.shop-eval.exfil[0]",
    "exfil-rate-too-high.yaml": "runs.shop-eval.exfil[0]: rate",
    "figures-rate-not-a-rate.yaml": "figures.rate: 0.1 is not one of features.rates",
    "json-nan.json": "runs.shop-train.users: nan is not a finite number",
    "method-newline.yaml": "models.methods.1: 'commsvc\\n' is not a method",
    "mix-unknown-behaviour-cluster.yaml": "runs.shop-eval.mix.shop: not a behaviour",
    "mix-weight-nan.yaml": "runs.shop-eval.mix.browse: nan is not a finite number",
    "model-params-unknown.yaml": "models.params.mimir.seed: unknown key",
    "nested-too-deep.yaml": "nested deeper than 32 levels",
    "python-tag.yaml": "line 1, column 7: the tag !!python/tuple is not plain data",
    "rate-inf.yaml": "features.rates.1: inf is not a finite number",
    "realism-name-newline.yaml": "realism: 'wp\\n' is not a name",
    "realism-tables-without-log.yaml": "realism.wp.reference_log: conversation tables need their cluster log",
    "run-duration-nan.yaml": "runs.shop-eval.duration: nan is not a finite number",
    "run-name-integer.yaml": "runs.123: the key 123 is a number, not text",
    "run-name-newline.yaml": "runs: 'shop-eval\\n' is not a name",
    "run-name-too-long.yaml": "is not a name: 1 to 64 lower-case letters",
    "seed-negative.yaml": "seed: -1 is less than the minimum of 0",
    "top-level-list.yaml": "(top level): the file holds a list, not a mapping",
    "unknown-top-key.yaml": "pathvars: unknown key",
    "yte-template.yaml": "__use_yte__: unknown key",
}


HOSTILE = sorted(p.name for p in CORPUS.iterdir() if p.name != "README.md" and not p.name.startswith("valid-"))


def test_the_seeds_are_small_and_each_of_these_cases_has_one() -> None:
    assert set(SEEDS) <= set(HOSTILE) and all(p.stat().st_size < 20_000 for p in CORPUS.iterdir())


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_seed_is_refused_with_its_key(name: str) -> None:
    """Every hostile seed (these and other parts' ones) is refused as a config, with the file's name."""
    with pytest.raises(ConfigError) as error:
        load_config([CORPUS / name], SCHEMA)
    assert str(error.value).startswith(f"{CORPUS / name}: ") and SEEDS.get(name, "") in str(error.value)
    assert error.value.exit_code == 2


@pytest.mark.parametrize("name", ["valid-default.yaml", "valid-testbed.yaml"])
def test_a_valid_seed_loads(name: str) -> None:
    config = load_config([CORPUS / name], SCHEMA)
    assert config["runs"] and all(type(rate) is float for rate in config["features"]["rates"])


# --- numbers: every number of the config refused when not finite ------------------------------------------------


def numbers(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every number in a config (booleans are not numbers)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in numbers(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in numbers(v, (*path, i))]
    return [path] if isinstance(value, int | float) and not isinstance(value, bool) else []


def full_config() -> dict[str, Any]:
    """A config that sets every number the schema knows: the testbed experiment, every default written out, a run
    with a mix and an exfiltration window, the detectors' parameters and a cluster run."""
    config = validate_config(yaml.safe_load((REPO / "config" / "testbed.yaml").read_text()), SCHEMA)
    config["runs"]["synthetic-twin"]["mix"] = {"browse": 1, "buy": 1}
    config["runs"]["synthetic-twin"]["exfil"] = [dict(EXFIL, path=["wordpress", "outside"])]
    config["models"]["params"] = {"mimir": {"c": 1.0}, "ide": {"alpha": 0.01, "window": 10}, "oddball": {"alpha": 0.1}}
    return config


FULL = full_config()


@pytest.mark.parametrize("path", numbers(FULL), ids=lambda p: ".".join(map(str, p)))
@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_a_number_that_is_not_finite_is_refused_with_its_key(path: tuple[Any, ...], bad: float) -> None:
    config = copy.deepcopy(FULL)
    parent = config
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = bad
    with pytest.raises(ConfigError, match=r"^my\.yaml: (.+): (-?inf|nan) is not a finite number$") as error:
        validate_config(config, SCHEMA, source="my.yaml")
    assert str(error.value).split(": ")[1] == ".".join(map(str, path))


def test_the_yaml_spellings_of_infinity_and_nan_are_refused() -> None:
    assert "defaults.duration: inf" in refused(
        changed(defaults={"duration": 1}).replace("duration: 1", "duration: .inf")
    )
    run = with_run(app="sockshop", users=4, duration=1)
    assert "runs.shop-eval.duration: nan" in refused(run.replace("duration: 1\n", "duration: .NaN\n"))
    assert "figures.rate: -inf" in refused(changed(figures={"rate": 1}).replace("rate: 1\n", "rate: -.Inf\n"))


# --- mix, exfiltration and app: checked for every kind of run, named by the config key, never a flag ------------


@pytest.mark.parametrize("source", ["synthetic", "cluster", "testbed"])
def test_a_bad_mix_is_named_by_its_key_whatever_the_source(source: str) -> None:
    app = "wordpress" if source == "testbed" else "sockshop"
    for mix, words in [
        ({"shop": 1}, "runs.shop-eval.mix.shop: not a behaviour"),
        ({"browse": -1}, "runs.shop-eval.mix.browse"),
        ({"browse": 0}, "runs.shop-eval.mix: at least one weight must be positive"),
        ({}, "runs.shop-eval.mix"),
        ({"browse": "lots"}, "runs.shop-eval.mix.browse"),
    ]:
        message = refused(with_run(source=source, app=app, users=3, mix=mix))
        assert words in message and "--mix" not in message, message


@pytest.mark.parametrize("source", ["synthetic", "testbed"])
def test_a_bad_exfiltration_window_is_named_by_its_key(source: str) -> None:
    app, service = ("wordpress", "wordpress") if source == "testbed" else ("sockshop", "user")
    window = dict(EXFIL, path=[service, "outside"])
    for bad, words in [
        ({"path": [service, "nowhere"]}, "runs.shop-eval.exfil[0]"),
        ({"rate": "fast"}, "runs.shop-eval.exfil.0.rate: 'fast' is not a rate"),
        ({"rate": "999999999GB/s"}, "runs.shop-eval.exfil[0]: rate"),
        ({"start": 230, "duration": 60}, "runs.shop-eval.exfil[0]"),  # ends after the run's 240 s
        ({"duration": 1, "shape": "bursts"}, "runs.shop-eval.exfil[0]: shape bursts"),
    ]:
        message = refused(with_run(source=source, app=app, users=3, exfil=[{**window, **bad}]))
        assert words in message and "--exfil" not in message, message


def test_exfiltration_on_a_cluster_run_is_refused() -> None:
    assert "runs.shop-eval.exfil: physical exfiltration" in refused(
        with_run(source="cluster", app="sockshop", users=3, exfil=[EXFIL])
    )


@pytest.mark.parametrize("source", ["synthetic", "cluster", "testbed"])
def test_an_unknown_app_is_named_by_its_key(source: str) -> None:
    assert "runs.shop-eval.app: no application 'shop'" in refused(with_run(source=source, app="shop", users=3))


def test_an_app_that_is_a_path_to_a_foreign_file_never_shows_its_content(tmp_path: Path) -> None:
    secret = tmp_path / "secret.yaml"
    secret.write_text("root:x:0:0:root:/root:/bin/bash is a line of a file that is not an application\n")
    for app in ["../../../../../../etc/passwd", "/etc/passwd", str(secret), "../" * 8 + "etc/hostname"]:
        message = refused(with_run(app=app, users=3))
        assert message.startswith("my.yaml: runs.shop-eval.app: ") and "root:" not in message, message
    message = refused(with_run(app=str(secret), users=3))
    assert "the file holds text, not an application" in message
    assert "no such file" in refused(with_run(app=str(tmp_path / "missing.yaml"), users=3)).lower()


def test_an_application_file_kept_elsewhere_is_used(tmp_path: Path) -> None:
    """A user may keep an application outside the working folder: any path to a YAML file is an application."""
    mine = tmp_path / "elsewhere" / "myshop.yaml"
    mine.parent.mkdir()
    mine.write_text((REPO / "config" / "apps" / "sockshop.yaml").read_text().replace("name: sockshop", "name: myshop"))
    config = config_from_text(with_run(app=str(mine), users=3), "my.yaml")
    assert config["runs"]["shop-eval"]["app"] == str(mine)


# --- names that become folders, files and wildcards -------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["shop\n", "shop\nx", "Shop", "-shop", ".hidden", "a/b", "..", "a" * 65, "sh op", "", "shop\r", "ü"],
)
def test_a_run_name_is_plain_text_of_a_strict_pattern(name: str) -> None:
    config = copy.deepcopy(SMALL)
    config["runs"][name] = {"app": "sockshop", "users": 3}
    message = refused(yaml.safe_dump(config))
    assert "is not a name" in message, message
    config["realism"] = {name: {"reference": "data/runs/shop-train", "candidate": "shop-train"}}
    del config["runs"][name]
    assert "realism: " in refused(yaml.safe_dump(config))


def test_names_that_yaml_reads_as_numbers_or_dates_must_be_quoted() -> None:
    text = changed().replace("  shop-eval:", "  123:")
    assert "runs.123: the key 123 is a number, not text: write it in quotes" in refused(text)
    assert "runs.2024-01-01: the key 2024-01-01 is a date" in refused(
        changed().replace("  shop-eval:", "  2024-01-01:")
    )
    assert "runs.shop-eval.mix.True: the key True is a boolean" in refused(with_run(app="sockshop", users=3).replace(
        "users: 3", "users: 3\n    mix: {yes: 1}"))  # fmt: skip
    quoted = config_from_text(changed().replace("  shop-eval:", "  '123':"), "my.yaml")
    assert "123" in quoted["runs"]


def test_a_training_or_candidate_that_is_not_a_run_is_named() -> None:
    not_a_name = with_run(app="sockshop", users=3, training=123)
    assert "runs.shop-eval.training: 123 is not of type 'string'" in refused(not_a_name)
    realism = {"x": {"reference": "data/runs/shop-train", "candidate": "shop\n"}}
    assert "realism.x.candidate: 'shop\\n' is not a run" in refused(changed(realism=realism))


@pytest.mark.parametrize(("method", "words"), [("commsvc\n", "is not a method"), ("mimir@0", "is not a method"),
                                               ("mimir@30", "30 s is not one of features.granularities")])  # fmt: skip
def test_a_method_is_one_of_the_known_ones(method: str, words: str) -> None:
    message = refused(changed(models={"methods": ["mimir", method]}))
    assert message.startswith("my.yaml: models.methods") and words in message, message


def test_a_list_that_names_files_holds_each_value_once() -> None:
    assert "features.granularities" in refused(changed(features={**SMALL["features"], "granularities": [10, 10]}))
    assert "features.rates" in refused(changed(features={**SMALL["features"], "rates": [1, 1.0]}))
    assert "models.methods" in refused(changed(models={"methods": ["mimir", "mimir"]}))


# --- what a rule used to find out at run time ---------------------------------------------------------------------


def test_the_figures_rate_must_be_a_configured_rate() -> None:
    """`features.rates: [1]` leaves the figures' default rate (0.1) out: refused before the first job."""
    config = copy.deepcopy(SMALL)
    del config["figures"]
    assert "figures.rate: 0.1 is not one of features.rates" in refused(yaml.safe_dump(config))
    assert config_from_text(changed(features={**SMALL["features"], "rates": [1, 0.1]}), "my.yaml")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"mimir": {"C": 1}}, "models.params.mimir.C: unknown key"),
        ({"mimir": {"seed": 2}}, "models.params.mimir.seed: unknown key"),
        ({"mimir": {"c": 0}}, "models.params.mimir.c"),
        ({"mimir": {"c": "strong"}}, "models.params.mimir.c"),
        ({"ide": {"alpha": 1.5}}, "models.params.ide.alpha"),
        ({"ide": {"window": 0}}, "models.params.ide.window"),
        ({"lasso": {"alpha": 1}}, "models.params.lasso.alpha: unknown key"),
        ({"svm": {}}, "models.params.svm: unknown key"),
    ],
)
def test_a_detectors_parameters_are_checked_before_fitting(params: dict, words: str) -> None:
    assert words in refused(changed(models={"methods": ["mimir", "ide"], "params": params}))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"seed": 2**32}, "seed: 4294967296 is greater than the maximum"),
        ({"runs": {"x": {"app": "sockshop", "users": 3, "seed": -5}}}, "runs.x.seed"),
        ({"defaults": {"snaplen": 10**9}}, "defaults.snaplen"),
        ({"runs": {"x": {"app": "sockshop", "users": 10**9}}}, "runs.x.users"),
        ({"runs": {"x": {"app": "sockshop", "users": 3, "duration": 10**12}}}, "runs.x.duration"),
        ({"ingest": {"bin": 10**9}}, "ingest.bin"),
        ({"features": {"rates": [1], "seeds": 0}}, "features.seeds"),
        ({"features": {"rates": [1], "max_path_length": 10**6}}, "features.max_path_length"),
        ({"features": {"rates": [1], "split": {"train": 0.9, "validation": 0.5}}}, "features.split"),
    ],
)
def test_values_out_of_their_range_are_named(change: dict, words: str) -> None:
    assert words in refused(changed(**change))


def test_a_realism_reference_is_a_run_alone_or_tables_with_their_log() -> None:
    tables = "config/references/wordpress-slice.conv.txt"
    log = "config/references/wordpress-slice.entities.jsonl"
    ok = changed(realism={"wp": {"reference": tables, "reference_log": log, "candidate": "shop-train"}})
    assert config_from_text(ok, "my.yaml")["realism"]["wp"]["reference"] == [tables]
    run = changed(realism={"wp": {"reference": "data/runs/shop-eval", "candidate": "shop-train"}})
    assert config_from_text(run, "my.yaml")["realism"]["wp"]["reference"] == ["data/runs/shop-eval"]
    for entry, words in [
        ({"reference": tables}, "realism.wp.reference_log: conversation tables need their cluster log"),
        ({"reference": "data/runs/shop-eval", "reference_log": log}, "realism.wp.reference_log: is for conversation"),
        ({"reference": ["data/runs/shop-eval", tables], "reference_log": log}, "realism.wp.reference: a run bundle"),
        ({"reference": tables, "reference_log": log, "window": 10**9}, "realism.wp.window"),
    ]:
        assert words in refused(changed(realism={"wp": {"candidate": "shop-train", **entry}}))


def test_a_cluster_runs_settings_are_checked_before_collecting(tmp_path: Path) -> None:
    run = {"source": "cluster", "app": "sockshop", "users": 3}
    for cluster, words in [
        ({"service_network": "10.96.0.1/12"}, "cluster.service_network: '10.96.0.1/12'"),
        ({"service_network": "not-a-network"}, "cluster.service_network"),
        ({"manifests": str(tmp_path / "none")}, "cluster.manifests: "),
        ({"locustfile": str(tmp_path / "none.py")}, "cluster.locustfile: "),
        ({"spawn_rate": 10**9}, "cluster.spawn_rate"),
    ]:
        assert words in refused(changed(runs={**SMALL["runs"], "c": run}, cluster=cluster))


def test_an_imported_runs_files_must_exist(tmp_path: Path) -> None:
    run = {"source": "import", "pcap": str(tmp_path / "none.pcap"), "cluster_log": str(tmp_path / "log.pickle")}
    assert "runs.old.pcap: " in refused(changed(runs={**SMALL["runs"], "old": run}))
    assert "runs.old.pcap" in refused(changed(runs={**SMALL["runs"], "old": {**run, "pcap": ""}}))


def test_unknown_keys_are_named_everywhere() -> None:
    for text, words in [
        (changed(colour="red"), "colour: unknown key (known here: seed, defaults, runs"),
        (with_run(app="sockshop", users=3, colour="red"), "runs.shop-eval.colour: unknown key"),
        (changed(features={**SMALL["features"], "rate": [1]}), "features.rate: unknown key"),
        (changed(cluster={"namespace": "x"}), "cluster.namespace: unknown key"),
        (changed(testbed={"pods": 3}), "testbed.pods: unknown key"),
    ]:
        assert words in refused(text)


# --- what a file may hold: plain data within a budget -------------------------------------------------------------


def bomb(levels: int, *, mappings: bool) -> str:
    """A billion laughs under models.params.mimir: `levels` aliases, each repeating the one before ten times."""
    if mappings:
        parts = ["      l0: &a0 {x: 1, y: 2}"] + [
            f"      l{i}: &a{i} {{" + ", ".join(f"k{j}: *a{i - 1}" for j in range(10)) + "}" for i in range(1, levels)
        ]
        body = "\n".join(parts)
    else:
        repeat = [f"      - &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels)]
        parts = ["      - &a0 [lol, lol]", *repeat]
        body = "      c:\n" + "\n".join("  " + p for p in parts)
    return changed().replace("models:\n", "models:\n  params:\n    mimir:\n" + body + "\n", 1)


@pytest.mark.parametrize("mappings", [True, False])
def test_an_alias_bomb_is_refused_before_it_is_built(mappings: bool) -> None:
    assert f"its aliases expand the config past {MAX_VALUES} values" in refused(bomb(10, mappings=mappings))
    assert f"past {MAX_VALUES} values" in refused(bomb(6, mappings=mappings))  # 10^5 repeats: just too many
    # 100 repeats: within the budget, refused for what they are (not a parameter of the detector)
    assert refused(bomb(3, mappings=mappings)).startswith("my.yaml: models.params.mimir.")


def test_aliases_that_merely_reuse_a_part_are_fine() -> None:
    # an anchor must come before its alias: define it first, then reuse it with a merge key
    text = (
        "defaults: {duration: 240, rotate: 120}\nseed: 1\nruns:\n"
        "  shop-train: &train {app: sockshop, users: 8, role: train}\n"
        "  shop-eval: {<<: *train, role: eval, training: shop-train}\n"
        "features: {rates: [1], granularities: [10, 60], attack_seconds: 20}\n"
        "models: {methods: [mimir, commsvc]}\nfigures: {rate: 1}\n"
    )
    config = config_from_text(text, "my.yaml")
    assert config["runs"]["shop-eval"] == {**config["runs"]["shop-train"], "role": "eval", "training": "shop-train"}


def test_a_part_that_holds_itself_is_refused() -> None:
    assert "the alias *r is inside its own anchor" in refused("runs: &r {x: *r}\n")
    loop: dict[str, Any] = copy.deepcopy(SMALL)
    loop["models"]["params"] = {"mimir": loop["models"]}  # as a --config value or a program could make it
    with pytest.raises(ConfigError, match=r"models\.params\.mimir: holds itself"):
        validate_config(loop, SCHEMA)


def test_deep_nesting_is_refused() -> None:
    deep = "edges: " + "[" * 40 + "]" * 40 + "\n"
    assert "line 1, column 39: nested deeper than 32 levels" in refused(deep + changed())
    deep = "edges: " + "[" * 5000 + "]" * 5000 + "\n"  # libyaml's parser stops first, at 1000 levels
    assert "line 1, column 1007: not valid YAML: exceeded maximum nesting depth" in refused(deep + changed())
    deep = '{"runs": ' + "[" * 100_000 + "]" * 100_000 + "}"  # JSON, as Snakemake tries first
    assert "nested deeper than" in refused(deep)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "(top level): the file holds nothing"),
        ("just text\n", "(top level): the file holds text"),
        ("[1, 2]\n", "(top level): the file holds a list"),
        (
            "runs: {x: {app: sockshop, users: 3}}\nruns: {}\n",
            "line 2, column 1: not valid YAML: key 'runs' is given twice",
        ),
        ('{"seed": 1, "seed": 2, "runs": {}}', "key 'seed' is given twice"),
        ("seed: !!python/object/apply:os.system [true]\n", "the tag !!python/object/apply:os.system is not"),
        ("seed: !!binary aGVsbG8=\n", "line 1, column 7: the tag !!binary is not plain data"),
        ("seed: !!timestamp soon\n", "the tag !!timestamp is not plain data"),
        ("seed: !!set {1}\n", "the tag !!set is not plain data"),
        ("runs: !!map [1]\n", "the tag !!map is not plain data"),
        ("seed: 2024-02-30\n", "not valid YAML: day is out of range"),
        ("seed: " + "9" * 5000 + "\n", "not valid YAML"),
        ("runs: *nowhere\n", "line 1, column 7: not valid YAML: found undefined alias"),
        ("runs: {x: [}\n", "not valid YAML"),
        ("a: 1\n---\nb: 2\n", "line 2, column 1: not valid YAML: but found another document"),
        ("__use_yte__: true\nseed:\n  ?if True:\n    1\n", "__use_yte__: unknown key"),
        ('runs: {x: {app: "a\\0.yaml", users: 3}}\n', "runs.x.app: 'a\\x00.yaml' holds a NUL character"),
        (
            "runs: {x: {app: sockshop, users: 3}}\nseed: " + "x" * 5000 + "\n",
            "seed: '" + "x" * 60 + "'… is not of type 'integer'",
        ),
    ],
)
def test_a_file_that_is_not_a_plain_config_is_refused(text: str, words: str) -> None:
    assert words in refused(text)


def test_a_config_file_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    with pytest.raises(IOFailure, match=r"none\.yaml: cannot read the config"):
        load_config([tmp_path / "none.yaml"], SCHEMA)
    (tmp_path / "big.yaml").write_text("# " + "x" * MAX_BYTES)
    with pytest.raises(ConfigError, match=r"big\.yaml: larger than 256 KiB"):
        load_config([tmp_path / "big.yaml"], SCHEMA)
    (tmp_path / "latin1.yaml").write_bytes("seed: 1 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml: byte offset 13: not UTF-8 text"):
        load_config([tmp_path / "latin1.yaml"], SCHEMA)


def test_several_files_and_overrides_merge_as_snakemake_merges_them(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(changed())
    (tmp_path / "b.yaml").write_text("features: {rates: [1, 0.5]}\n")
    config = load_config([tmp_path / "a.yaml", tmp_path / "b.yaml"], SCHEMA, overrides={"seed": 9})
    assert config["features"]["rates"] == [1.0, 0.5] and config["features"]["attack_seconds"] == 20
    assert config["seed"] == 9
    with pytest.raises(ConfigError, match=r"^.*a\.yaml, .*b\.yaml: seed: nan is not a finite number"):
        load_config([tmp_path / "a.yaml", tmp_path / "b.yaml"], SCHEMA, overrides={"seed": math.nan})


# --- through a real `snakemake -n`: the message as the user sees it, before anything is made ---------------------


def limit_memory() -> None:
    """The subprocess's address space: a config that expanded would fail on memory, not pass unnoticed."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def dry_run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "1", "-n"]
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=600, check=False, preexec_fn=limit_memory
    )


def assert_refused_before_any_job(done: subprocess.CompletedProcess, workdir: Path, words: str) -> str:
    said = done.stdout + done.stderr
    assert done.returncode == 2, said[-3000:]
    assert "invalid configuration: " in said and words in said, said[-3000:]
    assert "Traceback" not in said and "MemoryError" not in said and 'File "' not in said, said[-3000:]
    assert not any((workdir / folder).exists() for folder in ("data", "results", "logs")), said[-3000:]
    return said


@pytest.mark.parametrize(
    ("seed", "words"),
    [
        ("duration-inf.yaml", "defaults.duration: inf is not a finite number"),
        ("mix-unknown-behaviour-cluster.yaml", "runs.shop-eval.mix.shop: not a behaviour"),
        ("exfil-bad-path-testbed.yaml", "runs.shop-eval.exfil[0]"),
        ("run-name-integer.yaml", "runs.123: the key 123 is a number"),
        ("run-name-newline.yaml", "runs: 'shop-eval\\n' is not a name"),
        ("figures-rate-not-a-rate.yaml", "figures.rate: 0.1 is not one of features.rates"),
        ("alias-bomb-lists.yaml", f"line 17, column 31: its aliases expand the config past {MAX_VALUES} values"),
    ],
)
def test_snakemake_stops_on_a_hostile_configfile_with_the_key(tmp_path: Path, seed: str, words: str) -> None:
    done = dry_run(tmp_path, "--configfile", str(CORPUS / seed))
    assert_refused_before_any_job(done, tmp_path, f"{CORPUS / seed}: {words}")


def test_snakemake_never_shows_a_foreign_file_named_as_an_app(tmp_path: Path) -> None:
    done = dry_run(tmp_path, "--configfile", str(CORPUS / "app-path-traversal.yaml"))
    said = assert_refused_before_any_job(done, tmp_path, "runs.shop-eval.app: no application")
    assert "root:" not in said


def test_snakemake_refuses_a_bomb_in_the_working_folders_config_within_memory(tmp_path: Path) -> None:
    """The working folder's config/config.yaml is read by mimir alone: even a billion mappings are refused at once."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(bomb(10, mappings=True))
    done = dry_run(tmp_path)
    assert_refused_before_any_job(done, tmp_path, "config/config.yaml: line ")


def test_snakemake_refuses_a_non_finite_config_value_from_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "my.yaml").write_text(changed())
    done = dry_run(tmp_path, "--configfile", str(tmp_path / "my.yaml"), "--config", "seed=nan")
    assert_refused_before_any_job(done, tmp_path, "my.yaml: seed: nan is not a finite number")


def test_snakemake_names_a_missing_config_with_the_io_code(tmp_path: Path) -> None:
    done = dry_run(tmp_path)
    said = done.stdout + done.stderr
    assert done.returncode == 5 and "config/config.yaml: cannot read the config" in said and "Traceback" not in said
