"""``rs3l finetune``: train a jet classifier on a labelled task, from a pre-trained encoder or from scratch.

Modes (one "arm" each):

- ``linear``  frozen pre-trained encoder + linear head (linear probe);
- ``mlp``     frozen pre-trained encoder + MLP head;
- ``full``    pre-trained encoder + MLP head, all weights trained;
- ``scratch`` the same architecture (``pretrain.encoder``) randomly initialised + MLP
  head, all weights trained: the supervised baseline.

Data: the jets of the task's classes in the train split. By default only the
``nominal`` view is used (``finetune.train_views``; more views act as augmentation,
every view of a labelled jet carries its label). The epoch with the lowest loss on the
nominal view of the val split is kept (early stopping with ``finetune.patience``).
Optimiser AdamW (``finetune.learning_rate``, ``training.weight_decay``), one device
(GPU if present), ``training.precision``.
With ``finetune.balance_classes`` every target class weighs the same in the loss
(weights from the labelled subset), in training and in the validation loss.

Labels: for a label fraction f, the labelled jets are chosen per ``jet_id`` (all views
of a jet together), stratified by task class, from a permutation derived only from
(seed, "labels", task, class). So the subset does not depend on the mode (every arm
trains on exactly the same jets) and subsets are nested (f=0.1 is inside f=0.5).
The chosen jet_ids and their SHA-256 are written to ``<out_dir>/labels.json``.

The task's jets of the train and val splits are held in memory (``load_arrays``):
fine-tuning sets are small. With a frozen encoder the embeddings are computed once
(encoder in eval mode) and only the head is trained on them: the same result as
running the encoder every step, much faster.

Writes ``<out_dir>/model.pt`` (atomic) for ``rs3l evaluate`` and ``<out_dir>/labels.json``;
each call is an MLflow child run with per-epoch metrics.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rs3l.atomic import atomic_path, write_text
from rs3l.config import config_hash
from rs3l.seeds import derive_seed, rng

log = logging.getLogger(__name__)

MODES = ("linear", "mlp", "full", "scratch")
FROZEN_MODES = ("linear", "mlp")
MODEL_FILE = "model.pt"
LABELS_FILE = "labels.json"


# ----------------------------------------------------------------------------- tasks and labels

@dataclass(frozen=True)
class Task:
    """A labelled task. ``classes`` = signal then background class names.

    Binary: target 1 for signal classes, 0 for background. Multi-class: target = index in ``classes``.
    """

    name: str
    signal: tuple[str, ...]
    background: tuple[str, ...]
    multiclass: bool = False

    @property
    def classes(self) -> tuple[str, ...]:
        return self.signal + self.background

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.multiclass else 1

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.classes if self.multiclass else ("background", "signal")


def resolve_task(cfg: dict, name: str) -> Task:
    """The task ``name`` from ``cfg["finetune"]["tasks"]``, checked against ``cfg["classes"]``."""
    tasks = cfg["finetune"]["tasks"]
    if name not in tasks:
        raise ValueError(f"unknown task '{name}'; known tasks (finetune.tasks): {', '.join(tasks)}")
    spec, classes = tasks[name], cfg["classes"]
    for side in ("signal", "background"):
        for c in spec[side]:
            if c not in classes:
                raise ValueError(f"finetune.tasks.{name}.{side}: unknown class '{c}'; classes: {', '.join(classes)}")
    both = set(spec["signal"]) & set(spec["background"])
    if both:
        raise ValueError(f"finetune.tasks.{name}: classes {sorted(both)} are both signal and background")
    return Task(name, tuple(spec["signal"]), tuple(spec["background"]), bool(spec.get("multiclass", False)))


def check_fraction(fraction: float) -> float:
    fraction = float(fraction)
    if not (0.0 < fraction <= 1.0) or math.isnan(fraction):
        raise ValueError(f"label fraction must be in (0, 1]; got {fraction}")
    return fraction


def task_targets(task: Task, classes: list[str], label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep, target) for integer ``label``s (indices into ``classes``).

    ``keep`` (n,) bool: the jet belongs to one of the task's classes (other jets are ignored);
    ``target`` (n,) int64: 0/1 (binary) or the index into ``task.classes`` (multi-class); -1 where not kept.
    """
    label = np.asarray(label, dtype=np.int64)
    lookup = np.full(len(classes), -1, dtype=np.int64)
    for i, c in enumerate(task.classes):
        idx = classes.index(c)
        lookup[idx] = i if task.multiclass else int(c in task.signal)
    target = lookup[label]
    return target >= 0, target


