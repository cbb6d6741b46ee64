"""Labelled tasks and their label subsets: the first step of every evaluation protocol.

A task names signal and background classes (``finetune.tasks``). For a label fraction f
and a repeat ``seed`` (0, 1, ... up to ``evaluate.seeds`` / ``finetune.seeds``), the
labelled jets are chosen per ``jet_id`` (all views of a jet together), stratified by
task class, from a permutation derived from (master seed, "labels", task, class, seed):

- every arm (probe, fine-tune, BDT) of a (task, fraction, seed) trains on exactly the
  same jets, so arms can be compared *paired*;
- the subset changes with the repeat seed: at 1% labels *which* jets are labelled is
  the largest source of variance, and the spread over seeds should show it;
- for one seed, smaller fractions are prefixes of the same permutation (nested subsets).

At fraction 1 every seed uses all jets; the seeds then differ only in initialisation
and batch order (deep arms) or not at all (deterministic probes).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from rs3l.seeds import rng


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


def select_labels(master_seed: int, task: Task, fraction: float, jet_id: np.ndarray, target: np.ndarray,
                  seed: int = 0) -> np.ndarray:
    """Sorted jet_ids of the labelled subset: ceil(fraction * n_c) jets of each target class c.

    The permutation depends only on (master seed, "labels", task, class, repeat ``seed``), never
    on the arm, and a smaller fraction takes a prefix of the same permutation, so subsets are
    nested. ``jet_id``, ``target`` (n,) may contain several views of a jet; each jet counts once.
    """
    check_fraction(fraction)
    ids, first = np.unique(np.asarray(jet_id, dtype=np.int64), return_index=True)
    tgt = np.asarray(target)[first]
    chosen = []
    for c in np.unique(tgt):
        pool = ids[tgt == c]  # sorted, so the permutation does not depend on the row order on disk
        perm = rng(master_seed, "labels", task.name, int(c), int(seed)).permutation(pool.size)
        n = max(1, math.ceil(fraction * pool.size - 1e-9))
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


def labelled_subset(cfg: dict, task: Task, fraction: float, seed: int, train: dict) -> tuple[dict, dict]:
    """(rows of ``train`` in the labelled subset, the subset's description for ``labels.json``)."""
    chosen = select_labels(cfg["seed"], task, fraction, train["jet_id"], train["target"], seed)
    in_subset = np.isin(train["jet_id"], chosen)
    sub = restrict(train, in_subset)
    first = np.unique(sub["jet_id"], return_index=True)[1]
    info = {"task": task.name, "label_fraction": fraction, "seed": int(seed), "n_labels": int(chosen.size),
            "n_train_rows": int(in_subset.sum()), "per_class": count_targets(task, sub["target"][first]),
            "jet_ids_sha256": ids_hash(chosen), "seed_path": ["labels", task.name, "<target class>", int(seed)],
            "jet_ids": chosen.tolist()}
    return sub, info


def validation_subset(cfg: dict, task: Task, val: dict) -> dict:
    """The val jets used for model selection: all of the task's, or ``finetune.max_val_jets`` of them."""
    n_val = cfg["finetune"]["max_val_jets"]
    if n_val and len(val["target"]) > n_val:
        return restrict(val, np.sort(rng(cfg["seed"], "val", task.name).permutation(len(val["target"]))[:n_val]))
    return val
