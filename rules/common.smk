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
COLLECTED = [name for name, run in RUNS.items() if run["source"] == "cluster"]
RATES = [rate_name(rate) for rate in config["features"]["rates"]]
GRANULARITIES = config["features"]["granularities"]
TRAINING = [name for name, run in RUNS.items() if run["role"] == "train"]
METHODS = config["models"]["methods"]
FIGURES = ["f1_vs_rate", "f1_vs_load", "f1_vs_mix", "f1_vs_granularity"]


def one_of(names):
    """A wildcard pattern that matches exactly these names (or nothing)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    run=one_of(RUNS),
    training=one_of(TRAINING),
    method=one_of(METHODS),
    rate=r"[0-9]+(\.[0-9]+)?(e-?[0-9]+)?",
    tg=r"[0-9]+",


def all_outputs():
    return [
        *expand(
            "results/{run}/features/{tg}s/{rate}.parquet",
            run=RUNS,
            tg=GRANULARITIES,
            rate=RATES,
        ),
        "results/tables/metrics.csv",
        *expand("results/figures/{figure}.png", figure=FIGURES),
        "results/figures/roc.png",
    ]


def evaluated_by(training):
    """A training run is evaluated on its own test split and on every run that names it."""
    return [training] + [n for n, r in RUNS.items() if r.get("training") == training]


def all_scores():
    return [
        f"results/eval/{method}/{training}/{run}.parquet"
        for method in METHODS
        for training in TRAINING
        for run in evaluated_by(training)
    ]


def training_tables(wildcards):
    return expand(
        "results/{run}/features/{tg}s/{rate}.parquet",
        run=wildcards.training,
        tg=GRANULARITIES,
        rate=RATES,
    )


def method_params(wildcards):
    return config["models"]["params"].get(wildcards.method.split("@")[0], {})


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
