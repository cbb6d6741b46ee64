# Hard process once per (process, chunk), or once per `lhe` process split into its chunks;
# one re-simulation job per view instance.

# Retries are the submitting Snakemake's: inside a cluster job (remote execution) the rule's own
# `retries` would be repeated by each nested Snakemake (measured: a failing unit in a bundle ran 10
# times in 3 submissions instead of 3 times).
UNIT_RETRIES = 0 if workflow.remote_exec else 2


rule generate:
    input:
        ancient(CONFIG),
    output:
        f"{R}/lhe/{{process}}/chunk{{chunk}}.lhe.gz",
    # only Pythia processes: an `lhe` process' chunks come from its split_lhe_<process> rule
    wildcard_constraints:
        process="|".join(map(re.escape, GENERATED)) or "(?!)",
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
    retries: UNIT_RETRIES
    # Bundled on clusters like resimulate (slurm profile: group-components gen=50).
    group:
        "gen"
    conda:
        "../envs/simulation.yaml"
    shell:
        "rs3l generate --config {input} --process {wildcards.process} --chunk {wildcards.chunk}"
        " --events {params.events} --out {output} > {log} 2>&1"


# One rule per `lhe` process (its chunk list is its output): checks every event of the external
# files and writes the chunks plus lhe_sources.json; the only upstream of that process' resimulate
# jobs, so a truncated, empty or non-LHE file stops the run before any re-simulation.
for _process in LHE_PROCESSES:

    rule:
        name:
            f"split_lhe_{_process}"
        input:
            config=ancient(CONFIG),
            sources=rs3l_lhe_input.source_files(config["processes"][_process]["lhe"]),
        output:
            chunks=[f"{R}/lhe/{_process}/chunk{c}.lhe.gz" for c in range(PROCESS_CHUNKS[_process])],
            record=f"{R}/lhe/{_process}/{rs3l_lhe_input.RECORD}",
        params:
            simulation_hash=SIM_HASH,
            process=_process,
            out_dir=lambda wc, output: os.path.dirname(output.record),
        log:
            f"{R}/logs/split_lhe/{_process}.log",
        benchmark:
            f"{R}/benchmarks/split_lhe/{_process}.tsv"
        resources:
            runtime=SPLIT_MINUTES[_process],
            mem_mb=2000,
            cpus_per_task=1,
        conda:
            "../envs/simulation.yaml"
        shell:
            "rs3l split-lhe --config {input.config} --process {params.process} --out-dir {params.out_dir}"
            " > {log} 2>&1"


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
    retries: UNIT_RETRIES
    # Bundled on clusters: the slurm profile's group-components (resim=50) puts many units into
    # one submission; locally groups are inactive. A unit that finished keeps its fragment when the
    # bundle is retried, requeued or restarted (rs3l resimulate links back its receipt).
    group:
        "resim"
    conda:
        "../envs/simulation.yaml"
    shell:
        "rs3l resimulate --config {input.config} --lhe {input.lhe} --view {wildcards.view}"
        " --replica {wildcards.replica} --out {output} > {log} 2>&1"
