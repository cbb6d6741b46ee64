"""``rs3l ui``: the MLflow UI on a run's store, opened on the experiment's training runs.

MLflow 3's UI opens an experiment on its GenAI (traces) page unless the browser has stored the
other choice; ``?workflowType=machine_learning`` in the URL opens the runs table (the workflow's
parent run with its stage runs). The store is the config's: ``tracking.uri``, or by default the
SQLite file ``<results_dir>/mlflow.db``. With a tracking server (``http(s)://``) that server is
the UI: only its URL is printed. Otherwise ``mlflow ui`` is started on 127.0.0.1 (a free port
unless ``--port``), in its own process group, and stopped with it on Ctrl-C (or SIGTERM).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rs3l.config import results_path
from rs3l.tracking import tracking_uri

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# mlflow ui imports its server and checks the database schema first: seconds on an idle machine, minutes on a
# loaded one (measured: over 2 min on 2 cores at load 90)
START_TIMEOUT_S = 600


def experiment_url(base: str, experiment_id: str) -> str:
    """The UI's page of the experiment's training runs (not its GenAI overview)."""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def find_experiment(cfg: dict) -> str:
    """The id of ``tracking.experiment`` in the config's store; ValueError naming the store if there is none.
    Creates nothing (MLflow's client would create an empty SQLite file)."""
    import mlflow

    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise ValueError(f"no MLflow store at {uri[len('sqlite:///'):]} (results_dir '{cfg['results_dir']}'): run "
                         f"the workflow first, or name its config with --config")
    exp = mlflow.MlflowClient(uri).get_experiment_by_name(cfg["tracking"]["experiment"])
    if exp is None:
        raise ValueError(f"no experiment '{cfg['tracking']['experiment']}' (tracking.experiment) in {uri}: run the "
                         f"workflow first")
    return exp.experiment_id


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    import requests

    try:
        return requests.get(f"{url}/health", timeout=2).ok
    except requests.RequestException:
        return False


def start(cfg: dict, port: int | None = None, log_file=None) -> tuple[subprocess.Popen, str]:
    """Start ``mlflow ui`` on the config's SQLite store; returns (process, base URL) once it answers."""
    uri = tracking_uri(cfg)
    port = port or free_port()
    base = f"http://{HOST}:{port}"
    mlflow_cli = Path(sys.executable).with_name("mlflow")  # the one next to this Python (the venv's)
    cmd = [str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "ui", "--backend-store-uri", uri,
           "--artifacts-destination", results_path(cfg, "mlartifacts").resolve().as_uri(),
           "--host", HOST, "--port", str(port), "--workers", "1"]
    # no job runner: its workers run GenAI evaluation jobs, and browsing runs needs none (8 fewer processes)
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # its own session: Ctrl-C in the terminal reaches rs3l only, which then stops the server's whole group
    proc = subprocess.Popen(cmd, start_new_session=True, env=env, stdout=log_file or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if log_file else subprocess.DEVNULL)
    print(f"starting the MLflow UI on {uri} (mlflow ui, pid {proc.pid}) ...", flush=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while not _answers(base):
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow ui exited with status {proc.returncode} before answering on {base} "
                                   f"(is port {port} in use? `rs3l ui --port <another>`)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow ui did not answer on {base} within {START_TIMEOUT_S} s")
            time.sleep(0.3)
    except BaseException:  # Ctrl-C while it starts, too: leave no server behind
        stop(proc)
        raise
    return proc, base


def stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """Stop the server and every process it started (its process group): SIGTERM, then SIGKILL after ``grace_s``."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass


def main(cfg: dict, args) -> None:
    """``rs3l ui``."""
    exp_id = find_experiment(cfg)
    uri = tracking_uri(cfg)
    if uri.startswith(("http://", "https://")):
        print(f"MLflow tracking server {uri}: the experiment's runs are at\n  {experiment_url(uri, exp_id)}",
              flush=True)
        return
    # Ctrl-C (SIGINT, even where a shell started this with it ignored) and SIGTERM (kill, a batch system)
    # both end in KeyboardInterrupt here, which stops the server
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler)
    try:
        proc, base = start(cfg, args.port)
    except KeyboardInterrupt:
        print("stopped before the MLflow UI answered", flush=True)
        return
    try:
        print(f"the experiment's runs:\n  {experiment_url(base, exp_id)}\nCtrl-C stops it.", flush=True)
        while proc.poll() is None:
            time.sleep(0.5)
        raise RuntimeError(f"mlflow ui (pid {proc.pid}) exited with status {proc.returncode}")
    except KeyboardInterrupt:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not interrupt the stop
            signal.signal(sig, signal.SIG_IGN)
        stop(proc)
    print(f"stopped the MLflow UI (pid {proc.pid})", flush=True)
