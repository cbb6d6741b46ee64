# Helpers shared by the rules: resolved config, paths and the fan-out lists.
import os

import yaml

from rs3l import config as rs3l_config
from rs3l.atomic import write_text

# Cross-reference checks (view, process and class names) on top of the schema;
# raises rs3l.config.ConfigError naming the key before any job runs.
config.update(rs3l_config.resolve(config))

R = config["results_dir"]
CONFIG = f"{R}/config.yaml"
SIM = config["simulation"]
SIM_HASH = rs3l_config.simulation_hash(config)
CONFIG_HASH = rs3l_config.config_hash(config)
PROCESSES = SIM["processes"]
CHUNKS = list(range(SIM["chunks"]))
INSTANCES = rs3l_config.view_instances(config)
FT = config["finetune"]
# deep (gradient) arms, one job per repeat seed; the probes and the BDT run in one `probe` job
ARMS = [
    (t, m, f, s)
    for t in FT["tasks"]
    for m in FT["modes"]
    for f in FT["label_fractions"]
    for s in range(FT["seeds"])
]
SUMMARY = [f"{R}/summary/results.csv", f"{R}/summary/results.md"]

# Every job reads the resolved config from this file. It is rewritten only when its content
# changes; rules take it as ancient() input and carry the hashes of the parts they depend on
# as params, so Snakemake's params trigger reruns exactly the stages a config change affects.
_resolved = yaml.safe_dump(dict(config), sort_keys=False)
if not os.path.exists(CONFIG) or open(CONFIG).read() != _resolved:
    write_text(CONFIG, _resolved)


wildcard_constraints:
    chunk=r"\d+",
    replica=r"\d+",
    fraction=r"[0-9.]+",
    seed=r"\d+",


def fragments(wildcards=None):
    return [
        f"{R}/fragments/{p}/chunk{c}/{v}.r{r}.parquet"
        for p in PROCESSES
        for c in CHUNKS
        for v, r in INSTANCES
    ]


def evaluations(wildcards=None):
    return [f"{R}/evaluate/{t}/{m}/f{f}/s{s}.json" for t, m, f, s in ARMS] + [f"{R}/evaluate/probes.json"]


def encoder_for(wildcards):
    # the supervised baseline (scratch) does not depend on pre-training
    return [] if wildcards.mode == "scratch" else [f"{R}/pretrain/encoder.pt"]
