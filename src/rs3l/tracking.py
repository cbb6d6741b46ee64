"""The one place that opens MLflow runs.

The tracking URI is always passed explicitly: ``tracking.uri`` from config, or by
default a SQLite store ``<results_dir>/mlflow.db`` with artifacts under
``<results_dir>/mlartifacts`` (MLflow >= 3.13 refuses the old ``./mlruns`` file
store, which is what Lightning's MLFlowLogger would otherwise fall back to).

One parent run per workflow run, created once by ``rs3l tracking-init`` before
any parallel job (parallel jobs racing to create a fresh SQLite DB all fail);
every stage is a child run (tag ``mlflow.parentRunId``).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from rs3l.atomic import write_text
from rs3l.config import config_hash, results_path


class TrackingError(RuntimeError):
    pass


def tracking_uri(cfg: dict) -> str:
    uri = cfg["tracking"]["uri"]
    if uri:
        return uri
    return f"sqlite:///{results_path(cfg, 'mlflow.db').resolve()}"


def _parent_file(cfg: dict) -> Path:
    return results_path(cfg, "tracking", "parent_run.json")


def _check_reachable(uri: str) -> None:
    if uri.startswith(("http://", "https://")):
        import requests

        try:
            requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
        except Exception as exc:  # noqa: BLE001 - any failure means unusable
            raise TrackingError(f"MLflow tracking server {uri} is not reachable ({exc.__class__.__name__}: {exc}); "
                                f"start it or set tracking.uri to null for the embedded SQLite store") from exc


def client(cfg: dict):
    import mlflow

    uri = tracking_uri(cfg)
    _check_reachable(uri)
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(uri)


# MLflow 3 opens an experiment without a kind in its GenAI (traces) view; this kind opens it on the training runs.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


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
    if tracking_uri(cfg).startswith("sqlite:///"):
        location = results_path(cfg, "mlartifacts").resolve().as_uri()
    return c.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)


def init_parent(cfg: dict) -> str:
    """Create the store, the experiment and the workflow's parent run (idempotent). Returns its id."""
    existing = parent_run_id(cfg)
    c = client(cfg)
    if existing:
        try:
            c.get_run(existing)
            return existing
        except Exception:  # noqa: BLE001 - stale id from another store: make a new parent
            pass
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


@contextlib.contextmanager
def child_run(cfg: dict, name: str, stage: str, params: dict | None = None, run_id: str | None = None):
    """Open an MLflow run for one stage, nested under the workflow's parent run.

    Creates the parent if no ``tracking-init`` ran (a stage run by hand). Yields the
    ``mlflow.ActiveRun``; log with the fluent API (``mlflow.log_metric``...). ``run_id``: reopen
    that run instead (a stage that resumes after a requeue continues its run).
    """
    import mlflow

    parent = init_parent(cfg)
    exp = experiment_id(cfg)
    tags = {"mlflow.parentRunId": parent, "rs3l.stage": stage, "rs3l.config_hash": config_hash(cfg)}
    variant = (cfg.get("ablation") or {}).get("variant")
    if variant:  # a run of one ablation variant (rs3l.evaluation.ablation): tagged with its grid cell
        tags.update({f"rs3l.ablation.{'variant' if k == 'name' else k}": str(v) for k, v in variant.items()
                     if v is not None})
        name = f"{name} [{variant['name']}]"
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    opened = {"run_id": run_id} if run_id else {"experiment_id": exp, "run_name": name, "tags": tags}
    with mlflow.start_run(**opened) as run:
        if params:
            mlflow.log_params(params)
        yield run


def main(cfg: dict, args) -> None:
    """``rs3l tracking-init``."""
    run_id = init_parent(cfg)
    print(f"MLflow parent run {run_id} in {tracking_uri(cfg)}")
