"""Reading the merged data folder written by ``rs3l merge``: ``manifest.json`` and its shards.

Light on imports (no torch), so every stage can use it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rs3l import schema, seeds

SPLITS = ("train", "val", "test")


def split_of_events(cfg: dict, process: str, chunk: int, events: np.ndarray) -> np.ndarray:
    """Split name per hard event (deterministic in the master seed and ``merge.splits``).

    The merge assigns jets with it; ``rs3l resimulate`` with ``simulation.view_splits`` uses it to
    simulate a view only for the events of some splits."""
    fr = cfg["merge"]["splits"]
    edges = np.cumsum([fr["train"], fr["val"]])
    # one hash per distinct event, not per row (an event has several jets and views)
    uniq, inverse = np.unique(np.asarray(events, dtype=np.int64), return_inverse=True)
    u = np.array([seeds.unit_hash(cfg["seed"], "split", process, chunk, int(e)) for e in uniq])
    return np.array(SPLITS, dtype=object)[np.searchsorted(edges, u, side="right")][inverse.reshape(-1)]


def read_manifest(data_dir) -> dict:
    """``<data_dir>/manifest.json``, checked for the fields training relies on."""
    path = Path(data_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; --data must be a folder written by `rs3l merge`")
    manifest = json.loads(path.read_text())
    version = manifest.get("schema_version")
    if version != schema.SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version!r}, expected {schema.SCHEMA_VERSION}")
    for key in ("splits", "views", "classes"):
        if key not in manifest:
            raise ValueError(f"{path}: no '{key}' entry; not a manifest written by `rs3l merge`")
    return manifest


def shard_paths(data_dir, split: str, manifest: dict | None = None) -> list[Path]:
    """The shards of ``split``, in manifest order; each must exist."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; known: {', '.join(SPLITS)}")
    manifest = manifest or read_manifest(data_dir)
    if split not in manifest["splits"]:
        raise ValueError(f"{data_dir}/manifest.json has no split '{split}'; splits: {', '.join(manifest['splits'])}")
    paths = [Path(data_dir) / s["path"] for s in manifest["splits"][split]["shards"]]
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"shard {p} listed in {data_dir}/manifest.json does not exist")
    return paths
