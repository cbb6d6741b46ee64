# Helpers shared by the rules: resolved config, paths and the fan-out lists.
import os
import re

import yaml

from rs3l import config as rs3l_config
from rs3l.evaluation import ablation as rs3l_ablation
from rs3l import plan as rs3l_plan
from rs3l.physics import lhe_input as rs3l_lhe_input
from rs3l.atomic import write_text_if_changed
from rs3l.data.fragment_list import write_fragment_list

# Cross-reference checks (view, process and class names) on top of the schema;
# raises rs3l.config.ConfigError naming the key before any job runs.
config.update(rs3l_config.resolve(config))

R = config["results_dir"]
CONFIG = f"{R}/config.yaml"
SIM = config["simulation"]
SIM_HASH = rs3l_config.simulation_hash(config)
CONFIG_HASH = rs3l_config.config_hash(config)
PROCESSES = SIM["processes"]
# chunks per process: simulation.chunks, or as many as an `lhe` process' files fill (counted here,
# from their </event> tags, so the DAG is known at parse time; no checkpoint)
PROCESS_CHUNKS = rs3l_plan.process_chunks(config)
GENERATED = [p for p in PROCESSES if not rs3l_lhe_input.is_lhe(config["processes"][p])]
LHE_PROCESSES = [p for p in PROCESSES if rs3l_lhe_input.is_lhe(config["processes"][p])]
# a split reads every source event: twice the time at the measured rate, plus start-up (minutes)
SPLIT_MINUTES = {
    p: 10 + 2 * rs3l_lhe_input.source_events(config["processes"][p], p) // int(60 * rs3l_plan.SPLIT_RATE[0])
    for p in LHE_PROCESSES
}
INSTANCES = rs3l_config.view_instances(config)
MERGE_PARTS = rs3l_plan.merge_parts(config)
MERGE_HASH = rs3l_plan.merge_hash(config)
FT = config["finetune"]
# Pre-training: one, or one per pool of a pool-size scan (pretrain.pools): {pool: encoder.pt}; the
# single pre-training keeps its folder pretrain/, a scan's are pretrain/pool<n>/.
POOLS = config["pretrain"]["pools"]
ENCODERS = (
    {p: f"{R}/pretrain/{rs3l_plan.pool_name(p)}/encoder.pt" for p in POOLS}
    if POOLS
    else {config["pretrain"]["pool"]: f"{R}/pretrain/encoder.pt"}
)
POOL_VALUES = {rs3l_plan.pool_name(p): p for p in POOLS}
# `rs3l science` and the embedding plot use the pre-training on the largest pool
SCIENCE_ENCODER = ENCODERS[max(ENCODERS, key=lambda p: float("inf") if p is None else p)]
# deep (gradient) arms: one job per task and arm (mode, or mode-pool<n> in a scan), finetune.arms_per_job
# arms each; the probes and the BDT run in one `probe` job (plus one per pool of a scan)
DEEP_JOBS = rs3l_plan.deep_jobs(config)
SUMMARY = [f"{R}/summary/results.csv", f"{R}/summary/results.md"]
# `rs3l science`: invariance, parameter regression and anomaly search on the frozen encoder
SCIENCE = [f"{R}/evaluate/science.json"]

# Every job reads the resolved config from this file. It is rewritten only when its content
# changes; rules take it as ancient() input and carry the hashes of the parts they depend on
# as params, so Snakemake's params trigger reruns exactly the stages a config change affects.
write_text_if_changed(CONFIG, yaml.safe_dump(dict(config), sort_keys=False))


wildcard_constraints:
    chunk=r"\d+",
    replica=r"\d+",
    batch=r"\d+",
    part=r"\d{5}",
    task=r"[^/]+",
    arm=r"[^/]+",
    pool=r"pool[0-9.]+",


# The fragments of each merge part, built once: an input function that rebuilt a list of all
# fragments for every job would make the DAG quadratic in the number of units.
PART_FRAGMENTS = [
    [f"{R}/fragments/{p}/chunk{c}/{v}.r{r}.parquet" for p, c in groups for v, r in INSTANCES]
    for groups in MERGE_PARTS
]


def part_fragments(wildcards):
    return PART_FRAGMENTS[int(wildcards.part)]


# Fragment paths reach `rs3l merge` as a file (31,500 paths do not fit on a command line).
# Written at parse time, atomically and only when its content changes (an unchanged list keeps
# its mtime, so the merge is not re-run).
for _part, _paths in enumerate(PART_FRAGMENTS):
    write_fragment_list(f"{R}/data/parts/part-{_part:05d}.fragments.txt", _paths)


def evaluations(wildcards=None):
    deep = [f"{R}/evaluate/deep/{job}.json" for job in DEEP_JOBS]
    pools = [f"{R}/evaluate/probes-{name}.json" for name in POOL_VALUES]
    return deep + pools + [f"{R}/evaluate/probes.json"]


def deep_job(wildcards) -> dict:
    return DEEP_JOBS[f"{wildcards.task}/{wildcards.arm}/b{wildcards.batch}"]


def encoder_for(wildcards):
    # the supervised baseline (scratch) does not depend on pre-training
    job = deep_job(wildcards)
    return [] if job["mode"] == "scratch" else [ENCODERS[job["pool"]]]


# ----- the ablation grid (config `ablation:`; rules in ablation.smk)
ABLATION = rs3l_ablation.check(config)  # {variant: resolved config}; empty without a grid
AB = f"{R}/ablation"
# Each variant's resolved config (and the baselines'), rewritten only when its content changes:
# a variant added to the grid leaves the others' configs, hashes and checkpoints alone.
AB_CONFIGS = {**ABLATION, rs3l_ablation.BASELINES: rs3l_ablation.baseline_config(config)} if ABLATION else {}
VARIANT_HASHES = {name: rs3l_config.config_hash(c) for name, c in AB_CONFIGS.items()}
for _name, _cfg in AB_CONFIGS.items():
    write_text_if_changed(f"{AB}/{_name}/config.yaml", yaml.safe_dump(dict(_cfg), sort_keys=False))


def ablation_inputs(wildcards=None):
    """Everything the ablation report reads: probes of every variant and of the baselines, science where run."""
    out = [f"{AB}/{v}/probes.json" for v in ABLATION] + [f"{AB}/{rs3l_ablation.BASELINES}/probes.json"]
    if config["ablation"]["science"]:
        out += [f"{AB}/{v}/science.json" for v in ABLATION]
    return out


ABLATION_REPORT = [f"{AB}/ablation.{ext}" for ext in ("csv", "md")]
ABLATION_REPORT += [f"{AB}/ablation_{name}.png" for name in ("label_efficiency", "panels")]
