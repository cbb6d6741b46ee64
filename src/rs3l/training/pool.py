"""The pre-training pool: which train-split jets pre-training may see (``pretrain.pool``, ``pretrain.pools``).

SSL pays off, if at all, when the unlabelled pool is much larger than the labelled set. The pool
is its own axis: a count of jets (or a fraction of the train split's jets), drawn from one
permutation derived from the master seed, so that

- a smaller pool is a subset of a larger one (a prefix of the same permutation: nested), and
- the same config gives the same jets, on every rank and machine.

Only jets of classes that pre-training may use count (``pretrain.exclude_classes`` never enter).
The labelled sets of the evaluation are chosen independently of the pool (rs3l.evaluation.tasks).
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from rs3l.data.manifest import read_manifest, shard_paths
from rs3l.seeds import rng


def eligible_jets(data_dir, exclude_labels: tuple[int, ...] = ()) -> np.ndarray:
    """Sorted jet ids of the train split whose class pre-training may use (two small columns read)."""
    manifest = read_manifest(data_dir)
    ids = []
    for path in shard_paths(data_dir, "train", manifest):
        t = pq.read_table(path, columns=["jet_id", "label"])
        jet_id, label = t.column("jet_id").to_numpy(), t.column("label").to_numpy()
        ids.append(jet_id[~np.isin(label, exclude_labels)] if exclude_labels else jet_id)
    return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)


def pool_size(pool: float | None, available: int, key: str = "pretrain.pool") -> int:
    """Jets in a pool of ``pool`` (None: all; <= 1: a fraction; else a count) out of ``available``."""
    if pool is None:
        return available
    if pool <= 1:
        return max(1, int(round(pool * available)))
    if int(pool) > available:
        raise ValueError(f"{key} = {int(pool)} jets, but the train split holds only {available} jets that "
                         f"pre-training may use; lower it or simulate more events")
    return int(pool)


def pool_jet_ids(master_seed: int, eligible: np.ndarray, pool: float | None, key: str = "pretrain.pool") -> np.ndarray | None:
    """Sorted jet ids of the pool (None = every eligible jet): the first ``pool_size`` of a permutation
    of the sorted ``eligible`` ids derived from (master seed, "pretrain-pool")."""
    if pool is None:
        return None
    n = pool_size(pool, len(eligible), key)
    perm = rng(master_seed, "pretrain-pool").permutation(len(eligible))
    return np.sort(np.asarray(eligible, np.int64)[perm[:n]])


def excluded_labels(cfg: dict) -> tuple[int, ...]:
    """Label indices of ``pretrain.exclude_classes``."""
    return tuple(cfg["classes"].index(c) for c in cfg["pretrain"]["exclude_classes"])


def from_config(cfg: dict, data_dir) -> np.ndarray | None:
    """The pool of ``cfg["pretrain"]["pool"]`` in ``data_dir`` (None: the whole train split)."""
    pool = cfg["pretrain"]["pool"]
    if pool is None:
        return None
    return pool_jet_ids(cfg["seed"], eligible_jets(data_dir, excluded_labels(cfg)), pool)
