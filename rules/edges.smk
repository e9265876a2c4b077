"""Flows to per-second entity edges, replaying the run's entities."""


rule edges:
    input:
        flows="results/{run}/flows.parquet",
        run="data/runs/{run}",
    output:
        edges="results/{run}/edges.parquet",
        summary="results/{run}/edges.summary.json",
    log:
        "logs/edges/{run}.log",
    benchmark:
        "logs/benchmarks/edges/{run}.tsv"
    conda:
        "../envs/mimir.yaml"
    resources:
        mem_mb=EDGES_MEM,
        runtime=EDGES_RUNTIME,
        cpus_per_task=1,
    params:
        bin=BIN,
        keep_infra=config["edges"]["keep_infra"],
    script:
        "../scripts/edges.py"
