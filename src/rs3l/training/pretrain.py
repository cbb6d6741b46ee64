"""``rs3l pretrain``: self-supervised pre-training of an encoder on views of jets (Lightning).

Objectives: NT-Xent or VICReg on n = ``pretrain.views_per_jet`` views per jet, or JEPA
(EMA target encoder); views are re-simulated, hand-crafted (``jetclr``, ...) or both
(``seed+jetclr``), see :mod:`rs3l.training.data` and :mod:`rs3l.training.augment`.

Reads:  ``<data>/manifest.json``, ``<data>/{train,val}/part-*.parquet`` (``rs3l merge``).
Writes: ``<out-dir>/last.ckpt`` (Lightning checkpoint after every epoch; a rerun resumes
        from it, and does nothing if training is complete), ``<out-dir>/encoder.pt``
        (the contract with fine-tuning, see :func:`save_encoder`), ``<out-dir>/embeddings.png``
        (PCA of val embeddings coloured by class), ``<out-dir>/summary.json`` and
        ``<out-dir>/run.json`` (the MLflow run this training logs to and how often Slurm
        requeued it: a resumed training continues that run).
MLflow: a child run ``pretrain`` with the config as params, per-epoch metrics, the
        dataset's content hash as lineage (param and tag ``dataset.content_hash``,
        manifest.json as artifact) and the outputs above as artifacts.
Slurm:  on the warning signal before the time limit, training stops at the next batch and the job
        is requeued; it resumes from ``last.ckpt`` in the same MLflow run
        (:mod:`rs3l.training.requeue`); ``summary.json`` counts the requeues (``requeued``).

Only global rank 0 talks to MLflow and writes outputs; under DDP (``training.devices``
> 1) the other ranks only train.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch

from rs3l import tracking
from rs3l.atomic import atomic_path, write_text
from rs3l.config import config_hash
from rs3l.models.classifier import safe_load
from rs3l.models.methods import build_method
from rs3l.seeds import derive_seed
from rs3l.training.augment import base_views
from rs3l.training import requeue
from rs3l.training.data import (JetDataModule, SetEpoch, check_classes, check_features, check_views, load_arrays,
                                open_shard, read_manifest, shard_paths)

log = logging.getLogger(__name__)

CHECKPOINT = "last.ckpt"
RUN = "run.json"
ENCODER = "encoder.pt"
PLOT = "embeddings.png"


# ----------------------------------------------------------------------------- the encoder.pt contract

def save_encoder(path, encoder: torch.nn.Module, cfg: dict, content_hash: str | None = None,
                 pool_jets: int | None = None, extra: dict | None = None) -> None:
    """Write ``encoder.pt`` atomically.

    ``torch.load(path)`` gives {"state_dict", "encoder" (name), "n_features", "features",
    "max_constituents", "latent_dim", "config_hash", "encoder_params", "dataset_content_hash",
    "pool" (``pretrain.pool``), "pool_jets" (jets in the pre-training pool)};
    rebuild with ``build_encoder(d["encoder"], cfg, d["n_features"])`` and ``load_state_dict``.
    ``extra``: further entries of the method (``objective: clip``: ``observables``, the observables MLP).
    """
    from rs3l.models.encoders import encoder_params

    name = cfg["pretrain"]["encoder"]
    payload = {
        "state_dict": {k: v.detach().cpu() for k, v in encoder.state_dict().items()},
        "encoder": name,
        "n_features": len(cfg["training"]["features"]),
        "features": list(cfg["training"]["features"]),
        "max_constituents": cfg["training"]["max_constituents"],
        "latent_dim": encoder.latent_dim,
        "config_hash": config_hash(cfg),
        "encoder_params": encoder_params(name, cfg),
        "dataset_content_hash": content_hash,
        "pool": cfg["pretrain"]["pool"],
        "pool_jets": pool_jets,
        **(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_encoder(path, cfg: dict | None = None) -> tuple[torch.nn.Module, dict]:
    """Rebuild the encoder saved by :func:`save_encoder` (hyper-parameters from the file). Returns (encoder, info)."""
    from rs3l.models.encoders import build_encoder

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `rs3l pretrain` first")
    info = safe_load(path, "encoder checkpoint")
    name = info["encoder"]
    params = info.get("encoder_params") or (cfg or {}).get("encoders", {}).get(name, {})
    enc_cfg = {"encoders": {name: params}, "training": {"features": info["features"]}}
    encoder = build_encoder(name, enc_cfg, info["n_features"])
    encoder.load_state_dict(info["state_dict"])
    return encoder, info


# ----------------------------------------------------------------------------- helpers

def resume_key(cfg: dict, content_hash: str | None) -> str:
    """What a checkpoint must share with this run to be resumed: everything that shapes
    the model and its training, except the number of epochs and the hardware."""
    hardware = ("accelerator", "devices", "num_nodes", "strategy", "num_workers")
    t = {k: v for k, v in cfg["training"].items() if k not in hardware}
    # (`pools` is the scan's list; each pre-training of a scan has its own `pool`)
    p = {k: v for k, v in cfg["pretrain"].items() if k not in ("epochs", "patience", "knn_k", "probe_jets", "pools")}
    name = cfg["pretrain"]["encoder"]
    return config_hash({"seed": cfg["seed"], "training": t, "pretrain": p, "encoder": cfg["encoders"].get(name),
                        "classes": cfg["classes"], "data": content_hash})


def _global_rank() -> int:
    """This process' rank, from the launcher's environment (before any process group exists)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return int(getattr(rank_zero_only, "rank", 0) or 0)


