"""Config validation, wildcard constraints and input functions shared by every rule.

Values reach the rules' code as declared params, never parsed back out of a file name: a rate's configured value,
the granularities, the flows' bin, and which method, training and run each score file belongs to.
"""

import re
import sys
from pathlib import Path

from mimir.apps import find_app
from mimir.errors import MimirError
from mimir.spec import rate_name, split_method
from mimir.workflow import load_config

# A user's `--configfile` replaces the default experiment instead of being merged into it; without one, the
# working directory's config/config.yaml is the experiment (the repository's own, or a `--directory WORKDIR`'s).
# mimir reads the files itself, as plain YAML or JSON within a size budget, and checks them (load_config); what
# Snakemake read of a `--configfile` is replaced by that, `--config` values merged on top as Snakemake merges them.
CONFIG_FILES = workflow.overwrite_configfiles or [Path("config/config.yaml")]
try:
    checked = load_config(
        CONFIG_FILES,
        Path(workflow.basedir) / "config" / "schemas" / "config.schema.yaml",
        overrides=workflow.config_settings.config,
    )
except MimirError as error:
    # the message and mimir's exit code (2: a bad value; 5: a file not read), no traceback
    print(f"invalid configuration: {error}", file=sys.stderr)
    raise SystemExit(error.exit_code) from None
config.clear()
config.update(checked)
if not workflow.overwrite_configfiles:
    # as Snakemake's `configfile:` records it, for the report
    workflow.configfiles.extend(CONFIG_FILES)

RUNS = config["runs"]
SYNTHETIC = [name for name, run in RUNS.items() if run["source"] == "synthetic"]
IMPORTED = [name for name, run in RUNS.items() if run["source"] == "import"]
COLLECTED = [name for name, run in RUNS.items() if run["source"] == "cluster"]
TESTBED = [name for name, run in RUNS.items() if run["source"] == "testbed"]
# a rate's name in file names → its configured value (a float, as validation made it)
RATES = {rate_name(rate): rate for rate in config["features"]["rates"]}
GRANULARITIES = config["features"]["granularities"]
BIN = config["ingest"]["bin"]
TRAINING = [name for name, run in RUNS.items() if run["role"] == "train"]
METHODS = config["models"]["methods"]
# comparisons of `mimir realism` for the report: name → reference, reference_log, candidate, window, peak, rename
REALISM = config["realism"]
# every feature table of a run, in this order: its inputs and the (granularity, rate) of each, zipped by the scripts
TABLE_LAYOUT = [(tg, rate) for tg in GRANULARITIES for rate in RATES.values()]


def one_of(names):
    """A wildcard pattern that matches exactly these names (or nothing)."""
    return "|".join(re.escape(name) for name in names) or "(?!)"


wildcard_constraints:
    run=one_of(RUNS),
    training=one_of(TRAINING),
    method=one_of(METHODS),
    rate=one_of(RATES),


def feature_tables(run):
    return [
        f"results/{run}/features/{tg}s/{rate_name(rate)}.parquet"
        for tg, rate in TABLE_LAYOUT
    ]


def all_outputs():
    return [
        *(table for run in RUNS for table in feature_tables(run)),
        "results/tables/metrics.csv",
        *expand("results/figures/{figure}.png", figure=FIGURES),
        *expand(
            "results/realism/{name}/realism.{ext}",
            name=REALISM,
            ext=["csv", "md", "png", "svg"],
        ),
    ]


def evaluated_by(training):
    """The runs that name a training run: its models are judged on them (never on the training run itself)."""
    return [n for n, r in RUNS.items() if r.get("training") == training]


# a model per (method, training run) that has evaluation runs, scored on all of them in one job
EVALUATIONS = [
    {"method": method, "training": training, "runs": evaluated_by(training)}
    for method in METHODS
    for training in TRAINING
    if evaluated_by(training)
]


def differs(key):
    """Whether some evaluation run differs from its training run in `key` (users, mix): a figure to draw."""
    return any(
        run.get("training") and run.get(key) != RUNS[run["training"]].get(key)
        for run in RUNS.values()
    )


# the figures this config can fill: no load or request-mix figure without runs that vary them
FIGURES = [
    "f1_vs_rate",
    *(["f1_vs_load"] if differs("users") else []),
    *(["f1_vs_mix"] if differs("mix") else []),
    "f1_vs_granularity",
    "recall_by_path",
    "roc",
]


def all_scores():
    return ["results/eval/{method}/{training}.parquet".format(**e) for e in EVALUATIONS]


def all_cards():
    return [
        "results/models/{method}/{training}/model.json".format(**e) for e in EVALUATIONS
    ]


def training_tables(wildcards):
    return feature_tables(wildcards.training)


def evaluation_tables(wildcards):
    """Every feature table of every run that names the training run, run by run in config order."""
    return [
        table
        for run in evaluated_by(wildcards.training)
        for table in feature_tables(run)
    ]


def method_params(wildcards):
    return config["models"]["params"].get(split_method(wildcards.method)[0], {})


def run_settings(wildcards):
    return RUNS[wildcards.run]


def app_file(wildcards):
    """The application file a generated, collected or testbed run is built from: editing it remakes the run."""
    return str(find_app(RUNS[wildcards.run]["app"]))


def legacy_files(wildcards):
    """The prototype's files an imported run is converted from."""
    run = RUNS[wildcards.run]
    files = {"pcap": run["pcap"], "cluster_log": run["cluster_log"]}
    if run.get("analysis_json"):
        files["analysis_json"] = run["analysis_json"]
    return files


def in_project(path):
    """A path as the config gives it (relative to the working directory), else the same path in this repository
    when it ships it (config/references/...), so that a working directory's own config can name those files.
    """
    if Path(path).is_absolute() or Path(path).exists():
        return path
    shipped = Path(workflow.basedir) / path
    return str(shipped) if shipped.exists() else path


def realism_inputs(wildcards):
    """A comparison reads its reference files and the candidate's run bundle: remaking either reruns it."""
    entry = REALISM[wildcards.name]
    files = {
        "reference": [in_project(path) for path in entry["reference"]],
        "candidate": f"data/runs/{entry['candidate']}",
    }
    if entry.get("reference_log"):
        files["reference_log"] = in_project(entry["reference_log"])
    return files


def rate_value(wildcards):
    return RATES[wildcards.rate]


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
