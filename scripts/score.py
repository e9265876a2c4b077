"""Snakemake adapter for rule score."""

from pathlib import Path

from mimir.experiment import by_rate, score_run
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    tables = by_rate(sm.params.layout, list(sm.input.tables))
    score_run(Path(sm.input.model).parent, tables, sm.params.training_run, Path(sm.output[0]))