def select_labels(master_seed: int, task: Task, fraction: float, jet_id: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Sorted jet_ids of the labelled subset: ceil(fraction * n_c) jets of each target class c.

    The permutation depends only on (seed, "labels", task, class), never on the mode,
    and a smaller fraction takes a prefix of the same permutation, so subsets are nested.
    ``jet_id``, ``target`` (n,) may contain several views of a jet; each jet counts once.
    """
    check_fraction(fraction)
    ids, first = np.unique(np.asarray(jet_id, dtype=np.int64), return_index=True)
    tgt = np.asarray(target)[first]
    chosen = []
    for c in np.unique(tgt):
        pool = ids[tgt == c]  # sorted, so the permutation does not depend on the row order on disk
        perm = rng(master_seed, "labels", task.name, int(c)).permutation(pool.size)
        n = max(1, math.ceil(fraction * pool.size - 1e-9))
        chosen.append(pool[perm[:n]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def ids_hash(jet_ids: np.ndarray) -> str:
    return hashlib.sha256(np.sort(np.asarray(jet_ids, dtype=np.int64)).tobytes()).hexdigest()


# ----------------------------------------------------------------------------- models

def build_head(kind: str, latent_dim: int, n_outputs: int, hidden: int):
    """``linear``: one linear layer; ``mlp``: latent -> hidden -> hidden -> outputs with ReLU."""
    from torch import nn

    if kind == "linear":
        return nn.Linear(latent_dim, n_outputs)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                             nn.Linear(hidden, n_outputs))
    raise ValueError(f"unknown head '{kind}'; known: linear, mlp")


def head_kind(mode: str) -> str:
    return "linear" if mode == "linear" else "mlp"


def _classifier_class():
    from torch import nn

    class JetClassifier(nn.Module):
        """Encoder + head: (x (B, P, F), mask (B, P)) -> logits (B, n_outputs)."""

        def __init__(self, encoder: nn.Module, head: nn.Module):
            super().__init__()
            self.encoder, self.head = encoder, head

        def forward(self, x, mask):
            return self.head(self.encoder(x, mask))

    return JetClassifier


def build_classifier(encoder_name: str, encoder_params: dict, n_features: int, head: str, n_outputs: int,
                     hidden: int):
    from rs3l.models.encoders import build_encoder

    encoder = build_encoder(encoder_name, {"encoders": {encoder_name: encoder_params}}, n_features)
    return _classifier_class()(encoder, build_head(head, encoder.latent_dim, n_outputs, hidden))


def scores_from_logits(logits, multiclass: bool):
    """Binary: sigmoid (n,); multi-class: softmax (n, n_classes). numpy in, numpy out."""
    import torch

    t = torch.as_tensor(logits, dtype=torch.float32)
    return (torch.softmax(t, dim=1) if multiclass else torch.sigmoid(t[:, 0])).numpy()


def load_model(model_dir: str | Path, map_location="cpu"):
    """(classifier in eval mode, metadata dict) from ``<model_dir>/model.pt`` written by ``rs3l finetune``."""
    import torch

    path = Path(model_dir) / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no {MODEL_FILE} in '{model_dir}'; run `rs3l finetune --out-dir {model_dir}` first")
    payload = torch.load(path, map_location=map_location, weights_only=False)
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    model = build_classifier(meta["encoder"], meta["encoder_params"], meta["n_features"], meta["head"],
                             meta["n_outputs"], meta["head_hidden"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), meta


def device(cfg: dict):
    """The GPU if there is one (and ``training.accelerator`` is not ``cpu``), else the CPU."""
    import torch

    if cfg["training"]["accelerator"] != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def predict(model, x: np.ndarray, mask: np.ndarray, batch_size: int, dev=None) -> np.ndarray:
    """Model outputs (n, ...) for ``x`` (n, P, F), ``mask`` (n, P), in eval mode, batched, as float32 numpy."""
    import torch

    dev = dev or next(model.parameters()).device
    model.eval().to(dev)
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i:i + batch_size], dtype=torch.float32, device=dev)
            mb = torch.as_tensor(mask[i:i + batch_size], dtype=torch.bool, device=dev)
            out.append(model(xb, mb).float().cpu().numpy())
    if not out:
        raise ValueError("no jets to run the model on")
    return np.concatenate(out)


# ----------------------------------------------------------------------------- Lightning

def class_weights(target: np.ndarray, n_targets: int) -> np.ndarray:
    """Loss weight per target class, n / (n_targets * n_c): every class weighs the same in total."""
    counts = np.bincount(np.asarray(target, dtype=np.int64), minlength=n_targets).astype(np.float64)
    return np.where(counts > 0, counts.sum() / (n_targets * np.maximum(counts, 1)), 0.0)


def _lightning_module(net, multiclass: bool, lr: float, weights: np.ndarray | None = None, weight_decay: float = 0.0):
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
            self._val: list = []
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
            self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
            return loss

        def on_validation_epoch_start(self):
            self._val = []

        def validation_step(self, batch, batch_idx):
            *inputs, y = batch
            logits = self(*inputs)
            self.log("val_loss", self._loss(logits, y), on_epoch=True, prog_bar=True, batch_size=len(y))
            self._val.append((logits.detach().float().cpu(), y.cpu()))

        def on_validation_epoch_end(self):
            logits = torch.cat([v[0] for v in self._val]).numpy()
            y = torch.cat([v[1] for v in self._val]).numpy()
            score = scores_from_logits(logits, multiclass)
            pred = score.argmax(1) if multiclass else (score >= 0.5).astype(int)
            self.log("val_acc", metrics.accuracy(y, pred), prog_bar=True)
            try:
                auc = metrics.macro_auc_ovr(y, score) if multiclass else metrics.roc_auc(y, score)
            except ValueError:  # one class only in a tiny validation set
                auc = float("nan")
            self.log("val_auc", auc, prog_bar=True)

        def configure_optimizers(self):
            params = [p for p in self.parameters() if p.requires_grad]
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)

    return FinetuneModule()


def _keep_best_callback():
    import lightning as L
    import mlflow

    class KeepBest(L.Callback):
        """Logs each epoch's metrics to the active MLflow run and keeps the weights of the lowest val_loss."""

        def __init__(self):
            self.best_loss, self.best_epoch, self.best_state, self.best_metrics = math.inf, -1, None, {}

        def on_train_epoch_end(self, trainer, module):
            m = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k in ("train_loss", "val_loss", "val_acc", "val_auc")}
            mlflow.log_metrics({k: v for k, v in m.items() if math.isfinite(v)}, step=trainer.current_epoch)
            if m.get("val_loss", math.inf) < self.best_loss:
                self.best_loss, self.best_epoch, self.best_metrics = m["val_loss"], trainer.current_epoch, m
                self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in module.net.state_dict().items()})

    return KeepBest()


