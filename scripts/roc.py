"""Snakemake adapter for rule roc."""

from pathlib import Path

from mimir.experiment import Evaluation, roc_figure
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    evaluations = Evaluation.zip(sm.params.evaluations, sm.input.scores)
    roc_figure(evaluations, dict(sm.params.runs), sm.params.rate, Path(sm.output[0]).parent)
