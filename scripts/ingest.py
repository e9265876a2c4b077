"""Snakemake adapter for rule ingest."""

from pathlib import Path

from mimir.workflow import ingest_run, logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    ingest_run(Path(sm.input[0]), Path(sm.output.flows), sm.params.bin)
