"""``rs3l export-root``: merged shards of one split as a ROOT TTree ``jets`` (uproot).

Scalar columns become flat branches, per-constituent columns jagged branches
(``n_constituents`` counts them). String columns are written as integer codes
(``process_code``, ``view_code``, ``label``) whose names are stored in the
file as the TTree title and in ``manifest.json``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import awkward as ak
import numpy as np
import pyarrow.parquet as pq
import uproot

from rs3l import schema
from rs3l.atomic import atomic_path
from rs3l.data.manifest import read_manifest, shard_paths

log = logging.getLogger(__name__)


def export_root(cfg: dict, data_dir: str | Path, split: str, out: str | Path) -> int:
    manifest = read_manifest(data_dir)
    if split not in manifest["splits"]:
        raise ValueError(f"unknown split '{split}'; known: {', '.join(manifest['splits'])}")
    processes = list(cfg["processes"])
    views = manifest["views"]
    title = json.dumps({"process_code": processes, "view_code": views, "label": manifest["classes"]})
    scalars = [n for n, *_ in schema.KEY_COLUMNS + schema.JET_COLUMNS + schema.MERGED_EXTRA_COLUMNS
               if n not in ("process", "split")] + ["replica", "label"]

    def batches():
        for t in row_groups(data_dir, split, manifest):
            branches = {n: t.column(n).to_numpy() for n in scalars}
            branches["process_code"] = np.array([processes.index(p) for p in t.column("process").to_pylist()], np.int16)
            branches["view_code"] = np.array([views.index(v) for v in t.column("view").to_pylist()], np.int16)
            counts = t.column("n_constituents").to_numpy()
            branches["part"] = ak.zip({n[len("part_"):]: ak.unflatten(t.column(n).combine_chunks().flatten().to_numpy(), counts)
                                       for n in schema.PARTICLE_FEATURES})
            yield branches

    n_rows = write_tree(out, "jets", batches(), title=title)
    log.info("wrote %d rows of split %s to %s (TTree jets)", n_rows, split, out)
    return n_rows


def row_groups(data_dir, split: str, manifest: dict):
    """The row groups (pyarrow Tables) of the merged shards of ``split``, each shard checked against the schema."""
    for path in shard_paths(data_dir, split, manifest):
        pf = pq.ParquetFile(path)
        schema.check_schema(pf.schema_arrow, schema.merged_schema(), str(path))
        for i in range(pf.num_row_groups):
            yield pf.read_row_group(i)


def write_tree(out: str | Path, name: str, batches, title: str = "", counter: str = "n_part") -> int:
    """Write a ROOT file (atomically) with one TTree ``name`` filled from ``batches``; returns its entries.

    Each batch is a dict: branch name -> numpy array (one value per entry), or a record of jagged
    arrays (``ak.zip`` of equal-length lists; field ``x`` of record ``r`` becomes branch ``r_x``,
    all of them counted by the one branch ``counter``). The branch types are the first batch's.
    """
    n_entries = 0
    with atomic_path(out) as tmp:
        with uproot.recreate(tmp) as f:
            for branches in batches:
                if name not in f:
                    f.mktree(name, {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in branches.items()},
                             counter_name=lambda _: counter, title=title)
                f[name].extend(branches)
                n_entries += len(next(iter(branches.values())))
    return n_entries


def main(cfg: dict, args) -> None:
    export_root(cfg, args.data, args.split, args.out)
