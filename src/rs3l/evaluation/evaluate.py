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
``supervised-<encoder>`` for scratch), mode, label_fraction, seed, ``training`` (best step,
converged), ``metrics`` (nominal view), ``views`` (per view, with ``roc`` and ``score_hist``),
``robustness`` (per non-nominal view) and ``test_scores`` (nominal score per test jet, for the
report's bootstrap). An infinite rejection (no background jet passes) is stored as null.
Also an MLflow child run. :func:`result` builds the same record for ``rs3l probe``.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np

from rs3l.atomic import write_text
from rs3l.config import config_hash
from rs3l.evaluation import metrics
from rs3l.evaluation.tasks import Task, describe_labels, load_task_split, record_labels, signal_of
from rs3l.models.classifier import device, load_model, predict, scores_from_logits

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


def result(cfg: dict, task: Task, identity: dict, per_view: dict) -> dict:
    """The evaluation record of one arm and repeat seed, from its test scores per view.

    ``identity``: task-independent fields of the arm (method, mode, label_fraction, seed,
    encoder, n_labels, labels_sha256, ...). ``per_view``: {view: (target (n,), score (n,) or
    (n, n_classes), jet_id (n,))} on the test jets of the task's classes; must hold ``nominal``.
    The record also keeps the nominal test scores per jet (``test_scores``) for the report's
    bootstrap and paired comparisons. Written by ``rs3l evaluate`` and ``rs3l probe`` alike.
    """
    if "nominal" not in per_view:
        raise ValueError(f"no nominal test jets of the classes of task '{task.name}' ({', '.join(task.classes)})")
    metrics_per_view, signal_scores = {}, {}
    for view, (target, score, _) in per_view.items():
        metrics_per_view[view] = view_metrics(target, score, task.multiclass, cfg)
        signal_scores[view] = (signal_of(task, target), score[:, 0] if task.multiclass else score)
    from rs3l.training.augment import base_views

    aug, ev = cfg["pretrain"]["augment_views"], cfg["evaluate"]
    seen = base_views(aug)  # the simulated views under 'seed+jetclr' etc.
    robust = {}
    for view in metrics_per_view:
        if view != "nominal":
            robust[view] = robustness(signal_scores["nominal"], signal_scores[view], ev["robustness_efficiency"])
            robust[view]["in_pretraining"] = view in seen
    target, _, jet_id = per_view["nominal"]
    nominal = {k: v for k, v in metrics_per_view["nominal"].items() if not isinstance(v, dict)}
    record = {
        "task": task.name, **identity, "multiclass": task.multiclass, "task_classes": list(task.classes),
        "signal": list(task.signal), "background": list(task.background),
        "efficiencies": ev["efficiencies"], "robustness_efficiency": ev["robustness_efficiency"],
        "pretrain_augment_views": aug,  # what the pre-trained arms saw; the same for the others, for comparison
        "held_out_views": [v for v in robust if v not in seen], "config_hash": config_hash(cfg),
        "metrics": nominal, "views": metrics_per_view, "robustness": robust,
        "test_scores": {"jet_id": np.asarray(jet_id).tolist(), "is_signal": signal_scores["nominal"][0].tolist(),
                        "score": np.round(signal_scores["nominal"][1].astype(np.float64), 7).tolist()},
    }
    return _finite(record)


#: Test arrays kept in memory for the next arms of a job up to this size; beyond it every arm reads one
#: view at a time again (a cluster-size test split at 15 views would need ~10 GB).
TEST_CACHE_BYTES = 2 * 1024**3


class TestViews:
    """The task's test jets per view (nominal first), read once and kept when they fit in
    :data:`TEST_CACHE_BYTES`, else read one view at a time on every pass. ``items()`` yields
    (view, arrays); views without jets of the task are left out."""

    def __init__(self, data_dir, task: Task, manifest: dict, features: list[str], max_constituents: int):
        self.args = (data_dir, task, manifest, features, max_constituents)
        rows = manifest["splits"].get("test", {}).get("rows", 0)
        self.cache: dict | None = {} if rows * max_constituents * (len(features) + 1) * 4 <= TEST_CACHE_BYTES else None

    def _load(self, view: str) -> dict:
        data_dir, task, manifest, features, max_p = self.args
        return load_task_split(data_dir, "test", task, manifest["classes"], features, max_p, views=[view])

    def items(self):
        for view in views_to_evaluate(self.args[2]):
            if self.cache is not None and view in self.cache:
                arr = self.cache[view]
            else:
                arr = self._load(view)
                if not len(arr["target"]):
                    log.warning("view %s: no test jets of the task's classes; skipped", view)
                if self.cache is not None:
                    self.cache[view] = arr
            if len(arr["target"]):
                yield view, arr


def evaluate_model(cfg: dict, model, meta: dict, test_views: TestViews, manifest: dict, model_dir, out=None) -> dict:
    """The evaluation record of a classifier (in eval mode) with its ``model.pt`` metadata ``meta`` on the
    test jets per view (:class:`TestViews`); written to ``out`` and logged to MLflow."""
    task = Task.from_dict(meta["task_def"])
    dev, bs = device(cfg), cfg["evaluate"]["batch_size"]
    model.to(dev)
    per_view = {view: (arr["target"], scores_from_logits(predict(model, arr["x"], arr["mask"], bs, dev),
                                                         task.multiclass), arr["jet_id"])
                for view, arr in test_views.items()}
    training = {k: v for k, v in meta.get("training", {}).items() if k != "history"}
    identity = {"method": meta["method"], "mode": meta["mode"], "labels": record_labels(meta),
                "label_fraction": meta["label_fraction"], "label_count": meta.get("label_count"),
                "seed": meta.get("seed", 0), "encoder": meta["encoder"], "n_labels": meta["n_labels"],
                "labels_sha256": meta["labels_sha256"], "pretrain_pool_jets": meta.get("pretrain_pool_jets"),
                "training": training, "model_dir": str(model_dir), "data_content_hash": manifest.get("content_hash")}
    res = result(cfg, task, identity, per_view)
    if out is not None:
        write_text(out, json.dumps(res))
    _track(cfg, res, out)
    log.info("%s %s %s %s seed %d: nominal %s", task.name, res["method"], res["mode"], describe_labels(res["labels"]),
             res["seed"], {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res["metrics"].items()})
    return res


def evaluate(cfg: dict, data_dir, model_dir, out=None) -> dict:
    """Evaluate ``<model_dir>/model.pt`` on every view of the test split; returns (and writes to ``out``) the result."""
    from rs3l.training.data import check_classes, check_views, read_manifest

    model, meta = load_model(model_dir)
    manifest = read_manifest(data_dir)
    check_classes(cfg["classes"], manifest)
    check_views(["nominal"], manifest, "evaluation (robustness is measured against nominal)")
    task = Task.from_dict(meta["task_def"])
    missing = [c for c in task.classes if c not in manifest["classes"]]
    if missing:
        raise ValueError(f"task '{task.name}' needs classes {missing}, which the data does not have; "
                         f"classes: {', '.join(manifest['classes'])}")
    test = TestViews(data_dir, task, manifest, meta["features"], meta["max_constituents"])
    return evaluate_model(cfg, model, meta, test, manifest, model_dir, out)


def views_to_evaluate(manifest: dict) -> list[str]:
    """Nominal first, then the other views of the data."""
    return ["nominal"] + [v for v in manifest["views"] if v != "nominal"]


def _track(cfg: dict, result: dict, out) -> None:
    import mlflow

    from rs3l.tracking import child_run

    params = {k: result.get(k) for k in ("task", "method", "mode", "labels", "label_fraction", "label_count", "seed",
                                         "encoder", "n_labels", "model_dir")}
    name = f"evaluate-{result['task']}-{result['method']}-{result['mode']}-{describe_labels(result['labels'])}-s{result['seed']}"
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
