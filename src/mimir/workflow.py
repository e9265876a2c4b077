"""What the Snakemake workflow needs from the package: the validated config and one function per rule.

The rules' scripts (scripts/*.py) are thin adapters: they hand Snakemake's declared inputs, outputs and params to
these functions, which log to the rule's log file and never take values through a shell, a file name or a file
the rule did not declare.

The config is read here, not by Snakemake (rules/common.smk calls `load_config`): every file is parsed as plain
YAML or JSON within a budget (aliases cannot expand it past `MAX_VALUES` values, nor nest it past `MAX_DEPTH`),
then checked against the schema and by building each run as its rule will, so that a bad value stops the
workflow before its first job, with the file and the key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mimir.apps import CONFIG
from mimir.errors import ConfigError, IOFailure, MimirError
from mimir.spec import (
    BIN,
    WINDOW,
    ClusterSpec,
    Fault,
    FeatureSpec,
    RunSpec,
    TestbedSpec,
    check_granularities,
    rate_name,
    split_method,
)

CONFIG_SCHEMA = CONFIG / "schemas" / "config.schema.yaml"
# A config names a few hundred values; these bounds are far above any experiment and far below what takes a
# noticeable time or memory to walk (a YAML alias repeats a part without copying it: ten nested aliases of ten
# make 10^10 values out of a few lines)
MAX_VALUES = 100_000  # keys, values and list items, every alias expanded
MAX_DEPTH = 32  # mappings and lists nested, every alias expanded
MAX_BYTES = 256 << 10  # of one config file: a few KiB in practice


def load_config(
    paths: Sequence[str | Path], schema_path: Path = CONFIG_SCHEMA, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The workflow's config, as rules/common.smk makes it: each file read by `read_config`, merged in order as
    Snakemake merges `--configfile`s (a later file's keys win, mappings merged key by key), Snakemake's `--config`
    values on top, then `validate_config`. The fuzzing tests call this, so that they test what the workflow does."""
    config: dict[str, Any] = {}
    for path in paths:
        _merge(config, read_config(Path(path)))
    _merge(config, overrides or {})
    return validate_config(config, schema_path, source=", ".join(map(str, paths)) or "config")


def config_from_text(text: str, source: str = "config", schema_path: Path = CONFIG_SCHEMA) -> dict[str, Any]:
    """`load_config` of one file's text: parsed by `parse_config`, then `validate_config`."""
    return validate_config(parse_config(text, source), schema_path, source)


def read_config(path: Path) -> dict[str, Any]:
    """One config file, parsed by `parse_config`: UTF-8 text of at most MAX_BYTES."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as e:
        raise IOFailure(f"{path}: cannot read the config: {e.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_BYTES >> 10} KiB: not a config file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: byte offset {e.start}: not UTF-8 text") from None
    return parse_config(text, str(path))


def parse_config(text: str, source: str) -> dict[str, Any]:
    """A config file's text as Snakemake reads it (JSON, else YAML), but as plain data only: no tags, no key
    given twice, and within the alias budget, checked on the parser's events before anything is built from them
    (validate_config refuses the rest: NaN and infinities, keys that are not text, templates)."""
    try:
        data = json.loads(text, object_pairs_hook=_json_mapping(source))
    except RecursionError:
        raise ConfigError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:  # not JSON: YAML, as Snakemake tries next
        data = _parse_yaml(text, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: (top level): the file holds {_kind(data)}, not a mapping of keys such as runs")
    return data


def _json_mapping(source: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """JSON objects as mappings, refusing a key given twice (JSON would keep the last silently)."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        for key, value in items:
            if key in mapping:
                raise ConfigError(f"{source}: key {key!r} is given twice in one object")
            mapping[key] = value
        return mapping

    return pairs


