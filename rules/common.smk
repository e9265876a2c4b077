"""Config validation, wildcard constraints and input functions shared by every rule.

Values reach the rules' code as declared params, never parsed back out of a file name: a rate's configured value,
the granularities, the flows' bin, and which method, training and run each score file belongs to.
"""

import math
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


def run_settings(wildcards):
    return RUNS[wildcards.run]


def app_file(wildcards):
    """The application file a generated, collected or testbed run is built from: editing it remakes the run.

    It is never looked for in a default storage (S3): it is read where the job runs, from the working folder or this
    repository. A generated run's job can run anywhere (a Kubernetes pod finds the file in the workflow's sources),
    so the file is a workflow source there; a collection or a testbed run needs the cluster's credentials or the
    testbed of the machine Snakemake runs on, and local() keeps its job there when nodes share no filesystem.
    """
    path = Path(find_app(RUNS[wildcards.run]["app"])).absolute()
    if RUNS[wildcards.run]["source"] == "synthetic":
        return workflow.source_path(str(path))
    return local(str(path))


def legacy_files(wildcards):
    """The prototype's files an imported run is converted from: the user's own files, checked with the config where
    Snakemake starts, so they are read there and never looked for in a default storage (local()).
    """
    run = RUNS[wildcards.run]
    files = {"pcap": run["pcap"], "cluster_log": run["cluster_log"]}
    if run.get("analysis_json"):
        files["analysis_json"] = run["analysis_json"]
    return {key: local(path) for key, path in files.items()}


def in_project(path):
    """A path as the config gives it (relative to the working directory), else the same path in this repository
    when it ships it (config/references/...), so that a working directory's own config can name those files.
    A run bundle this workflow makes (data/runs/NAME) stays where every output is (in a default storage too); any
    other file is the user's or this repository's and is read locally (local()).
    """
    if Path(path) in {Path("data", "runs", name) for name in RUNS}:
        return path
    if Path(path).is_absolute() or Path(path).exists():
        return local(path)
    shipped = Path(workflow.basedir) / path
    return local(str(shipped) if shipped.exists() else path)


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


def method_params(wildcards):
    return config["models"]["params"].get(split_method(wildcards.method)[0], {})


def models_of(wildcards):
    """Every method's model of a training run, in METHODS order: the score job scores them all in one Python."""
    return [f"results/models/{m}/{wildcards.training}/model.joblib" for m in METHODS]


def cards_of(wildcards):
    return [f"results/models/{m}/{wildcards.training}/model.json" for m in METHODS]


# Resources a scheduler reserves per job (profiles/slurm: sbatch --mem, --time, --cpus-per-task), from the peaks
# measured on the default experiment and on 3-hour runs (README: Resources), scaled to the job's run or input, with
# headroom. Every job's log ends with its exact peak memory and CPU seconds, and logs/benchmarks/ holds its wall
# time: `benchmarks/resources.py WORKDIR` prints them per rule and fits the coefficients below on a run of yours.
MEMORY_HEADROOM = 1.25
# A job's wall time over its CPU time reached 6 on a loaded 2-core machine (I/O and other jobs' share of the
# cores); a runtime is 10 minutes (start-up, a slow shared filesystem) plus that much of the job's CPU estimate.
WALL_PER_CPU = 6


def megabytes(value):
    """A memory request in whole hundreds of MB, headroom included."""
    return int(math.ceil(value * MEMORY_HEADROOM / 100) * 100)


def minutes(cpu_seconds):
    """A runtime request in whole minutes for a job of about this many CPU seconds."""
    return 10 + int(math.ceil(WALL_PER_CPU * cpu_seconds / 60))


def run_seconds(wildcards):
    return RUNS[wildcards.run].get("duration", config["defaults"]["duration"])


def user_seconds(wildcards):
    """users x duration of a run: the load that a synthesis and an ingest grow with (0 for an imported run)."""
    return RUNS[wildcards.run].get("users", 0) * run_seconds(wildcards)


# Synthesis (synth): peak MB = A + B x user-seconds, per application. An upper envelope rather than a fit: the generator
# holds every connection of the run (B) and the packets of one batch of 200,000 connections at a time, which fills
# up within the first user-seconds of a run (A, larger for WordPress's long page loads); CPU s = C x user-seconds.
# An application of the user's own is sized as the largest of these.
SYNTH_MODEL = {  # application: (A MB, B MB per user-second, C CPU s per user-second)
    "sockshop": (950, 0.0004, 3.2e-5),
    "wordpress": (4200, 0.0013, 1.2e-4),
    "online-boutique": (900, 0.0005, 2.5e-5),
}


