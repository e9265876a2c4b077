"""The Snakemake workflow on a small config: lint, config validation, reruns, reproducibility, resumption."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
SMALL = {
    "seed": 3,
    "defaults": {"duration": 240, "rotate": 120},
    "runs": {
        "small-train": {"app": "sockshop", "users": 8, "role": "train"},
        "small-eval": {"app": "sockshop", "users": 4, "training": "small-train"},
        "small-wp": {"app": "wordpress", "users": 4, "role": "train"},
    },
    # the second rate is named 0.123457 in files; 20 s attacks fit a fifth of a 240 s run
    "features": {"rates": [1, 0.1234567], "granularities": [10, 60], "attack_seconds": 20},
    "models": {"methods": ["mimir", "mimir@60", "commsvc"], "params": {"mimir": {"c": 1.0}}},
    "evaluation": {"min_attacked": 1, "min_benign": 1},  # minutes-long runs: too few intervals, warned about
    "figures": {"rate": 1},
}


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The workflow of this checkout, run in `workdir` (the documented `--directory WORKDIR` layout)."""
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def snakemake(workdir: Path, *args: str, config: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config or SMALL))
    return run_snakemake(workdir, "--configfile", str(workdir / "config.yaml"), *args, check=check)


def jobs_of(dry_run: str) -> list[tuple[str, str]]:
    """(rule, run) of every job a dry run lists ('' for jobs over all runs, like the tables)."""
    jobs: list[list[str]] = []
    for line in dry_run.splitlines():
        if m := re.match(r"^rule (\w+):", line.strip()):
            jobs.append([m.group(1), ""])
        elif jobs and (m := re.search(r"wildcards: .*\brun=([\w.-]+)", line)):
            jobs[-1][1] = m.group(1)
    return [(rule, run) for rule, run in jobs if rule != "all"]


def planned(workdir: Path, config: dict) -> set[tuple[str, str]]:
    """(rule, run) of every job a dry run would execute."""
    return set(jobs_of(snakemake(workdir, "--dry-run", config=config).stdout))


def expected_jobs(config: dict) -> Counter:
    """Jobs per rule for a fresh synthetic experiment: the chain of every run, models, scores and the tables."""
    runs, features, methods = config["runs"], config["features"], config["models"]["methods"]
    evaluated = {r["training"] for r in runs.values() if r.get("training")}  # trainings that have runs to judge
    per_run = {"synth": 1, "ingest": 1, "edges": 1, "features": len(features["rates"])}
    jobs = Counter({rule: n * len(runs) for rule, n in per_run.items()})
    # a model per method and training run; one job per training run scores them all
    jobs.update({"model": len(methods) * len(evaluated), "score": len(evaluated)})
    jobs.update({"metrics": 1, "figures": 1})
    if config.get("realism"):
        jobs["realism"] = len(config["realism"])
    return jobs


MINE = {
    "seed": 5,
    "runs": {
        "mine-train": {"app": "wordpress", "users": 5, "role": "train", "duration": 120},
        "mine-eval": {"app": "wordpress", "users": 9, "training": "mine-train", "duration": 120},
        "mine-other": {"app": "sockshop", "users": 3, "role": "train", "duration": 120},
    },
    "features": {"rates": [1], "granularities": [10]},
    "models": {"methods": ["mimir", "commsvc"]},
    "figures": {"rate": 1},
}


def test_a_users_configfile_replaces_the_default_experiment(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")  # as in the repository
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(MINE))
    done = run_snakemake(tmp_path, "--configfile", str(tmp_path / "mine.yaml"), "--dry-run")
    jobs = jobs_of(done.stdout)
    assert {run for _, run in jobs} == {*MINE["runs"], ""}
    assert Counter(rule for rule, _ in jobs) == expected_jobs(MINE)


def test_a_workdirs_own_config_is_the_experiment(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(MINE))
    jobs = jobs_of(run_snakemake(tmp_path, "--dry-run").stdout)
    assert Counter(rule for rule, _ in jobs) == expected_jobs(MINE)
    assert {run for _, run in jobs} == {*MINE["runs"], ""}


def test_a_workdir_without_a_config_is_told_where_to_put_one(tmp_path: Path) -> None:
    done = run_snakemake(tmp_path, "--dry-run", check=False)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "config/config.yaml" in said and "Traceback" not in said


def test_the_default_experiment_plans_its_own_runs(tmp_path: Path) -> None:
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "config.yaml", tmp_path / "config" / "config.yaml")
    jobs = jobs_of(run_snakemake(tmp_path, "--dry-run").stdout)
    assert Counter(rule for rule, _ in jobs) == expected_jobs(default)


