"""Snakemake adapter for rule figures: the tables' figures and the ROC curves from the scores."""

from pathlib import Path

from mimir.experiment import Evaluation, figures
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    figures(
        Path(sm.input.metrics),
        Path(sm.input.paths),
        Evaluation.zip(sm.params.evaluations, sm.input.scores),
        dict(sm.params.runs),
        list(sm.params.figures),
        Path(sm.output[0]).parent,
        sm.params.rate,
    )
