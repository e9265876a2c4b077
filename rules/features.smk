"""One injection per (run, rate), aggregated to every granularity, and the labelled feature tables."""


rule features:
    input:
        edges="results/{run}/edges.parquet",
        run="data/runs/{run}",
        benign=benign_edges,
    output:
        attacks="results/{run}/attacks/{rate}.parquet",
        tables=expand(
            "results/{{run}}/features/{tg}s/{{rate}}.parquet", tg=GRANULARITIES
        ),
    log:
        "logs/features/{run}/{rate}.log",
    benchmark:
        "logs/benchmarks/features/{run}/{rate}.tsv"
    conda:
        "../envs/mimir.yaml"
    resources:
        mem_mb=features_mem_mb,
        runtime=features_runtime,
        cpus_per_task=1,
    params:
        root=lambda wildcards: f"results/{wildcards.run}",
        rate=rate_value,
        settings=feature_settings(),
        split=split_of,
        bin=BIN,
        seed=config["seed"],
    script:
        "../scripts/features.py"
