"""Snakemake adapter for rule metrics."""

from pathlib import Path

from mimir.experiment import Evaluation, metrics_tables
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    evaluations = Evaluation.zip(sm.params.evaluations, sm.input.scores, sm.input.cards)
    metrics_tables(evaluations, Path(sm.output.metrics), Path(sm.output.paths))
