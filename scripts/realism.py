"""Snakemake adapter for rule realism."""

import contextlib
from pathlib import Path

from mimir.workflow import logged, realism_run

sm = snakemake  # noqa: F821 - provided by Snakemake
# realism.md names the run bundles by their paths as read. Read from the folder that holds data/runs/{run} (the
# working folder, or the local copy of a default storage under .snakemake/storage/), a bundle is data/runs/{run}
# wherever it is kept; files outside that folder (the references) are named as before, outputs keep their place.
base = Path(sm.input.candidate).parents[2]


def seen_from_base(path: str) -> str:
    """The path to read once the working folder is `base`: relative inside it, absolute outside it."""
    if base == Path():
        return path
    absolute, root = Path(path).absolute(), base.absolute()
    return str(absolute.relative_to(root)) if absolute.is_relative_to(root) else str(absolute)


references = sm.input.reference
inputs = {
    "reference": [seen_from_base(p) for p in ([references] if isinstance(references, str) else references)],
    "candidate": seen_from_base(sm.input.candidate),
}
if "reference_log" in sm.input.keys():  # noqa: SIM118 - `in` on a Namedlist looks at its values
    inputs["reference_log"] = seen_from_base(sm.input.reference_log)
outputs = {kind: str(Path(sm.output[kind]).absolute()) for kind in ("csv", "md", "png", "svg")}
with logged(sm.log[0]), contextlib.chdir(base):
    realism_run(inputs, outputs, sm.params)
