"""Snakemake adapter for rule roc."""

from pathlib import Path

from mimir.experiment import roc_figure
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    roc_figure(list(sm.input.scores), dict(sm.params.runs), sm.params.rate, Path(sm.output[0]).parent)
