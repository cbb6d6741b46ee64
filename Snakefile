# rs3l: re-simulation-based self-supervised learning for jets (arXiv:2403.07066).
#
#   generate -> resimulate (fan-out: processes x chunks x views x replicas) -> merge
#   -> pretrain -> finetune (tasks x modes x label fractions) -> evaluate -> report
#   (with an `ablation:` grid: pretrain/probe/science per variant -> ablation report)
#
# Local:  snakemake --cores 2 --workflow-profile workflow/profiles/default
# Slurm:  snakemake --workflow-profile workflow/profiles/slurm   (see README.md)
from snakemake.utils import min_version, validate

min_version("9.0")


# The default run; a --configfile given on the command line replaces it (as `rs3l --config` does)
# instead of being merged into it, so config/smoke.yaml means the same to both.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# common.smk resolves the config against the schema (which holds every default) and
# rejects invalid values, naming the key and the allowed values, before any job starts.
include: "workflow/rules/common.smk"


# (defaults are already filled in by rs3l's resolver, which also fills those of an optional section such as
# pretrain.pretext when it is given; Snakemake's own filling would step into a null one)
validate(config, "workflow/schemas/config.schema.yaml", set_default=False)


include: "workflow/rules/setup.smk"
include: "workflow/rules/cluster.smk"
include: "workflow/rules/simulation.smk"
include: "workflow/rules/merge.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
# rules only when the config has an `ablation:` grid (config/ablation.yaml)
include: "workflow/rules/ablation.smk"


# With an ablation grid the default target is its report (the full results table stays a target by
# name: snakemake results/summary/results.md); otherwise the results table.
rule all:
    input:
        ABLATION_REPORT if ABLATION else [*SUMMARY, f"{R}/data/test.root"],
    default_target: True
