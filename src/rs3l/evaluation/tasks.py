"""Labelled tasks and their label subsets: the first step of every evaluation protocol.

A task names signal and background classes (``finetune.tasks``). A labelled set is given as a
fraction of the task's train jets (``finetune.label_fractions``) or as a number of jets
(``finetune.label_counts``); both are named by one *labels token*: ``f0.1`` (10%) or ``n300``
(300 jets). For a labelled set and a repeat ``seed`` (0, 1, ... up to ``evaluate.seeds`` /
``finetune.seeds``), the labelled jets are chosen per ``jet_id`` (all views of a jet together),
per target class, from a permutation derived from (master seed, "labels", task, class, seed):

- a fraction f takes ceil(f * n_c) jets of each target class c (the natural class mix);
- a count n takes ceil(n / k) jets of each of the task's k target classes (balanced; binary
  tasks: n/2 signal and n/2 background), or all of a class that has fewer (the record's
  ``n_labels`` and ``per_class`` say what was used). A count therefore means the same labelled
  set whatever the size of the data or of the pre-training pool;
- every arm (probe, fine-tune, BDT) of a (task, labelled set, seed) trains on exactly the
  same jets, so arms can be compared *paired*;
- the subset changes with the repeat seed: with few labels *which* jets are labelled is
  the largest source of variance, and the spread over seeds should show it;
- for one seed, smaller sets are prefixes of the same permutation (nested subsets), for
  fractions and counts alike.

At fraction 1 every seed uses all jets; the seeds then differ only in initialisation
and batch order (deep arms) or not at all (deterministic probes).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np

from rs3l.seeds import rng

log = logging.getLogger(__name__)


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

    @classmethod
    def from_dict(cls, d: dict) -> "Task":
        return cls(d["name"], tuple(d["signal"]), tuple(d["background"]), bool(d.get("multiclass", False)))


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


# ----------------------------------------------------------------------------- labelled sets

def labels_token(fraction: float | None = None, count: int | None = None) -> str:
    """The name of a labelled set: ``f<fraction>`` (``f0.1``) or ``n<count>`` (``n300``)."""
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of a label fraction and a label count")
    if count is not None:
        if int(count) != count or count < 1:
            raise ValueError(f"label count must be a positive integer; got {count}")
        return f"n{int(count)}"
    return f"f{check_fraction(fraction):g}"


def parse_labels(token: str) -> tuple[float | None, int | None]:
    """(fraction, count) of a labels token, one of them None: ``f0.1`` -> (0.1, None), ``n300`` -> (None, 300)."""
    token = str(token)
    try:
        if token.startswith("f"):
            return check_fraction(float(token[1:])), None
        if token.startswith("n") and int(token[1:]) >= 1:
            return None, int(token[1:])
    except ValueError:
        pass
    raise ValueError(f"labelled set '{token}' is neither f<fraction> (e.g. f0.1) nor n<count> (e.g. n300)")


def describe_labels(token: str) -> str:
    """'10%' or '300 jets': a labelled set in words."""
    fraction, count = parse_labels(token)
    return f"{count} jets" if count is not None else f"{100 * fraction:g}%"


def labels_order(token: str) -> tuple[int, float]:
    """Sort key: counts ascending, then fractions ascending."""
    fraction, count = parse_labels(token)
    return (0, float(count)) if count is not None else (1, fraction)


def label_sets(cfg: dict) -> list[str]:
    """The labelled sets every arm is trained on: ``finetune.label_counts`` then ``label_fractions``, as tokens."""
    ft = cfg["finetune"]
    tokens = [labels_token(count=n) for n in ft.get("label_counts", [])]
    tokens += [labels_token(fraction=f) for f in ft["label_fractions"]]
    return sorted(dict.fromkeys(tokens), key=labels_order)


def record_labels(record: dict) -> str:
    """The labels token of an evaluation record (records from before label counts have only ``label_fraction``)."""
    return record.get("labels") or labels_token(fraction=record["label_fraction"])


def check_seed(seed: int, n_seeds: int, key: str) -> int:
    seed = int(seed)
    if not 0 <= seed < n_seeds:
        raise ValueError(f"repeat seed must be in 0..{n_seeds - 1} ({key} = {n_seeds}); got {seed}")
    return seed


def task_targets(task: Task, classes: list[str], label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep, target) for integer ``label``s (indices into ``classes``).

    ``keep`` (n,) bool: the jet belongs to one of the task's classes (other jets are ignored);
    ``target`` (n,) int64: 0/1 (binary) or the index into ``task.classes`` (multi-class); -1 where not kept.
    """
    label = np.asarray(label, dtype=np.int64)
    lookup = np.full(len(classes), -1, dtype=np.int64)
    for i, c in enumerate(task.classes):
        lookup[classes.index(c)] = i if task.multiclass else int(c in task.signal)
    target = lookup[label]
    return target >= 0, target


def signal_of(task: Task, target: np.ndarray) -> np.ndarray:
    """Signal mask (n,): target 1 (binary) or target 0 = first signal class (multi-class)."""
    return (np.asarray(target) == 0) if task.multiclass else (np.asarray(target) == 1)


