"""``rs3l merge``: align the views of each jet into train/val/test Parquet shards + manifest.json.

Streaming: one (process, chunk) group of fragments is in memory at a time (all its
views), plus at most one shard per split, so memory does not grow with the number
of chunks. Views of a jet are joined on the key (process, chunk, event, object);
the split is decided per hard event, so no view of a jet (nor any jet of the same
event) leaks into another split. Jets missing in some view are dropped or kept
(config ``merge.missing_views``) and counted.

Shard layout: all rows (views) of a jet are contiguous, ordered by jet then view;
a row group holds ``merge.row_group_size`` whole jets; a shard ``merge.shard_size`` jets.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rs3l import schema, seeds
from rs3l.atomic import atomic_path, write_text
from rs3l.config import config_hash, simulation_hash, view_instances
from rs3l.data.manifest import SPLITS
from rs3l.progress import Progress

log = logging.getLogger(__name__)


def split_of_events(cfg: dict, process: str, chunk: int, events: np.ndarray) -> np.ndarray:
    """Split name per hard event (deterministic in the master seed)."""
    fr = cfg["merge"]["splits"]
    edges = np.cumsum([fr["train"], fr["val"]])
    u = np.array([seeds.unit_hash(cfg["seed"], "split", process, chunk, int(e)) for e in events])
    return np.array(SPLITS, dtype=object)[np.searchsorted(edges, u, side="right")]


def read_fragment(path: str | Path, cfg: dict) -> pa.Table:
    """Read a fragment, refusing it if its schema or simulation config hash differs from ours."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fragment '{path}' does not exist")
    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for broken files
        raise ValueError(f"fragment '{path}' is not a readable Parquet file ({exc})") from exc
    schema.check_schema(pf.schema_arrow, schema.fragment_schema(), f"fragment '{path}'")
    meta = schema.read_metadata(pf.schema_arrow)
    expected = simulation_hash(cfg)
    if meta.get("simulation_hash") != expected:
        raise ValueError(f"fragment '{path}' was simulated with a different configuration "
                         f"(simulation hash {meta.get('simulation_hash')}, this config {expected}); "
                         f"re-run its resimulate job (snakemake reruns it when the config changes)")
    return pf.read()


class ShardWriter:
    """Writes whole jets into shards of ``shard_size`` jets, row groups of ``row_group_size`` jets."""

    def __init__(self, out_dir: Path, split: str, cfg: dict, meta: dict):
        self.dir = out_dir / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.split, self.meta = split, meta
        self.shard_size, self.rg_size = cfg["merge"]["shard_size"], cfg["merge"]["row_group_size"]
        self.pending: list[pa.Table] = []  # whole jets, not yet written
        self.pending_jets = 0
        self.shards: list[dict] = []

    def add(self, table: pa.Table, n_jets: int) -> None:
        self.pending.append(table)
        self.pending_jets += n_jets
        while self.pending_jets >= self.shard_size:
            self._write(self.shard_size)

    def close(self) -> list[dict]:
        if self.pending_jets:
            self._write(self.pending_jets)
        return self.shards

    def _write(self, n_jets: int) -> None:
        table = pa.concat_tables(self.pending)
        jet_id = table.column("jet_id").to_numpy()
        starts = np.flatnonzero(np.concatenate([[True], jet_id[1:] != jet_id[:-1]]))
        cut = starts[n_jets] if n_jets < len(starts) else len(jet_id)
        shard, rest = table.slice(0, cut), table.slice(cut)
        self.pending = [rest] if rest.num_rows else []
        self.pending_jets -= n_jets
        sch = schema.merged_schema(self.meta)
        shard = pa.Table.from_arrays(shard.columns, schema=sch)
        name = f"part-{len(self.shards):05d}.parquet"
        path = self.dir / name
        with atomic_path(path) as tmp:
            with pq.ParquetWriter(tmp, sch, **schema.parquet_options(sch)) as writer:
                local = starts[starts < cut]
                bounds = list(local[:: self.rg_size]) + [cut]
                for a, b in zip(bounds[:-1], bounds[1:]):
                    writer.write_table(shard.slice(a, b - a), row_group_size=b - a)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.shards.append({"path": f"{self.split}/{name}", "jets": int(min(n_jets, len(starts))),
                            "rows": shard.num_rows, "sha256": digest})


