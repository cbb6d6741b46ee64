"""The merge at scale: parallel parts hold exactly the single merge's jets, the final step reads
only the parts' JSON, and 50,000 fragments reach `rs3l merge` through a list file."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import VENV_BIN
from fragments import make_fragments
from rs3l import schema
from rs3l.data.fragment_list import write_fragment_list
from rs3l.data.manifest import SPLITS
from rs3l.data.merge import PART_SHIFT, finalize, merge, merge_part, part_manifest_path
from rs3l.plan import merge_parts
from synthetic import make_config

VIEWS = ["nominal", "seed", "fsr_up"]


def _cfg(tmp_path, chunks=3, **merge_cfg):
    return make_config(tmp_path / "r", views=VIEWS, simulation={"views": VIEWS, "processes": ["q", "top"], "chunks": chunks},
                       merge={"shard_size": 25, "row_group_size": 10, **merge_cfg})


def _split_table(out: Path, manifest: dict, split: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(out / s["path"]) for s in manifest["splits"][split]["shards"]])


def _dense(jet_id: np.ndarray) -> np.ndarray:
    """Jet ids renumbered 0, 1, 2, ... in order of appearance."""
    first = np.concatenate([[True], jet_id[1:] != jet_id[:-1]])
    return np.cumsum(first) - 1


def _merge_in_parts(cfg, paths, out):
    by_group = {}
    for p in paths:
        by_group.setdefault((p.parent.parent.name, int(p.parent.name[5:])), []).append(p)
    parts = merge_parts(cfg)
    for i, groups in enumerate(reversed(parts)):  # any order: parts are independent jobs
        merge_part(cfg, [f for g in groups for f in by_group[g]], out, part=len(parts) - 1 - i)
    return finalize(cfg, out, len(parts))


def test_parallel_parts_hold_exactly_the_single_merges_jets(tmp_path):
    cfg = _cfg(tmp_path, chunks_per_part=2)
    paths = make_fragments(cfg, tmp_path / "fragments", events=30, missing=0.15)
    single = merge(cfg, paths, tmp_path / "single")
    parted = _merge_in_parts(cfg, paths, tmp_path / "parted")
    assert parted["merge_parts"] == 3 and single["merge_parts"] == 1
    for key in ("dropped", "views", "view_instances", "simulation_hash"):
        assert parted[key] == single[key]
    assert single["dropped"]["jets_kept_with_missing_views"] > 0  # the missing-view handling had work
    for split in SPLITS:
        for key in ("jets", "rows", "per_class", "per_view"):
            assert parted["splits"][split][key] == single["splits"][split][key], (split, key)
        a, b = _split_table(tmp_path / "single", single, split), _split_table(tmp_path / "parted", parted, split)
        # the same rows in the same order; only the jet numbering (part << 40 | running number) differs
        ida, idb = a.column("jet_id").to_numpy(), b.column("jet_id").to_numpy()
        assert np.array_equal(_dense(ida), _dense(idb))
        assert len(np.unique(idb)) == len(np.unique(ida)) == parted["splits"][split]["jets"]
        assert set(np.unique(idb >> PART_SHIFT)) <= {0, 1, 2}
        # (view_parameter is NaN for views that draw nothing, and Arrow's equals() has NaN != NaN)
        assert a.drop_columns(["jet_id", "view_parameter"]).equals(b.drop_columns(["jet_id", "view_parameter"]))
        np.testing.assert_array_equal(a.column("view_parameter").to_numpy(), b.column("view_parameter").to_numpy())
    # shards of a part: whole jets, at most shard_size jets, and listed with their hashes
    for split in SPLITS:
        for shard in parted["splits"][split]["shards"]:
            assert shard["jets"] <= 25
            assert Path(tmp_path / "parted" / shard["path"]).name.startswith("part-0000")
    # deterministic: the same parts again give the same content hash
    again = _merge_in_parts(cfg, paths, tmp_path / "again")
    assert again["content_hash"] == parted["content_hash"] != single["content_hash"]


def test_one_part_writes_the_single_merge_and_reruns_clean_up(tmp_path):
    cfg = _cfg(tmp_path, chunks=2)  # 4 groups <= chunks_per_part (20): one part
    paths = make_fragments(cfg, tmp_path / "fragments", events=20)
    out = tmp_path / "data"
    (out / "train").mkdir(parents=True)
    stale = out / "train" / "part-00000.parquet"  # the single-merge layout of older versions
    stale.write_bytes(b"old")
    first = merge(cfg, paths, out)
    assert not stale.exists()
    listed = {out / s["path"] for sp in first["splits"].values() for s in sp["shards"]}
    assert set(out.glob("*/part-*.parquet")) == listed
    assert json.loads((out / "manifest.json").read_text())["content_hash"] == merge(cfg, paths, out)["content_hash"]


def test_finalize_refuses_missing_changed_or_overlapping_parts(tmp_path):
    cfg = _cfg(tmp_path, chunks_per_part=3)
    paths = make_fragments(cfg, tmp_path / "fragments", events=20)
    out = tmp_path / "data"
    half = len(paths) // 2
    merge_part(cfg, paths[:half], out, part=0)
    with pytest.raises(FileNotFoundError, match=r"part-00001.json does not exist; run `rs3l merge --part 1`"):
        finalize(cfg, out, 2)
    merge_part(cfg, paths[:half], out, part=1)  # the same chunks again
    with pytest.raises(ValueError, match="is in merge parts 0 and 1"):
        finalize(cfg, out, 2)
    merge_part(cfg, paths[half:], out, part=1)
    other = _cfg(tmp_path, chunks_per_part=3, shard_size=7)
    with pytest.raises(ValueError, match="part-00000.json was merged with another configuration"):
        finalize(other, out, 2)
    shard = out / json.loads(part_manifest_path(out, 0).read_text())["splits"]["train"]["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:-10])  # truncated after the part finished
    with pytest.raises(ValueError, match="is missing or has changed"):
        finalize(cfg, out, 2)
    assert not (out / "manifest.json").exists()


def test_duplicate_view_instance_is_refused_naming_both_files(tmp_path):
    cfg = _cfg(tmp_path, chunks=1)
    paths = make_fragments(cfg, tmp_path / "fragments", events=5)
    copy = tmp_path / "copy.parquet"
    copy.write_bytes(paths[0].read_bytes())
    with pytest.raises(ValueError, match=r"both hold view nominal replica 0 of q chunk 0"):
        merge(cfg, paths + [copy], tmp_path / "out")


# CI merges 10,000 fragments (already 7x Linux's 128 KiB per argument as paths); RS3L_FULL=1 the study's 50,000
CHUNKS = 2500 if os.environ.get("RS3L_FULL") == "1" else 500


@pytest.mark.slow
def test_merge_of_many_fragments_through_a_list_file(tmp_path):
    """50,000 paths (RS3L_FULL=1; 1.8 MB as arguments, over Linux's 128 KiB per argument at study-size paths),
    10,000 in CI: 2 processes x CHUNKS chunks x 10 views; a few chunks with jets, the rest tiny empty fragments."""
    views = VIEWS + [f"v{i}" for i in range(7)]
    cfg = make_config(tmp_path / "r", views=views, simulation={"views": views, "processes": ["q", "top"],
                                                               "chunks": CHUNKS})
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    full = make_fragments(cfg, tmp_path / "fragments", events=10, chunks=3)
    # the empty fragments: one template per view, only the chunk in the metadata differs
    templates = {}
    for p in full:
        t = pq.read_table(p).slice(0, 0)
        templates[(p.parent.parent.name, p.stem)] = (t, dict(t.schema.metadata))
    paths = list(full)
    for (process, stem), (t, meta) in templates.items():
        for chunk in range(3, CHUNKS):
            path = tmp_path / "fragments" / process / f"chunk{chunk}" / f"{stem}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(t.replace_schema_metadata({**meta, b"rs3l.chunk": str(chunk).encode()}), path,
                           **schema.parquet_options(t.schema))
            paths.append(path)
    assert len(paths) == 2 * CHUNKS * len(views)
    assert sum(len(str(p)) + 1 for p in paths) > 128 * 1024
    listing = tmp_path / "fragments.txt"
    write_fragment_list(listing, [str(p) for p in paths])
    res = subprocess.run([str(Path(VENV_BIN) / "rs3l"), "merge", "--config", str(cfg_path),
                          "--fragment-list", str(listing), "--out-dir", str(tmp_path / "data")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    reference = merge(cfg, full, tmp_path / "reference")
    assert sum(manifest["splits"][s]["jets"] for s in SPLITS) == sum(reference["splits"][s]["jets"] for s in SPLITS) > 0