class EpochMetrics(L.Callback):
    """Log the epoch-level metrics to an MLflow run (by id, so it works in spawned processes too)."""

    def __init__(self, uri: str | None, run_id: str | None):
        self.uri, self.run_id = uri, run_id
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()
                   if k.startswith(("train/", "val/")) and torch.as_tensor(v).numel() == 1}
        metrics["epoch"] = trainer.current_epoch
        self.history.append(metrics)
        if self.run_id:
            import mlflow

            client = mlflow.MlflowClient(self.uri)
            for k, v in metrics.items():
                if k != "epoch":
                    client.log_metric(self.run_id, k, v, step=trainer.current_epoch)
        log.info("epoch %d: %s", trainer.current_epoch,
                 ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if k != "epoch"))


class BestEncoder(L.Callback):
    """Keep the encoder weights of the epoch with the lowest ``val/loss`` (the stopping point that
    ``encoder.pt`` gets). Its state travels in the checkpoint, so a resumed run remembers the best epoch."""

    def __init__(self):
        self.best_loss, self.best_epoch, self.best_state = math.inf, -1, None
        self.best_extra = {}  # the method's saved_modules() (clip: the observables MLP) of that epoch

    def on_validation_end(self, trainer, pl_module):
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None or not math.isfinite(float(loss)):
            return
        if float(loss) < self.best_loss:
            self.best_loss, self.best_epoch = float(loss), int(trainer.current_epoch)
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.encoder.state_dict().items()}
            self.best_extra = {name: {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}
                               for name, m in pl_module.saved_modules().items()}

    def state_dict(self):
        return {"best_loss": self.best_loss, "best_epoch": self.best_epoch, "best_state": self.best_state,
                "best_extra": self.best_extra}

    def load_state_dict(self, state):
        self.best_loss, self.best_epoch, self.best_state = state["best_loss"], state["best_epoch"], state["best_state"]
        self.best_extra = state.get("best_extra", {})


class Stamp(L.Callback):
    """Store ``info`` in every checkpoint (under ``rs3l``), to refuse resuming a foreign one."""

    def __init__(self, info: dict):
        self.info = info

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rs3l"] = dict(self.info)


