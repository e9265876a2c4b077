"""Config validation, wildcard constraints and input functions shared by every rule."""

import re
from pathlib import Path

from mimir.dataset import rate_name
from mimir.workflow import ConfigError, validate_config

try:
    validate_config(
        config,
        Path(workflow.basedir) / "config" / "schemas" / "config.schema.yaml",
        source=", ".join(map(str, workflow.configfiles)) or "config",
    )
except ConfigError as error:
    raise WorkflowError(f"invalid configuration: {error}") from None

RUNS = config["runs"]
SYNTHETIC = [name for name, run in RUNS.items() if run["source"] == "synthetic"]
IMPORTED = [name for name, run in RUNS.items() if run["source"] == "import"]
RATES = [rate_name(rate) for rate in config["features"]["rates"]]
GRANULARITIES = config["features"]["granularities"]


def one_of(names):
    """A wildcard pattern that matches exactly these names (or nothing)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    run=one_of(RUNS),
    rate=r"[0-9]+(\.[0-9]+)?(e-?[0-9]+)?",
    tg=r"[0-9]+",


def all_outputs():
    return expand(
        "results/{run}/features/{tg}s/{rate}.parquet",
        run=RUNS,
        tg=GRANULARITIES,
        rate=RATES,
    )


def run_settings(wildcards):
    return RUNS[wildcards.run]


def benign_edges(wildcards):
    """Attack paths come from the training run's benign traffic (a training run learns from itself)."""
    training = RUNS[wildcards.run].get("training")
    return f"results/{training}/edges.parquet" if training else []


def split_of(wildcards):
    if RUNS[wildcards.run]["role"] == "train":
        return config["features"]["split"]
    return {"test": 1.0}


def feature_settings():
    return {
        key: value
        for key, value in config["features"].items()
        if key not in ("rates", "split")
    }
