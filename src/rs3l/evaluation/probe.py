"""``rs3l probe``: the cheap arms, all in one process: frozen-encoder probes and the substructure baseline.

For every task, labelled set (``finetune.label_counts`` and ``label_fractions``) and repeat seed
(``evaluate.seeds``), on the labelled subset shared with the deep arms
(:func:`rs3l.evaluation.tasks.labelled_subset`):

- method ``rs3l-<encoder>`` (``rs3l-<encoder>-pool<jets>`` when pre-trained on a chosen pool,
  ``pretrain.pool``): the pre-trained encoder, frozen; modes ``linear`` (convex
  probe, :mod:`~rs3l.evaluation.linear_probe`) and ``knn`` (:mod:`~rs3l.evaluation.knn_probe`);
- method ``random-<encoder>``: the same probes on a randomly initialised encoder of the same
  architecture and hyper-parameters (a new initialisation per repeat seed): the control that
  shows what pre-training added (``evaluate.random_encoder``);
- method ``substructure-bdt``, mode ``baseline``: gradient-boosted trees on the jet's
  high-level observables (:mod:`~rs3l.evaluation.substructure_bdt`; ``evaluate.substructure_bdt``).

Embeddings are computed once per encoder (train rows of ``finetune.train_views``, nominal
val rows, every view of the test split) and reused by every task, fraction and seed.
Every arm is scored on every test view, giving the same record as ``rs3l evaluate``.

``only``: ``pretrained`` (the pre-trained encoder's probes only: one job per pool of a pool-size scan)
or ``baselines`` (the random encoder and the BDT only; the encoder file then only gives the
architecture), default both.

Writes ``--out`` (JSON list of records, atomic) and one MLflow child run ``probe`` whose
metrics are named ``<task>/<method>/<mode>/<labels>/<metric>`` (labels ``f0.1``, ``n300``) with the
repeat seed as step.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import numpy as np

from rs3l.atomic import write_text
from rs3l.evaluation import knn_probe, linear_probe, substructure_bdt
from rs3l.evaluation.evaluate import result, views_to_evaluate
from rs3l.evaluation.tasks import (check_task_data, label_sets, labelled_subset, parse_labels, resolve_task,
                                   task_targets, validation_subset)
from rs3l.models.classifier import device, predict, read_encoder_checkpoint
from rs3l.seeds import derive_seed

log = logging.getLogger(__name__)

PROBES = {"linear": linear_probe, "knn": knn_probe}


def _load(data_dir: Path, cfg: dict, features: list[str], max_p: int, manifest: dict) -> dict:
    """{split name: arrays}: ``train`` (train_views), ``val`` (nominal), ``test`` (every view)."""
    from rs3l.training.data import load_arrays

    return {"train": load_arrays(data_dir, "train", features, max_p, views=cfg["finetune"]["train_views"]),
            "val": load_arrays(data_dir, "val", features, max_p, views=["nominal"]),
            "test": load_arrays(data_dir, "test", features, max_p, views=views_to_evaluate(manifest))}


ONLY = ("pretrained", "baselines")


def encoders(cfg: dict, ckpt: dict, n_seeds: int, only: str | None = None):
    """(method, seed or None, encoder) for the pre-trained encoder and the random controls."""
    import torch

    from rs3l.models.encoders import build_encoder
    from rs3l.training.finetune import method_name

    name, params = ckpt["encoder"], dict(ckpt["encoder_params"])
    enc_cfg = {"encoders": {name: params}, "training": {"features": ckpt["features"]}}
    if only != "baselines":
        pre = build_encoder(name, enc_cfg, ckpt["n_features"])
        pre.load_state_dict(ckpt["state_dict"])
        yield method_name("full", name, ckpt.get("pool_jets") if ckpt.get("pool") is not None else None), None, pre
    if cfg["evaluate"]["random_encoder"] and only != "pretrained":
        for k in range(n_seeds):
            torch.manual_seed(derive_seed(cfg["seed"], "random-encoder", name, k))
            yield f"random-{name}", k, build_encoder(name, enc_cfg, ckpt["n_features"])


def _scores(model, X: np.ndarray, multiclass: bool) -> np.ndarray:
    p = model.predict_proba(X)
    return p if multiclass else p[:, 1]


def probe(cfg: dict, data_dir, encoder_path, out=None, only: str | None = None) -> list[dict]:
    """Run every probe and baseline arm (``only``: see the module docstring); returns (and writes to ``out``)
    the list of evaluation records."""
    from rs3l.training.data import check_classes, check_views, read_manifest

    if only is not None and only not in ONLY:
        raise ValueError(f"unknown --only '{only}'; known: {', '.join(ONLY)}")
    data_dir = Path(data_dir)
    tasks = [resolve_task(cfg, t) for t in cfg["finetune"]["tasks"]]
    manifest = read_manifest(data_dir)
    check_classes(cfg["classes"], manifest)
    check_views(cfg["finetune"]["train_views"], manifest, "finetune.train_views")
    check_views(["nominal"], manifest, "validation and robustness (nominal view)")
    ckpt = read_encoder_checkpoint(encoder_path, cfg)
    ev, classes = cfg["evaluate"], manifest["classes"]
    n_seeds, sets = ev["seeds"], label_sets(cfg)
    t0 = time.time()
    data = _load(data_dir, cfg, list(ckpt["features"]), int(ckpt["max_constituents"]), manifest)
    base = {"data_content_hash": manifest.get("content_hash"), "encoder": ckpt["encoder"],
            "pretrained_config_hash": ckpt.get("config_hash")}

    # per task: its rows of each split, the labelled subsets per (fraction, seed), the BDT features
    per_task = {}
    for task in tasks:
        rows = {}
        for split, arr in data.items():
            keep, target = task_targets(task, classes, arr["label"])
            rows[split] = {"index": np.flatnonzero(keep), "target": target[keep], "jet_id": arr["jet_id"][keep],
                           "view": arr["view"][keep], "label": arr["label"][keep]}
        check_task_data(task, {s: rows[s] for s in ("train", "val")}, data_dir)
        rows["val"] = validation_subset(cfg, task, rows["val"])
        subsets = {(t, k): labelled_subset(cfg, task, t, k, rows["train"]) for t in sets for k in range(n_seeds)}
        per_task[task.name] = (task, rows, subsets)

    records = []

    def arms(task, rows, subsets, method, mode, X: dict, fit, seed=None):
        """Fit ``fit`` on each (fraction, seed) subset of ``X`` (split -> task rows' features); score every test view."""
        for (token, k), (sub, info) in subsets.items():
            if seed is not None and k != seed:
                continue
            pick = np.searchsorted(rows["train"]["index"], sub["index"])
            model, fit_info = fit(X["train"][pick], sub["target"], X["val"], rows["val"]["target"], k)
            test = rows["test"]
            per_view = {}
            for view in views_to_evaluate(manifest):
                sel = test["view"] == view
                if sel.any():
                    per_view[view] = (test["target"][sel], _scores(model, X["test"][sel], task.multiclass),
                                      test["jet_id"][sel])
            fraction, count = parse_labels(token)
            identity = {"method": method, "mode": mode, "labels": token, "label_fraction": fraction,
                        "label_count": count, "seed": k, **base, "pretrain_pool_jets": ckpt.get("pool_jets"),
                        "n_labels": info["n_labels"], "labels_sha256": info["jet_ids_sha256"],
                        "training": {"converged": bool(fit_info.get("converged", True)), **fit_info}}
            records.append(result(cfg, task, identity, per_view))

    dev, bs = device(cfg), ev["batch_size"]
    for method, seed, encoder in encoders(cfg, ckpt, n_seeds, only):
        z = {s: predict(encoder, arr["x"], arr["mask"], bs, dev) for s, arr in data.items()}
        for task, rows, subsets in per_task.values():
            X = {s: z[s][rows[s]["index"]] for s in z}
            for mode in ev["probes"]:
                module = PROBES[mode]
                param = {"linear": {"Cs": ev["linear_probe_c"]}, "knn": {"ks": ev["knn_k"]}}[mode]
                arms(task, rows, subsets, method, mode, X,
                     lambda Xt, yt, Xv, yv, k, m=module, p=param: m.fit(Xt, yt, Xv, yv, **p), seed)
        log.info("probes on %s%s done (%.0f s)", method, "" if seed is None else f" (seed {seed})", time.time() - t0)
    if ev["substructure_bdt"] and only != "pretrained":
        hl = {s: substructure_bdt.features(arr) for s, arr in data.items()}
        for task, rows, subsets in per_task.values():
            X = {s: hl[s][rows[s]["index"]] for s in hl}
            arms(task, rows, subsets, "substructure-bdt", "baseline", X,
                 lambda Xt, yt, Xv, yv, k: substructure_bdt.fit(Xt, yt, Xv, yv,
                                                                seed=derive_seed(cfg["seed"], "bdt", k)))
        log.info("substructure BDT done (%.0f s)", time.time() - t0)
    if out is not None:
        write_text(out, json.dumps(records))
    _track(cfg, records, out)
    return records


def _track(cfg: dict, records: list[dict], out) -> None:
    import mlflow

    from rs3l.tracking import child_run

    params = {"seeds": cfg["evaluate"]["seeds"], "probes": ",".join(cfg["evaluate"]["probes"]),
              "random_encoder": cfg["evaluate"]["random_encoder"], "substructure_bdt": cfg["evaluate"]["substructure_bdt"],
              "bdt_features": ",".join(substructure_bdt.FEATURES)}
    with child_run(cfg, "probe", "probe", params):
        for r in records:
            key = f"{r['task']}/{r['method']}/{r['mode']}/{r['labels']}"
            m = {f"{key}/{k}": v for k, v in r["metrics"].items()
                 if isinstance(v, (int, float)) and v is not None and math.isfinite(v)}
            m.update({f"{key}/w1_{v}": rv["w1"] for v, rv in r["robustness"].items()})
            mlflow.log_metrics(m, step=r["seed"])
        if out is not None:
            mlflow.log_artifact(str(out))


def main(cfg: dict, args) -> None:
    """``rs3l probe``."""
    records = probe(cfg, args.data, args.encoder, args.out, args.only)
    log.info("%d probe and baseline records -> %s", len(records), args.out)