@torch.no_grad()
def embed(encoder: torch.nn.Module, x: np.ndarray, mask: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Encoder embeddings (rows, latent_dim) of padded arrays, in eval mode on the CPU."""
    encoder = encoder.cpu().eval()
    out = [encoder(torch.from_numpy(x[i:i + batch_size]), torch.from_numpy(mask[i:i + batch_size]))
           for i in range(0, len(x), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, encoder.latent_dim), np.float32)


def plot_embeddings(z: np.ndarray, labels: np.ndarray, classes: list[str], path, title: str = "") -> None:
    """2-D PCA projection of embeddings coloured by class, saved as PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zc = z - z.mean(axis=0)
    if len(zc) >= 2 and zc.shape[1] >= 2:
        _, s, vt = np.linalg.svd(zc, full_matrices=False)
        xy = zc @ vt[:2].T
        frac = s[:2] ** 2 / max((s ** 2).sum(), 1e-12)
    else:
        xy, frac = np.zeros((len(z), 2)), np.zeros(2)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c, name in enumerate(classes):
        sel = labels == c
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, label=f"{name} ({sel.sum()})")
    ax.set_xlabel(f"PC 1 ({100 * frac[0]:.0f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * frac[1]:.0f}% of variance)")
    ax.set_title(title or "validation embeddings")
    ax.legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def check_inputs(cfg: dict, data_dir: Path) -> dict:
    """Everything that can be checked before training: encoder and objective names, manifest,
    views, classes, features, shard schemas. Returns the manifest."""
    from rs3l.models.encoders import encoder_params
    from rs3l.models.objectives import get_objective

    encoder_params(cfg["pretrain"]["encoder"], cfg)  # unknown names fail here, before tracking
    get_objective(cfg["pretrain"]["objective"])
    manifest = read_manifest(data_dir)
    check_features(cfg["training"]["features"])
    check_classes(cfg["classes"], manifest)
    check_views(base_views(cfg["pretrain"]["augment_views"]), manifest, "pretrain.augment_views")
    for split in ("train", "val"):
        if split == "train" or manifest["splits"].get(split, {}).get("shards"):
            for path in shard_paths(data_dir, split, manifest):
                open_shard(path)
    return manifest


