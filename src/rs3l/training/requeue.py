"""Pre-training that outlives a Slurm time limit: stop on the warning signal, requeue, resume.

The slurm profile asks Slurm to send ``SIGUSR1`` some minutes before the pre-training job's time
limit (``--signal=USR1@<s>`` in the rule's ``slurm_extra``). Slurm sends it to every process of
the job's steps: the job's Snakemake (which would die of it: it handles only SIGTERM) ignores it
(workflow/rules/cluster.smk), and so does the shell it starts; ``rs3l pretrain`` handles it.

:class:`RequeueOnSignal` notes the signal and ends training at the next batch (all DDP ranks at
the same batch). The epoch in progress is dropped: ``last.ckpt``, written after every epoch,
holds the state to resume from, so the resumed training is the one an uninterrupted job would
have run (a mid-epoch checkpoint could not resume the streamed data where it stopped). Then
:func:`requeue` asks Slurm to requeue the job (``scontrol requeue``): Slurm ends it and starts
it again under the same job id, with a fresh time limit. Snakemake sees that job pending and
then running, neither a failure nor a reason to submit a second pre-training. The restarted
``rs3l pretrain`` resumes from ``last.ckpt`` and reopens the MLflow run whose id it keeps in
``run.json`` beside the checkpoint (:func:`rs3l.training.pretrain.run`).

Not Lightning's own auto-requeue (``SLURMEnvironment(auto_requeue=True)``, switched off here):
it saves a mid-epoch checkpoint from inside the signal handler, reloads it only when ``fit`` gets
no ``ckpt_path`` (rs3l passes its own, checked ``last.ckpt``), and its MLflow logger would open a
new run after the restart.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time

import lightning as L

log = logging.getLogger(__name__)

SIGNAL = signal.SIGUSR1
# exit status when the job cannot be requeued (no Slurm, or scontrol failed): "temporary failure,
# run again" (sysexits.h EX_TEMPFAIL); the same command resumes from the checkpoint
EXIT_RESUMABLE = 75


class RequeueRequested(Exception):
    """Training stopped on the warning signal; the state to resume from is ``last.ckpt``."""


class RequeueOnSignal(L.Callback):
    """Stop training at the next batch once :data:`SIGNAL` arrived (see the module docstring).

    Install the handler with :meth:`install` as early as possible (a signal that arrives before
    it kills the process) and remove it with :meth:`restore`."""

    def __init__(self):
        self.received = False
        self._pid = os.getpid()
        self._previous = None

    def _handle(self, signum, frame):
        # data-loader workers inherit the handler: only the training process itself counts
        if os.getpid() == self._pid:
            self.received = True
            log.warning("received %s (Slurm's warning before the time limit): stopping at the next batch to "
                        "requeue", signal.Signals(signum).name)

    def install(self) -> "RequeueOnSignal":
        self._previous = signal.signal(SIGNAL, self._handle)
        return self

    def restore(self) -> None:
        if self._previous is not None:
            signal.signal(SIGNAL, self._previous)
            self._previous = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # every rank gets the signal, not necessarily before the same batch: decide together
        if trainer.strategy.reduce_boolean_decision(self.received, all=False):
            raise RequeueRequested(f"stopped in epoch {trainer.current_epoch} on {SIGNAL.name}")


def slurm_job_id() -> str | None:
    """The Slurm job to requeue (an array task as <array job>_<task>), or None outside Slurm."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def requeue(ask: bool = True, wait_s: float = 600) -> int:
    """Ask Slurm to requeue this job (``ask``: the one process that does, DDP rank 0), then wait
    for Slurm to end this process.

    Returns :data:`EXIT_RESUMABLE` when that does not happen (not a Slurm job, ``scontrol
    requeue`` refused, or the job still alive after ``wait_s``): the caller exits with it and the
    next attempt (Snakemake's retry, or the same command again) resumes from the checkpoint."""
    job = slurm_job_id()
    if job is None:
        log.error("stopped on %s outside a Slurm job: run the same command again to resume from the checkpoint",
                  SIGNAL.name)
        return EXIT_RESUMABLE
    if ask:
        res = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
        if res.returncode != 0:
            log.error("`scontrol requeue %s` failed (%s): the job ends here; Snakemake's retry or the same "
                      "command again resumes from the checkpoint", job, (res.stderr or res.stdout).strip())
            return EXIT_RESUMABLE
        log.warning("requeued Slurm job %s: it starts again with a fresh time limit and resumes from the checkpoint",
                    job)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:  # Slurm ends the job (SIGTERM, later SIGKILL) as it requeues it
        time.sleep(5)
    log.error("Slurm job %s was to be requeued but still runs after %.0f s; ending it", job, wait_s)
    return EXIT_RESUMABLE