def tables(workdir: Path) -> dict[str, bytes]:
    """Every artefact of a workflow run: its run bundles, tables, models, summaries and figures (the logs and the
    HTML report, which record times, are left out)."""
    files = [p for folder in ("results", "data") for p in (workdir / folder).rglob("*") if p.is_file()]
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(files)}


def test_lint_and_format() -> None:
    lint = subprocess.run([str(SNAKEMAKE), "--lint"], cwd=REPO, capture_output=True, text=True, check=False)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr
    snakefmt = Path(sys.executable).with_name("snakefmt")
    fmt = subprocess.run(
        [str(snakefmt), "--check", "Snakefile", "rules"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert fmt.returncode == 0, fmt.stderr


TESTBED_RUN = {"source": "testbed", "app": "wordpress", "users": 3}  # SMALL's duration: 240 s


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"runs": {"x": {"app": "sockshop", "users": 0}}}, "runs.x.users"),
        ({"runs": {"x": {"app": "sockshop", "users": 3, "colour": "red"}}}, "colour"),
        ({"runs": {"x": {"app": "sockshop", "users": 3, "training": "nope"}}}, "runs.x.training"),
        ({"features": {"split": {"train": 0.5}}}, "features.split"),
        ({"runs": {"x": {"source": "cluster", "app": "sockshop", "users": 3, "exfil": ["a"]}}}, "runs.x.exfil"),
        (
            {
                "runs": {
                    "x": {
                        "source": "cluster",
                        "app": "sockshop",
                        "users": 3,
                        "exfil": [{"path": ["user", "outside"], "rate": "1MB/s", "start": 0}],
                    }
                }
            },
            "runs.x.exfil: physical exfiltration is only generated",
        ),
        ({"runs": {"x": {"app": "sockshop", "users": 3, "mix": {"browse": 1, "shop": 1}}}}, "runs.x.mix.shop"),
        ({"runs": {"x": {"app": "sockshop", "users": 3}}, "cluster": {"cpu_percent": 0}}, "cluster.cpu_percent"),
        ({"realism": {"wp": {"reference": "slice.txt", "candidate": "nope"}}}, "realism.wp.candidate: 'nope'"),
        ({"realism": {"wp": {"reference": "slice.txt", "candidate": "small-wp", "colour": 1}}}, "colour"),
        ({"realism": {"wp": {"reference": [], "candidate": "small-wp"}}}, "realism.wp.reference"),
        ({"runs": {"x": {**TESTBED_RUN, "app": "sockshop"}}}, "runs.x.app: 'sockshop': the testbed runs WordPress"),
        ({"runs": {"x": {**TESTBED_RUN, "faults": [{"target": "cache", "at": 60}]}}}, "runs.x.faults.0.target"),
        ({"runs": {"x": {**TESTBED_RUN, "faults": [{"target": "database", "at": 240}]}}}, "runs.x.faults[0].at"),
        (
            {"runs": {"x": {"app": "wordpress", "users": 3, "faults": [{"target": "database", "at": 60}]}}},
            "runs.x.faults: pods are only killed on the testbed",
        ),
        (
            {
                "runs": {
                    "x": {
                        **TESTBED_RUN,
                        "exfil": [{"path": ["my-release-pxc", "memcached", "outside"], "rate": "1MB/min", "start": 0}],
                    }
                }
            },
            "runs.x.exfil[0]",
        ),
        ({"runs": {"x": TESTBED_RUN}, "testbed": {"wordpress_pods": 5}}, "testbed.max_wordpress_pods"),
    ],
)
def test_a_bad_config_names_the_key(tmp_path: Path, change: dict, words: str) -> None:
    config = {**SMALL, **change}
    done = snakemake(tmp_path, "--dry-run", config=config, check=False)
    said = done.stdout + done.stderr
    assert done.returncode != 0 and "invalid configuration" in said and words in said
    assert "config.yaml" in said and "Traceback" not in said


def test_cluster_runs_are_collected_unless_already_there(tmp_path: Path) -> None:
    runs = {
        "c-train": {"source": "cluster", "app": "sockshop", "users": 100, "role": "train"},
        "c-eval": {"source": "cluster", "app": "sockshop", "users": 160, "training": "c-train"},
    }
    config = {**SMALL, "runs": runs, "cluster": {"kubeconfig": "/home/mimir/.kube/config"}}
    jobs = planned(tmp_path / "fresh", config)
    assert {("collect", "c-train"), ("collect", "c-eval"), ("ingest", "c-train"), ("ingest", "c-eval")} <= jobs
    assert not any(rule == "synth" for rule, _ in jobs)
    (tmp_path / "collected" / "data" / "runs" / "c-train").mkdir(parents=True)  # collected by hand before
    jobs = planned(tmp_path / "collected", config)
    assert ("collect", "c-eval") in jobs and ("collect", "c-train") not in jobs


