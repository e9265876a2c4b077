"""The workflow on a real SLURM (one node, started by the test): every job goes through sbatch with the profile
profiles/slurm, the results equal a local run's byte for byte, and a job killed on the node is submitted again."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from slurmcluster import SlurmCluster, descendants

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
SNAKEMAKE = VENV_BIN / "snakemake"
# The smallest experiment that reaches every rule of a synthetic run: a training and an evaluation run of two
# minutes, one rate, one granularity, one method. Each SLURM job starts Snakemake twice (the batch script, then its
# job step), so the chain of eight stages, not the data, sets the time.
TINY = {
    "seed": 7,
    "defaults": {"duration": 120, "rotate": 60},
    "runs": {
        "tiny-train": {"app": "sockshop", "users": 4, "role": "train"},
        "tiny-eval": {"app": "sockshop", "users": 3, "training": "tiny-train"},
    },
    "features": {"rates": [1], "granularities": [10], "attack_seconds": 20},
    "models": {"methods": ["mimir"]},
    "evaluation": {"min_attacked": 1, "min_benign": 1},
    "figures": {"rate": 1},
}
# The part of TINY the killed-job test runs: one run's synthesis (the job that is killed) and its ingest.
KILL_TARGET = "results/tiny-train/flows.parquet"
TIMEOUT = 1200


@pytest.fixture
def cluster() -> Iterator[SlurmCluster]:
    """A fresh single-node SLURM, stopped and removed after the test, also when it fails."""
    # not under pytest's tmp_path: its root is closed to other users, and munged runs as user munge
    state = Path(tempfile.mkdtemp(prefix="mimir-slurm-"))
    try:
        with SlurmCluster(state) as running:
            yield running
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """Workflows a test starts in the background; those still running at its end are killed with their jobs."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def workflow(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The workflow of this checkout on TINY in `workdir`, started in the background; output goes to a file."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(TINY))
    cmd = [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]
    with (workdir / "snakemake.out").open("w") as out:
        # its own process group: a test that fails stops it with every local job it started (see `started`)
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)


def on_slurm(cluster: SlurmCluster, workdir: Path, *targets: str) -> subprocess.Popen:
    """Through the SLURM profile, as a user runs it: the venv active (its bin first on PATH), SLURM_CONF set."""
    env = {**cluster.env, "PATH": os.pathsep.join([str(VENV_BIN), cluster.env["PATH"]])}
    return workflow(workdir, "--profile", str(REPO / "profiles" / "slurm"), *targets, env=env)


def finish(proc: subprocess.Popen, workdir: Path) -> str:
    """Wait for a workflow started by `workflow`; its output, which must say it succeeded."""
    proc.wait(timeout=TIMEOUT)
    said = (workdir / "snakemake.out").read_text()
    assert proc.returncode == 0, said[-5000:]
    return said


def planned(workdir: Path, *targets: str) -> Counter:
    """Jobs per rule a dry run of the local workflow would execute (the local target rule `all` left out)."""
    proc = workflow(workdir, "--dry-run", "--cores", "1", *targets)
    rules = re.findall(r"^rule (\w+):$", finish(proc, workdir), flags=re.MULTILINE)
    return Counter(rule for rule in rules if rule != "all")


def submissions(said: str) -> dict[str, list[str]]:
    """Snakemake job id -> the SLURM job ids it was submitted as, in order (more than one if retried)."""
    jobs: dict[str, list[str]] = {}
    for jobid, slurm_id in re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", said, re.MULTILINE):
        jobs.setdefault(jobid, []).append(slurm_id)
    return jobs


def rules_of(said: str) -> dict[str, str]:
    """Snakemake job id -> its rule, from the job blocks Snakemake prints."""
    found = {}
    for rule, block in re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", said, re.MULTILINE):
        if m := re.search(r"^    jobid: (\d+)$", block, re.MULTILINE):
            found[m.group(1)] = rule
    return found


def artefacts(workdir: Path) -> dict[str, bytes]:
    """Every run bundle, table, model, score and figure of a workflow run (logs, which hold times, left out)."""
    files = [p for folder in ("results", "data") for p in (workdir / folder).rglob("*") if p.is_file()]
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(files)}


