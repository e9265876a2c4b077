"""Snakemake adapter for rule collect."""

from pathlib import Path

from mimir.workflow import collect_run, logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    collect_run(sm.wildcards.run, sm.params, Path(sm.output[0]))