def test_the_testbed_experiment_plans_a_testbed_job_per_run(tmp_path: Path) -> None:
    """config/testbed.yaml plans every testbed run on the testbed, one at a time, and the whole chain after it; a
    dry run makes nothing."""
    experiment = REPO / "config" / "testbed.yaml"
    config = yaml.safe_load(experiment.read_text())
    done = run_snakemake(tmp_path, "--configfile", str(experiment), "--dry-run")
    jobs = jobs_of(done.stdout)
    on_testbed = {name for name, run in config["runs"].items() if run.get("source") == "testbed"}
    expected = expected_jobs(config)
    expected["testbed"] = len(on_testbed)
    expected["synth"] -= len(on_testbed)  # the synthetic twin the realism comparison reads is generated
    assert Counter(rule for rule, _ in jobs) == expected
    assert {run for rule, run in jobs if rule == "testbed"} == on_testbed and len(on_testbed) == 3
    assert len(re.findall(r"resources: .*\btestbed=1\b", done.stdout)) == len(on_testbed)
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def complete(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("workflow")
    snakemake(workdir)
    return workdir


def test_everything_is_built_and_logged(complete: Path) -> None:
    for run in SMALL["runs"]:
        for tg in (10, 60):
            for rate in ("1", "0.123457"):
                assert (complete / "results" / run / "features" / f"{tg}s" / f"{rate}.parquet").is_file()
    logs = {p.relative_to(complete / "logs").parts[0] for p in (complete / "logs").rglob("*.log")}
    assert {"synth", "ingest", "edges", "features", "model", "score", "metrics.log", "figures.log"} <= logs
    for figure in ("f1_vs_rate", "f1_vs_load", "f1_vs_granularity", "recall_by_path", "roc"):
        assert (complete / "results" / "figures" / f"{figure}.png").stat().st_size > 1000
    assert not (complete / "results" / "figures" / "f1_vs_mix.png").exists()  # no run varies the request mix
    metrics = pd.read_csv(complete / "results" / "tables" / "metrics.csv", keep_default_na=False)
    assert list(metrics.columns[:5]) == ["method", "training", "run", "rate", "policy"]
    # methods x (small-eval, every run of small-train pooled) x rates x attack classes; small-wp judges nothing
    assert len(metrics) == 3 * 2 * 2 * 2 and set(metrics["run"]) == {"small-eval", "*"}
    assert set(metrics["policy"]) == {"abiding", "violating"}
    assert planned(complete, SMALL) == set()  # nothing left to do


def test_changing_a_feature_parameter_reruns_features_and_what_follows(complete: Path) -> None:
    config = {**SMALL, "features": {**SMALL["features"], "rate_sd": 0.3}}
    jobs = planned(complete, config)
    # no runs, flows or edges
    assert {rule for rule, _ in jobs} == {"features", "model", "score", "metrics", "figures"}
    assert {run for rule, run in jobs if rule == "features"} == set(SMALL["runs"])


def test_changing_one_runs_load_reruns_that_run_only(complete: Path) -> None:
    runs = {**SMALL["runs"], "small-eval": {**SMALL["runs"]["small-eval"], "users": 5}}
    jobs = planned(complete, {**SMALL, "runs": runs})
    assert {run for _, run in jobs} == {"small-eval", ""}  # that run's chain, and the tables over all runs
    assert {
        ("synth", "small-eval"),
        ("ingest", "small-eval"),
        ("edges", "small-eval"),
        ("features", "small-eval"),
        ("score", ""),  # the model of small-train on all its runs, in one job
        ("metrics", ""),
        ("figures", ""),
    } == jobs


def test_changing_a_detector_parameter_reruns_only_models_and_what_follows(complete: Path) -> None:
    config = {**SMALL, "models": {**SMALL["models"], "params": {"mimir": {"c": 0.5}}}}
    rules = {rule for rule, _ in planned(complete, config)}
    assert {"model", "score", "metrics", "figures"} == rules


def test_two_clean_runs_give_identical_bytes(complete: Path, tmp_path: Path) -> None:
    snakemake(tmp_path)
    assert tables(tmp_path) == tables(complete)


def test_an_interrupted_run_resumes_to_the_same_results(complete: Path, tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(SMALL))
    cmd = [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(tmp_path),
        "--configfile",
        str(tmp_path / "config.yaml"),
        "--cores",
        "2",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((tmp_path / "logs").glob("edges/*.log")):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGTERM)  # killed mid-way: some runs done, others half-written
    proc.wait(timeout=120)
    assert not (tmp_path / "results" / "small-wp" / "features" / "60s" / "0.123457.parquet").exists()
    snakemake(tmp_path)
    assert tables(tmp_path) == tables(complete)


def test_a_rate_reaches_the_injection_as_configured_not_as_its_file_name(complete: Path, tmp_path: Path) -> None:
    """0.1234567 MB/min is named 0.123457 in files; the workflow injects the configured value, as `mimir features`
    does, and a rate written 1 in YAML is the same rate as 1.0 (the injection's seed depends on the value)."""
    results = complete / "results" / "small-train"
    common = ["features", str(results / "edges.parquet"), str(complete / "data" / "runs" / "small-train")]
    tables = {}
    for rate in ("0.1234567", "0.123457", "1"):
        cli = subprocess.run(
            [sys.executable, "-m", "mimir.cli", *common, "--seed", "3", "--attack-seconds", "20", "--rates", rate,
             "--tg", "10", "-o", str(tmp_path / rate)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stderr
        tables[rate] = {p.name: p.read_bytes() for p in (tmp_path / rate / "attacks").glob("*.parquet")}
    assert len(pd.read_parquet(results / "attacks" / "0.123457.parquet")) > 0
    workflow = (results / "attacks" / "0.123457.parquet").read_bytes()
    assert workflow == tables["0.1234567"]["0.123457.parquet"] != tables["0.123457"]["0.123457.parquet"]
    assert (results / "attacks" / "1.parquet").read_bytes() == tables["1"]["1.parquet"]


# A comparison the default experiment makes (config/config.yaml), on a short run: the reference's paths are
# relative, and a working folder without them reads them from the repository.
REALISM = {
    "seed": 3,
    "defaults": {"duration": 240, "rotate": 240},
    "runs": {"wp": {"app": "wordpress", "users": 4, "role": "train"}},
    "features": {"rates": [1], "granularities": [10]},
    "models": {"methods": ["commsvc"]},
    "figures": {"rate": 1},
    "realism": {
        "wordpress": {
            "reference": "config/references/wordpress-slice.conv.txt",
            "reference_log": "config/references/wordpress-slice.entities.jsonl",
            "candidate": "wp",
        }
    },
}
REALISM_FILES = [f"results/realism/wordpress/realism.{ext}" for ext in ("csv", "md", "png", "svg")]


def realism_files(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    """The comparison's files only (its run, not the models), as `snakemake FILES --configfile ...`."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return run_snakemake(workdir, *REALISM_FILES, *args, "--configfile", str(workdir / "config.yaml"))


def test_realism_is_planned_when_the_config_names_a_reference(tmp_path: Path) -> None:
    jobs = jobs_of(snakemake(tmp_path, "--dry-run", config=REALISM).stdout)
    assert Counter(rule for rule, _ in jobs) == expected_jobs(REALISM)
    assert ("realism", "") in jobs
    assert "realism" not in {rule for rule, _ in planned(tmp_path / "none", {**REALISM, "realism": {}})}


def test_realism_compares_the_reference_with_the_run_and_reruns_on_change(tmp_path: Path) -> None:
    realism_files(tmp_path, REALISM)
    for name in REALISM_FILES:
        assert (tmp_path / name).stat().st_size > 100
    summary = re.compile(r"realism: \d+ of \d+ figures within tolerance")
    assert summary.search((tmp_path / "results/realism/wordpress/realism.md").read_text())
    assert summary.search((tmp_path / "logs/realism/wordpress.log").read_text())
    csv = pd.read_csv(tmp_path / "results/realism/wordpress/realism.csv")
    assert list(csv.columns) == ["figure", "category", "reference", "candidate", "distance", "tolerance", "within"]
    assert csv.loc[csv["figure"] == "IP conversations", "reference"].tolist() == [149]  # the real slice
    # built: nothing to do; another window reruns the comparison only, another load the run and the comparison
    assert jobs_of(realism_files(tmp_path, REALISM, "--dry-run").stdout) == []
    entry = {**REALISM["realism"]["wordpress"], "window": 20}
    wider = {**REALISM, "realism": {"wordpress": entry}}
    assert jobs_of(realism_files(tmp_path, wider, "--dry-run").stdout) == [("realism", "")]
    busier = {**REALISM, "runs": {"wp": {**REALISM["runs"]["wp"], "users": 5}}}
    assert sorted(jobs_of(realism_files(tmp_path, busier, "--dry-run").stdout)) == [("realism", ""), ("synth", "wp")]
