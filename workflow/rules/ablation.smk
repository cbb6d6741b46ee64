# The ablation grid (config `ablation:`; rs3l.evaluation.ablation): per variant a pre-training, the
# cheap arms of the evaluation protocol (linear + kNN probes, `rs3l probe`) and `rs3l science`; the
# random-encoder probes and the substructure BDT once; then one comparison table. These rules exist
# only when the config names a grid; each variant reads its own resolved config (written by common.smk).


wildcard_constraints:
    variant="|".join(map(re.escape, ABLATION)) or "no-ablation-variant",


if ABLATION:

    rule pretrain_variant:
        # the same job as `pretrain` (training.smk) with the variant's config; a child MLflow run tagged
        # rs3l.ablation.{variant,objective,augmentations,views_per_jet}
        priority: 10
        input:
            config=ancient(f"{AB}/{{variant}}/config.yaml"),
            manifest=f"{R}/data/manifest.json",
            tracking=f"{R}/tracking/parent_run.json",
        output:
            f"{AB}/{{variant}}/encoder.pt",
        params:
            config_hash=lambda wc: VARIANT_HASHES[wc.variant],
            data=lambda wc, input: os.path.dirname(input.manifest),
            out_dir=lambda wc, output: os.path.dirname(output[0]),
        log:
            f"{R}/logs/ablation/{{variant}}/pretrain.log",
        benchmark:
            f"{R}/benchmarks/ablation/{{variant}}/pretrain.tsv"
        resources:
            runtime=240,
            mem_mb=8000,
            cpus_per_task=2,
            gpu=0,
        conda:
            "../envs/training.yaml"
        shell:
            "rs3l pretrain --config {input.config} --data {params.data} --out-dir {params.out_dir}"
            " --restart-if-changed > {log} 2>&1"

    rule probe_variant:
        input:
            config=ancient(f"{AB}/{{variant}}/config.yaml"),
            manifest=f"{R}/data/manifest.json",
            tracking=f"{R}/tracking/parent_run.json",
            encoder=f"{AB}/{{variant}}/encoder.pt",
        output:
            f"{AB}/{{variant}}/probes.json",
        params:
            config_hash=lambda wc: VARIANT_HASHES[wc.variant],
            data=lambda wc, input: os.path.dirname(input.manifest),
        log:
            f"{R}/logs/ablation/{{variant}}/probe.log",
        benchmark:
            f"{R}/benchmarks/ablation/{{variant}}/probe.tsv"
        resources:
            runtime=60,
            mem_mb=8000,
            cpus_per_task=1,
            gpu=0,
        conda:
            "../envs/training.yaml"
        shell:
            "rs3l probe --config {input.config} --data {params.data} --encoder {input.encoder} --out {output}"
            " > {log} 2>&1"

    rule probe_baselines:
        # random-encoder probes (same architecture as the first variant) and the substructure BDT, once
        input:
            config=ancient(f"{AB}/{rs3l_ablation.BASELINES}/config.yaml"),
            manifest=f"{R}/data/manifest.json",
            tracking=f"{R}/tracking/parent_run.json",
            encoder=f"{AB}/{next(iter(ABLATION))}/encoder.pt",
        output:
            f"{AB}/{rs3l_ablation.BASELINES}/probes.json",
        params:
            config_hash=VARIANT_HASHES[rs3l_ablation.BASELINES],
            data=lambda wc, input: os.path.dirname(input.manifest),
        log:
            f"{R}/logs/ablation/{rs3l_ablation.BASELINES}/probe.log",
        benchmark:
            f"{R}/benchmarks/ablation/{rs3l_ablation.BASELINES}/probe.tsv"
        resources:
            runtime=60,
            mem_mb=8000,
            cpus_per_task=1,
            gpu=0,
        conda:
            "../envs/training.yaml"
        shell:
            "rs3l probe --config {input.config} --data {params.data} --encoder {input.encoder} --out {output}"
            " > {log} 2>&1"

    rule science_variant:
        input:
            config=ancient(f"{AB}/{{variant}}/config.yaml"),
            manifest=f"{R}/data/manifest.json",
            tracking=f"{R}/tracking/parent_run.json",
            encoder=f"{AB}/{{variant}}/encoder.pt",
        output:
            f"{AB}/{{variant}}/science.json",
        params:
            config_hash=lambda wc: VARIANT_HASHES[wc.variant],
            data=lambda wc, input: os.path.dirname(input.manifest),
        log:
            f"{R}/logs/ablation/{{variant}}/science.log",
        benchmark:
            f"{R}/benchmarks/ablation/{{variant}}/science.tsv"
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

    rule ablation_report:
        input:
            config=ancient(CONFIG),
            results=ablation_inputs,
        output:
            csv=ABLATION_REPORT[0],
            md=report(ABLATION_REPORT[1], category="Ablation", caption="../report/ablation.rst"),
            label_efficiency=report(ABLATION_REPORT[2], category="Ablation", caption="../report/ablation.rst"),
            panels=report(ABLATION_REPORT[3], category="Ablation", caption="../report/ablation.rst"),
        params:
            config_hash=CONFIG_HASH,
            ablation_dir=lambda wc, output: os.path.dirname(output.csv),
        log:
            f"{R}/logs/ablation/report.log",
        resources:
            runtime=30,
            mem_mb=4000,
            cpus_per_task=1,
        conda:
            "../envs/training.yaml"
        shell:
            "rs3l ablation-report --config {input.config} --dir {params.ablation_dir} > {log} 2>&1"
