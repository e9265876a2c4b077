"""The paper-scale design in miniature on a real SLURM: how much a second worker slot speeds the workflow up.

`config/paper.yaml` takes days of CPU; this runs a reduced version of it, derived from the file itself so that it
keeps its structure (three applications, a training run each with evaluation runs that vary the load and the
request mix, every stage from synthesis to figures and the realism comparison), in minutes:

- one seed: only the runs named `-s1`;
- per training run, its evaluation runs at the training run's mix with the fewest and the most users, and its
  first evaluation run with another mix (Sock Shop);
- every run `--duration` seconds (300 by default; below 300 s, without the realism comparison) instead of 3
  hours, attacks of 20 s so that a fifth of a short run still holds several, and the evaluation minimums at 1
  interval (warned about, as in the workflow tests);
- two rates (the largest and the figures' rate) and three detectors (`mimir`, `iforest`, `commsvc`).

It is run four times, each from a fresh working folder: locally with `--cores 1` and `--cores 2`, and on a
single-node SLURM cluster started for the purpose (tests/slurmcluster.py, Debian's slurm-wlm) whose node offers 1,
then 2 CPUs to 1-CPU jobs, through `snakemake --profile profiles/slurm`. It prints one table: wall time of each,
and the speedup of 2 slots over 1 in the same mode. Every SLURM job is a Snakemake of its own on the node, so the
SLURM rows also show what a job costs in start-up and status polling against the work it does.

    .venv/bin/python benchmarks/scale.py [--duration 300] [--modes local slurm] [--keep DIR]

Needs root (slurmd, munged) and `make setup`'s slurm-wlm and munge for the SLURM rows.
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.slurmcluster import SlurmCluster  # noqa: E402 - the repository root is put on the path first

SNAKEMAKE = Path(sys.executable).with_name("snakemake")
PAPER = REPO / "config" / "paper.yaml"
PROFILE = REPO / "profiles" / "slurm"
SEED_SUFFIX = "-s1"
METHODS = ("mimir", "iforest", "commsvc")
ATTACK_SECONDS = 20
TIMEOUT = 3600  # one mode's run, seconds: far above what it takes, so a hang ends with an error
# the realism comparison looks for the busiest load phase of the training run: a run shorter than this has none
REALISM_SECONDS = 300


def reduced(paper: dict[str, Any], duration: float) -> dict[str, Any]:
    """paper.yaml with its structure and fewer, shorter runs (the module's docstring says which)."""
    runs = {name: run for name, run in paper["runs"].items() if name.endswith(SEED_SUFFIX)}
    chosen: set[str] = set()
    for name, training in runs.items():
        if training.get("role") != "train":
            continue
        judged = [(n, r) for n, r in runs.items() if r.get("training") == name]
        same_mix = sorted((r["users"], n) for n, r in judged if r.get("mix") == training.get("mix"))
        other_mix = [n for n, r in judged if r.get("mix") != training.get("mix")]
        chosen |= {name, *other_mix[:1], *([same_mix[0][1], same_mix[-1][1]] if same_mix else [])}
    features, rate = paper["features"], paper["figures"]["rate"]
    return {
        **paper,
        # in the file's order, each run at the reduced length
        "runs": {n: {k: v for k, v in r.items() if k != "duration"} for n, r in runs.items() if n in chosen},
        "defaults": {**paper.get("defaults", {}), "duration": duration},
        "features": {**features, "rates": sorted({max(features["rates"]), rate}), "attack_seconds": ATTACK_SECONDS},
        "models": {
            "methods": [m for m in paper["models"]["methods"] if m in METHODS],
            "params": {m: p for m, p in paper["models"].get("params", {}).items() if m in METHODS},
        },
        "evaluation": {**paper.get("evaluation", {}), "min_attacked": 1, "min_benign": 1, "bootstrap": 100},
        "realism": {
            n: e
            for n, e in paper.get("realism", {}).items()
            if e["candidate"] in chosen and duration >= REALISM_SECONDS
        },
    }


def command(workdir: Path, *args: str) -> list[str]:
    return [
        str(SNAKEMAKE),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        *args,
    ]


def planned_jobs(workdir: Path) -> int:
    """Jobs a dry run lists, the target `all` left out (it runs on the submitting host, never in SLURM)."""
    done = subprocess.run(
        [*command(workdir, "--dry-run", "--cores", "1")], capture_output=True, text=True, check=True, timeout=300
    )
    total = re.search(r"^total\s+(\d+)", done.stdout, re.M)
    if total is None:
        raise RuntimeError(f"no job count in the dry run:\n{done.stdout[-2000:]}")
    return int(total.group(1)) - 1


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    began = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=TIMEOUT)
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return wall