def select_labels(master_seed: int, task: Task, labels: float | str, jet_id: np.ndarray, target: np.ndarray,
                  seed: int = 0) -> np.ndarray:
    """Sorted jet_ids of the labelled subset ``labels`` (a labels token, or a fraction).

    A fraction takes ceil(fraction * n_c) jets of each target class c, a count ceil(count / k) of
    each of the k target classes (all of a smaller class). The permutation depends only on (master
    seed, "labels", task, class, repeat ``seed``), never on the arm, and a smaller set takes a prefix
    of the same permutation, so subsets are nested. ``jet_id``, ``target`` (n,) may contain several
    views of a jet; each jet counts once.
    """
    fraction, count = parse_labels(labels) if isinstance(labels, str) else (check_fraction(labels), None)
    ids, first = np.unique(np.asarray(jet_id, dtype=np.int64), return_index=True)
    tgt = np.asarray(target)[first]
    chosen = []
    per_class = None if count is None else math.ceil(count / len(task.target_names))
    for c in np.unique(tgt):
        pool = ids[tgt == c]  # sorted, so the permutation does not depend on the row order on disk
        perm = rng(master_seed, "labels", task.name, int(c), int(seed)).permutation(pool.size)
        n = max(1, math.ceil(fraction * pool.size - 1e-9)) if count is None else min(per_class, pool.size)
        chosen.append(pool[perm[:n]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def ids_hash(jet_ids: np.ndarray) -> str:
    """SHA-256 of the sorted jet ids: the fingerprint of a label subset, compared across arms."""
    return hashlib.sha256(np.sort(np.asarray(jet_ids, dtype=np.int64)).tobytes()).hexdigest()


def count_targets(task: Task, target: np.ndarray) -> dict:
    return {name: int(np.sum(target == i)) for i, name in enumerate(task.target_names)}


def restrict(arr: dict, keep: np.ndarray) -> dict:
    """Rows ``keep`` (bool or indices) of every per-row array in ``arr``."""
    n = len(arr["label"]) if "label" in arr else len(arr["target"])
    return {k: np.asarray(v)[keep] for k, v in arr.items() if hasattr(v, "__len__") and len(v) == n}


def load_task_split(data_dir, split: str, task: Task, classes: list[str], features: list[str],
                    max_constituents: int, views: list[str] | None = None) -> dict:
    """Arrays of ``split`` (:func:`rs3l.training.data.load_arrays`) restricted to the task's classes, plus ``target``.

    With no ``features`` only the jet columns are read (no constituent arrays): what the
    substructure baseline needs.
    """
    from rs3l.training.data import load_arrays

    arr = load_arrays(data_dir, split, features, max_constituents, views=views)
    keep, target = task_targets(task, classes, arr["label"])
    out = restrict(arr, keep)
    out["target"] = target[keep]
    return out


def check_task_data(task: Task, arrays: dict, data_dir) -> None:
    """Every target class of the task must have jets in every split given as {split: arrays}."""
    for split, arr in arrays.items():
        empty = [k for k, n in count_targets(task, arr["target"]).items() if n == 0]
        if empty:
            raise ValueError(f"task '{task.name}': no {split} jets for {', '.join(empty)} "
                             f"(classes {', '.join(task.classes)}) in {data_dir}")


def labelled_subset(cfg: dict, task: Task, labels: float | str, seed: int, train: dict) -> tuple[dict, dict]:
    """(rows of ``train`` in the labelled subset ``labels`` (token or fraction), the subset's
    description for ``labels.json``)."""
    token = labels if isinstance(labels, str) else labels_token(fraction=labels)
    fraction, count = parse_labels(token)
    chosen = select_labels(cfg["seed"], task, token, train["jet_id"], train["target"], seed)
    in_subset = np.isin(train["jet_id"], chosen)
    sub = restrict(train, in_subset)
    first = np.unique(sub["jet_id"], return_index=True)[1]
    per_class = count_targets(task, sub["target"][first])
    if count is not None and chosen.size < count:
        log.warning("task %s, %s: only %d labelled jets available (%s)", task.name, describe_labels(token),
                    chosen.size, per_class)
    info = {"task": task.name, "labels": token, "label_fraction": fraction, "label_count": count, "seed": int(seed),
            "n_labels": int(chosen.size), "n_train_rows": int(in_subset.sum()), "per_class": per_class,
            "jet_ids_sha256": ids_hash(chosen), "seed_path": ["labels", task.name, "<target class>", int(seed)],
            "jet_ids": chosen.tolist()}
    return sub, info


def validation_subset(cfg: dict, task: Task, val: dict) -> dict:
    """The val jets used for model selection: all of the task's, or ``finetune.max_val_jets`` of them."""
    n_val = cfg["finetune"]["max_val_jets"]
    if n_val and len(val["target"]) > n_val:
        return restrict(val, np.sort(rng(cfg["seed"], "val", task.name).permutation(len(val["target"]))[:n_val]))
    return val
