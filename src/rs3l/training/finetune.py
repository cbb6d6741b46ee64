"""``rs3l finetune``: train a jet classifier by gradient descent, from a pre-trained encoder or from scratch.

Gradient modes (one "deep arm" each; the frozen-encoder probes are ``rs3l probe``):

- ``mlp``     frozen pre-trained encoder + MLP head;
- ``full``    pre-trained encoder + MLP head, all weights trained;
- ``scratch`` the same architecture (``pretrain.encoder``) randomly initialised + MLP
  head, all weights trained: the supervised baseline (method ``supervised-<encoder>``).

Budget in optimiser steps, not epochs (an epoch of 20 labelled jets is one step):
AdamW (``finetune.learning_rate``, ``training.weight_decay``), linear warm-up for
``finetune.warmup_steps`` then cosine decay to zero at ``finetune.max_steps``
(``finetune.schedule``). The val loss (nominal view, class-balanced) is computed every
``finetune.val_every`` steps; training stops when it has not improved for
``finetune.patience`` validations, but not before ``finetune.min_steps``. The weights of
the best validation are kept; the untrained starting point (step 0) is validated too. ``converged`` = stopped by patience before ``max_steps``.
The curves (train and val loss, val AUC per step), the best step and ``converged`` are
logged to the MLflow child run and stored in ``model.pt``.

Labels: the labelled subset of (task, fraction, repeat seed) from
:func:`rs3l.evaluation.tasks.labelled_subset`, shared with every other arm;
``<out_dir>/labels.json`` records it (jet ids and their SHA-256).

Writes ``<out_dir>/model.pt`` (atomic; tensors and plain types only) for ``rs3l evaluate``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from rs3l.atomic import atomic_path, write_text
from rs3l.config import config_hash
from rs3l.evaluation.tasks import (check_fraction, check_seed, check_task_data, describe_labels, label_sets,
                                   labelled_subset, labels_token, load_task_split, parse_labels, resolve_task,
                                   validation_subset)
from rs3l.models.classifier import (MODEL_FILE, build_classifier, device, predict, read_encoder_checkpoint,
                                    scores_from_logits)
from rs3l.seeds import derive_seed

log = logging.getLogger(__name__)

MODES = ("mlp", "full", "scratch")
FROZEN_MODES = ("mlp",)
LABELS_FILE = "labels.json"
EVALUATION_FILE = "evaluation.json"


def method_name(mode: str, encoder: str, pool_jets: int | None = None) -> str:
    """``rs3l-<encoder>`` (pre-trained), ``supervised-<encoder>`` (scratch); a pre-training on a chosen
    pool (``pretrain.pool``) adds ``-pool<jets>``: the arms of a pool-size scan are methods of their own."""
    if mode == "scratch":
        return f"supervised-{encoder}"
    return f"rs3l-{encoder}" + (f"-pool{int(pool_jets)}" if pool_jets is not None else "")


def logs_model(cfg: dict, token: str, seed: int) -> bool:
    """Whether the arm (labels ``token``, repeat ``seed``) logs its classifier as an MLflow model
    (``finetune.log_models``: all, first_seed, largest = seed 0 at the task's largest labelled set, none)."""
    how = cfg["finetune"]["log_models"]
    if how == "largest":
        return seed == 0 and token == label_sets(cfg)[-1]
    return how == "all" or (how == "first_seed" and seed == 0)


# ----------------------------------------------------------------------------- Lightning

def class_weights(target: np.ndarray, n_targets: int) -> np.ndarray:
    """Loss weight per target class, n / (n_targets * n_c): every class weighs the same in total."""
    counts = np.bincount(np.asarray(target, dtype=np.int64), minlength=n_targets).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (n_targets * np.maximum(counts, 1)), 0.0)


