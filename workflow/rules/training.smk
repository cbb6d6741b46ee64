# Pre-training on view pairs, then the deep fine-tuning arms (tasks x modes x label fractions x seeds).
from rs3l.training import launch as rs3l_launch

# Multi-device DDP (training.devices x num_nodes > 1): an "MPI" job of one Slurm task per device,
# started by the srun below when the job runs inside a Slurm allocation (rs3l/training/launch.py).
PRETRAIN_DDP = rs3l_launch.slurm_resources(config)


rule pretrain:
    # on the critical path (every pre-trained arm waits for it): start it before the scratch arms
    priority: 10
    input:
        config=ancient(CONFIG),
        manifest=f"{R}/data/manifest.json",
        tracking=f"{R}/tracking/parent_run.json",
    output:
        f"{R}/pretrain/encoder.pt",
    params:
        config_hash=CONFIG_HASH,
        data=lambda wc, input: os.path.dirname(input.manifest),
        out_dir=lambda wc, output: os.path.dirname(output[0]),
        srun=lambda wc, resources: rs3l_launch.srun_prefix(config, resources.cpus_per_task, resources.gpu),
        pool="",
    log:
        f"{R}/logs/pretrain.log",
    benchmark:
        f"{R}/benchmarks/pretrain.tsv"
    resources:
        runtime=240,
        mem_mb=8000,
        cpus_per_task=2,
        gpu=0,
        **PRETRAIN_DDP,
    conda:
        "../envs/training.yaml"
    shell:
        # ${{SLURM_JOB_ID:+...}}: the srun only inside a Slurm job; a local run starts one process
        "${{SLURM_JOB_ID:+{params.srun}}} rs3l pretrain --config {input.config} --data {params.data} --out-dir {params.out_dir}"
        " {params.pool} --restart-if-changed > {log} 2>&1"


# A pool-size scan (pretrain.pools): the same job once per pool, in pretrain/pool<n>/ (child run tagged
# rs3l.pretrain.pool); only then the pre-training of the workflow.
use rule pretrain as pretrain_pool with:
    output:
        f"{R}/pretrain/{{pool}}/encoder.pt",
    params:
        config_hash=CONFIG_HASH,
        data=lambda wc, input: os.path.dirname(input.manifest),
        out_dir=lambda wc, output: os.path.dirname(output[0]),
        srun=lambda wc, resources: rs3l_launch.srun_prefix(config, resources.cpus_per_task, resources.gpu),
        pool=lambda wc: f"--pool {POOL_VALUES[wc.pool]}",
    log:
        f"{R}/logs/pretrain_{{pool}}.log",
    benchmark:
        f"{R}/benchmarks/pretrain_{{pool}}.tsv"


rule finetune:
    # the arms (labelled set x repeat seed) of one task and arm in one process: start-up, data loading and
    # the test-set cache are paid once per job (finetune.arms_per_job arms; 0 = all)
    input:
        config=ancient(CONFIG),
        manifest=f"{R}/data/manifest.json",
        tracking=f"{R}/tracking/parent_run.json",
        encoder=encoder_for,
    output:
        # every arm's record (`rs3l evaluate`'s); each arm's model.pt and evaluation.json are in
        # finetune/<task>/<arm>/<labels>/s<seed>/
        f"{R}/evaluate/deep/{{task}}/{{arm}}/b{{batch}}.json",
    params:
        config_hash=CONFIG_HASH,
        data=lambda wc, input: os.path.dirname(input.manifest),
        encoder=lambda wc, input: f"--encoder {input.encoder}" if input.encoder else "",
        mode=lambda wc: deep_job(wc)["mode"],
        arms=lambda wc: " ".join(f"{t}:{s}" for t, s in deep_job(wc)["arms"]),
        out_dir=lambda wc: f"{R}/finetune/{wc.task}/{wc.arm}",
    log:
        f"{R}/logs/finetune/{{task}}_{{arm}}_b{{batch}}.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{task}}_{{arm}}_b{{batch}}.tsv"
    resources:
        runtime=240,
        mem_mb=4000,
        cpus_per_task=1,
        gpu=0,
    conda:
        "../envs/training.yaml"
    shell:
        "rs3l finetune --config {input.config} --data {params.data} {params.encoder} --task {wildcards.task}"
        " --mode {params.mode} --arms {params.arms} --out-dir {params.out_dir} --evaluate {output} > {log} 2>&1"
