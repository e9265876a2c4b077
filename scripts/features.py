"""Snakemake adapter for rule features: one rate, every granularity."""

from mimir.workflow import features_run, logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    features_run(sm.input, sm.output, sm.params)