def _stopped_early(out_dir: Path, key: str) -> bool:
    """A finished run of this configuration whose val loss stopped improving (summary.json says so)."""
    try:
        summary = json.loads((out_dir / "summary.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return summary.get("resume_key") == key and bool(summary.get("early_stopped"))


class ForeignCheckpoint(ValueError):
    pass


def checkpoint_epochs(ckpt, key: str | None = None) -> int:
    """Epochs fully trained in a Lightning checkpoint; with ``key``, refuse a foreign checkpoint.

    (The per-epoch checkpoint is written in ``on_train_epoch_end``, before Lightning counts
    the epoch as 'completed', so the 'processed' counter is the one to read.)
    """
    state = safe_load(ckpt, "pre-training checkpoint")
    if key is not None and state.get("rs3l", {}).get("resume_key") != key:
        raise ForeignCheckpoint(f"{ckpt} was written by a pre-training with another configuration or dataset; "
                                f"delete it, use another --out-dir or pass --restart-if-changed to start over")
    return int(state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])


# ----------------------------------------------------------------------------- the stage

def _interrupted_run(cfg: dict, out_dir: Path, key: str) -> dict:
    """``run.json`` of a training of this configuration whose MLflow run did not finish (requeued,
    killed, timed out, failed): the resumed training continues that run. Otherwise {}."""
    try:
        record = json.loads((out_dir / RUN).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    if record.get("resume_key") != key or record.get("uri") != tracking.tracking_uri(cfg):
        return {}
    try:
        status = tracking.client(cfg).get_run(record["run_id"]).info.status
    except Exception:  # noqa: BLE001 - the run is gone (another store, deleted): start a new one
        log.warning("MLflow run %s of %s no longer exists: this training starts a new run", record["run_id"],
                    out_dir / RUN)
        return {}
    return {} if status == "FINISHED" else record


def run(cfg: dict, data_dir, out_dir, callbacks: list | None = None, restart_if_changed: bool = False) -> dict:
    """Pre-train (or resume) and write the outputs; ``callbacks``: extra Lightning callbacks.

    A ``last.ckpt`` of the same configuration and dataset is resumed; one of another is an error,
    or with ``restart_if_changed`` deleted (pre-training starts over).

    Returns a summary: ``skipped`` (already complete), ``start_epoch`` (epochs done before
    this call), ``epochs``, ``history`` (per-epoch metrics of this call), ``final_metrics``,
    ``knn_acc_final`` (probe on the embeddings written to embeddings.png), ``run_id``,
    ``requeued`` (how often Slurm requeued this training before it ended).

    Raises :class:`rs3l.training.requeue.RequeueRequested` when Slurm's warning signal stopped it.
    """
    stop = requeue.RequeueOnSignal().install()  # first: the signal kills a process without a handler
    try:
        return _run(cfg, Path(data_dir), Path(out_dir), [stop, *(callbacks or [])], restart_if_changed)
    finally:
        stop.restore()


def _run(cfg: dict, data_dir: Path, out_dir: Path, callbacks: list, restart_if_changed: bool) -> dict:
    rank = _global_rank()
    if cfg["pretrain"]["pools"]:
        raise ValueError(f"pretrain.pools {cfg['pretrain']['pools']} is a scan: pre-train one pool at a time "
                         "(`rs3l pretrain --pool N`, what the workflow does)")
    manifest = check_inputs(cfg, data_dir)
    from rs3l.training import pool

    eligible = pool.eligible_jets(data_dir, pool.excluded_labels(cfg))
    pool_ids = pool.pool_jet_ids(cfg["seed"], eligible, cfg["pretrain"]["pool"])  # errors before any run opens
    pool_jets = len(eligible) if pool_ids is None else len(pool_ids)
    log.info("pre-training pool: %d of the %d train jets pre-training may use (pretrain.pool = %s)", pool_jets,
             len(eligible), cfg["pretrain"]["pool"])
    content_hash = manifest.get("content_hash")
    epochs = cfg["pretrain"]["epochs"]
    key = resume_key(cfg, content_hash)
    ckpt = out_dir / CHECKPOINT
    try:
        done = checkpoint_epochs(ckpt, key) if ckpt.exists() else 0
    except ForeignCheckpoint:
        if not restart_if_changed:
            raise
        if rank == 0:
            log.warning("%s belongs to another configuration or dataset: deleted, pre-training starts over", ckpt)
            ckpt.unlink()
        done = 0
    complete = done >= epochs or _stopped_early(out_dir, key)
    if complete and (out_dir / ENCODER).exists():
        log.info("pre-training already complete (%d/%d epochs in %s); nothing to do", done, epochs, ckpt)
        return {"skipped": True, "start_epoch": done, "epochs": epochs, "history": []}
    if complete and done:
        # Snakemake deletes a job's outputs before it reruns the job (a config change elsewhere, a touched
        # input): rewrite encoder.pt from the checkpoint's best epoch rather than train past the stopping point
        if rank == 0:
            restore_encoder(cfg, ckpt, out_dir, manifest.get("content_hash"), pool_jets)
        return {"skipped": True, "restored": True, "start_epoch": done, "epochs": epochs, "history": []}
    if rank != 0:
        return _train(cfg, data_dir, out_dir, key, ckpt if done else None, None, None, callbacks, pool_jets)
    # Open the MLflow run first: an unreachable server fails before any training. A training that
    # was interrupted (requeued, killed) continues its run.
    interrupted = _interrupted_run(cfg, out_dir, key)
    name = "pretrain" if cfg["pretrain"]["pool"] is None else f"pretrain-pool{pool_jets}"
    with tracking.child_run(cfg, name=name, stage="pretrain", params=tracking.flat_params(cfg),
                            run_id=interrupted.get("run_id")) as active:
        import mlflow

        record = {"run_id": active.info.run_id, "uri": tracking.tracking_uri(cfg), "resume_key": key,
                  "requeued": int(interrupted.get("requeued", 0))}
        write_text(out_dir / RUN, json.dumps(record, indent=2))
        if interrupted:
            log.info("continuing MLflow run %s of the interrupted training (requeued %d times so far)",
                     active.info.run_id, record["requeued"])
        mlflow.log_param("dataset.content_hash", content_hash)
        mlflow.log_param("pretrain.pool_jets", pool_jets)
        mlflow.set_tags({"dataset.content_hash": content_hash, "dataset.path": str(data_dir.resolve()),
                         "rs3l.resumed_from_epoch": done, "rs3l.pretrain.pool": str(cfg["pretrain"]["pool"]),
                         "rs3l.pretrain.pool_jets": pool_jets})
        mlflow.log_artifact(str(data_dir / "manifest.json"), artifact_path="dataset")
        try:
            summary = _train(cfg, data_dir, out_dir, key, ckpt if done else None,
                             tracking.tracking_uri(cfg), active.info.run_id, callbacks, pool_jets)
        except requeue.RequeueRequested:
            record["requeued"] += 1
            write_text(out_dir / RUN, json.dumps(record, indent=2))
            mlflow.set_tag("rs3l.requeued", record["requeued"])
            # not FINISHED, not FAILED: the requeued job continues this run
            mlflow.end_run(status="SCHEDULED")
            raise
        summary["start_epoch"] = done
        summary["run_id"] = active.info.run_id
        summary["requeued"] = record["requeued"]
        if (out_dir / "summary.json").exists():
            write_text(out_dir / "summary.json", json.dumps({**json.loads((out_dir / "summary.json").read_text()),
                                                            "requeued": record["requeued"]}, indent=2))
        mlflow.set_tag("rs3l.requeued", record["requeued"])
        for name in (ENCODER, CHECKPOINT, PLOT, "summary.json"):
            if (out_dir / name).exists():
                mlflow.log_artifact(str(out_dir / name))
        if (out_dir / ENCODER).exists():  # the encoder as an MLflow model too (rs3l.models.mlflow_model)
            from rs3l.models.mlflow_model import log_model
            encoder, info = load_encoder(out_dir / ENCODER)
            log_model(encoder, "encoder", list(info["features"]))
        final = summary.get("final_metrics", {})
        for k in ("best_epoch", "best_val_loss", "epochs_trained", "converged"):
            if k in summary and summary[k] is not None and math.isfinite(float(summary[k])):
                mlflow.log_metric(f"pretrain/{k}", float(summary[k]))
        if "knn_acc_final" in summary:
            mlflow.log_metric("val/knn_acc_final", summary["knn_acc_final"])
        log.info("pre-training done: %s; best val loss at epoch %s of %s trained (%s)",
                 ", ".join(f"{k}={v:.4g}" for k, v in final.items()), summary.get("best_epoch"),
                 summary.get("epochs_trained"), "early-stopped: converged" if summary.get("converged")
                 else "epoch budget reached")
    return summary


def _train(cfg: dict, data_dir: Path, out_dir: Path, key: str, resume_from: Path | None,
           uri: str | None, run_id: str | None, callbacks: list | None = None, pool_jets: int | None = None) -> dict:
    t = cfg["training"]
    # JetDataset.__len__ is exact for any number of workers (it plans the epoch per slot).
    warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")
    L.seed_everything(derive_seed(cfg["seed"], "pretrain"), workers=False, verbose=False)
    datamodule = JetDataModule(cfg, data_dir, mode="pairs", views=cfg["pretrain"]["augment_views"], stream="pretrain")
    model = build_method(cfg, n_features=len(t["features"]))
    metrics_cb = EpochMetrics(uri, run_id)
    # last.ckpt after every epoch, overwritten (Lightning writes it atomically via an fsspec
    # transaction). Not save_last=True: with save_top_k=0 that only saves at the very end.
    checkpoint_cb = L.pytorch.callbacks.ModelCheckpoint(dirpath=out_dir, filename=CHECKPOINT.removesuffix(".ckpt"),
                                                        save_top_k=1, enable_version_counter=False)
    best_cb = BestEncoder()
    stopping = []
    has_val = bool(read_manifest(data_dir)["splits"].get("val", {}).get("shards"))
    if cfg["pretrain"]["patience"] and has_val:
        stopping.append(L.pytorch.callbacks.EarlyStopping(monitor="val/loss", mode="min",
                                                          patience=cfg["pretrain"]["patience"]))
    # Under Slurm, Lightning's own requeue on SIGUSR1 is off: rs3l.training.requeue does it
    from lightning.fabric.plugins.environments import SLURMEnvironment

    plugins = [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else None
    trainer = L.Trainer(
        max_epochs=cfg["pretrain"]["epochs"], accelerator=t["accelerator"], devices=t["devices"],
        num_nodes=t["num_nodes"], strategy=t["strategy"], precision=t["precision"], default_root_dir=out_dir,
        logger=False, plugins=plugins,
        callbacks=[checkpoint_cb, SetEpoch(), metrics_cb, Stamp({"resume_key": key}), best_cb, *stopping,
                   *(callbacks or [])],
        enable_progress_bar=True, enable_model_summary=_global_rank() == 0, log_every_n_steps=10,
        num_sanity_val_steps=0)
    log.info("training process: global rank %d of world size %d (%s)", trainer.global_rank, trainer.world_size,
             type(trainer.strategy).__name__)
    trainer.fit(model, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    if not trainer.is_global_zero or _global_rank() != 0:
        return {"skipped": False, "epochs": cfg["pretrain"]["epochs"]}
    final = {k: float(v) for k, v in trainer.callback_metrics.items()
             if k.startswith(("train/", "val/")) and torch.as_tensor(v).numel() == 1}
    manifest = read_manifest(data_dir)
    # the encoder of the best val loss is the result; without a val split, the last one
    if best_cb.best_state is not None:
        model.encoder.load_state_dict(best_cb.best_state)
        for name, module in model.saved_modules().items():
            module.load_state_dict(best_cb.best_extra[name])
    save_encoder(out_dir / ENCODER, model.encoder, cfg, manifest.get("content_hash"), pool_jets,
                 model.encoder_extras())
    trained = int(trainer.current_epoch)  # epochs completed (after fit, current_epoch counts them)
    stopping_point = {"world_size": trainer.world_size, "pool": cfg["pretrain"]["pool"], "pool_jets": pool_jets,
                      "best_epoch": best_cb.best_epoch, "best_val_loss": best_cb.best_loss,
                      "epochs_trained": trained,
                      "early_stopped": bool(stopping and stopping[0].stopped_epoch > 0),
                      # converged: the val loss stopped improving (patience ran out) before the epoch budget
                      "converged": bool(stopping and stopping[0].stopped_epoch > 0)}
    summary = {"skipped": False, "epochs": cfg["pretrain"]["epochs"], "final_metrics": final,
               "history": metrics_cb.history, **stopping_point, "resume_key": key}
    if manifest["splits"].get("val", {}).get("shards"):
        probe = load_arrays(data_dir, "val", t["features"], t["max_constituents"],
                            views=base_views(cfg["pretrain"]["augment_views"])[:1], max_jets=cfg["pretrain"]["probe_jets"],
                            seed=derive_seed(cfg["seed"], "pretrain-probe"))
        z = embed(model.encoder, probe["x"], probe["mask"])
        from rs3l.models.objectives import knn_accuracy

        summary["knn_acc_final"] = knn_accuracy(torch.from_numpy(z), torch.from_numpy(probe["label"]),
                                                k=cfg["pretrain"]["knn_k"])
        plot_embeddings(z, probe["label"], cfg["classes"], out_dir / PLOT,
                        title=f"{cfg['pretrain']['encoder']} + {cfg['pretrain']['objective']}: val embeddings "
                              f"(kNN acc {summary['knn_acc_final']:.2f})")
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=float))
    return summary


def with_pool(cfg: dict, pool: float | None) -> dict:
    """``cfg`` for one pre-training of a pool-size scan: ``pretrain.pool`` set, ``pretrain.pools`` cleared."""
    return {**cfg, "pretrain": {**cfg["pretrain"], "pool": pool, "pools": []}}


def restore_encoder(cfg: dict, ckpt: Path, out_dir: Path, content_hash: str | None, pool_jets: int | None) -> None:
    """Write ``encoder.pt`` of a finished pre-training from its checkpoint: the weights of the best val loss
    (:class:`BestEncoder`'s state), else the last epoch's; no training."""
    from rs3l.models.encoders import build_encoder

    state = safe_load(ckpt, "pre-training checkpoint")
    encoder = build_encoder(cfg["pretrain"]["encoder"], cfg, len(cfg["training"]["features"]))
    best = (state.get("callbacks", {}).get(BestEncoder.__qualname__) or {}).get("best_state")
    if best is None:
        prefix = "encoder."
        best = {k[len(prefix):]: v for k, v in state["state_dict"].items() if k.startswith(prefix)}
    encoder.load_state_dict(best)
    save_encoder(out_dir / ENCODER, encoder, cfg, content_hash, pool_jets)
    log.info("pre-training was complete (%s): encoder.pt rewritten from its best epoch, no training", ckpt)


def main(cfg: dict, args) -> None:
    """``rs3l pretrain --data DIR --out-dir DIR [--pool N] [--restart-if-changed]``."""
    if args.pool is not None:
        pool = None if args.pool == "all" else float(args.pool)
        if cfg["pretrain"]["pools"] and pool not in cfg["pretrain"]["pools"]:
            raise ValueError(f"--pool {args.pool} is not one of pretrain.pools {cfg['pretrain']['pools']}")
        cfg = with_pool(cfg, int(pool) if pool is not None and pool > 1 else pool)
    try:
        run(cfg, args.data, args.out_dir, restart_if_changed=args.restart_if_changed)
    except requeue.RequeueRequested:
        # rank 0 requeues the Slurm job; every rank then waits for Slurm to end it
        sys.exit(requeue.requeue(ask=_global_rank() == 0))
