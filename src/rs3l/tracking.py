"""The one place that opens MLflow runs.

The tracking URI is always passed explicitly: ``tracking.uri`` from config, else the
``RS3L_TRACKING_URI`` environment variable (how a cluster profile points every job at a
tracking server), else a SQLite store ``<results_dir>/mlflow.db`` with artifacts under
``<results_dir>/mlartifacts`` (MLflow >= 3.13 refuses the old ``./mlruns`` file store, which is
what Lightning's MLFlowLogger would otherwise fall back to). A SQLite store on a network
filesystem is refused (:func:`check_store_location`): SQLite's locking is unreliable there.

One parent run per workflow run, created once by ``rs3l tracking-init`` before any parallel job
(parallel jobs racing to create a fresh SQLite DB all fail); every stage is a child run (tag
``mlflow.parentRunId``). A stage's run ends FAILED when the stage raises, KILLED on SIGTERM or
Ctrl-C. A run whose process died without ending it (SIGKILL, a dead node, a store that was full
at that moment) is marked FAILED by the next stage of the workflow that starts, but only once
its process is provably gone (:func:`owner_gone`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from rs3l import mounts
from rs3l.atomic import write_text
from rs3l.config import config_hash, results_path

log = logging.getLogger(__name__)

URI_ENV = "RS3L_TRACKING_URI"


class TrackingError(RuntimeError):
    pass


def configured_uri(cfg: dict) -> str | None:
    """``tracking.uri`` of the config, else ``$RS3L_TRACKING_URI``; None = the embedded SQLite store."""
    return cfg["tracking"]["uri"] or os.environ.get(URI_ENV) or None


def tracking_uri(cfg: dict) -> str:
    uri = configured_uri(cfg)
    if uri:
        return uri
    return f"sqlite:///{results_path(cfg, 'mlflow.db').resolve()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for any other store)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def check_store_location(cfg: dict) -> None:
    """Refuse a SQLite store on a network filesystem (the folder's type in /proc/mounts, see
    :mod:`rs3l.mounts`): SQLite's file locking is unreliable there and parallel jobs can
    corrupt the database."""
    uri = tracking_uri(cfg)
    db = sqlite_path(uri)
    if db is None:
        return
    fstype, point = mounts.filesystem(db.parent)
    if not mounts.is_shared(fstype):
        return
    where = ("results_dir " + str(cfg["results_dir"])) if configured_uri(cfg) is None else f"tracking.uri {uri}"
    raise TrackingError(
        f"the MLflow store {db} ({where}) would be a SQLite file on a network filesystem ({fstype} mounted at "
        f"{point}): SQLite's file locking is unreliable on network filesystems and parallel jobs can corrupt the "
        f"database. Start a tracking server on a machine the jobs reach (`rs3l tracking-server` on the login node "
        f"prints the setting) and point the workflow at it: --config tracking='{{uri: \"http://<host>:<port>\", "
        f"experiment: {cfg['tracking']['experiment']}}}' or export {URI_ENV}=http://<host>:<port>; "
        f"or put results_dir on a local disk")


def resolve_store(cfg: dict) -> None:
    """At config resolution in the workflow: record ``$RS3L_TRACKING_URI`` as ``tracking.uri`` (so
    every job reads it from the resolved config, wherever it runs) and refuse a SQLite store on a
    network filesystem before any job starts."""
    cfg["tracking"]["uri"] = configured_uri(cfg)
    check_store_location(cfg)


def _parent_file(cfg: dict) -> Path:
    return results_path(cfg, "tracking", "parent_run.json")


def _check_reachable(uri: str, experiment: str) -> None:
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        # /health is exempt from MLflow's Host-header check; an API call is not (MLflow >= 3.5
        # answers 403 to a host name it was not started with, e.g. the login node's name)
        api = requests.get(uri.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name",
                           params={"experiment_name": experiment}, timeout=30)
    except Exception as exc:  # noqa: BLE001 - any failure means unusable
        raise TrackingError(f"MLflow tracking server {uri} is not reachable ({exc.__class__.__name__}: {exc}); "
                            f"start it or set tracking.uri to null for the embedded SQLite store") from exc
    if api.status_code == 403:
        host = uri.split("://", 1)[1].split("/", 1)[0]
        raise TrackingError(f"MLflow tracking server {uri} refuses the host name '{host}' ({api.text.strip()}): "
                            f"start it with `rs3l tracking-server`, which allows its own names, or give "
                            f"`mlflow server` --allowed-hosts {host.split(':')[0]},{host.split(':')[0]}:*")


def client(cfg: dict):
    import mlflow

    uri = tracking_uri(cfg)
    check_store_location(cfg)
    _check_reachable(uri, cfg["tracking"]["experiment"])
    if sqlite_path(uri) is not None:
        sqlite_path(uri).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


# MLflow 3 opens an experiment without a kind in its GenAI (traces) view; this kind opens it on the training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# Stages that evaluate models get MLflow's run type "evaluation": on a browser's first visit MLflow's UI expands
# the parent of such runs, so the workflow's parent opens with its stage runs listed under it (rs3l ui).
EVALUATION_STAGES = ("evaluate", "probe")


def experiment_id(cfg: dict) -> str:
    """The id of experiment ``tracking.experiment``, created (or tagged) with :data:`EXPERIMENT_KIND` if need be."""
    c = client(cfg)
    name = cfg["tracking"]["experiment"]
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        for key, value in EXPERIMENT_KIND.items():  # an experiment made by an older rs3l or by hand
            if exp.tags.get(key) != value:
                c.set_experiment_tag(exp.experiment_id, key, value)
        return exp.experiment_id
    location = None
    if sqlite_path(tracking_uri(cfg)) is not None:
        location = results_path(cfg, "mlartifacts").resolve().as_uri()
    return c.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def init_parent(cfg: dict) -> str:
    """Create the store, the experiment and the workflow's parent run (idempotent). Returns its id.

    With an existing parent, first ends the workflow's runs whose process is provably gone
    (:func:`repair_stale_runs`): every stage start (and ``rs3l tracking-init``) does this."""
    existing = parent_run_id(cfg)
    c = client(cfg)
    if existing:
        try:
            parent = c.get_run(existing)
        except Exception:  # noqa: BLE001 - stale id from another store: make a new parent
            pass
        else:
            repair_stale_runs(c, parent.info.experiment_id, existing)
            return existing
    exp = experiment_id(cfg)
    run = c.create_run(exp, run_name=f"{cfg['run_name']}-workflow",
                       tags={"rs3l.stage": "workflow", "rs3l.config_hash": config_hash(cfg)})
    c.log_param(run.info.run_id, "config_hash", config_hash(cfg))
    write_text(_parent_file(cfg), json.dumps({"run_id": run.info.run_id, "uri": tracking_uri(cfg)}))
    return run.info.run_id


def parent_run_id(cfg: dict) -> str | None:
    f = _parent_file(cfg)
    if not f.exists():
        return None
    data = json.loads(f.read_text())
    return data["run_id"] if data.get("uri") == tracking_uri(cfg) else None


def flat_params(d: dict, prefix: str = "") -> dict:
    """Flatten a nested config into MLflow params ('a.b.c' -> value as string, cut to 500 chars)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_params(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


# ----- who owns a run, and whether that process is provably gone

# Run tags naming the process that opened a stage's run. A pid means something only on its own
# machine, in its own boot and pid namespace (a container has its own), and only together with
# the process' start time (pids are reused).
HOST, PID, START, BOOT, PID_NS = (f"rs3l.process.{k}" for k in ("host", "pid", "start_time", "boot_id", "pid_namespace"))
SLURM_JOB, SLURM_CLUSTER = "rs3l.process.slurm_job_id", "rs3l.process.slurm_cluster"
REPAIRED = "rs3l.repaired"  # on a run ended by another process: why


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """Start time of process ``pid`` (clock ticks after boot, /proc/<pid>/stat field 22); None if no such process."""
    stat = _read(f"/proc/{pid}/stat")
    # the command name (field 2) is in parentheses and may contain spaces: count after its ')'
    return stat.rsplit(")", 1)[1].split()[19] if stat else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def owner_tags(pid: int | None = None) -> dict[str, str]:
    """The tags that identify this process (or ``pid`` on this machine) as a run's owner."""
    pid = pid or os.getpid()
    tags = {HOST: socket.gethostname(), PID: str(pid), START: _start_time(pid), BOOT: _read("/proc/sys/kernel/random/boot_id"),
            PID_NS: _pid_namespace(), SLURM_JOB: os.environ.get("SLURM_JOB_ID"),
            SLURM_CLUSTER: os.environ.get("SLURM_CLUSTER_NAME")}
    return {k: v for k, v in tags.items() if v}


# Slurm job states whose processes have ended (squeue --states=all); any other state
# (pending, running, completing, suspended, requeued...) may still have a live process.
SLURM_ENDED = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
               "PREEMPTED", "TIMEOUT"}


