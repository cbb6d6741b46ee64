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
        "${{SLURM_JOB_ID:+{params.srun}}} rs3l pretrain --config {input.config} --data {params.data} --out-dir {params.out_dir} --restart-if-changed"
        " > {log} 2>&1"


rule finetune:
    input:
        config=ancient(CONFIG),
        manifest=f"{R}/data/manifest.json",
        tracking=f"{R}/tracking/parent_run.json",
        encoder=encoder_for,
    output:
        model=f"{R}/finetune/{{task}}/{{mode}}/f{{fraction}}/s{{seed}}/model.pt",
        # evaluated in the same process (`rs3l evaluate`'s record): one start-up per arm, not two
        result=f"{R}/evaluate/{{task}}/{{mode}}/f{{fraction}}/s{{seed}}.json",
    params:
        config_hash=CONFIG_HASH,
        data=lambda wc, input: os.path.dirname(input.manifest),
        encoder=lambda wc, input: f"--encoder {input.encoder}" if input.encoder else "",
        out_dir=lambda wc, output: os.path.dirname(output.model),
    log:
        f"{R}/logs/finetune/{{task}}_{{mode}}_f{{fraction}}_s{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{task}}_{{mode}}_f{{fraction}}_s{{seed}}.tsv"
    resources:
        runtime=120,
        mem_mb=4000,
        cpus_per_task=1,
        gpu=0,
    conda:
        "../envs/training.yaml"
    shell:
        "rs3l finetune --config {input.config} --data {params.data} {params.encoder} --task {wildcards.task}"
        " --mode {wildcards.mode} --fraction {wildcards.fraction} --seed {wildcards.seed} --out-dir {params.out_dir}"
        " --evaluate {output.result} > {log} 2>&1"
