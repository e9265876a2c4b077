"""Snakemake adapter for rule edges."""

from pathlib import Path

from mimir.workflow import edges_run, logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    edges_run(
        Path(sm.input.flows),
        Path(sm.input.run),
        Path(sm.output.edges),
        sm.params.bin,
        sm.params.keep_infra,
    )
