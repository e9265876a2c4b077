"""mimir: from runs to labelled feature tables, models, scores, tables and the paper's figures, from config."""

from snakemake.utils import min_version

min_version("9.0")


# The config (a user's `--configfile`, else the working directory's config/config.yaml) is read and checked by
# rules/common.smk before any rule is defined.
report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/runs.smk"
include: "rules/capture.smk"
include: "rules/edges.smk"
include: "rules/features.smk"
include: "rules/models.smk"
include: "rules/realism.smk"


rule all:
    default_target: True
    input:
        all_outputs(),
