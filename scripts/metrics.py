"""Snakemake adapter for rule metrics."""

from pathlib import Path

from mimir.experiment import metrics_tables
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    metrics_tables(list(sm.input.scores), Path(sm.output.metrics), Path(sm.output.paths))