def lr_factor(step: int, warmup: int, max_steps: int, schedule: str) -> float:
    """Learning-rate multiplier at optimiser ``step``: linear warm-up, then constant or cosine to 0 at max_steps."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def validation_steps(val_every: int, max_steps: int) -> list[int]:
    """The optimiser steps after which the val loss is computed: the start (0), then 1, 2, 4, 8, ... below
    ``val_every``, then every ``val_every`` steps up to ``max_steps``.

    A labelled set of 100 jets is one batch, so every step is an epoch: its best point can come within a
    few steps, before the first regular validation. Without the early checks such an arm kept an overfit
    model, or its untrained start."""
    early = [2 ** k for k in range(max(val_every - 1, 1).bit_length()) if 2 ** k < val_every]
    return [0] + early + list(range(val_every, max_steps + 1, val_every))


def _lightning_module(net, multiclass: bool, ft: dict, weights: np.ndarray | None, weight_decay: float):
    import lightning as L
    import torch

    from rs3l.evaluation import metrics

    class FinetuneModule(L.LightningModule):
        """Wraps ``net`` (head on embeddings, or encoder + head on constituents); batch = (*inputs, target).

        Loss: cross entropy (multi-class) or binary cross entropy on one logit, with
        optional per-class ``weights`` (indexed by target).
        """

        def __init__(self):
            super().__init__()
            self.net = net
            self.train_losses: list = []
            self.register_buffer("weights", None if weights is None else torch.as_tensor(weights, dtype=torch.float32))

        def forward(self, *inputs):
            return self.net(*inputs)

        def _loss(self, logits, y):
            if multiclass:
                return torch.nn.functional.cross_entropy(logits, y, weight=self.weights)
            w = None if self.weights is None else self.weights[y]
            return torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y.float(), weight=w)

        def training_step(self, batch, batch_idx):
            *inputs, y = batch
            loss = self._loss(self(*inputs), y)
            self.train_losses.append(float(loss.detach()))
            return loss

        @torch.no_grad()
        def validate(self, loader) -> dict:
            """val_loss (one loss over the whole val set: the class weights normalise globally), val_acc,
            val_auc, and the mean train loss since the last validation."""
            was_training = self.training
            self.eval()
            out = [(self(*(t.to(self.device) for t in inputs)).float().cpu(), y) for *inputs, y in loader]
            self.train(was_training)
            logits, y = torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])
            m = {"val_loss": float(self._loss(logits.to(self.device), y.to(self.device)))}
            score = scores_from_logits(logits.numpy(), multiclass)
            y = y.numpy()
            pred = score.argmax(1) if multiclass else (score >= 0.5).astype(int)
            m["val_acc"] = metrics.accuracy(y, pred)
            try:
                m["val_auc"] = metrics.macro_auc_ovr(y, score) if multiclass else metrics.roc_auc(y, score)
            except ValueError:  # one class only in a tiny validation set
                m["val_auc"] = float("nan")
            if self.train_losses:
                m["train_loss"] = float(np.mean(self.train_losses))
                self.train_losses = []
            return m

        def configure_optimizers(self):
            params = [p for p in self.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=ft["learning_rate"], weight_decay=weight_decay)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step: lr_factor(step, ft["warmup_steps"], ft["max_steps"], ft["schedule"]))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return FinetuneModule()


def _validation_callback(val_loader, ft: dict):
    import copy

    import lightning as L

    class ValidateAndKeepBest(L.Callback):
        """Validate at :func:`validation_steps`, record the curves (``history``), keep the weights of the lowest
        val loss, and stop once ``patience`` x ``val_every`` steps passed without a lower one (not before
        ``min_steps``)."""

        def __init__(self):
            self.schedule = set(validation_steps(ft["val_every"], ft["max_steps"]))
            self.best_loss, self.best_step, self.best_state, self.best_metrics = math.inf, -1, None, {}
            self.history: list[dict] = []

        def run(self, trainer, module, step: int):
            m = module.validate(val_loader)
            self.history.append({"step": step, **m})
            if m["val_loss"] < self.best_loss:
                self.best_loss, self.best_step, self.best_metrics = m["val_loss"], step, m
                self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in module.net.state_dict().items()})
            min_steps = min(ft["min_steps"], ft["max_steps"])
            if step >= min_steps and step - self.best_step >= ft["patience"] * ft["val_every"]:
                trainer.should_stop = True

        def on_train_start(self, trainer, module):
            # step 0 is a candidate too, so that "no step improved on the start" is seen (and reported)
            self.run(trainer, module, 0)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step in self.schedule:
                self.run(trainer, module, int(trainer.global_step))

    return ValidateAndKeepBest()


def fit(net, train_inputs, val_inputs, multiclass: bool, cfg: dict, seed: int, out_dir: Path,
        weights: np.ndarray | None = None) -> dict:
    """Train ``net`` by steps with early stopping on the val loss; the best weights are loaded into ``net``.

    ``train_inputs``/``val_inputs``: tuples of tensors, the last one the targets. Validation runs at
    :func:`validation_steps`. Returns the training summary: ``best_step``, ``stopped_step``, ``converged``
    (stopped by patience before ``max_steps``, at a step that improved on the untrained start), ``best``
    (val metrics at the best step) and ``history`` (one entry per validation).
    """
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    ft, tr = cfg["finetune"], cfg["training"]
    L.seed_everything(seed, workers=True, verbose=False)
    n_train = len(train_inputs[-1])
    batch = min(tr["batch_size"], n_train)
    train_dl = DataLoader(TensorDataset(*train_inputs), batch_size=batch, shuffle=True, num_workers=0,
                          generator=torch.Generator().manual_seed(seed), drop_last=n_train > batch)
    val_dl = DataLoader(TensorDataset(*val_inputs), batch_size=max(tr["batch_size"], 512), shuffle=False)
    module = _lightning_module(net, multiclass, ft, weights, tr.get("weight_decay", 0.0))
    keep = _validation_callback(val_dl, ft)
    trainer = L.Trainer(
        max_steps=ft["max_steps"], min_steps=min(ft["min_steps"], ft["max_steps"]), max_epochs=-1,
        limit_val_batches=0, num_sanity_val_steps=0,  # validation is the callback's, on its own schedule
        accelerator="cpu" if tr["accelerator"] == "cpu" else "auto",
        devices=1,  # a fine-tune is small; one device keeps the label subset and model selection simple
        precision=tr.get("precision", "32-true"),
        logger=False, enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False,
        callbacks=[keep], default_root_dir=str(out_dir),
    )
    trainer.fit(module, train_dl)
    if keep.best_state is None:
        raise RuntimeError("fine-tuning produced no finite validation loss; check the data and learning rate")
    net.load_state_dict(keep.best_state)
    stopped = int(trainer.global_step)
    improved = keep.best_step > 0
    if not improved:
        log.warning("no step improved the val loss on the untrained start (%.4f): the arm keeps its starting "
                    "weights and counts as not converged", keep.best_loss)
    return {"best_step": keep.best_step, "stopped_step": stopped, "converged": stopped < ft["max_steps"] and improved,
            "max_steps": ft["max_steps"], "best": keep.best_metrics, "history": keep.history}


# ----------------------------------------------------------------------------- the stage

class Arms:
    """What the deep arms of one (task, mode, encoder) share: the checked inputs, the encoder
    checkpoint, the task's train and val rows and the test split's views, each loaded once.

    :meth:`run` then trains and evaluates one arm (labelled set, repeat seed). An arm's result does
    not depend on which arms ran before it in the same process: every arm seeds its own
    initialisation, batch order and label subset (a test checks the weights against a lone run).
    """

    def __init__(self, cfg: dict, data_dir, task_name: str, mode: str, encoder_path=None):
        from rs3l.training.data import check_classes, check_views, read_manifest

        self.cfg, self.data_dir, self.mode, self.encoder_path = cfg, Path(data_dir), mode, encoder_path
        self.task = resolve_task(cfg, task_name)
        if mode not in MODES:
            hint = " (the linear probe is `rs3l probe`)" if mode == "linear" else ""
            raise ValueError(f"unknown mode '{mode}'; known: {', '.join(MODES)}{hint}")
        self.manifest = read_manifest(self.data_dir)
        check_classes(cfg["classes"], self.manifest)
        self.views = list(cfg["finetune"]["train_views"])
        check_views(self.views, self.manifest, "finetune.train_views")
        check_views(["nominal"], self.manifest, "validation (nominal view)")
        if mode == "scratch":
            if encoder_path:
                log.info("mode scratch: ignoring --encoder %s (random initialisation)", encoder_path)
            self.ckpt = None
            self.enc_name = cfg["pretrain"]["encoder"]
            self.features, self.max_p = list(cfg["training"]["features"]), cfg["training"]["max_constituents"]
        else:
            self.ckpt = read_encoder_checkpoint(encoder_path, cfg)
            self.enc_name, self.features = self.ckpt["encoder"], list(self.ckpt["features"])
            self.max_p = int(self.ckpt["max_constituents"])
        from rs3l.models.encoders import encoder_params

        self.enc_params = (dict(self.ckpt["encoder_params"]) if self.ckpt and "encoder_params" in self.ckpt
                           else encoder_params(self.enc_name, cfg))
        self.method = method_name(mode, self.enc_name, (self.ckpt or {}).get("pool_jets")
                                  if (self.ckpt or {}).get("pool") is not None else None)
        self._build(0)  # a checkpoint that does not fit fails at once, before any data is read
        self.train = load_task_split(self.data_dir, "train", self.task, cfg["classes"], self.features, self.max_p,
                                     views=self.views)
        val = load_task_split(self.data_dir, "val", self.task, cfg["classes"], self.features, self.max_p,
                              views=["nominal"])
        check_task_data(self.task, {"train": self.train, "val": val}, self.data_dir)
        self.val = validation_subset(cfg, self.task, val)
        self._test = None

    def _build(self, train_seed: int):
        import torch

        torch.manual_seed(train_seed)
        model = build_classifier(self.enc_name, self.enc_params, len(self.features), "mlp", self.task.n_outputs,
                                 self.cfg["finetune"]["head_hidden"])
        if self.ckpt is not None:
            try:
                model.encoder.load_state_dict(self.ckpt["state_dict"])
            except RuntimeError as exc:
                raise ValueError(f"'{self.encoder_path}' does not fit a {self.enc_name} encoder with hyper-parameters "
                                 f"{self.enc_params} ({str(exc).splitlines()[0]})") from exc
        return model

    def test_views(self):
        """The task's test jets per view (:class:`rs3l.evaluation.evaluate.TestViews`), kept for the next arms."""
        if self._test is None:
            from rs3l.evaluation.evaluate import TestViews

            self._test = TestViews(self.data_dir, self.task, self.manifest, self.features, self.max_p)
        return self._test

    def run(self, labels, seed: int, out_dir, evaluate_out=None, log_model: bool | None = None) -> dict:
        """Train (and with ``evaluate_out`` evaluate) the arm (``labels``: token or fraction, repeat ``seed``).

        Returns the metadata stored in ``model.pt`` (without weights), with the evaluation record
        under ``evaluation`` when evaluated. ``log_model``: also log the classifier as an MLflow model
        (default: as ``finetune.log_models`` says for this seed)."""
        import torch

        cfg, task, mode, ft = self.cfg, self.task, self.mode, self.cfg["finetune"]
        token = labels if isinstance(labels, str) else labels_token(fraction=labels)
        fraction, count = parse_labels(token)
        seed = check_seed(seed, ft["seeds"], "finetune.seeds")
        if log_model is None:
            log_model = logs_model(cfg, token, seed)
        out_dir = Path(out_dir)
        # the seed path keeps its pre-count form for fractions, so results of earlier versions stay reproducible
        train_seed = derive_seed(cfg["seed"], "finetune", task.name, mode, repr(fraction) if count is None else token,
                                 seed)
        model = self._build(train_seed)
        train, labels_info = labelled_subset(cfg, task, token, seed, self.train)
        write_text(out_dir / LABELS_FILE, json.dumps({**labels_info, "train_views": self.views}, indent=1))
        dev = device(cfg)
        # each target class weighs the same in the loss (a 1:4 signal:background task otherwise learns "background")
        weights = class_weights(train["target"], len(task.target_names)) if ft["balance_classes"] else None

        def tensors(arr):
            return (torch.as_tensor(arr["x"], dtype=torch.float32), torch.as_tensor(arr["mask"], dtype=torch.bool),
                    torch.as_tensor(arr["target"], dtype=torch.long))

        params = {"task": task.name, "mode": mode, "labels": token, "fraction": fraction, "label_count": count,
                  "seed": seed, "encoder": self.enc_name, "method": self.method, "n_labels": labels_info["n_labels"],
                  "n_train_rows": labels_info["n_train_rows"], "n_val": len(self.val["target"]),
                  "train_views": ",".join(self.views), "head": "mlp",
                  **{k: ft[k] for k in ("max_steps", "min_steps", "val_every", "patience", "warmup_steps", "schedule",
                                        "learning_rate", "balance_classes")},
                  "labels_sha256": labels_info["jet_ids_sha256"],
                  "data_content_hash": self.manifest.get("content_hash", ""),
                  "pretrained_config_hash": (self.ckpt or {}).get("config_hash", ""),
                  "pretrain_pool_jets": (self.ckpt or {}).get("pool_jets")}
        import mlflow

        from rs3l.tracking import child_run

        with child_run(cfg, f"finetune-{task.name}-{self.method}-{mode}-{describe_labels(token)}-s{seed}", "finetune",
                       params) as run:
            if mode in FROZEN_MODES:
                for p in model.encoder.parameters():
                    p.requires_grad_(False)
                bs = cfg["evaluate"]["batch_size"]
                z_train = predict(model.encoder, train["x"], train["mask"], bs, dev)
                z_val = predict(model.encoder, self.val["x"], self.val["mask"], bs, dev)
                summary = fit(model.head, (torch.as_tensor(z_train), torch.as_tensor(train["target"], dtype=torch.long)),
                              (torch.as_tensor(z_val), torch.as_tensor(self.val["target"], dtype=torch.long)),
                              task.multiclass, cfg, train_seed, out_dir, weights)
            else:
                summary = fit(model, tensors(train), tensors(self.val), task.multiclass, cfg, train_seed, out_dir,
                              weights)
            for h in summary["history"]:  # the curves, per optimiser step
                mlflow.log_metrics({k: v for k, v in h.items() if k != "step" and math.isfinite(v)}, step=h["step"])
            mlflow.log_metrics({f"best_{k}": v for k, v in summary["best"].items() if math.isfinite(v)})
            mlflow.log_metrics({"best_step": summary["best_step"], "stopped_step": summary["stopped_step"],
                                "converged": float(summary["converged"])})
            meta = {"task": task.name, "task_def": asdict(task), "task_classes": list(task.classes),
                    "multiclass": task.multiclass, "n_outputs": task.n_outputs, "mode": mode, "labels": token,
                    "label_fraction": fraction, "label_count": count, "seed": seed, "method": self.method,
                    "encoder": self.enc_name, "encoder_params": self.enc_params, "n_features": len(self.features),
                    "features": self.features, "max_constituents": self.max_p, "latent_dim": model.encoder.latent_dim,
                    "head": "mlp", "head_hidden": ft["head_hidden"], "n_labels": labels_info["n_labels"],
                    "labels_sha256": labels_info["jet_ids_sha256"], "train_views": self.views,
                    "pretrained_from": str(self.encoder_path) if self.ckpt is not None else None,
                    "pretrained_config_hash": (self.ckpt or {}).get("config_hash"),
                    "pretrain_pool_jets": (self.ckpt or {}).get("pool_jets"), "config_hash": config_hash(cfg),
                    "data_content_hash": self.manifest.get("content_hash"), "training": summary,
                    "mlflow_run_id": run.info.run_id}
            with atomic_path(out_dir / MODEL_FILE) as tmp:
                torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, **meta}, tmp)
            if log_model:
                from rs3l.models.mlflow_model import log_model as log_mlflow_model  # the classifier as an MLflow model

                log_mlflow_model(model, "classifier", self.features)
            mlflow.log_artifact(str(out_dir / LABELS_FILE))
        if summary["converged"]:
            status = "converged"
        elif summary["best_step"] <= 0:
            status = "NOT converged: no step improved on the untrained start's val loss"
        else:
            status = "NOT converged: raise finetune.max_steps"
        log.info("%s %s %s seed %d: %d labelled jets, best step %d of %d (%s), val %s -> %s", task.name, mode,
                 describe_labels(token), seed, labels_info["n_labels"], summary["best_step"], summary["stopped_step"],
                 status, {k: round(v, 4) for k, v in summary["best"].items()}, out_dir / MODEL_FILE)
        if evaluate_out is not None:
            from rs3l.evaluation.evaluate import evaluate_model

            model.eval()
            meta["evaluation"] = evaluate_model(cfg, model, meta, self.test_views(), self.manifest, out_dir,
                                                evaluate_out)
        return meta


