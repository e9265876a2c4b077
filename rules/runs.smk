"""Run bundles (data/runs/{run}): generated, collected on a Kubernetes cluster, made on the testbed, or imported
from the prototype."""


rule synth:
    input:
        app=app_file,
    output:
        directory("data/runs/{run}"),
    log:
        "logs/synth/{run}.log",
    wildcard_constraints:
        run=one_of(SYNTHETIC),
    conda:
        "../envs/mimir.yaml"
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
    wildcard_constraints:
        run=one_of(IMPORTED),
    conda:
        "../envs/mimir.yaml"
    script:
        "../scripts/import_legacy.py"


rule collect:
    input:
        app=app_file,
    output:
        directory("data/runs/{run}"),
    log:
        "logs/collect/{run}.log",
    wildcard_constraints:
        run=one_of(COLLECTED),
    conda:
        "../envs/mimir.yaml"
    resources:
        cluster=1,
    params:
        settings=run_settings,
        defaults=config["defaults"],
        cluster=config["cluster"],
        seed=config["seed"],
    script:
        "../scripts/collect.py"


rule testbed:
    input:
        app=app_file,
    output:
        directory("data/runs/{run}"),
    log:
        "logs/testbed/{run}.log",
    wildcard_constraints:
        run=one_of(TESTBED),
    conda:
        "../envs/mimir.yaml"
    resources:
        testbed=1,
    params:
        settings=run_settings,
        defaults=config["defaults"],
        testbed=config["testbed"],
        seed=config["seed"],
    script:
        "../scripts/testbed.py"
