"""Snakemake adapter for rule features: one rate, every granularity."""

from pathlib import Path

from mimir.workflow import features_run, logged

sm = snakemake  # noqa: F821 - provided by Snakemake
# The run's results folder is where this job's outputs are: results/{run} itself, or its local copy under
# .snakemake/storage/ when a default storage (S3) holds the outputs; attacks/{rate}.parquet sits right in it.
params = {**dict(sm.params.items()), "root": str(Path(sm.output.attacks).parents[1])}
with logged(sm.log[0]):
    features_run(sm.input, sm.output, params)