class _ConfigLoader(yaml.CSafeLoader):
    """YAML's safe loader (libyaml's parser) that refuses a key given twice in one mapping (YAML would keep the last
    silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[tuple[str, str]] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                if (key.tag, key.value) in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key.value!r} is given twice in one mapping", key.start_mark
                    )
                seen.add((key.tag, key.value))
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        _check_yaml_events(text, source)
        loader = _ConfigLoader(text)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as e:  # a character YAML does not allow
        raise ConfigError(f"{source}: character {e.position}: not valid YAML: {e.reason} #x{e.character:04x}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ConfigError(f"{source}:{where} not valid YAML: {getattr(e, 'problem', None) or e}") from None
    except (ValueError, OverflowError) as e:  # a value YAML recognises but cannot make: 2024-02-30, a 5000-digit int
        raise ConfigError(f"{source}: not valid YAML: {e}") from None


def _check_yaml_events(text: str, source: str) -> None:
    """Refuse a document whose aliases would expand it past MAX_VALUES values or MAX_DEPTH levels, that holds
    itself, or that tags a value (`!!set`, `!!python/tuple`, `!!timestamp`: a config is plain data, and YAML's
    constructors fail on a tag that does not fit its value in ways of their own), from the parser's events alone:
    they are as many as the file's parts, whatever the aliases repeat."""
    anchored: dict[str, tuple[int, int]] = {}  # anchor → (values, levels) of its part, aliases expanded
    open_: list[list[Any]] = [[0, 0, None]]  # per collection being read: values, levels below it, anchor
    events = yaml.parse(text, Loader=yaml.CSafeLoader)
    try:
        for event in events:
            if getattr(event, "tag", None) is not None:
                tag = event.tag.replace("tag:yaml.org,2002:", "!!")
                raise _budget_error(source, event, f"the tag {tag} is not plain data: write the value without it")
            if isinstance(event, yaml.CollectionStartEvent):
                open_.append([1, 0, event.anchor])
                if len(open_) - 1 > MAX_DEPTH:
                    raise _budget_error(source, event, f"nested deeper than {MAX_DEPTH} levels")
                continue
            if isinstance(event, yaml.AliasEvent) and event.anchor not in anchored:
                if any(part[2] == event.anchor for part in open_):
                    raise _budget_error(source, event, f"the alias *{event.anchor} is inside its own anchor")
                continue  # an undefined alias: the loader says so, with its line and column
            part = _expanded(event, anchored, open_)
            if part is None:
                continue
            parent = open_[-1]
            parent[0] += part[0]
            parent[1] = max(parent[1], part[1])
            if parent[0] > MAX_VALUES:
                raise _budget_error(source, event, f"its aliases expand the config past {MAX_VALUES} values")
            if len(open_) - 1 + part[1] > MAX_DEPTH:
                raise _budget_error(source, event, f"its aliases nest the config deeper than {MAX_DEPTH} levels")
    finally:
        events.close()


def _expanded(
    event: yaml.Event, anchored: dict[str, tuple[int, int]], open_: list[list[Any]]
) -> tuple[int, int] | None:
    """(values, levels) an event adds to the collection it is in, aliases expanded (None: none, a document's
    start or end); a collection's end closes it, and records it under its anchor."""
    if isinstance(event, yaml.AliasEvent):
        return anchored[event.anchor]
    if isinstance(event, yaml.ScalarEvent):
        if event.anchor is not None:
            anchored[event.anchor] = (1, 0)
        return 1, 0
    if isinstance(event, yaml.CollectionEndEvent):
        values, below, anchor = open_.pop()
        if anchor is not None:
            anchored[anchor] = (values, below + 1)
        return values, below + 1
    return None


def _budget_error(source: str, event: yaml.Event, why: str) -> ConfigError:
    mark = event.start_mark
    return ConfigError(f"{source}: line {mark.line + 1}, column {mark.column + 1}: {why}")


