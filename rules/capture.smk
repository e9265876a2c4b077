"""Captures to flows: one streaming pass over a run's capture files."""


rule ingest:
    input:
        "data/runs/{run}",
    output:
        flows="results/{run}/flows.parquet",
        summary="results/{run}/flows.summary.json",
    log:
        "logs/ingest/{run}.log",
    conda:
        "../envs/mimir.yaml"
    params:
        bin=BIN,
    script:
        "../scripts/ingest.py"