def finetune(cfg: dict, data_dir, task_name: str, mode: str, fraction: float | str, out_dir, encoder_path=None,
             seed: int = 0, evaluate_out=None) -> dict:
    """Run one deep arm for one repeat ``seed`` (``fraction``: a fraction or a labels token such as ``n300``);
    returns the metadata stored in ``model.pt`` (without weights).

    All inputs are checked before any data is loaded or training starts. With ``evaluate_out``
    the model is then evaluated on the test split in the same process (``rs3l evaluate``'s
    record, written there).
    """
    token = fraction if isinstance(fraction, str) else labels_token(fraction=check_fraction(fraction))
    parse_labels(token)
    check_seed(seed, cfg["finetune"]["seeds"], "finetune.seeds")
    meta = Arms(cfg, data_dir, task_name, mode, encoder_path).run(token, seed, out_dir, evaluate_out)
    meta.pop("evaluation", None)
    return meta


def arm_dir(root, labels: str, seed: int) -> Path:
    """The folder of one arm under its (task, mode) folder: ``<root>/<labels token>/s<seed>``."""
    return Path(root) / labels / f"s{int(seed)}"


def finetune_arms(cfg: dict, data_dir, task_name: str, mode: str, arms: list[tuple[str, int]], out_root,
                  encoder_path=None, evaluate_out=None) -> list[dict]:
    """Train and evaluate several arms of one (task, mode) in one process (start-up, data and test cache paid once).

    ``arms``: (labels token, repeat seed) pairs; each arm writes ``<out_root>/<token>/s<seed>/model.pt`` and its
    evaluation record ``evaluation.json`` beside it. An arm whose ``evaluation.json`` exists for this config and
    labelled set is not trained again (a killed job's rerun resumes). ``evaluate_out``: the JSON list of every
    arm's record. Returns the records.
    """
    for token, seed in arms:  # every arm is checked before the first one trains
        parse_labels(token)
        check_seed(seed, cfg["finetune"]["seeds"], "finetune.seeds")
    shared, records = None, []
    t0 = time.time()
    for i, (token, seed) in enumerate(arms):
        out_dir = arm_dir(out_root, token, seed)
        done = _finished(cfg, out_dir / EVALUATION_FILE, [Path(data_dir) / "manifest.json", encoder_path])
        if done is not None:
            log.info("arm %s seed %d: already evaluated in %s; kept", token, seed, out_dir)
            records.append(done)
            continue
        if shared is None:
            shared = Arms(cfg, data_dir, task_name, mode, encoder_path)
            log.info("%s %s: inputs loaded in %.1f s; %d arms to train", task_name, mode, time.time() - t0,
                     len(arms) - i)
        meta = shared.run(token, int(seed), out_dir, evaluate_out=out_dir / EVALUATION_FILE)
        records.append(meta["evaluation"])
    if evaluate_out is not None:
        write_text(evaluate_out, json.dumps(records))
    log.info("%d arms of %s %s in %.0f s", len(arms), task_name, mode, time.time() - t0)
    return records