def _merge(config: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Snakemake's merge of config files: mappings key by key, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = dict(value) if isinstance(value, Mapping) else value


def _kind(value: Any) -> str:
    """What a value is, in words, without echoing it (it may come from any file)."""
    kinds = {dict: "a mapping", list: "a list", str: "text", bool: "a boolean", type(None): "nothing"}
    return kinds.get(type(value), "a number" if isinstance(value, int | float) else f"a {type(value).__name__}")


def _defaults(schema: dict[str, Any], value: Any) -> None:
    """Fill in the schema's defaults, in place, wherever the config leaves a key out."""
    items = schema.get("items")
    if isinstance(items, dict) and isinstance(value, list):
        for item in value:
            _defaults(items, item)
    if not isinstance(value, dict):
        return
    for key, sub in schema.get("properties", {}).items():
        if key not in value and "default" in sub:
            value[key] = json.loads(json.dumps(sub["default"]))
        if key in value:
            _defaults(sub, value[key])
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        for key in value:
            if key not in schema.get("properties", {}):
                _defaults(extra, value[key])


def validate_config(config: dict[str, Any], schema_path: Path, source: str = "config") -> dict[str, Any]:
    """Check the config's values, then the schema, fill defaults, then check what a schema cannot, before any job
    runs: every run built as its rule will build it, every section as its stage will read it.

    Every message starts with the config file and names the key the user wrote.
    """
    try:
        _check_values(config, (), 0, {})
        schema = yaml.safe_load(schema_path.read_text())
        errors = jsonschema.Draft202012Validator(schema).iter_errors(config)
        first = min(
            errors,
            key=lambda e: [(isinstance(k, str), k if isinstance(k, int) else 0, str(k)) for k in e.absolute_path],
            default=None,
        )
        if first is not None:
            raise ConfigError(_schema_message(first))
        _defaults(schema, config)
        _check_runs(config)
        _check_cluster(config)
        _check_features(config)
        _check_realism(config)
    except MimirError as e:
        raise ConfigError(f"{source}: {e}") from None
    return config


def _key(path: Sequence[Any]) -> str:
    """A key path as the user writes it: `runs.shop.mix.buy`."""
    return ".".join(str(k) for k in path) or "(top level)"


PLAIN = (str, int, float, bool, type(None))  # what JSON holds besides mappings and lists


def _check_values(value: Any, path: tuple[Any, ...], depth: int, seen: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(values, levels) of a config, every shared part counted where it repeats, refusing more than MAX_VALUES or
    MAX_DEPTH, a part that holds itself, keys that are not text, numbers that are not finite, text with a NUL and
    anything that is not plain data (a date, a set): whoever made the config (a file, Snakemake's --config, a
    test), nothing walks it before this did. `seen`: every mapping and list already measured, by identity."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{_key(path)}: {value!r} is not a finite number")
    if isinstance(value, str) and "\0" in value:  # no file name, no name holds one
        raise ConfigError(f"{_key(path)}: {value!r} holds a NUL character")
    if isinstance(value, PLAIN):
        return 1, 0
    if not isinstance(value, dict | list):
        raise ConfigError(f"{_key(path)}: {_kind(value)} is not a config value (quote it to make it text)")
    if id(value) not in seen:
        seen[id(value)] = (MAX_VALUES + 1, MAX_DEPTH + 1)  # until measured: a part met again inside itself
        values, levels = 1, 0
        for key, item in value.items() if isinstance(value, dict) else enumerate(value):
            if isinstance(value, dict) and isinstance(key, str) and "\0" in key:
                raise ConfigError(f"{_key(path)}: the key {key!r} holds a NUL character")
            if isinstance(value, dict) and not isinstance(key, str):
                raise ConfigError(f"{_key((*path, key))}: the key {key} is {_kind(key)}, not text: write it in quotes")
            if depth + 1 > MAX_DEPTH:
                raise ConfigError(f"{_key(path)}: nested deeper than {MAX_DEPTH} levels")
            more, below = _check_values(item, (*path, key), depth + 1, seen)
            values, levels = values + more + isinstance(value, dict), max(levels, below + 1)
            if values > MAX_VALUES:
                raise ConfigError(f"{_key(path)}: holds more than {MAX_VALUES} values (aliases expanded): not a config")
        seen[id(value)] = (values, levels)
    values, levels = seen[id(value)]
    if values > MAX_VALUES:
        raise ConfigError(f"{_key(path)}: holds itself")
    if depth + levels > MAX_DEPTH:
        raise ConfigError(f"{_key(path)}: nested deeper than {MAX_DEPTH} levels (aliases expanded)")
    return values, levels


NAME_RULE = "1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"


def _schema_message(error: jsonschema.ValidationError) -> str:
    """A schema error as `key: what is wrong`, naming an unknown or badly named key itself."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        extra = sorted(str(k) for k in error.instance if k not in known)
        if extra:
            return f"{_key([*path, extra[0]])}: unknown key (known here: {', '.join(known)})"
    if "propertyNames" in error.schema_path:
        return f"{_key(path)}: {error.instance!r} is not a name: {NAME_RULE} (it names folders and files)"
    if error.validator == "pattern" and "description" in error.schema:
        return f"{_key(path)}: {_short(error.instance)} is not {error.schema['description']}"
    return f"{_key(path)}: {error.message.replace(repr(error.instance), _short(error.instance))}"


def _short(value: Any) -> str:
    """A value as a message quotes it: long text cut, so that a message stays a line."""
    return repr(value[:60]) + "…" if isinstance(value, str) and len(value) > 80 else repr(value)


def _check_runs(config: dict[str, Any]) -> None:
    """Training references, the prototype's files of imported runs, and every generated, collected or testbed run
    built once as its rule will build it (apps, mixes, exfiltration windows, faults)."""
    runs = config["runs"]
    for name, run in runs.items():
        training = run.get("training")
        if training is not None and (training not in runs or runs[training]["role"] != "train"):
            raise ConfigError(f"runs.{name}.training: {training!r} is not a training run of this config")
        if run.get("faults") and run["source"] != "testbed":
            raise ConfigError(f"runs.{name}.faults: pods are only killed on the testbed (source: testbed)")
        if run["source"] == "import":
            for key in ("pcap", "cluster_log", "analysis_json"):
                if key in run and not Path(run[key]).is_file():
                    raise ConfigError(f"runs.{name}.{key}: {run[key]}: no such file")
            continue
        if run["source"] == "cluster" and run.get("exfil"):
            raise ConfigError(
                f"runs.{name}.exfil: physical exfiltration is only generated or sent on the testbed "
                "(source: synthetic or testbed)"
            )
        spec = run_spec(name, run, config["defaults"], config["seed"])
        if run["source"] == "synthetic":
            spec.check_synthetic(f"runs.{name}")
        if run["source"] == "testbed":
            spec_on_testbed(name, run, config["testbed"], spec)
        if run["source"] == "cluster":
            _check_collection(name, spec, config["cluster"])


def _check_cluster(config: dict[str, Any]) -> None:
    """The `cluster` section as `mimir collect` reads it, when a run is collected."""
    if not any(run["source"] == "cluster" for run in config["runs"].values()):
        return
    ClusterSpec.from_config(config["cluster"])
    network = config["cluster"]["service_network"]
    try:
        ipaddress.IPv4Network(network)
    except ValueError as e:
        raise ConfigError(f"cluster.service_network: {network!r}: {e}") from None


def _check_collection(name: str, spec: RunSpec, cluster: Mapping[str, Any]) -> None:
    """The application's manifests and locustfile a collected run deploys and drives (the `cluster` section's, or
    those mimir ships for the application)."""
    from mimir.extras import require_extra

    require_extra("cluster", f"runs.{name} (source: cluster)")
    from mimir.sources.cluster.collect import CollectConfig

    collection = CollectConfig(spec, ClusterSpec.from_config(cluster), Path("data") / "runs" / name)
    where = "cluster.manifests" if cluster.get("manifests") else f"runs.{name}.app"
    if not collection.manifest_folder.is_dir():
        raise ConfigError(f"{where}: {collection.manifest_folder}: no manifests folder for {spec.app.name!r}")
    where = "cluster.locustfile" if cluster.get("locustfile") else f"runs.{name}.app"
    if not collection.locust_path.is_file():
        raise ConfigError(f"{where}: {collection.locust_path}: no locustfile for {spec.app.name!r}")


def _check_features(config: dict[str, Any]) -> None:
    """The split, unique rate names, granularities on whole flow bins, methods on configured granularities, and the
    figures' rate among the rates."""
    features = config["features"]
    FeatureSpec.from_config(features)  # the ranges first: a rate too large for a float is named, not converted
    rates = FeatureSpec.RANGES["rates"]
    # a rate is a float whether the YAML says 10 or 10.0: the injection's seed depends on its value
    features["rates"] = [float(rate) for rate in features["rates"]]
    config["figures"]["rate"] = rates.check(config["figures"]["rate"], "figures.rate")
    BIN.check(config["ingest"]["bin"], "ingest.bin")
    names: dict[str, float] = {}
    for rate in features["rates"]:
        if names.setdefault(rate_name(rate), rate) != rate:
            raise ConfigError(
                f"features.rates: {names[rate_name(rate)]!r} and {rate!r} have the same name {rate_name(rate)!r} "
                "in file names; make them differ in the first six significant digits"
            )
    check_granularities(features["granularities"], config["ingest"]["bin"], "features.granularities")
    for method in config["models"]["methods"]:
        _, tg = split_method(method)
        if tg is not None and tg not in features["granularities"]:
            raise ConfigError(f"models.methods: {method!r}: {tg} s is not one of features.granularities")
    if config["figures"]["rate"] not in features["rates"]:
        raise ConfigError(f"figures.rate: {config['figures']['rate']!r} is not one of features.rates")


