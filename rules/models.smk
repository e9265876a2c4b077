"""Detectors fitted on each training run (all its rates and injections), scored on the runs that name it, and
judged: one definition of every number (README: How the numbers are computed) for the tables and the figures.
"""


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
        evaluation=config["evaluation"],
    script:
        "../scripts/model.py"


rule score:
    input:
        model="results/models/{method}/{training}/model.joblib",
        card="results/models/{method}/{training}/model.json",
        tables=evaluation_tables,
    output:
        "results/eval/{method}/{training}.parquet",
    log:
        "logs/score/{method}/{training}.log",
    conda:
        "../envs/mimir.yaml"
    params:
        layout=TABLE_LAYOUT,
        runs=lambda wildcards: evaluated_by(wildcards.training),
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
        paths=report(
            "results/tables/recall_by_path.csv",
            caption="../report/recall_by_path.rst",
            category="Tables",
        ),
    log:
        "logs/metrics.log",
    conda:
        "../envs/mimir.yaml"
    params:
        evaluations=EVALUATIONS,
        evaluation=config["evaluation"],
        seed=config["seed"],
    script:
        "../scripts/metrics.py"


rule figures:
    input:
        metrics="results/tables/metrics.csv",
        paths="results/tables/recall_by_path.csv",
        scores=all_scores(),
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
        figures=FIGURES,
        evaluations=EVALUATIONS,
        runs=RUNS,
        rate=config["figures"]["rate"],
    script:
        "../scripts/figures.py"
