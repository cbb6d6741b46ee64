# Run set-up before any fan-out: the MLflow store, experiment and parent run, created once
# (parallel jobs racing to create a fresh SQLite store would all fail).


localrules:
    tracking_init,


rule tracking_init:
    input:
        ancient(CONFIG),
    output:
        f"{R}/tracking/parent_run.json",
    log:
        f"{R}/logs/tracking_init.log",
    conda:
        "../envs/training.yaml"
    shell:
        "rs3l tracking-init --config {input} > {log} 2>&1"