def _check_realism(config: dict[str, Any]) -> None:
    """Each comparison's candidate is a run of this config; its reference becomes a list of paths: a run bundle
    folder (one already there, or a run of this config) alone and without a log, else conversation tables with
    their cluster log."""
    produced = {Path("data") / "runs" / name for name in config["runs"]}
    here = (Path(), CONFIG.parent)
    for name, entry in config.get("realism", {}).items():
        if entry["candidate"] not in config["runs"]:
            raise ConfigError(f"realism.{name}.candidate: {entry['candidate']!r} is not a run of this config")
        WINDOW.check(entry["window"], f"realism.{name}.window")
        if isinstance(entry["reference"], str):
            entry["reference"] = [entry["reference"]]
        # a relative path is the working folder's, else this project's (config/references/...), as the rule reads it
        bundles = [p for p in entry["reference"] if Path(p) in produced or any((base / p).is_dir() for base in here)]
        if bundles and len(entry["reference"]) > 1:
            raise ConfigError(
                f"realism.{name}.reference: a run bundle folder is a reference of its own, not one of several"
            )
        if bundles and entry.get("reference_log"):
            raise ConfigError(f"realism.{name}.reference_log: is for conversation tables; {bundles[0]} is a run")
        if not bundles and not entry.get("reference_log"):
            raise ConfigError(
                f"realism.{name}.reference_log: conversation tables need their cluster log (the prototype's pickle "
                "or an entities.jsonl)"
            )


