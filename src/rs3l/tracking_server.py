"""``rs3l tracking-server``: an MLflow tracking server for a cluster, run on the login node.

The embedded SQLite store suits one machine. On a cluster the jobs run on other nodes and
results_dir usually sits on a network filesystem, where SQLite's locking is unreliable; there
every job logs over HTTP to one server, which alone writes the database. This wraps
``mlflow server``:

- the backend store is SQLite on a local disk (default ``/var/tmp/rs3l-tracking-<user>``; a
  SQLite file on a network filesystem is refused) or a PostgreSQL URI;
- ``--allowed-hosts`` lists this machine's names and addresses (MLflow >= 3.5 answers 403 to any
  Host header but localhost and private IPs, i.e. to ``http://login1:5000`` from a compute node);
- the command prints where it listens and the exact setting that points the workflow at it, once
  the server answers;
- Ctrl-C (or SIGTERM) stops the server and its workers.
"""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rs3l import mounts
from rs3l.tracking import URI_ENV, TrackingError, sqlite_path

ANY_INTERFACE = ("0.0.0.0", "::", "")


def default_store_dir() -> Path:
    """Local (not shared) and kept across reboots, unlike /tmp on many systems."""
    return Path("/var/tmp") / f"rs3l-tracking-{getpass.getuser()}"


def public_name(host: str) -> str:
    """The name compute nodes use for this server: the interface given, or this machine's name."""
    if host not in ANY_INTERFACE:
        return host
    fqdn = socket.getfqdn()
    return fqdn if fqdn and not fqdn.startswith("localhost") else socket.gethostname()


def allowed_hosts(host: str) -> list[str]:
    """Host headers the server accepts: MLflow's defaults (localhost, private IPs) plus this
    machine's names and addresses, with any port."""
    try:
        from mlflow.server.security_utils import get_default_allowed_hosts

        hosts = list(get_default_allowed_hosts())
    except ImportError:  # an MLflow without the Host check has no list to extend
        hosts = ["localhost", "localhost:*", "127.0.0.1", "127.0.0.1:*"]
    names = {socket.gethostname(), socket.getfqdn(), public_name(host)}
    try:
        names |= set(socket.gethostbyname_ex(socket.gethostname())[2])
    except OSError:
        pass
    for name in sorted(n for n in names if n and n not in ANY_INTERFACE):
        hosts += [name, f"{name}:*"]
    return hosts


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise TrackingError(f"cannot listen on {host}:{port} ({exc.strerror}); another server (yours or another "
                                f"user's) may hold the port: pick another with --port (0 = a free one)") from None


def store_uris(args) -> tuple[str, str]:
    """(backend store URI, artifacts destination), checked: SQLite on a local disk, PostgreSQL with its driver."""
    store = args.backend_store_uri or f"sqlite:///{default_store_dir() / 'mlflow.db'}"
    db = sqlite_path(store)
    if db is not None:
        fstype, point = mounts.filesystem(db.parent)
        if mounts.is_shared(fstype):
            raise TrackingError(f"--backend-store-uri {store} is a SQLite file on a network filesystem ({fstype} at "
                                f"{point}), where SQLite's locking is unreliable: put it on a local disk (default "
                                f"{default_store_dir()}) or use postgresql://user:password@host/database")
        db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    elif store.startswith("postgresql") and importlib.util.find_spec("psycopg2") is None:
        raise TrackingError(f"--backend-store-uri {store.split('@')[-1]}: MLflow reaches PostgreSQL through the "
                            f"psycopg2 package, which is not installed: pip install psycopg2-binary")
    artifacts = args.artifacts_destination or str((db.parent if db else default_store_dir()) / "mlartifacts")
    return store, artifacts


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (mlflow, uvicorn and its workers); after 15 s, or once
    mlflow has exited, SIGKILL to whatever of the group is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _wait_until_up(proc: subprocess.Popen, host: str, port: int, timeout: float = 180) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrackingError(f"mlflow server exited with code {proc.returncode} before answering (its output is "
                                f"above)")
        try:
            local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, host)
            if requests.get(f"http://{local}:{port}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    _stop(proc)
    raise TrackingError(f"mlflow server did not answer on port {port} within {timeout:.0f} s")


def main(cfg: dict, args) -> None:
    """``rs3l tracking-server``."""
    store, artifacts = store_uris(args)
    host = args.host
    port = args.port or _free_port(host)
    _check_port(host, port)
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store, "--artifacts-destination", artifacts,
           "--host", host, "--port", str(port), "--workers", str(args.workers),
           "--allowed-hosts", ",".join(allowed_hosts(host))]
    # MLflow's job execution (GenAI evaluation jobs: three more worker pools) serves nothing rs3l
    # logs; off, to keep the login node's memory. Its own session: Ctrl-C reaches only this
    # process, which then stops the server's whole process group.
    proc = subprocess.Popen(cmd, start_new_session=True, env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ})
    # Ctrl-C even where SIGINT came in ignored (a job started with `&` in a script), and SIGTERM
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        _wait_until_up(proc, host, port)
        uri = f"http://{public_name(host)}:{port}"
        print(f"rs3l tracking-server: MLflow tracking server at {uri} (listening on {host or '*'}:{port}, pid {proc.pid})\n"
              f"  backend store: {store}\n"
              f"  artifacts:     {artifacts}\n"
              f"  point the workflow at it (either):\n"
              f"    snakemake ... --config tracking='{{uri: \"{uri}\", experiment: {cfg['tracking']['experiment']}}}'\n"
              f"    export {URI_ENV}={uri}   # read when the workflow resolves its config\n"
              f"  UI: {uri} in a browser that reaches this machine. Ctrl-C stops the server.", flush=True)
        proc.wait()
        raise TrackingError(f"mlflow server exited with code {proc.returncode}")
    except KeyboardInterrupt:
        print("rs3l tracking-server: stopping", flush=True)
    finally:
        _stop(proc)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("rs3l tracking-server: stopped", flush=True)
