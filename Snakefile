"""mimir: from runs to labelled feature tables, models, scores, tables and the paper's figures, from config."""

from snakemake.utils import min_version

min_version("9.0")


# A user's `--configfile` replaces the default experiment instead of being merged into it; without one, the
# working directory's config/config.yaml is the experiment (the repository's own, or a `--directory WORKDIR`'s).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


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
