"""Run bundles (data/runs/{run}): generated, collected on a Kubernetes cluster, made on the testbed, or imported
from the prototype."""


rule synth:
    input:
        app=app_file,
    output:
        directory("data/runs/{run}"),
    log:
        "logs/synth/{run}.log",
    benchmark:
        "logs/benchmarks/synth/{run}.tsv"
    wildcard_constraints:
        run=one_of(SYNTHETIC),
    conda:
        "../envs/mimir.yaml"
    resources:
        mem_mb=synth_mem_mb,
        runtime=synth_runtime,
        cpus_per_task=1,
    params:
        settings=run_settings,
        defaults=config["defaults"],
        seed=config["seed"],
    script:
        "../scripts/synth.py"


rule import_legacy:
    input:
        unpack(legacy_files),
    output:
        directory("data/runs/{run}"),
    log:
        "logs/import/{run}.log",
    benchmark:
        "logs/benchmarks/import/{run}.tsv"
    wildcard_constraints:
        run=one_of(IMPORTED),
    conda:
        "../envs/mimir.yaml"
    resources:
        # not measured here (the default experiment imports nothing): sized as its capture
        mem_mb=lambda wildcards, input: megabytes(1000 + 0.5 * input.size_mb),
        runtime=lambda wildcards, input: minutes(5 + 0.02 * input.size_mb),
        cpus_per_task=1,
    script:
        "../scripts/import_legacy.py"


# never sent to a scheduler or a pod: the cluster's kubeconfig and the load generator are on the machine Snakemake
# runs on (and, under profiles/slurm, a resource named `cluster` would be read as the SLURM cluster to submit to)
rule collect:
    input:
        app=app_file,
    output:
        directory("data/runs/{run}"),
    log:
        "logs/collect/{run}.log",
    benchmark:
        "logs/benchmarks/collect/{run}.tsv"
    wildcard_constraints:
        run=one_of(COLLECTED),
    localrule: True
    conda:
        "../envs/mimir.yaml"
    resources:
        cluster=1,
        # not measured here (no cluster): the load runs on the cluster, this job waits and copies
        mem_mb=2000,
        runtime=real_run_runtime,
        cpus_per_task=1,
    params:
        settings=run_settings,
        defaults=config["defaults"],
        cluster=config["cluster"],
        seed=config["seed"],
    script:
        "../scripts/collect.py"


# never sent to a scheduler or a pod: the testbed's namespaces are made on the machine Snakemake runs on
rule testbed:
    input:
        app=app_file,
    output:
        directory("data/runs/{run}"),
    log:
        "logs/testbed/{run}.log",
    benchmark:
        "logs/benchmarks/testbed/{run}.tsv"
    wildcard_constraints:
        run=one_of(TESTBED),
    localrule: True
    conda:
        "../envs/mimir.yaml"
    resources:
        testbed=1,
        mem_mb=2000,
        runtime=real_run_runtime,
        cpus_per_task=1,
    params:
        settings=run_settings,
        defaults=config["defaults"],
        testbed=config["testbed"],
        seed=config["seed"],
    script:
        "../scripts/testbed.py"
