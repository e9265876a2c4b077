"""Detectors fitted on each training run (all its rates), scored on the runs that name it, and judged."""


rule model:
    input:
        tables=training_tables,
    output:
        model="results/models/{method}/{training}/model.joblib",
        card="results/models/{method}/{training}/model.json",
    log:
        "logs/model/{method}/{training}.log",
    conda:
        "../envs/mimir.yaml"
    params:
        layout=TABLE_LAYOUT,
        params=method_params,
        seed=config["seed"],
    script:
        "../scripts/model.py"


rule score:
    input:
        model="results/models/{method}/{training}/model.joblib",
        card="results/models/{method}/{training}/model.json",
        tables=run_tables,
    output:
        "results/eval/{method}/{training}/{run}.parquet",
    log:
        "logs/score/{method}/{training}/{run}.log",
    conda:
        "../envs/mimir.yaml"
    params:
        layout=TABLE_LAYOUT,
        training_run=lambda wildcards: wildcards.run == wildcards.training,
    script:
        "../scripts/score.py"


rule metrics:
    input:
        scores=all_scores(),
        cards=all_cards(),
    output:
        metrics=report(
            "results/tables/metrics.csv",
            caption="../report/metrics.rst",
            category="Tables",
        ),
        paths="results/tables/recall_by_path.csv",
    log:
        "logs/metrics.log",
    conda:
        "../envs/mimir.yaml"
    params:
        evaluations=EVALUATIONS,
    script:
        "../scripts/metrics.py"


rule figures:
    input:
        "results/tables/metrics.csv",
    output:
        report(
            expand("results/figures/{figure}.png", figure=FIGURES),
            caption="../report/figures.rst",
            category="Figures",
        ),
        expand("results/figures/{figure}.svg", figure=FIGURES),
    log:
        "logs/figures.log",
    conda:
        "../envs/mimir.yaml"
    params:
        runs=RUNS,
        rate=config["figures"]["rate"],
    script:
        "../scripts/figures.py"


rule roc:
    input:
        scores=all_scores(),
    output:
        report(
            "results/figures/roc.png",
            caption="../report/roc.rst",
            category="Figures",
        ),
        "results/figures/roc.svg",
    log:
        "logs/roc.log",
    conda:
        "../envs/mimir.yaml"
    params:
        evaluations=EVALUATIONS,
        runs=RUNS,
        rate=config["figures"]["rate"],
    script:
        "../scripts/roc.py"
