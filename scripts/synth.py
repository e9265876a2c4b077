"""Snakemake adapter for rule synth."""

from pathlib import Path

from mimir.workflow import logged, synth_run

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    synth_run(sm.wildcards.run, sm.params, Path(sm.output[0]))