def merge(cfg: dict, fragments: list[str | Path], out_dir: str | Path) -> dict:
    out_dir = Path(out_dir)
    for old in out_dir.glob("*/part-*.parquet"):
        old.unlink()  # a rerun replaces the whole dataset; the manifest is written last
    (out_dir / "manifest.json").unlink(missing_ok=True)
    instances = view_instances(cfg)
    view_rank = {vi: i for i, vi in enumerate(instances)}
    process_rank = {p: i for i, p in enumerate(cfg["simulation"]["processes"])}
    groups: dict[tuple[str, int], list[Path]] = defaultdict(list)
    for f in fragments:
        pf = pq.ParquetFile(f) if Path(f).exists() else None
        if pf is None:
            raise FileNotFoundError(f"fragment '{f}' does not exist")
        meta = schema.read_metadata(pf.schema_arrow)
        if "process" not in meta:
            raise ValueError(f"fragment '{f}' has no rs3l metadata; was it written by `rs3l resimulate`?")
        groups[(meta["process"], int(meta["chunk"]))].append(Path(f))
    meta = {"config_hash": config_hash(cfg), "simulation_hash": simulation_hash(cfg)}
    writers = {s: ShardWriter(out_dir, s, cfg, meta) for s in SPLITS}
    stats = {s: {"jets": 0, "rows": 0, "per_class": defaultdict(int), "per_view": defaultdict(int)} for s in SPLITS}
    dropped = {"jets_dropped_missing_views": 0, "jets_kept_with_missing_views": 0}
    next_id = 0
    progress = Progress(len(groups), "merge", unit="chunk")
    for process, chunk in sorted(groups, key=lambda k: (process_rank.get(k[0], 99), k[0], k[1])):
        tables = [read_fragment(f, cfg) for f in groups[(process, chunk)]]
        table = pa.concat_tables(tables)
        if table.num_rows == 0:
            progress.update(1)
            continue
        view = table.column("view").to_pylist()
        replica = table.column("replica").to_numpy()
        rank = np.array([view_rank.get((v, int(r)), len(instances)) for v, r in zip(view, replica)])
        event = table.column("event").to_numpy().astype(np.int64)
        obj = table.column("object").to_numpy().astype(np.int64)
        key = event * 10_000 + obj
        order = np.lexsort((rank, key))
        table, key, rank, event = table.take(order), key[order], rank[order], event[order]
        uniq, start, n_views = np.unique(key, return_index=True, return_counts=True)
        # a jet needs every view ("drop") or at least two, to form a positive pair ("keep")
        required = len(instances) if cfg["merge"]["missing_views"] == "drop" else min(2, len(instances))
        keep_jet = n_views >= required
        dropped["jets_dropped_missing_views"] += int(np.sum(~keep_jet))
        dropped["jets_kept_with_missing_views"] += int(np.sum(keep_jet & (n_views < len(instances))))
        keep_row = np.repeat(keep_jet, n_views)
        jet_ids = np.repeat(next_id + np.cumsum(keep_jet) - 1, n_views)
        next_id += int(keep_jet.sum())
        table = table.filter(pa.array(keep_row))
        jet_ids = jet_ids[keep_row]
        ev_kept = event[keep_row]
        split = split_of_events(cfg, process, chunk, ev_kept)
        table = table.append_column("jet_id", pa.array(jet_ids, pa.int64()))
        table = table.append_column("split", pa.array(split.tolist(), pa.string()))
        for s in SPLITS:
            mask = split == s
            if not mask.any():
                continue
            part = table.filter(pa.array(mask))
            n_jets = len(np.unique(jet_ids[mask]))
            writers[s].add(part, n_jets)
            st = stats[s]
            st["jets"] += n_jets
            st["rows"] += part.num_rows
            first = np.concatenate([[True], jet_ids[mask][1:] != jet_ids[mask][:-1]])
            for name, count in zip(*np.unique(np.array(part.column("label_name").to_pylist())[first], return_counts=True)):
                st["per_class"][str(name)] += int(count)
            for name, count in zip(*np.unique(np.array(part.column("view").to_pylist()), return_counts=True)):
                st["per_view"][str(name)] += int(count)
        progress.update(1)
    progress.close()
    manifest = {"schema_version": schema.SCHEMA_VERSION, **meta, "classes": cfg["classes"],
                "views": list(dict.fromkeys(v for v, _ in instances)),
                "view_instances": [[v, r] for v, r in instances], "dropped": dropped, "splits": {}}
    for s in SPLITS:
        shards = writers[s].close()
        manifest["splits"][s] = {"shards": shards, "jets": stats[s]["jets"], "rows": stats[s]["rows"],
                                 "per_class": dict(stats[s]["per_class"]), "per_view": dict(stats[s]["per_view"])}
    manifest["content_hash"] = hashlib.sha256(
        "".join(sh["sha256"] for s in SPLITS for sh in manifest["splits"][s]["shards"]).encode()).hexdigest()
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    log.info("merged %d jets (train %d, val %d, test %d); dropped %s", next_id, stats["train"]["jets"],
             stats["val"]["jets"], stats["test"]["jets"], dropped)
    return manifest


def main(cfg: dict, args) -> None:
    merge(cfg, args.fragments, args.out_dir)
