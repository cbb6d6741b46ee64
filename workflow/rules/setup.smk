# Run set-up before any fan-out: the resolved config every job reads, and the MLflow
# parent run (parallel jobs racing to create a fresh SQLite store would all fail).


localrules:
    write_config,
    tracking_init,


rule write_config:
    output:
        CONFIG,
    params:
        config_hash=CONFIG_HASH,
    log:
        f"{R}/logs/write_config.log",
    run:
        write_text(output[0], yaml.safe_dump(dict(config), sort_keys=False))


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