def _fit(net, train_inputs, val_inputs, multiclass: bool, cfg: dict, seed: int, out_dir: Path, weights=None):
    """Train ``net`` with Lightning; returns the KeepBest callback (best weights already loaded into ``net``)."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping
    from torch.utils.data import DataLoader, TensorDataset

    ft, tr = cfg["finetune"], cfg["training"]
    L.seed_everything(seed, workers=True, verbose=False)
    gen = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(TensorDataset(*train_inputs), batch_size=tr["batch_size"], shuffle=True, generator=gen,
                          num_workers=0)
    val_dl = DataLoader(TensorDataset(*val_inputs), batch_size=max(tr["batch_size"], 512), shuffle=False)
    module = _lightning_module(net, multiclass, ft["learning_rate"], weights, tr.get("weight_decay", 0.0))
    keep = _keep_best_callback()
    trainer = L.Trainer(
        max_epochs=ft["epochs"],
        accelerator="cpu" if tr["accelerator"] == "cpu" else "auto",
        devices=1,  # a fine-tune is small; one device keeps the label subset and model selection simple
        precision=tr.get("precision", "32-true"),
        logger=False, enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
        callbacks=[EarlyStopping(monitor="val_loss", mode="min", patience=ft["patience"]), keep],
        default_root_dir=str(out_dir),
        log_every_n_steps=1,
    )
    trainer.fit(module, train_dl, val_dl)
    if keep.best_state is None:
        raise RuntimeError("fine-tuning produced no finite validation loss; check the data and learning rate")
    net.load_state_dict(keep.best_state)
    return keep


# ----------------------------------------------------------------------------- data

def load_task_split(data_dir, split: str, task: Task, cfg: dict, features: list[str], max_constituents: int,
                    views: list[str] | None = None) -> dict:
    """Arrays of ``split`` restricted to the task's classes, plus ``target`` (see :func:`task_targets`)."""
    from rs3l.training.data import load_arrays

    arr = load_arrays(data_dir, split, features, max_constituents, views=views)
    keep, target = task_targets(task, cfg["classes"], arr["label"])
    out = {k: np.asarray(v)[keep] for k, v in arr.items() if hasattr(v, "__len__") and len(v) == len(keep)}
    out["target"] = target[keep]
    return out


