"""Synthetic re-simulation fragments, in exactly the format ``rs3l resimulate`` writes.

Built on :mod:`synthetic` (class-dependent jets, views that differ like re-simulations):
every (process, chunk, view instance) gets a fragment with the config's simulation hash in
its metadata, so ``rs3l merge`` accepts it. Some jets are missing in some views (as jets
that fall out of the pT window in one view), so the missing-view handling has work to do.

    from fragments import make_fragments
    paths = make_fragments(cfg, tmp_path / "fragments", events=50)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rs3l import schema
from rs3l.config import simulation_hash, view_instances
from synthetic import _jets, _view_table


def fragment_table(cfg: dict, process: str, chunk: int, view: str, replica: int, events: int,
                   jets_per_event: int = 2, missing: float = 0.1, seed: int = 0) -> pa.Table:
    """One fragment: ``events`` hard events with ``jets_per_event`` jets each (key: event, object);
    a fraction ``missing`` of the jets is absent in this view."""
    n = events * jets_per_event
    classes = cfg["classes"]
    # the jets of a (process, chunk) are the same in every view; the view's own draws differ
    jets = _jets(n, len(classes), np.random.default_rng([seed, chunk, len(process)]))
    rng = np.random.default_rng([seed, chunk, len(process), len(view), replica, 1])
    t = _view_table(jets, view, replica, np.arange(n, dtype=np.int64), "train", classes, rng)
    t = t.drop_columns(["jet_id", "split"])
    cols = {"process": pa.array([process] * n, pa.string()), "chunk": pa.array(np.full(n, chunk, np.int32)),
            "event": pa.array(np.arange(n, dtype=np.int32) // jets_per_event),
            "object": pa.array((np.arange(n) % jets_per_event).astype(np.int16))}
    for name, arr in cols.items():
        t = t.set_column(t.schema.get_field_index(name), name, arr)
    t = t.filter(pa.array(rng.random(n) >= missing))
    meta = {"simulation_hash": simulation_hash(cfg), "process": process, "chunk": chunk, "view": view,
            "replica": replica, "counts": "{}"}
    return pa.Table.from_arrays(t.columns, schema=schema.fragment_schema(meta))


def make_fragments(cfg: dict, out_dir, events: int = 20, jets_per_event: int = 2, missing: float = 0.1,
                   seed: int = 0, chunks: int | None = None) -> list[Path]:
    """Every fragment of ``cfg`` (processes x chunks x view instances; only the first ``chunks``
    chunks if given) under ``out_dir/<process>/chunk<c>/<view>.r<replica>.parquet``, in the workflow's order."""
    out, paths = Path(out_dir), []
    for process in cfg["simulation"]["processes"]:
        for chunk in range(cfg["simulation"]["chunks"] if chunks is None else chunks):
            for view, replica in view_instances(cfg):
                path = out / process / f"chunk{chunk}" / f"{view}.r{replica}.parquet"
                path.parent.mkdir(parents=True, exist_ok=True)
                t = fragment_table(cfg, process, chunk, view, replica, events, jets_per_event, missing, seed)
                pq.write_table(t, path, **schema.parquet_options(t.schema))
                paths.append(path)
    return paths
