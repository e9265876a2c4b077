"""`make fuzz`: thousands of hostile inputs per reader, each in a forked child, and a table of what became of them.

    .venv/bin/python -m tests.fuzz.run --inputs 10000 --reader all [--seed N] [--jobs 2]
    .venv/bin/python -m tests.fuzz.run --reader entities --replay tests/fuzz/failures/entities/FILE.jsonl

Input k of a reader is made from (seed, reader, k) alone, so a run is re-made by its printed seed. A failing input
(exit 1, a signal, a hang, a peak over 1 GB) is saved under tests/fuzz/failures/<reader>/ with a note of how it
was made and what the reader printed; the exit status is 1 when there is any.
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .harness import FAILURES, PEAK_LIMIT_BYTES, TIMEOUT_SECONDS, Outcome, Pool, keep_failure, warm_workspace
from .inputs import READERS, FuzzInput, draw, load_seeds

PARENT_ADDRESS_SPACE_BYTES = 6 << 30


@dataclass
class Tally:
    """One reader's figures for the table."""

    inputs: int = 0
    codes: collections.Counter = field(default_factory=collections.Counter)
    exit_1: int = 0
    signals: int = 0
    hangs: int = 0
    peaks: int = 0
    max_peak: int = 0
    slowest: float = 0.0
    slowest_input: str = ""
    failures: int = 0

    def add(self, item: FuzzInput, outcome: Outcome) -> None:
        self.inputs += 1
        if not outcome.hung and outcome.seconds > self.slowest:
            self.slowest, self.slowest_input = outcome.seconds, f"{item.seed} {item.how[:100]}"
        self.max_peak = max(self.max_peak, outcome.peak_bytes)
        self.failures += outcome.failure is not None
        if outcome.hung:
            self.hangs += 1
            return
        self.peaks += outcome.peak_bytes > PEAK_LIMIT_BYTES
        if outcome.signal is not None:
            self.signals += 1
        else:
            self.codes[outcome.code] += 1
            self.exit_1 += outcome.code == 1


def inputs_of(reader: str, seed: int, count: int) -> Iterator[tuple[tuple[int, FuzzInput], FuzzInput]]:
    """Made as they are run (some are megabytes, and a child's peak counts what its parent holds)."""
    seeds = load_seeds(reader)
    for k in range(count):
        item = draw(reader, random.Random(f"{seed}:{reader}:{k}"), seeds)  # noqa: S311 - reproducible, not secret
        yield (k, item), item


def table(tallies: dict[str, Tally]) -> str:
    head = ("reader", "inputs", "exit codes", "exit-1", "signals", "hangs", f">{PEAK_LIMIT_BYTES / 1e9:g}GB",
            "max peak MB", "slowest s")  # fmt: skip
    rows = [head]
    for reader, t in tallies.items():
        codes = " ".join(f"{code}:{n}" for code, n in sorted(t.codes.items()))
        rows.append((reader, str(t.inputs), codes, str(t.exit_1), str(t.signals), str(t.hangs), str(t.peaks),
                     f"{t.max_peak / 1e6:.0f}", f"{t.slowest:.2f}"))  # fmt: skip
    widths = [max(len(row[k]) for row in rows) for k in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def fuzz(readers: list[str], count: int, seed: int, jobs: int, timeout: float, failures: Path) -> int:
    print(f"fuzzing {', '.join(readers)}: {count} inputs each, seed {seed}, {jobs} at a time", flush=True)
    tallies = {reader: Tally() for reader in readers}
    started = time.monotonic()
    with warm_workspace() as workspace:
        pool = Pool(workspace, jobs=jobs, timeout=timeout)
        for reader in readers:
            tally = tallies[reader]
            for (k, item), outcome in pool.run(inputs_of(reader, seed, count)):
                tally.add(item, outcome)
                if outcome.failure:
                    kept = keep_failure(item, outcome, failures)
                    print(f"{reader} #{k} {item.seed} {item.how[:60]}: {outcome.describe()} -> {kept}", flush=True)
            print(f"{reader}: {tally.inputs} inputs, {tally.failures} failures ({time.monotonic() - started:.0f} s)")
    print()
    print(table(tallies))
    for reader, tally in tallies.items():
        print(f"slowest {reader} input: {tally.slowest:.2f} s, {tally.slowest_input}")
    failed = sum(t.failures for t in tallies.values())
    elapsed = time.monotonic() - started
    print(f"\nseed {seed}; {elapsed:.0f} s; {failed} failing input(s)" + (f", kept in {failures}" if failed else ""))
    return 1 if failed else 0


def replay(reader: str, paths: list[Path], timeout: float) -> int:
    failed = 0
    with warm_workspace() as workspace:
        pool = Pool(workspace, timeout=timeout)
        for path in paths:
            outcome = pool.run_one(FuzzInput(reader, path.name, "replay", path.read_bytes()))
            failed += outcome.failure is not None
            print(f"{path}: {outcome.failure or 'ok'}: {outcome.describe()}\n{outcome.stderr}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=10_000, help="inputs per reader (default 10000)")
    parser.add_argument("--reader", default="all", help=f"all, or some of {','.join(READERS)} (comma-separated)")
    parser.add_argument("--seed", type=int, help="of the inputs (default: a random one, printed)")
    parser.add_argument("--jobs", type=int, default=2, help="children at a time (default 2)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_SECONDS, help="seconds an input may take")
    parser.add_argument("--failures", type=Path, default=FAILURES, help="where failing inputs are kept")
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE", help="run these files once (one reader)")
    args = parser.parse_args(argv)
    readers = list(READERS) if args.reader == "all" else args.reader.split(",")
    if unknown := set(readers) - set(READERS):
        parser.error(f"--reader: unknown {', '.join(sorted(unknown))}")
    if args.replay:
        if len(readers) != 1:
            parser.error("--replay needs one --reader")
        return replay(readers[0], args.replay, args.timeout)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    _, hard = resource.getrlimit(resource.RLIMIT_AS)  # a net under the parent too: it makes every input
    resource.setrlimit(resource.RLIMIT_AS, (PARENT_ADDRESS_SPACE_BYTES, hard))
    return fuzz(readers, args.inputs, seed, args.jobs, args.timeout, args.failures)


if __name__ == "__main__":
    sys.exit(main())