def synth_model(wildcards):
    app = RUNS[wildcards.run]["app"]
    return SYNTH_MODEL.get(app, tuple(map(max, zip(*SYNTH_MODEL.values()))))


def synth_mem_mb(wildcards):
    base, per_user_second, _ = synth_model(wildcards)
    return megabytes(base + per_user_second * user_seconds(wildcards))


def synth_runtime(wildcards):
    return minutes(5 + synth_model(wildcards)[2] * user_seconds(wildcards))


def ingest_mem_mb(wildcards, input, threads):
    """Ingest's memory. The flows table grows with the run's connections (~0.45 kB per user-second, Sock Shop's short
    connections the most), over ~300 MB per process; a run without users (imported) by its capture's size.
    """
    load = user_seconds(wildcards)
    grows = 0.00045 * load if load else 0.4 * bundle_mb(input[0])
    return megabytes(300 * threads + grows)


def ingest_runtime(wildcards, input):
    """Ingest's runtime: up to ~6 CPU s per GB of capture (Sock Shop's many small packets), 2 s of start-up."""
    return minutes(2 + 0.006 * bundle_mb(input[0]))


def bundle_mb(path):
    """The size of a run bundle's files in MB (0 before it exists: a dry run shows the smallest request, and the
    request is worked out again when the job is ready to run)."""
    folder = Path(path)
    if not folder.is_dir():
        return 0.0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def scaled(base_mb, mb_per_input_mb, base_cpu, cpu_per_input_mb):
    """Resources of a job that grow with the size of its input files (Snakemake's input.size_mb, which counts a
    run bundle as a folder, not its files): a memory and a runtime function for `resources:`.
    """

    def mem_mb(wildcards, input):
        return megabytes(base_mb + mb_per_input_mb * inputs_mb(input))

    def runtime(wildcards, input):
        return minutes(base_cpu + cpu_per_input_mb * inputs_mb(input))

    return mem_mb, runtime


def inputs_mb(input):
    """The job's input size as Snakemake measures it (in a default storage too), else, when a storage cannot size
    one of the inputs (a run bundle's folder), the size of the input files present here.
    """
    try:
        return input.size_mb
    except Exception:
        return sum(Path(f).stat().st_size for f in input if Path(f).is_file()) / 2**20


# peak MB = a + b x input MB and CPU s = c + d x input MB, fitted on the default experiment's and 3-hour runs.
# Edges: the flows table. Model: the training run's feature tables. Score: every evaluation run's tables and the
# training run's models. Metrics and figures: every score file.
EDGES_MEM, EDGES_RUNTIME = scaled(280, 62, 2, 0.5)
# A model's fit is a method's own: the MIMIR detector's L1 logistic regressions on a 3-hour Sock Shop training run
# (7.7 MB of tables) took more than 6 CPU minutes where other methods take seconds, hence 100 CPU s per MB.
MODEL_MEM, MODEL_RUNTIME = scaled(400, 10, 3, 100)
SCORE_MEM, SCORE_RUNTIME = scaled(400, 10, 3, 1)
METRICS_MEM, METRICS_RUNTIME = scaled(400, 10, 5, 1)
FIGURES_MEM, FIGURES_RUNTIME = scaled(400, 10, 5, 1)


def real_run_runtime(wildcards):
    """The runtime of a collected or testbed run: its real load's duration twice over (deployment, warm-up, the
    captures' copy: the testbed experiment's three runs of 15 to 20 minutes took about an hour), and 15 minutes.
    """
    return 15 + int(math.ceil(2 * run_seconds(wildcards) / 60))


def features_mem_mb(wildcards):
    """Features: ~350 MB and 60 kB per second of the run (its intervals, and the training run's benign edges that
    an evaluation run also reads), whatever its load: the edges' size tells less than the run's length.
    """
    return megabytes(350 + 0.06 * run_seconds(wildcards))


def features_runtime(wildcards):
    """Features: ~3 CPU s and 1.4 ms per second of the run."""
    return minutes(3 + 0.0014 * run_seconds(wildcards))
