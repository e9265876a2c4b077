"""What the Snakemake workflow needs from the package: the validated config and one function per rule.

The rules' scripts (scripts/*.py) are thin adapters: they hand Snakemake's declared inputs, outputs and params to
these functions, which log to the rule's log file and never take values through a shell, a file name or a file
the rule did not declare.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mimir.errors import ConfigError, MimirError
from mimir.spec import (
    ClusterSpec,
    Fault,
    FeatureSpec,
    RunSpec,
    TestbedSpec,
    check_granularities,
    rate_name,
    split_method,
)


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
    """Check the config against its schema, fill defaults, then check what a schema cannot, before any job runs.

    Every message starts with the config file and names the key the user wrote.
    """
    schema = yaml.safe_load(schema_path.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        key = ".".join(str(k) for k in first.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: {key}: {first.message}")
    _defaults(schema, config)
    try:
        _check_runs(config)
        _check_features(config)
        _check_realism(config)
    except MimirError as e:
        raise ConfigError(f"{source}: {e}") from None
    return config


def _check_runs(config: dict[str, Any]) -> None:
    """Training references, and every generated, collected or testbed run built once as it will be (apps, mixes,
    exfil, faults)."""
    runs = config["runs"]
    for name, run in runs.items():
        training = run.get("training")
        if training is not None and (training not in runs or runs[training]["role"] != "train"):
            raise ConfigError(f"runs.{name}.training: {training!r} is not a training run of this config")
        if run.get("faults") and run["source"] != "testbed":
            raise ConfigError(f"runs.{name}.faults: pods are only killed on the testbed (source: testbed)")
        if run["source"] == "import":
            continue
        if run["source"] == "cluster" and run.get("exfil"):
            raise ConfigError(
                f"runs.{name}.exfil: physical exfiltration is only generated or sent on the testbed "
                "(source: synthetic or testbed)"
            )
        spec = run_spec(name, run, config["defaults"], config["seed"])
        if run["source"] == "testbed":
            spec_on_testbed(name, run, config["testbed"], spec)


def _check_features(config: dict[str, Any]) -> None:
    """The split, unique rate names, granularities on whole flow bins, and methods on configured granularities."""
    features = config["features"]
    # a rate is a float whether the YAML says 10 or 10.0: the injection's seed depends on its value
    features["rates"] = [float(rate) for rate in features["rates"]]
    config["figures"]["rate"] = float(config["figures"]["rate"])
    split = features["split"]
    if abs(sum(split.values()) - 1) > 1e-9:
        raise ConfigError(f"features.split: the shares add up to {sum(split.values())}, not 1")
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
    """Each comparison's candidate is a run of this config; its reference becomes a list of paths."""
    for name, entry in config.get("realism", {}).items():
        if entry["candidate"] not in config["runs"]:
            raise ConfigError(f"realism.{name}.candidate: {entry['candidate']!r} is not a run of this config")
        if isinstance(entry["reference"], str):
            entry["reference"] = [entry["reference"]]
        if len(entry["reference"]) > 1 and any(Path(p).is_dir() for p in entry["reference"]):
            raise ConfigError(
                f"realism.{name}.reference: a run bundle folder is a reference of its own, not one of several"
            )


@contextlib.contextmanager
def logged(log: str | Path) -> Iterator[None]:
    """Send the rule's stdout and stderr to its log file."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with Path(log).open("w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        yield


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


def ingest_run(run_dir: Path, out: Path, bin_seconds: int) -> None:
    from mimir.capture.ingest import ingest, write_flows

    run = json.loads((run_dir / "run.json").read_text())
    flows, summary = ingest([run_dir / name for name in run["capture"]["files"]], bin_seconds, progress=False)
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

    settings, rate = params["settings"], params["rate"]
    spec = FeatureSpec(
        granularities=tuple(settings["granularities"]),
        rates=(rate,),
        attack_seconds=settings["attack_seconds"],
        attacked_share=settings["attacked_share"],
        rate_sd=settings["rate_sd"],
        max_path_length=settings["max_path_length"],
        seeds=settings["seeds"],
        split=dict(params["split"]),
    )
    layout = FeatureOutputs(Path(params["root"]))
    declared = {Path(outputs["attacks"]), *map(Path, outputs["tables"])}
    planned = {layout.attacks(rate), *(layout.table(tg, rate) for tg in spec.granularities)}
    if planned != declared:
        raise ConfigError(f"the rule declares {sorted(map(str, declared))}, the layout is {sorted(map(str, planned))}")
    benign = Path(inputs["benign"]) if inputs["benign"] else None
    sources = FeatureInputs(Path(inputs["edges"]), Path(inputs["run"]), params["bin"], benign_edges=benign)
    print(json.dumps(build(sources, layout, spec, seed=params["seed"]), indent=2))
