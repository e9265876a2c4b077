"""What the Snakemake workflow needs from the package: the validated config and one function per rule.

The rules' scripts (scripts/*.py) are thin adapters: they hand Snakemake's inputs, outputs and params to these
functions, which log to the rule's log file and never take values through a shell.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jsonschema
import yaml

from mimir.errors import MimirError

if TYPE_CHECKING:
    from mimir.apps import App


class ConfigError(MimirError):
    exit_code = 2


def _defaults(schema: dict[str, Any], value: Any) -> None:
    """Fill in the schema's defaults, in place, wherever the config leaves a key out."""
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
    """Check the config against its schema (the first problem names its key), fill defaults, check references."""
    schema = yaml.safe_load(schema_path.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        key = ".".join(str(k) for k in first.absolute_path) or "(top level)"
        raise ConfigError(f"{source}: {key}: {first.message}")
    _defaults(schema, config)
    runs = config["runs"]
    for name, run in runs.items():
        if run["source"] == "cluster" and run.get("exfil"):
            raise ConfigError(f"{source}: runs.{name}.exfil: physical exfiltration is only generated (synthetic)")
        training = run.get("training")
        if training is not None and (training not in runs or runs[training]["role"] != "train"):
            raise ConfigError(f"{source}: runs.{name}.training: {training!r} is not a training run of this config")
    split = config["features"]["split"]
    if abs(sum(split.values()) - 1) > 1e-9:
        raise ConfigError(f"{source}: features.split: the shares add up to {sum(split.values())}, not 1")
    return config


@contextlib.contextmanager
def logged(log: str | Path) -> Iterator[None]:
    """Send the rule's stdout and stderr to its log file."""
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with Path(log).open("w") as handle, contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
        yield


def run_mix(settings: dict[str, Any], app: App) -> dict[str, float]:
    """A run's request mix from its config entry (the paper's default when it gives none), checked against the app."""
    from mimir.sources.synthetic import parse_mix

    mix = settings.get("mix") or {"browse": 0.5, "buy": 0.3, "register": 0.2}
    return parse_mix(",".join(f"{k}={v}" for k, v in mix.items()), list(app.requests))


def synth_run(settings: dict[str, Any], defaults: dict[str, Any], seed: int, out: Path) -> None:
    from mimir.apps import load_app
    from mimir.sources.synthetic import Exfiltration, SynthConfig, synthesize

    app = load_app(settings["app"])
    cfg = SynthConfig(
        app=app,
        duration=float(settings.get("duration", defaults["duration"])),
        users=int(settings["users"]),
        mix=run_mix(settings, app),
        seed=int(settings.get("seed", seed)),
        snaplen=int(defaults["snaplen"]),
        rotate=float(defaults["rotate"]),
        exfiltration=[Exfiltration.parse(spec, app) for spec in settings.get("exfil", [])],
    )
    result = synthesize(cfg, out, progress=False)
    print(f"{out}: {result.packets} packets in {len(result.files)} files")


def collect_run(
    settings: dict[str, Any], defaults: dict[str, Any], cluster: dict[str, Any], seed: int, out: Path
) -> None:
    """One run on the cluster; its progress lines go to the rule's log."""
    from mimir.apps import load_app
    from mimir.sources.cluster.collect import CollectConfig, collect, progress_printer

    app = load_app(settings["app"])
    kubeconfig = cluster.get("kubeconfig")
    cfg = CollectConfig(
        app=app,
        users=int(settings["users"]),
        mix=run_mix(settings, app),
        duration=float(settings.get("duration", defaults["duration"])),
        out=out,
        seed=int(settings.get("seed", seed)),
        spawn_rate=float(cluster["spawn_rate"]),
        kubeconfig=Path(kubeconfig) if kubeconfig else None,
        context=cluster.get("context"),
        target=cluster.get("target"),
        capture_netns=cluster["capture_netns"],
        interface=cluster["interface"],
        rotate=int(defaults["rotate"]),
        snaplen=int(defaults["snaplen"]),
        customers=int(cluster["customers"]),
        cpu_percent=int(cluster["cpu_percent"]),
        ready_timeout=float(cluster["ready_timeout"]),
        least_privilege_watch=bool(cluster["least_privilege_watch"]),
        keep=bool(cluster["keep"]),
    )
    run = collect(cfg, progress=progress_printer(sys.stdout))
    print(f"{out}: {run['status']}, {run.get('capture', {}).get('packets')} packets captured")


def import_run(settings: dict[str, Any], out: Path) -> None:
    from mimir.sources.legacy import import_legacy

    analysis = settings.get("analysis_json")
    import_legacy(Path(settings["pcap"]), Path(settings["cluster_log"]), Path(analysis) if analysis else None, out)


def ingest_run(run_dir: Path, out: Path, bin_seconds: int) -> None:
    from mimir.capture.ingest import ingest, write_flows

    run = json.loads((run_dir / "run.json").read_text())
    captures = [run_dir / name for name in run["capture"]["files"]]
    flows, summary = ingest(captures, bin_seconds, progress=False)
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    write_flows(flows, summary, out)
    print(f"{out}: {summary.flows} flows from {summary.packets} packets")


def edges_run(flows: Path, run_dir: Path, out: Path, keep_infra: bool) -> None:
    from mimir.edges import write_edges

    summary = write_edges(flows, run_dir, out, keep_infra=keep_infra)
    print(json.dumps(summary, indent=2))


def features_run(
    edges: Path,
    run_dir: Path,
    out: Path,
    rate: float,
    settings: dict[str, Any],
    split: dict[str, float],
    seed: int,
    benign: Path | None,
) -> None:
    from mimir.attacks import InjectionConfig
    from mimir.dataset import build

    cfg = InjectionConfig(
        settings["attack_seconds"], settings["attacked_share"], settings["rate_sd"], settings["max_path_length"], seed
    )
    summary = build(
        edges,
        run_dir,
        out,
        granularities=settings["granularities"],
        rates=[rate],
        split=split,
        cfg=cfg,
        benign_edges_path=benign,
    )
    print(json.dumps(summary, indent=2))
