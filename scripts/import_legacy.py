"""Snakemake adapter for rule import_legacy."""

from pathlib import Path

from mimir.workflow import import_run, logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    import_run(sm.input, Path(sm.output[0]))