def fresh(root: Path, name: str, config: dict[str, Any]) -> Path:
    workdir = root / name
    workdir.mkdir(parents=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def run_local(root: Path, config: dict[str, Any], cores: int) -> tuple[float, int]:
    workdir = fresh(root, f"local-{cores}", config)
    jobs = planned_jobs(workdir)
    return timed(command(workdir, "--cores", str(cores))), jobs


def run_slurm(root: Path, config: dict[str, Any], slots: int) -> tuple[float, int]:
    """One run through the SLURM profile on a node that offers `slots` CPUs; jobs counted as sbatch took them."""
    workdir = fresh(root, f"slurm-{slots}", config)
    planned = planned_jobs(workdir)
    # a state folder of its own (the cluster opens it to munged and removes it when it stops)
    with SlurmCluster(Path(tempfile.mkdtemp(prefix="mimir-slurm-")), cpus=slots) as cluster:
        # a job runs Snakemake from the PATH it was submitted with: this venv's first
        env = {**cluster.env, "PATH": f"{SNAKEMAKE.parent}:{cluster.env.get('PATH', '')}"}
        # no job asks for more CPUs than the node has (rule ingest's 2 threads would stay pending on a 1-CPU node)
        wall = timed(command(workdir, "--profile", str(PROFILE), "--max-threads", str(slots)), env=env)
        submitted = len(cluster.submitted())
    if submitted != planned:
        raise RuntimeError(f"{submitted} jobs went through sbatch, {planned} were planned")
    return wall, submitted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=300, help="seconds per run (default 300)")
    parser.add_argument("--modes", nargs="+", choices=["local", "slurm"], default=["local", "slurm"])
    parser.add_argument("--keep", type=Path, help="working folders here, kept (default: a temporary one, removed)")
    parser.add_argument("--print-config", action="store_true", help="print the reduced config and stop")
    args = parser.parse_args()
    # a `kill` ends the benchmark through its clean-ups (the SLURM daemons, the working folders), as Ctrl-C does
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    config = reduced(yaml.safe_load(PAPER.read_text()), args.duration)
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=False))
        return
    root = args.keep or Path(tempfile.mkdtemp(prefix="mimir-scale-"))
    rows: list[tuple[str, int, float, int]] = []
    try:
        for mode in args.modes:
            for slots in (1, 2):
                wall, jobs = run_local(root, config, slots) if mode == "local" else run_slurm(root, config, slots)
                rows.append((mode, slots, wall, jobs))
                print(f"{mode}, {slots} slot(s): {wall:.1f} s, {jobs} jobs", file=sys.stderr)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    runs = config["runs"]
    print(f"reduced paper.yaml: {len(runs)} runs of {args.duration:g} s, {len(config['features']['rates'])} rates, "
          f"{len(config['models']['methods'])} detectors")  # fmt: skip
    print(f"{'mode':<6} {'slots':>5} {'wall s':>8} {'speedup':>8} {'jobs':>5}")
    one = {mode: wall for mode, slots, wall, _ in rows if slots == 1}
    for mode, slots, wall, jobs in rows:
        print(f"{mode:<6} {slots:>5} {wall:>8.1f} {one[mode] / wall:>8.2f} {jobs:>5}")


if __name__ == "__main__":
    main()
