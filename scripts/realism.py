"""Snakemake adapter for rule realism."""

from mimir.workflow import logged, realism_run

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    realism_run(sm.input, sm.output, sm.params)
