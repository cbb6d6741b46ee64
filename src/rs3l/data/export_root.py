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
    n_rows = 0
    with atomic_path(out) as tmp:
        with uproot.recreate(tmp) as f:
            for path in shard_paths(data_dir, split, manifest):
                pf = pq.ParquetFile(path)
                schema.check_schema(pf.schema_arrow, schema.merged_schema(), str(path))
                for i in range(pf.num_row_groups):
                    t = pf.read_row_group(i)
                    branches = {n: t.column(n).to_numpy() for n in scalars}
                    branches["process_code"] = np.array([processes.index(p) for p in t.column("process").to_pylist()], np.int16)
                    branches["view_code"] = np.array([views.index(v) for v in t.column("view").to_pylist()], np.int16)
                    counts = t.column("n_constituents").to_numpy()
                    parts = {n[len("part_"):]: ak.unflatten(t.column(n).combine_chunks().flatten().to_numpy(), counts)
                             for n in schema.PARTICLE_FEATURES}
                    branches["part"] = ak.zip(parts)
                    if "jets" not in f:
                        f.mktree("jets", {k: (v.type if isinstance(v, ak.Array) else v.dtype) for k, v in branches.items()},
                                 counter_name=lambda name: "n_part", title=title)
                    f["jets"].extend(branches)
                    n_rows += t.num_rows
    log.info("wrote %d rows of split %s to %s (TTree jets)", n_rows, split, out)
    return n_rows


def main(cfg: dict, args) -> None:
    export_root(cfg, args.data, args.split, args.out)
