"""Snakemake adapter for rule model."""

from pathlib import Path

from mimir.experiment import fit_model, read_tables
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    by_rate: dict[str, list[str]] = {}
    for path in sm.input.tables:
        by_rate.setdefault(Path(path).stem, []).append(path)
    training = [read_tables(paths) for _, paths in sorted(by_rate.items())]
    fit_model(
        sm.wildcards.method,
        dict(sm.params.params),
        sm.params.seed,
        training,
        [sm.wildcards.training],
        Path(sm.output.model).parent,
    )