def slurm_state(cluster: SlurmCluster, slurm_id: str) -> str:
    """A job's state as slurmctld still remembers it (MinJobAge keeps finished jobs for 300 s)."""
    done = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--format=%T", "--jobs", slurm_id],
        env=cluster.env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return done.stdout.strip()


def test_every_job_goes_through_sbatch_and_the_results_equal_a_local_run(
    cluster: SlurmCluster, started: list[subprocess.Popen], tmp_path: Path
) -> None:
    expected = planned(tmp_path / "plan")
    assert expected["synth"] == 2 and expected["figures"] == 1, expected
    # the local reference runs beside the SLURM run: the SLURM run mostly waits for status checks
    local = workflow(tmp_path / "local", "--cores", "2")
    remote = on_slurm(cluster, tmp_path / "slurm")
    started.extend([local, remote])
    said = finish(remote, tmp_path / "slurm")
    finish(local, tmp_path / "local")

    jobs, rules = submissions(said), rules_of(said)
    assert Counter(rules[jobid] for jobid in jobs) == expected  # every job of the plan, each once, no more
    assert all(len(ids) == 1 for ids in jobs.values()), jobs  # none failed and was retried
    # every batch job slurmctld accepted is one of these, and each of them is one slurmctld accepted
    assert sorted(cluster.submitted(), key=int) == sorted((i for ids in jobs.values() for i in ids), key=int)
    assert rules_of(said).get("0") == "all" and "0" not in jobs  # the target rule ran on the submitting host

    mine, reference = artefacts(tmp_path / "slurm"), artefacts(tmp_path / "local")
    assert "results/tables/metrics.csv" in reference and "data/runs/tiny-eval/run.json" in reference
    assert sorted(mine) == sorted(reference)
    assert [name for name in reference if mine[name] != reference[name]] == []


def running_synthesis(cluster: SlurmCluster) -> int | None:
    """The PID of the Python of a `synth` job running in a SLURM job step of this cluster, if there is one."""
    for pid in descendants(cluster.step_daemons()):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(os.fsdecode(cmdline[0])).name.startswith("python") and any(p.endswith(b".synth.py") for p in cmdline):
            return pid
    return None


def environment(pid: int) -> dict[str, str]:
    """The environment a process started with."""
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode(errors="replace").split("=", 1) for p in pairs if b"=" in p)


def test_a_job_killed_on_the_node_is_submitted_again_and_the_run_completes(
    cluster: SlurmCluster, started: list[subprocess.Popen], tmp_path: Path
) -> None:
    local = workflow(tmp_path / "local", "--cores", "2", KILL_TARGET)
    remote = on_slurm(cluster, tmp_path / "slurm", KILL_TARGET)
    started.extend([local, remote])
    victim = None
    while victim is None and remote.poll() is None:
        victim = running_synthesis(cluster)
        time.sleep(0.05)
    assert victim is not None, "the SLURM run ended before a synth job step was seen running"
    env = environment(victim)
    os.kill(victim, signal.SIGKILL)
    said = finish(remote, tmp_path / "slurm")
    finish(local, tmp_path / "local")

    # the job ran inside SLURM with the venv of the submitting shell on its PATH
    assert env.get("SLURM_JOB_ID") and str(VENV_BIN) in env["PATH"].split(os.pathsep), env.get("PATH")
    jobs, rules = submissions(said), rules_of(said)
    retried = {jobid: ids for jobid, ids in jobs.items() if len(ids) > 1}
    assert len(retried) == 1, jobs
    [(jobid, ids)] = retried.items()
    assert rules[jobid] == "synth" and len(ids) == 2 and env["SLURM_JOB_ID"] == ids[0]
    assert slurm_state(cluster, ids[0]) == "FAILED" and slurm_state(cluster, ids[1]) == "COMPLETED"
    assert sorted(cluster.submitted(), key=int) == sorted((i for ids in jobs.values() for i in ids), key=int)
    assert Counter(rules[j] for j in jobs) == Counter({"synth": 1, "ingest": 1})
    mine, reference = artefacts(tmp_path / "slurm"), artefacts(tmp_path / "local")
    assert "results/tiny-train/flows.parquet" in reference
    assert sorted(mine) == sorted(reference)
    assert [name for name in reference if mine[name] != reference[name]] == []
