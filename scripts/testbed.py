"""Snakemake adapter for rule testbed."""

from pathlib import Path

from mimir.workflow import logged, testbed_run

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    testbed_run(sm.wildcards.run, sm.params, Path(sm.output[0]))
