"""Snakemake adapter for rule score: one model on every run that names its training run."""

from pathlib import Path

from mimir.experiment import by_rate, score_runs
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    per_run = len(sm.params.layout)
    tables = list(sm.input.tables)
    runs = {
        run: by_rate(sm.params.layout, tables[k * per_run : (k + 1) * per_run]) for k, run in enumerate(sm.params.runs)
    }
    score_runs(Path(sm.input.model).parent, runs, Path(sm.output[0]))