def _count_targets(task: Task, target: np.ndarray) -> dict:
    return {name: int(np.sum(target == i)) for i, name in enumerate(task.target_names)}


# ----------------------------------------------------------------------------- the stage

def _pretrained(path, cfg: dict) -> dict:
    import torch

    if path is None:
        raise FileNotFoundError("no pre-trained encoder given: pass --encoder results/pretrain/encoder.pt "
                                "(from `rs3l pretrain`), or use --mode scratch")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"pre-trained encoder checkpoint '{path}' does not exist; run `rs3l pretrain` "
                                f"first, or use --mode scratch")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    missing = [k for k in ("state_dict", "encoder", "n_features", "features", "max_constituents") if k not in ckpt]
    if missing:
        raise ValueError(f"'{path}' is not an rs3l encoder checkpoint: missing {missing}")
    if list(ckpt["features"]) != list(cfg["training"]["features"]):
        raise ValueError(f"encoder '{path}' was pre-trained on features {ckpt['features']}, but training.features "
                         f"is {cfg['training']['features']}; the scratch baseline must see the same inputs")
    if int(ckpt["max_constituents"]) != cfg["training"]["max_constituents"]:
        raise ValueError(f"encoder '{path}' was pre-trained with max_constituents {ckpt['max_constituents']}, but "
                         f"training.max_constituents is {cfg['training']['max_constituents']}; the scratch baseline "
                         f"must see the same inputs")
    return ckpt


