"""Captures to flows: one streaming pass over a run's capture files."""


rule ingest:
    input:
        "data/runs/{run}",
    output:
        flows="results/{run}/flows.parquet",
        summary="results/{run}/flows.summary.json",
    log:
        "logs/ingest/{run}.log",
    benchmark:
        "logs/benchmarks/ingest/{run}.tsv"
    conda:
        "../envs/mimir.yaml"
    threads: 2  # the files of a rotated capture read at once, or one file's blocks counted in parallel
    resources:
        mem_mb=ingest_mem_mb,
        runtime=ingest_runtime,
        cpus_per_task=lambda wildcards, threads: threads,
    params:
        bin=BIN,
    script:
        "../scripts/ingest.py"
