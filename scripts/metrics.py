"""Snakemake adapter for rule metrics."""

from pathlib import Path

from mimir.experiment import Evaluation, Protocol, metrics_tables
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    evaluations = Evaluation.zip(sm.params.evaluations, sm.input.scores, sm.input.cards)
    protocol = Protocol.from_config(sm.params.evaluation, seed=sm.params.seed)
    metrics_tables(evaluations, protocol, Path(sm.output.metrics), Path(sm.output.paths))
