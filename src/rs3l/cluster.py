"""Slurm jobs that a killed Snakemake left behind, cancelled before its restart submits anything.

A Snakemake that dies (``kill -9``, a lost login session, a rebooted login node) leaves its Slurm
jobs queued and running. The next Snakemake on the same results does not know them: it submits
the same jobs again, and two jobs would write the same outputs, a stale one possibly last.

The workflow's ``onstart`` (workflow/rules/cluster.smk) therefore calls :func:`cancel_orphans`:
after Snakemake took its lock (so no other live Snakemake works on these results) and before its
first submission, it cancels the jobs of earlier runs on these results that are still queued or
running, waits until Slurm has ended them, and records this run. A run is known by the slurm
executor plugin's run id, which is the name of each of its jobs; the ids of the runs on a results
folder are kept in ``<results>/logs/slurm_runs.json``. What the cancelled jobs had finished stays:
re-simulation units keep their fragments (:mod:`rs3l.receipts`), pre-training resumes from its
last epoch in the same MLflow run (:mod:`rs3l.training.requeue`).

One race remains: Snakemake builds its DAG before ``onstart``, so it sees a unit that a bundle finished
just before the cancel as done; the bundle's Snakemake, cancelled before it took note of that unit, then
removes the unit's output as possibly corrupt. :func:`cancel_orphans` therefore notes the fragments that
exist before it cancels and afterwards links back each one that vanished from its receipt (the same
inode: the very file the DAG saw). One without a receipt stops the run with a one-line error; the same
command then runs it again.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from rs3l import atomic, receipts

RECORD = "slurm_runs.json"
KEEP_RUNS = 50


class OrphanError(RuntimeError):
    pass


def active_jobs() -> dict[str, tuple[str, str]] | None:
    """This user's queued and running Slurm jobs: id -> (name, state); None without Slurm."""
    if shutil.which("squeue") is None:
        return None
    res = subprocess.run(["squeue", "--me", "--noheader", "--format=%i|%j|%T"], capture_output=True, text=True,
                         timeout=120)
    if res.returncode != 0:
        raise OrphanError(f"squeue failed ({res.stderr.strip()}): cannot check for Slurm jobs that a killed "
                          f"Snakemake left running on these results")
    jobs = {}
    for line in res.stdout.splitlines():
        job, name, state = line.strip().split("|", 2)
        jobs[job] = (name, state)
    return jobs


def earlier_runs(record: Path) -> list[dict]:
    try:
        return json.loads(record.read_text())["runs"]
    except FileNotFoundError:
        return []


def finished_outputs(results: Path) -> dict[Path, int]:
    """The re-simulation fragments under ``results`` (path -> inode)."""
    return {p: p.stat().st_ino for p in (results / "fragments").glob("*/chunk*/*.parquet")}


def restore_removed(before: dict[Path, int], say=print) -> list[Path]:
    """Link back each output of ``before`` (path -> inode) that no longer exists from its receipt with
    the same inode (:mod:`rs3l.receipts`). Returns the ones that could not be restored."""
    lost = []
    for path, inode in sorted(before.items()):
        if path.exists():
            continue
        if receipts.restore(path, inode):
            say(f"rs3l: {path} was removed by a cancelled job after it had finished; restored from its receipt")
        else:
            lost.append(path)
    return lost


def cancel_orphans(record: str | os.PathLike, run_id: str | None, wait_s: float = 600, poll_s: float = 2,
                   say=print) -> list[str]:
    """Cancel the queued or running jobs of the earlier runs in ``record`` (``<results>/logs/``) and
    wait until Slurm has ended them; restore the finished fragments under ``<results>`` that the
    cancelled jobs removed; then add ``run_id`` (this run; None: not a Slurm run) to ``record``.
    Returns the cancelled job ids."""
    record = Path(record)
    runs = earlier_runs(record)
    names = {r["run_id"] for r in runs} - {run_id}
    try:
        jobs = active_jobs() if names else {}
    except OrphanError as exc:
        if run_id:  # a Slurm run that cannot see the queue must not submit beside jobs it cannot see
            raise
        say(f"rs3l: warning: {exc}")  # a local run on a machine that cannot reach that cluster
        jobs = {}
    orphans = sorted(job for job, (name, _) in (jobs or {}).items() if name in names)
    if orphans:
        say(f"rs3l: {len(orphans)} Slurm job(s) of an earlier Snakemake on these results are still queued or "
            f"running ({', '.join(orphans)}); cancelling them before submitting anything, so that no output is "
            f"written by two jobs. What they finished is kept.")
        before = finished_outputs(record.parent.parent)
        res = subprocess.run(["scancel", *orphans], capture_output=True, text=True, timeout=120)
        if res.returncode != 0:
            raise OrphanError(f"scancel {' '.join(orphans)} failed ({res.stderr.strip()}); cancel these jobs "
                              f"yourself, then run the same command again")
        deadline = time.monotonic() + wait_s
        while True:  # cancelled jobs stay COMPLETING until their processes have ended
            left = sorted(set(orphans) & set(active_jobs() or {}))
            if not left:
                break
            if time.monotonic() > deadline:
                raise OrphanError(f"Slurm jobs {', '.join(left)} of an earlier Snakemake are still ending after "
                                  f"{wait_s:.0f} s; wait until `squeue -j {','.join(left)}` lists none of them, "
                                  f"then run the same command again")
            time.sleep(poll_s)
        say(f"rs3l: cancelled {', '.join(orphans)}")
        lost = restore_removed(before, say)
        if lost:
            raise OrphanError(f"{len(lost)} finished output(s) were removed by the cancelled jobs and have no receipt "
                              f"({', '.join(map(str, lost[:3]))}{', ...' if len(lost) > 3 else ''}); run the same "
                              f"command again: it makes them anew")
    if run_id:
        runs = [r for r in runs if r["run_id"] != run_id][-(KEEP_RUNS - 1):]
        runs.append({"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
                     "started": datetime.now(timezone.utc).isoformat(timespec="seconds")})
        atomic.write_text(record, json.dumps({"runs": runs}, indent=1))
    return orphans


def slurm_run_id(workflow) -> str | None:
    """The slurm executor plugin's id of this run (the name of its jobs), or None (another executor)."""
    executor = getattr(getattr(workflow, "scheduler", None), "_executor", None)
    return getattr(executor, "run_uuid", None)
