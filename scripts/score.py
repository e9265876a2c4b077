"""Snakemake adapter for rule score."""

from pathlib import Path

from mimir.experiment import read_tables, score_run
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    by_rate: dict[str, list[str]] = {}
    for path in sm.input.tables:
        by_rate.setdefault(Path(path).stem, []).append(path)
    tables = {float(rate): read_tables(paths) for rate, paths in by_rate.items()}
    score_run(Path(sm.input.model).parent, tables, sm.params.training_run, Path(sm.output[0]))
