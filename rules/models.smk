"""Detectors fitted on each training run (all its rates and injections), scored on the runs that name it, and
judged: one definition of every number (README: How the numbers are computed) for the tables and the figures.

Each method is fitted in a job of its own (the MIMIR detector's fit on a 3-hour training run takes minutes: fits in
parallel keep the longest chain of jobs short); every method of a training run is scored in one job, which reads
the evaluation runs' tables once (scoring takes seconds, less than a Python start-up with the package's imports).
"""


rule model:
    input:
        tables=training_tables,
        run="data/runs/{training}",
    output:
        model="results/models/{method}/{training}/model.joblib",
        card="results/models/{method}/{training}/model.json",
    log:
        "logs/model/{method}/{training}.log",
    benchmark:
        "logs/benchmarks/model/{method}/{training}.tsv"
    conda:
        "../envs/mimir.yaml"
    resources:
        mem_mb=MODEL_MEM,
        runtime=MODEL_RUNTIME,
        cpus_per_task=1,
    params:
        layout=TABLE_LAYOUT,
        params=method_params,
        seed=config["seed"],
        evaluation=config["evaluation"],
    script:
        "../scripts/model.py"


rule score:
    input:
        models=models_of,
        cards=cards_of,
        tables=evaluation_tables,
    output:
        expand("results/eval/{method}/{{training}}.parquet", method=METHODS),
    log:
        "logs/score/{training}.log",
    benchmark:
        "logs/benchmarks/score/{training}.tsv"
    conda:
        "../envs/mimir.yaml"
    resources:
        mem_mb=SCORE_MEM,
        runtime=SCORE_RUNTIME,
        cpus_per_task=1,
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
    benchmark:
        "logs/benchmarks/metrics.tsv"
    conda:
        "../envs/mimir.yaml"
    resources:
        mem_mb=METRICS_MEM,
        runtime=METRICS_RUNTIME,
        cpus_per_task=1,
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
    benchmark:
        "logs/benchmarks/figures.tsv"
    conda:
        "../envs/mimir.yaml"
    resources:
        mem_mb=FIGURES_MEM,
        runtime=FIGURES_RUNTIME,
        cpus_per_task=1,
    params:
        figures=FIGURES,
        evaluations=EVALUATIONS,
        runs=RUNS,
        rate=config["figures"]["rate"],
    script:
        "../scripts/figures.py"
