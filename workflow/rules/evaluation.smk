# The cheap arms in one job (probes on the pre-trained and random encoders, substructure BDT),
# `rs3l science` on the pre-trained encoder, then the results table. The deep arms are evaluated
# inside their finetune job (training.smk).


rule probe:
    # every probe and baseline; in a pool-size scan only the baselines (the random encoder takes the
    # architecture of the first pool's encoder), the pre-trained probes run per pool (probe_pool)
    input:
        config=ancient(CONFIG),
        manifest=f"{R}/data/manifest.json",
        tracking=f"{R}/tracking/parent_run.json",
        encoder=next(iter(ENCODERS.values())),
    output:
        f"{R}/evaluate/probes.json",
    params:
        config_hash=CONFIG_HASH,
        data=lambda wc, input: os.path.dirname(input.manifest),
        only="--only baselines" if POOLS else "",
    log:
        f"{R}/logs/probe.log",
    benchmark:
        f"{R}/benchmarks/probe.tsv"
    resources:
        runtime=60,
        mem_mb=8000,
        cpus_per_task=1,
        gpu=0,
    conda:
        "../envs/training.yaml"
    shell:
        "rs3l probe --config {input.config} --data {params.data} --encoder {input.encoder} --out {output}"
        " {params.only} > {log} 2>&1"


use rule probe as probe_pool with:
    input:
        config=ancient(CONFIG),
        manifest=f"{R}/data/manifest.json",
        tracking=f"{R}/tracking/parent_run.json",
        encoder=f"{R}/pretrain/{{pool}}/encoder.pt",
    output:
        f"{R}/evaluate/probes-{{pool}}.json",
    params:
        config_hash=CONFIG_HASH,
        data=lambda wc, input: os.path.dirname(input.manifest),
        only="--only pretrained",
    log:
        f"{R}/logs/probe_{{pool}}.log",
    benchmark:
        f"{R}/benchmarks/probe_{{pool}}.tsv"


rule science:
    # what the frozen pre-trained encoder kept: invariance per view, simulator-parameter regression, anomaly AUC
    input:
        config=ancient(CONFIG),
        manifest=f"{R}/data/manifest.json",
        tracking=f"{R}/tracking/parent_run.json",
        encoder=SCIENCE_ENCODER,
    output:
        f"{R}/evaluate/science.json",
    params:
        config_hash=CONFIG_HASH,
        data=lambda wc, input: os.path.dirname(input.manifest),
    log:
        f"{R}/logs/science.log",
    benchmark:
        f"{R}/benchmarks/science.tsv"
    resources:
        runtime=60,
        mem_mb=8000,
        cpus_per_task=1,
        gpu=0,
    conda:
        "../envs/training.yaml"
    shell:
        "rs3l science --config {input.config} --data {params.data} --encoder {input.encoder} --out {output}"
        " > {log} 2>&1"


rule report:
    input:
        config=ancient(CONFIG),
        manifest=f"{R}/data/manifest.json",
        evaluations=evaluations,
        # read by `rs3l report` from <results_dir>/evaluate/science.json (section "What the representation kept")
        science=SCIENCE,
    output:
        csv=f"{R}/summary/results.csv",
        md=report(f"{R}/summary/results.md", category="Results", caption="../report/results.rst"),
        plots=report(
            directory(f"{R}/summary/plots"),
            patterns=["{name}.png"],
            category="Plots",
            caption="../report/plots.rst",
        ),
    params:
        config_hash=CONFIG_HASH,
        data=lambda wc, input: os.path.dirname(input.manifest),
        out_dir=lambda wc, output: os.path.dirname(output.csv),
    log:
        f"{R}/logs/report.log",
    resources:
        runtime=30,
        mem_mb=4000,
        cpus_per_task=1,
    conda:
        "../envs/training.yaml"
    shell:
        "rs3l report --config {input.config} --inputs {input.evaluations} --data {params.data}"
        " --out-dir {params.out_dir} > {log} 2>&1"