def slurm_job_states(job_ids: list[str]) -> dict[str, str] | None:
    """State of each job as Slurm's controller reports it now; a job it no longer knows (ended
    longer than MinJobAge ago) is "GONE". None when Slurm cannot be asked (no squeue, an error)."""
    if not job_ids:
        return {}
    try:
        # %A: the job's own id, also for an element of a job array (%i would print <array id>_<index>,
        # which is not the SLURM_JOB_ID the run recorded)
        res = subprocess.run(["squeue", "--noheader", "--states=all", "--format=%A %T", "--jobs", ",".join(job_ids)],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if res.returncode != 0:
        # asked for one job only, squeue fails on an id it does not know; with several it lists the known
        if len(job_ids) == 1 and "Invalid job id" in res.stderr:
            return {job_ids[0]: "GONE"}
        return None
    listed = dict(line.split(None, 1) for line in res.stdout.splitlines() if line.strip())
    return {j: listed.get(j, "GONE").strip() for j in job_ids}


def owner_gone(tags: dict, slurm_states: dict[str, str] | None = None) -> str | None:
    """Why the process that opened a run is provably gone, or None if it may still be alive.

    Provably gone: on this machine (same host name, boot and pid namespace), no process has the
    run's pid with the run's start time; on another machine, the run's Slurm job has ended
    according to ``slurm_states`` (from :func:`slurm_job_states`), on the same cluster. Anything
    else (another host without Slurm, a machine rebooted since, a container's own pid namespace)
    is left alone: the process may be alive."""
    host, pid = tags.get(HOST), tags.get(PID)
    if not host or not pid or not pid.isdigit():
        return None  # not opened by rs3l's child_run (the parent run, a run made by hand)
    me = owner_tags()
    if host == me[HOST] and tags.get(BOOT) and tags.get(BOOT) == me.get(BOOT) and tags.get(PID_NS) == me.get(PID_NS):
        start = _start_time(int(pid))
        if start is None:
            return f"its process {pid} on {host} has exited"
        if start != tags.get(START):
            return f"its process {pid} on {host} has exited (the pid now belongs to another process)"
        return None
    job = tags.get(SLURM_JOB)
    cluster, my_cluster = tags.get(SLURM_CLUSTER), os.environ.get("SLURM_CLUSTER_NAME")
    if job and slurm_states and (not cluster or not my_cluster or cluster == my_cluster):
        state = slurm_states.get(job)
        if state == "GONE":
            return f"its Slurm job {job} (on {host}) has ended and is no longer known to Slurm"
        if state in SLURM_ENDED:
            return f"its Slurm job {job} (on {host}) has ended ({state})"
    return None


def repair_stale_runs(c, experiment: str, parent: str) -> list[str]:
    """Mark FAILED every RUNNING child run of ``parent`` whose process is provably gone
    (:func:`owner_gone`), with tag ``rs3l.repaired`` saying why. Returns their ids.

    Such runs exist when a stage died without ending its run: SIGKILL, a dead node, or a store
    that could not be written when it failed (a full disk)."""
    runs, token = [], None
    while True:
        page = c.search_runs([experiment], f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{parent}'",
                             max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    me = owner_tags()
    remote_jobs = sorted({r.data.tags[SLURM_JOB] for r in runs
                          if r.data.tags.get(SLURM_JOB) and r.data.tags.get(HOST) != me[HOST]})
    states = slurm_job_states(remote_jobs) if remote_jobs else {}  # one squeue call for all of them
    repaired = []
    for r in runs:
        if owner_gone(r.data.tags, states) is None:
            continue
        # The search is older than this check: the run may have ended, and its process exited, in
        # between (or a requeued job resumed it). Read it again now that its process is known to
        # be gone, and so can no longer write it: only a run still RUNNING, owned by that gone
        # process, was left RUNNING.
        fresh = c.get_run(r.info.run_id)
        why = owner_gone(fresh.data.tags, states) if fresh.info.status == "RUNNING" else None
        if why is None:
            continue
        note = f"left RUNNING: {why}; marked FAILED by rs3l (pid {me[PID]} on {me[HOST]}) at {time.strftime('%Y-%m-%d %H:%M:%S')}"
        c.set_tag(r.info.run_id, REPAIRED, note)
        c.set_terminated(r.info.run_id, "FAILED")
        log.warning("MLflow run %s (%s) %s", r.info.run_name, r.info.run_id, note)
        repaired.append(r.info.run_id)
    return repaired


# ----- a stage's run

class Terminated(SystemExit):
    """SIGTERM inside a stage's run (scancel, a Slurm time limit, Snakemake stopping its jobs):
    unwinds the stage so that its run ends KILLED; exits with 128 + 15 as the signal would."""


@contextlib.contextmanager
def _sigterm_unwinds():
    """Within the block, SIGTERM raises :class:`Terminated` (if nobody else handles SIGTERM and
    this is the main thread; a handler installed later, e.g. Lightning's, still calls it)."""
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:  # a forked worker inherited the handler: die as the signal says
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(128 + signum)

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def child_run(cfg: dict, name: str, stage: str, params: dict | None = None, run_id: str | None = None):
    """Open an MLflow run for one stage, nested under the workflow's parent run.

    Creates the parent if no ``tracking-init`` ran (a stage run by hand). Yields the
    ``mlflow.ActiveRun``; log with the fluent API (``mlflow.log_metric``...). ``run_id``: reopen
    that run instead (a stage that resumes after a requeue continues its run). The run ends
    FINISHED, FAILED if the block raises, KILLED on Ctrl-C or SIGTERM; if even that cannot be
    written (a full disk), the next stage that starts marks it FAILED (:func:`repair_stale_runs`).
    A block that ends the run itself (a requeued stage leaves it SCHEDULED) keeps that status.
    """
    import mlflow

    parent = init_parent(cfg)
    exp = experiment_id(cfg)
    tags = {"mlflow.parentRunId": parent, "rs3l.stage": stage, "rs3l.config_hash": config_hash(cfg), **owner_tags()}
    if stage in EVALUATION_STAGES:
        tags["mlflow.runType"] = "evaluation"
    variant = (cfg.get("ablation") or {}).get("variant")
    if variant:  # a run of one ablation variant (rs3l.evaluation.ablation): tagged with its grid cell
        tags.update({f"rs3l.ablation.{'variant' if k == 'name' else k}": str(v) for k, v in variant.items()
                     if v is not None})
        name = f"{name} [{variant['name']}]"
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    with _sigterm_unwinds():
        if run_id:
            # the resumed stage owns the run from now on (the repair of dead runs reads these tags): set
            # them before the run is RUNNING again
            client = mlflow.MlflowClient()
            for key, value in owner_tags().items():
                client.set_tag(run_id, key, value)
            run = mlflow.start_run(run_id=run_id)
        else:
            run = mlflow.start_run(experiment_id=exp, run_name=name, tags=tags)
        try:
            if params:
                mlflow.log_params(params)
            yield run
        except BaseException as exc:
            status = "KILLED" if isinstance(exc, (KeyboardInterrupt, Terminated)) else "FAILED"
            active = mlflow.active_run()
            if active is not None and active.info.run_id == run.info.run_id:  # not ended by the block itself
                try:
                    mlflow.end_run(status)
                except Exception as end_exc:  # noqa: BLE001 - the stage's own error is the one to raise
                    log.warning("could not mark MLflow run %s %s (%s: %s); the next rs3l stage of this workflow "
                                "that can write to the store will mark it FAILED", run.info.run_id, status,
                                end_exc.__class__.__name__, end_exc)
            raise
        mlflow.end_run("FINISHED")


def main(cfg: dict, args) -> None:
    """``rs3l tracking-init``."""
    run_id = init_parent(cfg)
    print(f"MLflow parent run {run_id} in {tracking_uri(cfg)}")
