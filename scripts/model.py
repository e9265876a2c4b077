"""Snakemake adapter for rule model: every feature table of the training run, by (granularity, rate)."""

from pathlib import Path

from mimir.entities import read_run
from mimir.experiment import Protocol, by_rate, fit_model
from mimir.spec import rate_name
from mimir.workflow import logged

sm = snakemake  # noqa: F821 - provided by Snakemake
with logged(sm.log[0]):
    tables = by_rate(sm.params.layout, list(sm.input.tables))
    fit_model(
        sm.wildcards.method,
        dict(sm.params.params),
        sm.params.seed,
        {sm.wildcards.training: [tables[rate] for rate in sorted(tables, key=rate_name)]},  # file-name order, as ever
        Path(sm.output.model).parent,
        Protocol.from_config(sm.params.evaluation),
        read_run(Path(sm.input.run)).get("sensitive", []),
    )
