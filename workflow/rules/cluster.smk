# Faults on a cluster (README "Faults").
import signal

from rs3l import cluster as rs3l_cluster

# Inside a Slurm job: Slurm's warning signal before a time limit (SIGUSR1, the slurm profile's
# --signal for pretrain) goes to every process of the job step, and would kill this Snakemake
# (it handles only SIGTERM) and the job's shell. Ignored here, it stays ignored in the shell that
# Snakemake starts; only rs3l pretrain handles it (src/rs3l/training/requeue.py).
if workflow.remote_exec:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


# Slurm jobs that a killed Snakemake left running on these results are cancelled before this run
# submits anything, so that no output is written by two jobs (src/rs3l/cluster.py). onstart runs
# in the submitting Snakemake only, after it took its lock; it is the workflow's only onstart.


onstart:
    from snakemake.logging import logger

    rs3l_cluster.cancel_orphans(f"{R}/logs/{rs3l_cluster.RECORD}", rs3l_cluster.slurm_run_id(workflow),
                                say=logger.warning)
