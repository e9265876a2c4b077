"""Snakemake adapter for rule features: one rate, every granularity."""

from pathlib import Path

from mimir.workflow import features_run, logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    features_run(
        Path(sm.input.edges),
        Path(sm.input.run),
        {"root": sm.params.root, "attacks": sm.output.attacks, "tables": list(sm.output.tables)},
        sm.params.rate,
        sm.params.settings,
        sm.params.split,
        sm.params.bin,
        sm.params.seed,
        Path(sm.input.benign) if sm.input.benign else None,
    )
