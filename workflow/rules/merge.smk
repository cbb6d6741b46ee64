# Align the views of every jet into train/val/test shards; optional ROOT export.


rule merge:
    input:
        config=ancient(CONFIG),
        fragments=fragments,
    output:
        f"{R}/data/manifest.json",
    params:
        simulation_hash=SIM_HASH,
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    log:
        f"{R}/logs/merge.log",
    benchmark:
        f"{R}/benchmarks/merge.tsv"
    resources:
        runtime=60,
        mem_mb=4000,
        cpus_per_task=1,
    conda:
        "../envs/simulation.yaml"
    shell:
        "rs3l merge --config {input.config} --fragments {input.fragments} --out-dir {params.out_dir} > {log} 2>&1"


rule export_root:
    input:
        config=ancient(CONFIG),
        manifest=f"{R}/data/manifest.json",
    output:
        f"{R}/data/{{split}}.root",
    params:
        data=lambda wc, input: os.path.dirname(input.manifest),
    log:
        f"{R}/logs/export_root_{{split}}.log",
    resources:
        runtime=30,
        mem_mb=2000,
        cpus_per_task=1,
    conda:
        "../envs/simulation.yaml"
    shell:
        "rs3l export-root --config {input.config} --data {params.data} --split {wildcards.split}"
        " --out {output} > {log} 2>&1"
