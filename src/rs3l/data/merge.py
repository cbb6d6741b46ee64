"""``rs3l merge``: align the views of each jet into train/val/test Parquet shards + manifest.json.

Parallel in parts: the (process, chunk) groups of fragments are split into parts
(``merge.chunks_per_part`` groups each, in config order; ``rs3l.plan.merge_parts``);
each part is merged by its own job (``rs3l merge --part N``) into its own shards
``<split>/part-PPPPP-NNNNN.parquet`` plus a partial manifest ``parts/part-PPPPP.json``;
a cheap final step (``rs3l merge --finalize N``) reads only those small JSON files and
writes ``manifest.json``. Its wall time does not grow with the data; a part's does with
its own size only. Fragment paths reach a job as a file (``--fragment-list``), one path
a line: 31,500 paths do not fit on a command line.

Streaming: one (process, chunk) group of fragments is in memory at a time (all its
views), plus at most one shard per split, so memory does not grow with the number
of chunks. Views of a jet are joined on the key (process, chunk, event, object);
the split is decided per hard event, so no view of a jet (nor any jet of the same
event) leaks into another split. Jets missing in some view are dropped or kept
(config ``merge.missing_views``) and counted.

Shard layout: all rows (views) of a jet are contiguous, ordered by jet then view;
a row group holds ``merge.row_group_size`` whole jets; a shard ``merge.shard_size`` jets
(the last shard of each part and split may be smaller). ``jet_id`` = part × 2**40 + the
running number of the jet in its part, unique in the dataset. With one part the shards
are byte for byte those of the single merge before parts existed (same content hash).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rs3l import schema
from rs3l.atomic import atomic_path, write_text
from rs3l.config import config_hash, results_path, simulation_hash, view_instances
from rs3l.data.fragment_list import read_fragment_list
from rs3l.data.manifest import SPLITS, split_of_events
from rs3l.plan import merge_hash
from rs3l.progress import Progress

log = logging.getLogger(__name__)

#: jet_id = part << PART_SHIFT | running number in the part (2**40 jets per part, 2**23 parts)
PART_SHIFT = 40


def part_manifest_path(out_dir: str | Path, part: int) -> Path:
    """``<out_dir>/parts/part-PPPPP.json``: the partial manifest of merge part ``part``."""
    return Path(out_dir) / "parts" / f"part-{part:05d}.json"


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


def scan_fragments(fragments: list[str | Path], cfg: dict) -> dict[tuple[str, int], list[tuple[Path, int]]]:
    """Fragments by (process, chunk), each with its number of rows, from their footers only.

    Every fragment is checked (readable, schema, simulation hash, one fragment per view instance)
    before anything is written, so a bad fragment fails the job at once, naming the file."""
    expected_schema, expected_hash = schema.fragment_schema(), simulation_hash(cfg)
    groups: dict[tuple[str, int], list[tuple[Path, int]]] = defaultdict(list)
    seen: dict[tuple, Path] = {}
    for f in map(Path, fragments):
        if not f.exists():
            raise FileNotFoundError(f"fragment '{f}' does not exist")
        try:
            footer = pq.read_metadata(f)
            sch = footer.schema.to_arrow_schema()
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for broken files
            raise ValueError(f"fragment '{f}' is not a readable Parquet file ({exc})") from exc
        meta = schema.read_metadata(sch)
        if "process" not in meta:
            raise ValueError(f"fragment '{f}' has no rs3l metadata; was it written by `rs3l resimulate`?")
        schema.check_schema(sch, expected_schema, f"fragment '{f}'")
        if meta.get("simulation_hash") != expected_hash:
            raise ValueError(f"fragment '{f}' was simulated with a different configuration "
                             f"(simulation hash {meta.get('simulation_hash')}, this config {expected_hash}); "
                             f"re-run its resimulate job (snakemake reruns it when the config changes)")
        key = (meta["process"], int(meta["chunk"]))
        instance = (*key, meta.get("view"), meta.get("replica", "0"))
        if instance in seen:
            raise ValueError(f"fragments '{seen[instance]}' and '{f}' both hold view {instance[2]} replica "
                             f"{instance[3]} of {key[0]} chunk {key[1]}; each view instance may be merged once")
        seen[instance] = f
        groups[key].append((f, footer.num_rows))
    return groups


class ShardWriter:
    """Writes whole jets into shards of ``shard_size`` jets, row groups of ``row_group_size`` jets."""

    def __init__(self, out_dir: Path, split: str, cfg: dict, meta: dict, prefix: str = "part-"):
        self.dir = out_dir / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.split, self.meta, self.prefix = split, meta, prefix
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
        name = f"{self.prefix}{len(self.shards):05d}.parquet"
        path = self.dir / name
        with atomic_path(path) as tmp:
            with pq.ParquetWriter(tmp, sch, **schema.parquet_options(sch)) as writer:
                local = starts[starts < cut]
                bounds = list(local[:: self.rg_size]) + [cut]
                for a, b in zip(bounds[:-1], bounds[1:]):
                    writer.write_table(shard.slice(a, b - a), row_group_size=b - a)
        data = path.read_bytes()
        self.shards.append({"path": f"{self.split}/{name}", "jets": int(min(n_jets, len(starts))),
                            "rows": shard.num_rows, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def _view_rank(table: pa.Table, instances: list[tuple[str, int]]) -> np.ndarray:
    """Position of each row's (view, replica) in the config's view instances (columnar)."""
    enc = pc.dictionary_encode(table.column("view")).combine_chunks()
    names = enc.dictionary.to_pylist()
    code = enc.indices.to_numpy().astype(np.int64) * 65536 + table.column("replica").to_numpy().astype(np.int64)
    uniq, inverse = np.unique(code, return_inverse=True)
    rank_of = {vi: i for i, vi in enumerate(instances)}
    ranks = np.array([rank_of.get((names[c // 65536], int(c % 65536)), len(instances)) for c in uniq], np.int64)
    return ranks[inverse.reshape(-1)]


def _value_counts(column) -> dict[str, int]:
    return {str(d["values"]): int(d["counts"]) for d in pc.value_counts(column).to_pylist()}


def merge_part(cfg: dict, fragments: list[str | Path], out_dir: str | Path, part: int = 0) -> dict:
    """Merge ``fragments`` as part ``part``: shards ``<split>/part-PPPPP-NNNNN.parquet`` and the
    partial manifest ``parts/part-PPPPP.json`` (returned); ``manifest.json`` is left to :func:`finalize`."""
    out_dir = Path(out_dir)
    prefix = f"part-{part:05d}-"
    for old in out_dir.glob(f"*/{prefix}*.parquet"):
        old.unlink()  # a rerun replaces the part; the dataset is complete only once finalize ran
    (out_dir / "manifest.json").unlink(missing_ok=True)
    part_manifest_path(out_dir, part).unlink(missing_ok=True)
    instances = view_instances(cfg)
    process_rank = {p: i for i, p in enumerate(cfg["simulation"]["processes"])}
    groups = scan_fragments(fragments, cfg)
    # what decides the shards' content (not the whole config: a training setting must not change
    # the data's bytes and so its content hash, the dataset lineage that training logs)
    meta = {"simulation_hash": simulation_hash(cfg), "merge_hash": merge_hash(cfg)}
    writers = {s: ShardWriter(out_dir, s, cfg, meta, prefix=prefix) for s in SPLITS}
    stats = {s: {"jets": 0, "rows": 0, "per_class": defaultdict(int), "per_view": defaultdict(int)} for s in SPLITS}
    dropped = {"jets_dropped_missing_views": 0, "jets_kept_with_missing_views": 0}
    # a jet needs every view ("drop") or at least two, to form a positive pair ("keep")
    required = len(instances) if cfg["merge"]["missing_views"] == "drop" else min(2, len(instances))
    base = part << PART_SHIFT
    next_id = 0
    order_of_groups = sorted(groups, key=lambda k: (process_rank.get(k[0], 99), k[0], k[1]))
    progress = Progress(len(groups), f"merge part {part}", unit="chunk")
    for process, chunk in order_of_groups:
        # checked by scan_fragments; fragments without jets are not opened again
        tables = [pq.ParquetFile(f).read() for f, rows in groups[(process, chunk)] if rows]
        table = pa.concat_tables(tables) if tables else None
        if table is None or table.num_rows == 0:
            progress.update(1)
            continue
        rank = _view_rank(table, instances)
        event = table.column("event").to_numpy().astype(np.int64)
        obj = table.column("object").to_numpy().astype(np.int64)
        key = event * 10_000 + obj
        order = np.lexsort((rank, key))
        table, key, event = table.take(order), key[order], event[order]
        _, n_views = np.unique(key, return_counts=True)
        keep_jet = n_views >= required
        dropped["jets_dropped_missing_views"] += int(np.sum(~keep_jet))
        dropped["jets_kept_with_missing_views"] += int(np.sum(keep_jet & (n_views < len(instances))))
        keep_row = np.repeat(keep_jet, n_views)
        jet_ids = base + np.repeat(next_id + np.cumsum(keep_jet) - 1, n_views)
        next_id += int(keep_jet.sum())
        table = table.filter(pa.array(keep_row))
        jet_ids = jet_ids[keep_row]
        split = split_of_events(cfg, process, chunk, event[keep_row])
        table = table.append_column("jet_id", pa.array(jet_ids, pa.int64()))
        table = table.append_column("split", pa.array(split.tolist(), pa.string()))
        for s in SPLITS:
            mask = split == s
            if not mask.any():
                continue
            part_table = table.filter(pa.array(mask))
            ids = jet_ids[mask]
            first = np.concatenate([[True], ids[1:] != ids[:-1]])
            n_jets = int(first.sum())
            writers[s].add(part_table, n_jets)
            st = stats[s]
            st["jets"] += n_jets
            st["rows"] += part_table.num_rows
            for name, count in _value_counts(part_table.column("label_name").filter(pa.array(first))).items():
                st["per_class"][name] += count
            for name, count in _value_counts(part_table.column("view")).items():
                st["per_view"][name] += count
        progress.update(1)
    progress.close()
    result = {"part": part, **meta, "merge_hash": merge_hash(cfg), "jets": next_id,
              "groups": [[p, c] for p, c in order_of_groups], "dropped": dropped, "splits": {}}
    for s in SPLITS:
        result["splits"][s] = {"shards": writers[s].close(), "jets": stats[s]["jets"], "rows": stats[s]["rows"],
                               "per_class": dict(stats[s]["per_class"]), "per_view": dict(stats[s]["per_view"])}
    # written last: a part without its JSON is incomplete, whatever shards it left
    write_text(part_manifest_path(out_dir, part), json.dumps(result, indent=1, sort_keys=True))
    log.info("merge part %d: %d jets from %d chunks (train %d, val %d, test %d); dropped %s", part, next_id,
             len(groups), stats["train"]["jets"], stats["val"]["jets"], stats["test"]["jets"], dropped)
    return result


def _read_part(cfg: dict, out_dir: Path, part: int) -> dict:
    path = part_manifest_path(out_dir, part)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run `rs3l merge --part {part}` first")
    info = json.loads(path.read_text())
    if info.get("simulation_hash") != simulation_hash(cfg) or info.get("merge_hash") != merge_hash(cfg):
        raise ValueError(f"{path} was merged with another configuration (simulation or merge settings differ); "
                         f"re-run `rs3l merge --part {part}` (snakemake reruns it when the config changes)")
    for s in SPLITS:
        for shard in info["splits"][s]["shards"]:
            p = out_dir / shard["path"]
            if not p.exists() or p.stat().st_size != shard["bytes"]:
                raise ValueError(f"shard {p} listed in {path} is missing or has changed; re-run `rs3l merge --part {part}`")
    return info


def finalize(cfg: dict, out_dir: str | Path, n_parts: int) -> dict:
    """Write ``manifest.json`` from the partial manifests of parts 0 .. n_parts-1 (small JSON files;
    no shard is read). Shards of other parts or older layouts left in ``out_dir`` are deleted."""
    out_dir = Path(out_dir)
    (out_dir / "manifest.json").unlink(missing_ok=True)
    parts = [_read_part(cfg, out_dir, p) for p in range(n_parts)]
    owner: dict[tuple, int] = {}
    for info in parts:
        for g in map(tuple, info["groups"]):
            if g in owner:
                raise ValueError(f"{g[0]} chunk {g[1]} is in merge parts {owner[g]} and {info['part']}; "
                                 f"its jets would be counted twice")
            owner[g] = info["part"]
    instances = view_instances(cfg)
    manifest = {"schema_version": schema.SCHEMA_VERSION, "config_hash": config_hash(cfg),
                "simulation_hash": simulation_hash(cfg), "classes": cfg["classes"],
                "views": list(dict.fromkeys(v for v, _ in instances)),
                "view_instances": [[v, r] for v, r in instances], "merge_parts": n_parts,
                "dropped": {k: sum(info["dropped"][k] for info in parts) for k in parts[0]["dropped"]} if parts else
                {"jets_dropped_missing_views": 0, "jets_kept_with_missing_views": 0},
                "splits": {}}
    for s in SPLITS:
        per_class, per_view = defaultdict(int), defaultdict(int)
        for info in parts:
            for k, v in info["splits"][s]["per_class"].items():
                per_class[k] += v
            for k, v in info["splits"][s]["per_view"].items():
                per_view[k] += v
        shards = [{k: sh[k] for k in ("path", "jets", "rows", "sha256")} for info in parts for sh in info["splits"][s]["shards"]]
        manifest["splits"][s] = {"shards": shards, "jets": sum(info["splits"][s]["jets"] for info in parts),
                                 "rows": sum(info["splits"][s]["rows"] for info in parts),
                                 "per_class": dict(per_class), "per_view": dict(per_view)}
    manifest["lhe_sources"] = lhe_sources(cfg)
    manifest["content_hash"] = hashlib.sha256(
        "".join(sh["sha256"] for s in SPLITS for sh in manifest["splits"][s]["shards"]).encode()).hexdigest()
    listed = {out_dir / sh["path"] for s in SPLITS for sh in manifest["splits"][s]["shards"]}
    for old in out_dir.glob("*/part-*.parquet"):
        if old not in listed:
            old.unlink()  # from another number of parts, or the single-merge layout of older versions
    write_text(out_dir / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
    log.info("merged %d jets in %d parts (train %d, val %d, test %d); dropped %s",
             sum(manifest["splits"][s]["jets"] for s in SPLITS), n_parts, manifest["splits"]["train"]["jets"],
             manifest["splits"]["val"]["jets"], manifest["splits"]["test"]["jets"], manifest["dropped"])
    return manifest


def lhe_sources(cfg: dict) -> dict:
    """{process: the record `rs3l split-lhe` wrote} for the simulated `lhe` processes (source files with
    sha256, event range and weights of each chunk); empty when all processes are generated by Pythia."""
    from rs3l.physics.lhe_input import RECORD, is_lhe, read_record

    return {p: read_record(results_path(cfg, "lhe", p, RECORD))
            for p in cfg["simulation"]["processes"] if is_lhe(cfg["processes"][p])}


def merge(cfg: dict, fragments: list[str | Path], out_dir: str | Path) -> dict:
    """The whole merge in one process: ``fragments`` as part 0, then the manifest."""
    merge_part(cfg, fragments, out_dir, part=0)
    return finalize(cfg, out_dir, 1)


def main(cfg: dict, args) -> None:
    if args.finalize is not None:
        if args.fragments or args.fragment_list:
            raise ValueError("--finalize reads the parts' JSON files; it takes no --fragments or --fragment-list")
        finalize(cfg, args.out_dir, args.finalize)
        return
    if bool(args.fragments) == bool(args.fragment_list):
        raise ValueError("give the fragments either as --fragment-list FILE (one path a line) or as --fragments")
    fragments = read_fragment_list(args.fragment_list) if args.fragment_list else args.fragments
    if args.part is None:
        merge(cfg, fragments, args.out_dir)
    else:
        merge_part(cfg, fragments, args.out_dir, part=args.part)
