"""Snakemake adapter for rule figures."""

from pathlib import Path

from mimir.experiment import figures
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    figures(Path(sm.input[0]), dict(sm.params.runs), Path(sm.output[0]).parent, sm.params.rate)
