"""Snakemake adapter for rule ingest."""

import contextlib
from pathlib import Path

from mimir.workflow import ingest_run, logged

sm = snakemake  # noqa: F821 - provided by Snakemake
# The flows' summary names each capture file by its path as read. Read from the folder that holds data/runs/{run}
# (the working folder, or the local copy of a default storage under .snakemake/storage/), the names are the same
# data/runs/{run}/... wherever the bundle is kept, and so are the flows' bytes.
bundle = Path(sm.input[0])
base = bundle.parents[2]
flows = Path(sm.output.flows).absolute()  # before the working folder changes
with logged(sm.log[0]), contextlib.chdir(base):
    ingest_run(bundle.relative_to(base), flows, sm.params.bin, sm.threads)