@contextlib.contextmanager
def logged(log: str | Path) -> Iterator[None]:
    """Send the rule's stdout and stderr to its log file, ending with what the job used (its exact peak memory and
    CPU time, which the rules' `resources:` are sized from)."""
    import time

    Path(log).parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    with Path(log).open("w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        yield
        print(job_usage(time.perf_counter() - began))


def job_usage(seconds: float) -> str:
    """This process's peak resident memory and CPU seconds since it started (imports included), with its worker
    processes': exact counts from the kernel, where a sampling monitor can miss a short peak."""
    import resource

    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime
    # ru_maxrss is in kB on Linux; for the workers, that of the largest one (a job with N at once holds up to N)
    return (
        f"resources: peak RSS {own.ru_maxrss / 1024:.0f} MB, largest worker {workers.ru_maxrss / 1024:.0f} MB, "
        f"CPU {cpu:.1f} s, {seconds:.1f} s in the job's code"
    )


def run_spec(name: str, settings: Mapping[str, Any], defaults: Mapping[str, Any], seed: int) -> RunSpec:
    """The run `runs.NAME` of the config, as the command line would build it."""
    from mimir.apps import load_app

    try:
        app = load_app(settings["app"])
    except MimirError as e:
        raise ConfigError(f"runs.{name}.app: {e}") from None
    return RunSpec.from_config(name, settings, defaults, seed, app)


def synth_run(name: str, params: Mapping[str, Any], out: Path) -> None:
    """Rule synth: params `settings` (the run's config entry), `defaults` and `seed`."""
    from mimir.sources.synthetic import synthesize

    result = synthesize(run_spec(name, params["settings"], params["defaults"], params["seed"]), out, progress=False)
    print(f"{out}: {result.packets} packets in {len(result.files)} files")


def collect_run(name: str, params: Mapping[str, Any], out: Path) -> None:
    """Rule collect: params `settings`, `defaults`, `cluster` and `seed`; progress lines go to the rule's log."""
    from mimir.sources.cluster.collect import CollectConfig, collect, progress_printer

    spec = run_spec(name, params["settings"], params["defaults"], params["seed"])
    run = collect(
        CollectConfig(spec, ClusterSpec.from_config(params["cluster"]), out), progress=progress_printer(sys.stdout)
    )
    print(f"{out}: {run['status']}, {run.get('capture', {}).get('packets')} packets captured")


def spec_on_testbed(name: str, settings: Mapping[str, Any], testbed: Mapping[str, Any], run: RunSpec) -> TestbedSpec:
    """The config's `testbed` section with the faults of `runs.NAME`; the testbed deploys WordPress only, and a fault
    after the load's end would never happen."""
    if run.app.name != "wordpress":
        raise ConfigError(f"runs.{name}.app: {settings['app']!r}: the testbed runs WordPress only (app: wordpress)")
    faults = tuple(Fault.from_mapping(f, f"runs.{name}.faults[{i}]") for i, f in enumerate(settings.get("faults", [])))
    for i, fault in enumerate(faults):
        if fault.at >= run.duration:
            raise ConfigError(f"runs.{name}.faults[{i}].at: {fault.at:g} s is not within the run's {run.duration:g} s")
    return dataclasses.replace(TestbedSpec.from_config(testbed), faults=faults)


def testbed_run(name: str, params: Mapping[str, Any], out: Path) -> None:
    """Rule testbed: params `settings`, `defaults`, `testbed` and `seed`; progress lines go to the rule's log."""
    from mimir.sources.cluster.collect import progress_printer
    from mimir.sources.testbed.run import TestbedConfig, run_testbed

    spec = run_spec(name, params["settings"], params["defaults"], params["seed"])
    testbed = spec_on_testbed(name, params["settings"], params["testbed"], spec)
    run = run_testbed(TestbedConfig(spec, testbed, out), progress=progress_printer(sys.stdout))
    print(f"{out}: {run['status']}, {run.get('capture', {}).get('packets')} packets captured")


def import_run(inputs: Mapping[str, Any], out: Path) -> None:
    """Rule import_legacy: inputs `pcap`, `cluster_log` and, if the run names one, `analysis_json`."""
    from mimir.sources.legacy import import_legacy

    analysis = Path(inputs["analysis_json"]) if inputs.get("analysis_json") else None
    import_legacy(Path(inputs["pcap"]), Path(inputs["cluster_log"]), analysis, out)


def ingest_run(run_dir: Path, out: Path, bin_seconds: int, threads: int = 1) -> None:
    """Rule ingest: the run's capture files (run.json's capture.files, in time order) read with the rule's threads,
    several files at once; the table is the same whatever the threads."""
    from mimir.capture.ingest import MAX_WORKERS, ingest, write_flows

    run = json.loads((run_dir / "run.json").read_text())
    files = [run_dir / name for name in run["capture"]["files"]]
    flows, summary = ingest(files, bin_seconds, progress=False, workers=max(1, min(threads, MAX_WORKERS)))
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    write_flows(flows, summary, out)
    print(f"{out}: {summary.flows} flows from {summary.packets} packets")


def edges_run(flows: Path, run_dir: Path, out: Path, bin_seconds: int, keep_infra: bool) -> None:
    from mimir.edges import write_edges

    summary = write_edges(flows, run_dir, out, bin_seconds=bin_seconds, keep_infra=keep_infra)
    print(json.dumps(summary, indent=2))


def realism_run(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Rule realism: inputs `reference` (run bundle folder or conversation tables), `reference_log` (if the config
    names one) and `candidate` (the run bundle); outputs `csv`, `md`, `png`, `svg` in one folder; params `window`,
    `peak` and `rename`. The summary line goes to the log (and heads realism.md)."""
    from mimir.realism import SideSpec, realism

    out = Path(outputs["csv"]).parent
    declared = {Path(outputs[kind]) for kind in ("csv", "md", "png", "svg")}
    planned = {out / f"realism.{kind}" for kind in ("csv", "md", "png", "svg")}
    if planned != declared:
        raise ConfigError(f"the rule declares {sorted(map(str, declared))}, realism writes {sorted(map(str, planned))}")
    reference = inputs["reference"]
    reference = [reference] if isinstance(reference, str) else list(reference)
    log = Path(inputs["reference_log"]) if inputs.get("reference_log") else None
    comparison = realism(
        SideSpec(tuple(map(Path, reference)), log),
        SideSpec((Path(inputs["candidate"]),)),
        out,
        window=params["window"],
        peak=params["peak"],
        renames=dict(params["rename"]),
    )
    print(comparison.summary)


def features_run(inputs: Mapping[str, Any], outputs: Mapping[str, Any], params: Mapping[str, Any]) -> None:
    """Rule features, one rate of one run at every granularity; the tables land exactly on the declared outputs.

    inputs: `edges`, `run` (the bundle), `benign` (the training run's edges, or empty); outputs: `attacks`,
    `tables`; params: `root` (the run's results folder), `rate`, `settings` (the config's features section),
    `split`, `bin`, `seed`.
    """
    from mimir.dataset import FeatureInputs, FeatureOutputs, build

    spec = FeatureSpec.from_config({**params["settings"], "rates": [params["rate"]], "split": dict(params["split"])})
    rate = spec.rates[0]
    layout = FeatureOutputs(Path(params["root"]))
    declared = {Path(outputs["attacks"]), *map(Path, outputs["tables"])}
    planned = {layout.attacks(rate), *(layout.table(tg, rate) for tg in spec.granularities)}
    if planned != declared:
        raise ConfigError(f"the rule declares {sorted(map(str, declared))}, the layout is {sorted(map(str, planned))}")
    benign = Path(inputs["benign"]) if inputs["benign"] else None
    sources = FeatureInputs(Path(inputs["edges"]), Path(inputs["run"]), params["bin"], benign_edges=benign)
    print(json.dumps(build(sources, layout, spec, seed=params["seed"]), indent=2))
