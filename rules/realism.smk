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
    benchmark:
        "logs/benchmarks/realism/{name}.tsv"
    wildcard_constraints:
        name=one_of(REALISM),
    conda:
        "../envs/mimir.yaml"
    resources:
        # the candidate's capture is read: 512 MB and 15 CPU s for 3.1 GB, 929 MB and 44 s for 9.5 GB
        mem_mb=lambda wildcards, input: megabytes(
            350 + 0.07 * bundle_mb(input.candidate)
        ),
        runtime=lambda wildcards, input: minutes(5 + 0.005 * bundle_mb(input.candidate)),
        cpus_per_task=1,
    params:
        window=lambda wildcards: REALISM[wildcards.name]["window"],
        peak=lambda wildcards: REALISM[wildcards.name]["peak"],
        rename=lambda wildcards: REALISM[wildcards.name]["rename"],
    script:
        "../scripts/realism.py"
