"""config/paper.yaml, the paper's full design at 3-hour runs and three seeds: planned, never run, by the tests.

Running it takes hours on a cluster; planning it shows that the file is a valid experiment, that it asks for the
jobs its design implies and that every run is the one the paper describes.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from test_workflow import expected_jobs, jobs_of, run_snakemake

from mimir.workflow import load_config, run_spec

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "config" / "paper.yaml"
DEFAULT = REPO / "config" / "config.yaml"
SEEDS = (1, 2, 3)
DURATION = 10800  # the paper's 3 hours, training runs included (paper.yaml says why)


def checked(path: Path) -> dict:
    """The config as the workflow makes it (validated, defaults filled in)."""
    return load_config([path], REPO / "config" / "schemas" / "config.schema.yaml")


@pytest.fixture(scope="module")
def paper() -> dict:
    return checked(PAPER)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One dry run of paper.yaml from a fresh working folder, as a user would plan it before a cluster run."""
    workdir = tmp_path_factory.mktemp("paper")
    done = run_snakemake(workdir, "--configfile", str(PAPER), "--dry-run")
    return workdir, done.stdout


def test_the_paper_config_plans_the_jobs_its_design_implies(paper: dict, dry_run: tuple[Path, str]) -> None:
    jobs = jobs_of(dry_run[1])
    assert Counter(rule for rule, _ in jobs) == expected_jobs(yaml.safe_load(PAPER.read_text()))
    assert {run for _, run in jobs} == {*paper["runs"], ""}  # every run is planned, and no other
    # one synth, ingest and edges job per run, one features job per run and rate
    per_run = Counter(run for rule, run in jobs if rule == "features")
    assert set(per_run.values()) == {len(paper["features"]["rates"])}


def test_planning_writes_nothing(dry_run: tuple[Path, str]) -> None:
    workdir, _ = dry_run
    assert not any((workdir / folder).exists() for folder in ("data", "results", "logs"))


def test_every_run_lasts_three_hours_with_its_own_seed(paper: dict) -> None:
    for name, settings in paper["runs"].items():
        spec = run_spec(name, settings, paper["defaults"], paper["seed"])  # what rule synth simulates
        assert spec.duration == DURATION, name
        assert spec.seed == int(name.rsplit("-s", 1)[1]), name


def test_each_run_of_the_default_design_is_repeated_with_every_seed(paper: dict) -> None:
    """The default experiment's runs (its design) with the paper's lengths: the same application, users, mix and
    role, once per seed, and a seed's evaluation runs judged by that seed's training run."""
    default = checked(DEFAULT)
    by_design: dict[str, set[int]] = {}
    for name, run in paper["runs"].items():
        design, seed = re.fullmatch(r"(.+)-s(\d+)", name).groups()
        by_design.setdefault(design, set()).add(int(seed))
        original = default["runs"][design]
        for key in ("source", "app", "users", "mix", "role"):
            assert run.get(key) == original.get(key), f"{name}.{key}"
        if original.get("training"):
            assert run["training"] == f"{original['training']}-s{seed}", name
    assert by_design == {design: set(SEEDS) for design in default["runs"]}


def test_everything_else_is_the_default_experiments(paper: dict) -> None:
    """Rates, granularities, injections, detectors and the realism comparison are the default experiment's."""
    default = checked(DEFAULT)
    for key in ("ingest", "edges", "features", "evaluation", "models", "figures"):
        assert paper[key] == default[key], key
    realism = {name: {**entry, "candidate": f"{entry['candidate']}-s1"} for name, entry in default["realism"].items()}
    assert paper["realism"] == realism
    apps = {run["app"] for run in paper["runs"].values()}
    assert apps == {"sockshop", "wordpress", "online-boutique"}
