# Hard process once per (process, chunk); one re-simulation job per view instance.


rule generate:
    input:
        ancient(CONFIG),
    output:
        f"{R}/lhe/{{process}}/chunk{{chunk}}.lhe.gz",
    params:
        simulation_hash=SIM_HASH,
        events=SIM["events_per_chunk"],
    log:
        f"{R}/logs/generate/{{process}}_chunk{{chunk}}.log",
    benchmark:
        f"{R}/benchmarks/generate/{{process}}_chunk{{chunk}}.tsv"
    resources:
        runtime=30,
        mem_mb=1000,
        cpus_per_task=1,
    retries: 2
    # Bundled on clusters like resimulate (slurm profile: group-components gen=50).
    group:
        "gen"
    conda:
        "../envs/simulation.yaml"
    shell:
        "rs3l generate --config {input} --process {wildcards.process} --chunk {wildcards.chunk}"
        " --events {params.events} --out {output} > {log} 2>&1"


rule resimulate:
    input:
        config=ancient(CONFIG),
        lhe=f"{R}/lhe/{{process}}/chunk{{chunk}}.lhe.gz",
    output:
        f"{R}/fragments/{{process}}/chunk{{chunk}}/{{view}}.r{{replica}}.parquet",
    params:
        simulation_hash=SIM_HASH,
    log:
        f"{R}/logs/resimulate/{{process}}_chunk{{chunk}}_{{view}}.r{{replica}}.log",
    benchmark:
        f"{R}/benchmarks/resimulate/{{process}}_chunk{{chunk}}_{{view}}.r{{replica}}.tsv"
    resources:
        runtime=120,
        mem_mb=2000,
        cpus_per_task=1,
    retries: 2
    # Bundled on clusters: the slurm profile's group-components (resim=50) puts many units into
    # one submission; locally groups are inactive.
    group:
        "resim"
    conda:
        "../envs/simulation.yaml"
    shell:
        "rs3l resimulate --config {input.config} --lhe {input.lhe} --view {wildcards.view}"
        " --replica {wildcards.replica} --out {output} > {log} 2>&1"
