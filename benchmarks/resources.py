"""What every job of a finished workflow run used, per rule: the figures the rules' `resources:` are sized from.

Reads a working folder the workflow ran in (`benchmarks/workflow.py --dir DIR`, or any `snakemake --directory DIR`):
each job's log ends with its exact peak resident memory and CPU seconds (`mimir.workflow.logged`), and each rule's
`benchmark:` file (logs/benchmarks/...) holds the job's wall seconds, Python start-up included. Prints per rule the
jobs, the largest peak, the longest and the summed wall time and the summed CPU time; then, for the rules whose
needs grow with a run, the least-squares line of peak memory and CPU seconds against the run's user-seconds
(users x duration, from the config) and against the job's input size, so that the coefficients in rules/*.smk can
be checked on a user's own data.

    .venv/bin/python benchmarks/resources.py DIR [--config DIR/config/config.yaml] [--markdown]
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import yaml

USAGE = re.compile(
    r"^resources: peak RSS (\d+) MB(?:, largest worker (\d+) MB)?, CPU ([\d.]+) s, ([\d.]+) s in the job's code$",
    re.MULTILINE,
)


@dataclass
class Job:
    """One job: its rule, the log path's wildcards part (the run, `method/training`, ...) and what it used."""

    rule: str
    key: str
    peak_mb: float
    cpu_s: float
    code_s: float
    worker: float = 0.0  # the largest worker process's peak, if the job ran any
    wall_s: float | None = None  # from the benchmark file, when the rule has one


def jobs_of(workdir: Path) -> list[Job]:
    """Every job whose log ends with a usage line, with the wall time of its benchmark file where there is one."""
    logs, benchmarks = workdir / "logs", workdir / "logs" / "benchmarks"
    jobs = []
    for log in sorted(logs.rglob("*.log")):
        found = USAGE.findall(log.read_text(errors="replace"))
        if not found:
            continue
        parts = log.relative_to(logs).with_suffix("").parts
        rule, key = (parts[0], "/".join(parts[1:])) if len(parts) > 1 else (parts[0], "")
        rule = {"import": "import_legacy"}.get(rule, rule)
        own, worker, cpu, code = found[-1]
        # a worker's peak counts as the job's when larger; a job that runs workers side by side is told apart by
        # its threads (rule ingest), and sized by their sum in the rules
        job = Job(rule, key, max(float(own), float(worker or 0)), float(cpu), float(code), worker=float(worker or 0))
        tsv = benchmarks / log.relative_to(logs).with_suffix(".tsv")
        if tsv.is_file():
            rows = list(csv.DictReader(tsv.open(), delimiter="\t"))
            job.wall_s = max(float(row["s"]) for row in rows)
        jobs.append(job)
    return jobs


def table(jobs: list[Job], markdown: bool) -> str:
    """Per rule: jobs, peak RSS max, wall s max and sum, CPU s max and sum, biggest first by CPU."""
    per_rule: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        per_rule[job.rule].append(job)
    header = ["rule", "jobs", "peak RSS max (MB)", "wall s max", "wall s sum", "CPU s max", "CPU s sum"]
    rows = []
    for rule, done in sorted(per_rule.items(), key=lambda item: -sum(j.cpu_s for j in item[1])):
        walls = [j.wall_s for j in done if j.wall_s is not None]
        rows.append(
            [
                rule,
                str(len(done)),
                f"{max(j.peak_mb for j in done):,.0f}",
                f"{max(walls):.1f}" if walls else "-",
                f"{sum(walls):.1f}" if walls else "-",
                f"{max(j.cpu_s for j in done):.1f}",
                f"{sum(j.cpu_s for j in done):.1f}",
            ]
        )
    total_cpu = sum(j.cpu_s for j in jobs)
    total_wall = sum(j.wall_s or 0 for j in jobs)
    rows.append(["total", str(len(jobs)), "", "", f"{total_wall:.1f}", "", f"{total_cpu:.1f}"])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if i else ":---" for i in range(7)) + "|"]
        return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in [header, *rows]
    )


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares intercept and slope of y on x (one x: the line through the origin's offset)."""
    n = len(points)
    mean_x, mean_y = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def user_seconds(config: dict) -> dict[str, float]:
    """users x duration of every run the config names with users (imported runs have none)."""
    duration = config.get("defaults", {}).get("duration", 1800)
    return {
        name: run["users"] * run.get("duration", duration) for name, run in config["runs"].items() if run.get("users")
    }


def size_mb(path: Path) -> float:
    """A file's size, or a folder's files' sizes summed (a run bundle), in MB."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files) / 2**20


def job_input_mb(workdir: Path, job: Job) -> float | None:
    """The size of what a per-run job reads: the capture (ingest), the flows (edges), the edges (features)."""
    run = job.key.split("/")[0]
    inputs = {
        "ingest": workdir / "data" / "runs" / run,
        "edges": workdir / "results" / run / "flows.parquet",
        "features": workdir / "results" / run / "edges.parquet",
    }
    path = inputs.get(job.rule)
    return size_mb(path) if path is not None and path.exists() else None


def scaling(workdir: Path, jobs: list[Job], config: dict) -> str:
    """Per rule that works on one run: peak MB and CPU s against the run's user-seconds and the input's MB."""
    load = user_seconds(config)
    lines = ["rule      against            peak MB = a + b*x         CPU s = a + b*x        (x range)"]
    for rule in ("synth", "ingest", "edges", "features"):
        done = [j for j in jobs if j.rule == rule and j.key.split("/")[0] in load]
        if len(done) < 2:
            continue
        for name, x_of in (
            ("user-seconds", lambda j: load[j.key.split("/")[0]]),
            ("input MB", lambda j: job_input_mb(workdir, j)),
        ):
            xs = [(x_of(j), j) for j in done]
            xs = [(x, j) for x, j in xs if x is not None]
            if len(xs) < 2:
                continue
            mem = fit([(x, j.peak_mb) for x, j in xs])
            cpu = fit([(x, j.cpu_s) for x, j in xs])
            lo, hi = min(x for x, _ in xs), max(x for x, _ in xs)
            lines.append(
                f"{rule:<9} {name:<13} {mem[0]:8.0f} + {mem[1]:.4g}*x   {cpu[0]:7.1f} + {cpu[1]:.4g}*x"
                f"   ({lo:,.0f}-{hi:,.0f})"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--config", type=Path, help="the run's config (default: DIR/config/config.yaml)")
    parser.add_argument("--markdown", action="store_true", help="the per-rule table as Markdown")
    args = parser.parse_args()
    jobs = jobs_of(args.workdir)
    print(table(jobs, args.markdown))
    config_path = args.config or args.workdir / "config" / "config.yaml"
    if config_path.is_file():
        print()
        print(scaling(args.workdir, jobs, yaml.safe_load(config_path.read_text())))


if __name__ == "__main__":
    main()
