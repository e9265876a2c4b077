"""`mimir realism` in the report: each comparison the config names, a reference against a run of this config."""


rule realism:
    input:
        unpack(realism_inputs),
    output:
        csv="results/realism/{name}/realism.csv",
        md=report(
            "results/realism/{name}/realism.md",
            caption="../report/realism.rst",
            category="Realism",
            subcategory="{name}",
        ),
        png=report(
            "results/realism/{name}/realism.png",
            caption="../report/realism.rst",
            category="Realism",
            subcategory="{name}",
        ),
        svg="results/realism/{name}/realism.svg",
    log:
        "logs/realism/{name}.log",
    wildcard_constraints:
        name=one_of(REALISM),
    conda:
        "../envs/mimir.yaml"
    params:
        window=lambda wildcards: REALISM[wildcards.name]["window"],
        peak=lambda wildcards: REALISM[wildcards.name]["peak"],
        rename=lambda wildcards: REALISM[wildcards.name]["rename"],
    script:
        "../scripts/realism.py"