def _finished(cfg: dict, path: Path, inputs: list) -> dict | None:
    """The evaluation record at ``path`` if it was written under this config after every one of ``inputs``
    (data manifest, encoder) was last written, else None."""
    try:
        record = json.loads(path.read_text())
        written = path.stat().st_mtime
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if any(p and Path(p).exists() and Path(p).stat().st_mtime >= written for p in inputs):
        return None
    return record if record.get("config_hash") == config_hash(cfg) else None


def parse_arms(values: list[str]) -> list[tuple[str, int]]:
    """``['n300:0', 'f0.1:2']`` -> [('n300', 0), ('f0.1', 2)]; errors name the bad entry."""
    out = []
    for v in values:
        token, sep, seed = v.rpartition(":")
        if not sep or not seed.isdigit():
            raise ValueError(f"--arms entry '{v}' is not <labels>:<seed> (e.g. n300:0 or f0.1:2)")
        parse_labels(token)
        out.append((token, int(seed)))
    return out


def main(cfg: dict, args) -> None:
    """``rs3l finetune``: one arm (``--fraction``/``--labels`` and ``--seed``) or several (``--arms``)."""
    if args.arms:
        if args.fraction is not None or args.labels is not None:
            raise ValueError("give either --arms (several arms) or --fraction/--labels with --seed (one arm)")
        finetune_arms(cfg, args.data, args.task, args.mode, parse_arms(args.arms), args.out_dir,
                      encoder_path=args.encoder, evaluate_out=args.evaluate)
        return
    if (args.fraction is None) == (args.labels is None):
        raise ValueError("give one of --fraction (e.g. 0.1), --labels (e.g. n300 or f0.1) or --arms")
    finetune(cfg, args.data, args.task, args.mode, args.labels or args.fraction, args.out_dir,
             encoder_path=args.encoder, seed=args.seed, evaluate_out=args.evaluate)
