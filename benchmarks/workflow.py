"""How long the default experiment takes and how much memory it needs, against the 20-minute budget on 2 cores.

Runs the workflow on the repository's `config/config.yaml` in a fresh working folder (`--directory`), as
`make run` does after set-up, and reports the wall time, the peak resident memory of the largest process
(`getrusage` of the children), the number of jobs, the time spent per rule (from Snakemake's job records) and what
each rule's jobs used (peak memory, wall and CPU seconds: benchmarks/resources.py).
Nothing else compares: the research prototype needed days per figure.

    .venv/bin/python benchmarks/workflow.py [--dir DIR] [--cores 2]
    .venv/bin/python benchmarks/workflow.py --report DIR    # the job times of a workflow already run in DIR

`--report` reads what a finished run recorded (the testbed experiment, `config/testbed.yaml`, takes about an hour
of real load and is not rerun here).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from resources import jobs_of, table  # benchmarks/resources.py, next to this file

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
BUDGET_SECONDS = 20 * 60


def rule_seconds(workdir: Path) -> dict[str, tuple[int, float]]:
    """Jobs and seconds per rule, from the times Snakemake records for every output (the outputs of one job share
    its hash: a job counts once, from its first start to its last end)."""
    spans: dict[tuple[str, int], tuple[float, float]] = {}
    for record in (workdir / ".snakemake" / "metadata").iterdir():
        meta = json.loads(record.read_text())
        if meta.get("rule") and meta.get("starttime") and meta.get("endtime"):
            key = (meta["rule"], meta["job_hash"])
            start, end = spans.get(key, (meta["starttime"], meta["endtime"]))
            spans[key] = (min(start, meta["starttime"]), max(end, meta["endtime"]))
    per_rule: dict[str, list[float]] = defaultdict(list)
    for (rule, _), (start, end) in spans.items():
        per_rule[rule].append(end - start)
    return {rule: (len(times), sum(times)) for rule, times in per_rule.items()}


def print_rules(per_rule: dict[str, tuple[int, float]]) -> None:
    print(f"{'rule':<10} {'jobs':>5} {'job seconds':>12}")
    for rule, (count, seconds) in sorted(per_rule.items(), key=lambda item: -item[1][1]):
        print(f"{rule:<10} {count:>5} {seconds:>12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="working folder (default: a temporary one, removed after)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--report", type=Path, metavar="DIR", help="only report the job times of a finished run")
    args = parser.parse_args()
    if args.report:
        print_rules(rule_seconds(args.report))
        return
    with tempfile.TemporaryDirectory(prefix="mimir-workflow-") as temporary:
        workdir = args.dir or Path(temporary)
        (workdir / "config").mkdir(parents=True, exist_ok=True)
        (workdir / "config" / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
        command = [str(SNAKEMAKE), "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir)]
        began = time.perf_counter()
        subprocess.run([*command, "--cores", str(args.cores), "--quiet"], check=True)
        wall = time.perf_counter() - began
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        per_rule = rule_seconds(workdir)
        used = table(jobs_of(workdir), markdown=False)
    print(f"default experiment on {args.cores} cores, set-up excluded")
    print_rules(per_rule)
    print("\nwhat each rule's jobs used (benchmarks/resources.py DIR reads a kept --dir again)")
    print(used)
    print(f"wall time {wall / 60:.1f} min ({wall / BUDGET_SECONDS:.2f} of the 20-minute budget)")
    print(f"peak resident memory of one process {peak_mb:,.0f} MB")


if __name__ == "__main__":
    main()