def finetune(cfg: dict, data_dir, task_name: str, mode: str, fraction: float, out_dir, encoder_path=None) -> dict:
    """Run one arm; returns the metadata stored in ``model.pt`` (without the weights).

    All inputs are checked before any data is loaded or training starts.
    """
    import torch

    task = resolve_task(cfg, task_name)
    fraction = check_fraction(fraction)
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}'; known: {', '.join(MODES)}")
    from rs3l.training.data import check_classes, check_views, read_manifest

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    manifest = read_manifest(data_dir)
    check_classes(cfg["classes"], manifest)
    views = list(cfg["finetune"]["train_views"])
    check_views(views, manifest, "finetune.train_views")
    check_views(["nominal"], manifest, "validation (nominal view)")
    if mode == "scratch":
        if encoder_path:
            log.info("mode scratch: ignoring --encoder %s (random initialisation)", encoder_path)
        ckpt = None
        enc_name = cfg["pretrain"]["encoder"]
        features, max_p = list(cfg["training"]["features"]), cfg["training"]["max_constituents"]
    else:
        ckpt = _pretrained(encoder_path, cfg)
        enc_name, features, max_p = ckpt["encoder"], list(ckpt["features"]), int(ckpt["max_constituents"])
    from rs3l.models.encoders import encoder_params

    enc_params = dict(ckpt["encoder_params"]) if ckpt and "encoder_params" in ckpt else encoder_params(enc_name, cfg)
    method = f"{'supervised' if mode == 'scratch' else 'rs3l'}-{enc_name}"

    # --- model (built and loaded before the data: a checkpoint that does not fit fails at once)
    ft = cfg["finetune"]
    seed = derive_seed(cfg["seed"], "finetune", task.name, mode, repr(fraction))
    torch.manual_seed(seed)
    model = build_classifier(enc_name, enc_params, len(features), head_kind(mode), task.n_outputs, ft["head_hidden"])
    if ckpt is not None:
        try:
            model.encoder.load_state_dict(ckpt["state_dict"])
        except RuntimeError as exc:
            raise ValueError(f"'{encoder_path}' does not fit a {enc_name} encoder with hyper-parameters {enc_params} "
                             f"({str(exc).splitlines()[0]})") from exc

    # --- data and labels (same for every arm)
    train = load_task_split(data_dir, "train", task, cfg, features, max_p, views=views)
    val = load_task_split(data_dir, "val", task, cfg, features, max_p, views=["nominal"])
    for split, arr in (("train", train), ("val", val)):
        counts = _count_targets(task, arr["target"])
        empty = [k for k, n in counts.items() if n == 0]
        if empty:
            raise ValueError(f"task '{task.name}': no {split} jets for {', '.join(empty)} "
                             f"(classes {', '.join(task.classes)}) in {data_dir}")
    chosen = select_labels(cfg["seed"], task, fraction, train["jet_id"], train["target"])
    in_subset = np.isin(train["jet_id"], chosen)
    train = {k: v[in_subset] for k, v in train.items()}
    if cfg["finetune"]["max_val_jets"] and len(val["target"]) > cfg["finetune"]["max_val_jets"]:
        n_val = cfg["finetune"]["max_val_jets"]
        pick = np.sort(rng(cfg["seed"], "val", task.name).permutation(len(val["target"]))[:n_val])
        val = {k: v[pick] for k, v in val.items()}
    labels = {"task": task.name, "label_fraction": fraction, "n_labels": int(chosen.size),
              "n_train_rows": int(in_subset.sum()), "train_views": views,
              "per_class": _count_targets(task, train["target"][np.unique(train["jet_id"], return_index=True)[1]]),
              "jet_ids_sha256": ids_hash(chosen), "seed_path": ["labels", task.name, "<target class>"],
              "jet_ids": chosen.tolist()}
    write_text(out_dir / LABELS_FILE, json.dumps(labels, indent=1))

    dev = device(cfg)
    # each target class weighs the same in the loss (a 1:4 signal:background task otherwise learns "background")
    weights = class_weights(train["target"], len(task.target_names)) if ft["balance_classes"] else None

    def tensors(arr):
        return (torch.as_tensor(arr["x"], dtype=torch.float32), torch.as_tensor(arr["mask"], dtype=torch.bool),
                torch.as_tensor(arr["target"], dtype=torch.long))

    params = {"task": task.name, "mode": mode, "fraction": fraction, "encoder": enc_name, "method": method,
              "n_labels": int(chosen.size), "n_train_rows": int(in_subset.sum()), "n_val": len(val["target"]),
              "train_views": ",".join(views), "head": head_kind(mode), "epochs": ft["epochs"],
              "learning_rate": ft["learning_rate"], "balance_classes": ft["balance_classes"],
              "labels_sha256": labels["jet_ids_sha256"], "data_content_hash": manifest.get("content_hash", ""),
              "pretrained_config_hash": (ckpt or {}).get("config_hash", "")}
    import mlflow

    from rs3l.tracking import child_run

    with child_run(cfg, f"finetune-{task.name}-{mode}-{fraction:g}", "finetune", params) as run:
        if mode in FROZEN_MODES:
            for p in model.encoder.parameters():
                p.requires_grad_(False)
            bs = cfg["evaluate"]["batch_size"]
            z_train = predict(model.encoder, train["x"], train["mask"], bs, dev)
            z_val = predict(model.encoder, val["x"], val["mask"], bs, dev)
            keep = _fit(model.head, (torch.as_tensor(z_train), torch.as_tensor(train["target"], dtype=torch.long)),
                        (torch.as_tensor(z_val), torch.as_tensor(val["target"], dtype=torch.long)),
                        task.multiclass, cfg, seed, out_dir, weights)
        else:
            keep = _fit(model, tensors(train), tensors(val), task.multiclass, cfg, seed, out_dir, weights)
        mlflow.log_metrics({f"best_{k}": v for k, v in keep.best_metrics.items() if math.isfinite(v)})
        mlflow.log_metric("best_epoch", keep.best_epoch)
        meta = {"task": task.name, "task_def": asdict(task), "task_classes": list(task.classes),
                "multiclass": task.multiclass, "n_outputs": task.n_outputs, "mode": mode, "label_fraction": fraction,
                "method": method, "encoder": enc_name, "encoder_params": enc_params, "n_features": len(features),
                "features": features, "max_constituents": max_p, "latent_dim": model.encoder.latent_dim,
                "head": head_kind(mode), "head_hidden": ft["head_hidden"], "n_labels": int(chosen.size),
                "labels_sha256": labels["jet_ids_sha256"], "train_views": views,
                "pretrained_from": str(encoder_path) if ckpt is not None else None,
                "pretrained_config_hash": (ckpt or {}).get("config_hash"), "config_hash": config_hash(cfg),
                "data_content_hash": manifest.get("content_hash"), "best_epoch": keep.best_epoch,
                "val": keep.best_metrics, "mlflow_run_id": run.info.run_id}
        with atomic_path(out_dir / MODEL_FILE) as tmp:
            torch.save({"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, **meta}, tmp)
        mlflow.log_artifact(str(out_dir / LABELS_FILE))
    log.info("%s %s f=%g: %d labelled jets, best epoch %d, val %s -> %s", task.name, mode, fraction, chosen.size,
             keep.best_epoch, {k: round(v, 4) for k, v in keep.best_metrics.items()}, out_dir / MODEL_FILE)
    return meta


def main(cfg: dict, args) -> None:
    """``rs3l finetune``."""
    finetune(cfg, args.data, args.task, args.mode, args.fraction, args.out_dir, encoder_path=args.encoder)
