"""Snakemake adapter for rule score: every model of one training run on every run that names it.

One job per training run, not per (method, training run): one Python start-up and one read of the runs' feature
tables serve every method, each method's scores in its own file as before."""

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
    for model, out in zip(sm.input.models, sm.output, strict=True):
        score_runs(Path(model).parent, runs, Path(out))
