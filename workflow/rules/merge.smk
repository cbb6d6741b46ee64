# Align the views of every jet: parallel merge parts, then a cheap step that writes the
# manifest; optional ROOT export.


# The final step reads only the parts' small JSON files: not worth a cluster submission.
localrules:
    merge,


rule merge_part:
    input:
        config=ancient(CONFIG),
        fragment_list=f"{R}/data/parts/part-{{part}}.fragments.txt",
        fragments=part_fragments,
    output:
        f"{R}/data/parts/part-{{part}}.json",
    params:
        simulation_hash=SIM_HASH,
        merge_hash=MERGE_HASH,
        out_dir=lambda wc, output: os.path.dirname(os.path.dirname(output[0])),
        part=lambda wc: int(wc.part),
    log:
        f"{R}/logs/merge/part-{{part}}.log",
    benchmark:
        f"{R}/benchmarks/merge/part-{{part}}.tsv"
    resources:
        runtime=60,
        mem_mb=4000,
        cpus_per_task=1,
    conda:
        "../envs/simulation.yaml"
    shell:
        "rs3l merge --config {input.config} --fragment-list {input.fragment_list} --part {params.part}"
        " --out-dir {params.out_dir} > {log} 2>&1"


rule merge:
    input:
        config=ancient(CONFIG),
        parts=[f"{R}/data/parts/part-{p:05d}.json" for p in range(len(MERGE_PARTS))],
        # copied into manifest.json (lhe_sources)
        lhe_records=[f"{R}/lhe/{p}/{rs3l_lhe_input.RECORD}" for p in LHE_PROCESSES],
    output:
        f"{R}/data/manifest.json",
    params:
        simulation_hash=SIM_HASH,
        merge_hash=MERGE_HASH,
        out_dir=lambda wc, output: os.path.dirname(output[0]),
        parts=len(MERGE_PARTS),
    log:
        f"{R}/logs/merge.log",
    benchmark:
        f"{R}/benchmarks/merge.tsv"
    resources:
        runtime=10,
        mem_mb=1000,
        cpus_per_task=1,
    conda:
        "../envs/simulation.yaml"
    shell:
        "rs3l merge --config {input.config} --finalize {params.parts} --out-dir {params.out_dir} > {log} 2>&1"


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
