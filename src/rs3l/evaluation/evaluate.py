"""``rs3l evaluate``: metrics of one fine-tuned model on the test split, per view, and its robustness.

Per view of the test split (jets of the task's classes only):
accuracy, ROC AUC (multi-class: macro one-vs-rest), background rejection 1/FPR at the
signal efficiencies ``evaluate.efficiencies`` (RS3L paper: 0.3, 0.5, 0.7), a ROC curve
on a fixed efficiency grid and score histograms for signal and background (small enough
for the JSON; ``rs3l report`` draws its plots from them).

Robustness, for each non-nominal view v: the Wasserstein-1 distance between the
score distributions on nominal and on v (all jets, and per class), and the shift of
the FPR at the threshold that gives ``evaluate.robustness_efficiency`` (0.5) signal
efficiency on nominal: FPR_v(t_nominal) - FPR_nominal(t_nominal). Each view is flagged
with whether it was used in pre-training (``pretrain.augment_views``): the others are
held out, the real test of robustness.

The score is the signal probability (sigmoid); for multi-class tasks the probability
of the first signal class, used for rejection, ROC, histograms and robustness.
Accuracy: score >= 0.5 (binary) or the most probable class (multi-class).

Writes ``--out`` (JSON, atomic): task, method (``rs3l-<encoder>`` for pre-trained arms,
``supervised-<encoder>`` for scratch), mode, label_fraction, ``metrics`` (nominal view),
``views`` (per view, with ``roc`` and ``score_hist``), ``robustness`` (per non-nominal view).
An infinite rejection (no background jet passes) is stored as null. Also an MLflow child run.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np

from rs3l.atomic import write_text
from rs3l.config import config_hash
from rs3l.evaluation import metrics
from rs3l.training.finetune import Task, load_model, predict, scores_from_logits, task_targets

log = logging.getLogger(__name__)


def eff_key(efficiency: float) -> str:
    """Suffix of metric names: 0.5 -> '0.5'."""
    return f"{efficiency:g}"


def view_metrics(target: np.ndarray, score: np.ndarray, multiclass: bool, cfg: dict) -> dict:
    """Metrics of one view. ``target`` (n,) task targets; ``score`` (n,) binary or (n, n_classes) multi-class.

    Signal = target 1 (binary) or target 0 = first signal class (multi-class).
    """
    ev = cfg["evaluate"]
    if multiclass:
        pred, is_sig, s = score.argmax(1), target == 0, score[:, 0]
    else:
        pred, is_sig, s = (score >= 0.5).astype(int), target == 1, score
    out = {"n_jets": int(target.size), "n_signal": int(is_sig.sum()), "n_background": int((~is_sig).sum()),
           "accuracy": metrics.accuracy(target, pred)}
    if 0 < is_sig.sum() < is_sig.size:
        out["auc"] = metrics.macro_auc_ovr(target, score) if multiclass else metrics.roc_auc(is_sig, s)
        if multiclass:
            out["auc_first_signal_vs_rest"] = metrics.roc_auc(is_sig, s)
        for e in ev["efficiencies"]:
            fpr = metrics.fpr_at_efficiency(is_sig, s, e)
            out[f"fpr_at_{eff_key(e)}"] = fpr
            out[f"rejection_at_{eff_key(e)}"] = math.inf if fpr == 0 else 1.0 / fpr
        out["roc"] = metrics.roc_points(is_sig, s, ev["roc_points"])
    else:
        log.warning("a view has only one class (%d jets): no AUC or rejection", target.size)
    hs, hb = metrics.score_histogram(s[is_sig], ev["score_bins"]), metrics.score_histogram(s[~is_sig], ev["score_bins"])
    out["score_hist"] = {"edges": hs["edges"], "signal": hs["counts"], "background": hb["counts"]}
    return out


def robustness(nominal: tuple[np.ndarray, np.ndarray], other: tuple[np.ndarray, np.ndarray], efficiency: float) -> dict:
    """Score-distribution shift of one view against nominal; each argument is (is_signal (n,), score (n,))."""
    (y0, s0), (y1, s1) = nominal, other
    out = {"w1": metrics.wasserstein1(s0, s1)}
    for name, sel0, sel1 in (("signal", y0, y1), ("background", ~y0, ~y1)):
        if sel0.any() and sel1.any():
            out[f"w1_{name}"] = metrics.wasserstein1(s0[sel0], s1[sel1])
    if 0 < y0.sum() < y0.size and 0 < y1.sum() < y1.size:
        t = metrics.threshold_at_efficiency(y0, s0, efficiency)
        fpr0, fpr1 = metrics.fpr_at_threshold(y0, s0, t), metrics.fpr_at_threshold(y1, s1, t)
        eff0, eff1 = metrics.efficiency_at_threshold(y0, s0, t), metrics.efficiency_at_threshold(y1, s1, t)
        k = eff_key(efficiency)
        out.update({"threshold": t, f"fpr_at_{k}_nominal_threshold": fpr1, f"fpr_shift_at_{k}": fpr1 - fpr0,
                    f"efficiency_at_{k}_nominal_threshold": eff1, f"efficiency_shift_at_{k}": eff1 - eff0})
    return out


def _finite(obj):
    """JSON-safe copy: numpy scalars to Python, non-finite floats (rejection with no background passing) to None."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def evaluate(cfg: dict, data_dir, model_dir, out=None) -> dict:
    """Evaluate ``<model_dir>/model.pt`` on every view of the test split; returns (and writes to ``out``) the result."""
    from rs3l.training.data import check_classes, check_views, load_arrays, read_manifest
    from rs3l.training.finetune import device

    model, meta = load_model(model_dir)
    manifest = read_manifest(data_dir)
    check_classes(cfg["classes"], manifest)
    check_views(["nominal"], manifest, "evaluation (robustness is measured against nominal)")
    classes = manifest["classes"]
    task = Task(meta["task_def"]["name"], tuple(meta["task_def"]["signal"]), tuple(meta["task_def"]["background"]),
                meta["task_def"]["multiclass"])
    missing = [c for c in task.classes if c not in classes]
    if missing:
        raise ValueError(f"task '{task.name}' needs classes {missing}, which the data does not have; "
                         f"classes: {', '.join(classes)}")
    views = ["nominal"] + [v for v in manifest["views"] if v != "nominal"]
    dev, bs = device(cfg), cfg["evaluate"]["batch_size"]
    model.to(dev)

    per_view, signal_scores = {}, {}
    for view in views:  # one view at a time: memory stays at one view of the test split
        arr = load_arrays(data_dir, "test", meta["features"], meta["max_constituents"], views=[view])
        keep, target = task_targets(task, classes, arr["label"])
        if not keep.any():
            log.warning("view %s: no test jets of the task's classes; skipped", view)
            continue
        x, mask = np.asarray(arr["x"])[keep], np.asarray(arr["mask"])[keep]
        score = scores_from_logits(predict(model, x, mask, bs, dev), task.multiclass)
        target = target[keep]
        per_view[view] = view_metrics(target, score, task.multiclass, cfg)
        s = score[:, 0] if task.multiclass else score
        signal_scores[view] = ((target == 0) if task.multiclass else (target == 1), s)
    if "nominal" not in per_view:
        raise ValueError(f"no nominal test jets of the classes of task '{task.name}' "
                         f"({', '.join(task.classes)}) in {data_dir}")

    aug, ev = cfg["pretrain"]["augment_views"], cfg["evaluate"]
    robust = {}
    for view in per_view:
        if view == "nominal":
            continue
        robust[view] = robustness(signal_scores["nominal"], signal_scores[view], ev["robustness_efficiency"])
        robust[view]["in_pretraining"] = view in aug
    nominal = {k: v for k, v in per_view["nominal"].items() if not isinstance(v, dict)}
    result = {
        "task": task.name, "method": meta["method"], "mode": meta["mode"], "label_fraction": meta["label_fraction"],
        "encoder": meta["encoder"], "n_labels": meta["n_labels"], "multiclass": task.multiclass,
        "task_classes": list(task.classes), "signal": list(task.signal), "background": list(task.background),
        "efficiencies": ev["efficiencies"], "robustness_efficiency": ev["robustness_efficiency"],
        "pretrain_augment_views": aug,  # what the pre-trained arms saw; the same for scratch, for comparison
        "held_out_views": [v for v in robust if v not in aug],
        "model_dir": str(model_dir), "labels_sha256": meta["labels_sha256"], "config_hash": config_hash(cfg),
        "data_content_hash": manifest.get("content_hash"),
        "metrics": nominal, "views": per_view, "robustness": robust,
    }
    result = _finite(result)
    if out is not None:
        write_text(out, json.dumps(result, indent=1))
    _track(cfg, result, out)
    log.info("%s %s %s f=%g: nominal %s", task.name, result["method"], result["mode"], result["label_fraction"],
             {k: (round(v, 4) if isinstance(v, float) else v) for k, v in nominal.items()})
    return result


def _track(cfg: dict, result: dict, out) -> None:
    import mlflow

    from rs3l.tracking import child_run

    params = {k: result[k] for k in ("task", "method", "mode", "label_fraction", "encoder", "n_labels", "model_dir")}
    name = f"evaluate-{result['task']}-{result['mode']}-{result['label_fraction']:g}"
    with child_run(cfg, name, "evaluate", params):
        m = {}
        for view, vm in result["views"].items():
            m.update({f"{view}_{k}": v for k, v in vm.items() if isinstance(v, (int, float)) and v is not None})
        for view, rm in result["robustness"].items():
            m.update({f"{k}_{view}" if k.startswith("w1") else f"{view}_{k}": v for k, v in rm.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None})
        mlflow.log_metrics(m)
        if out is not None:
            mlflow.log_artifact(str(out))


def main(cfg: dict, args) -> None:
    """``rs3l evaluate``."""
    evaluate(cfg, args.data, args.model_dir, args.out)
