"""The Snakemake pipeline: dry run, lint, schema errors before any job, the smoke run end to end,
reruns that resume, and merge refusing fragments that do not belong to the config."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from conftest import REPO, VENV_BIN, snakemake
from rs3l import config, schema
from rs3l.resolve import load, resolve
from rs3l.data.merge import merge, read_fragment


def test_dry_run_and_lint_pass_on_the_default_config(tmp_path):
    res = snakemake("-n", results_dir=tmp_path / "r", configfile="config/config.yaml")
    assert "resimulate" in res.stdout and "pretrain" in res.stdout
    lint = subprocess.run([str(Path(VENV_BIN) / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "Congratulations" in lint.stdout + lint.stderr


@pytest.mark.parametrize("patch, message", [
    ({"simulation": {"events_per_chunk": -10}}, "simulation.events_per_chunk"),
    ({"simulation": {"views": ["nominal", "fsr_upp"]}}, "unknown view 'fsr_upp'"),
    ({"processes": {"top": {"labelling": {"kind": "resonance"}}}}, "processes.top: give exactly one of 'settings'"),
])
def test_invalid_config_fails_before_any_job_naming_the_key(tmp_path, patch, message):
    bad = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    for key, value in patch.items():
        bad.setdefault(key, {}).update(value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    res = snakemake("-n", results_dir=tmp_path / "r", configfile=str(path), check=False)
    assert res.returncode != 0
    assert message in res.stdout + res.stderr
    assert not (tmp_path / "r").exists()


def test_smoke_workflow_runs_end_to_end(smoke_run):
    results = smoke_run["results"]
    cfg = load(results / "config.yaml")
    manifest = json.loads((results / "data" / "manifest.json").read_text())
    assert manifest["simulation_hash"] == config.simulation_hash(cfg)
    # fan-out: processes x chunks x view instances fragments, one LHE per (process, chunk)
    assert len(list((results / "fragments").rglob("*.parquet"))) == 2 * 1 * 3
    assert len(list((results / "lhe").rglob("*.lhe.gz"))) == 2
    total = sum(manifest["splits"][s]["jets"] for s in ("train", "val", "test"))
    assert total > 20 and manifest["splits"]["train"]["jets"] > 0
    # shards: whole jets, the views of one jet adjacent, every jet in exactly one split
    seen = {}
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            pf = pq.ParquetFile(results / "data" / shard["path"])
            schema.check_schema(pf.schema_arrow, schema.merged_schema(), shard["path"])
            for i in range(pf.num_row_groups):
                t = pf.read_row_group(i, columns=["jet_id", "split", "process", "event", "view"]).to_pandas()
                assert (t.split == split).all()
                for jet_id, group in t.groupby("jet_id", sort=False):
                    assert jet_id not in seen, "a jet is split across row groups or splits"
                    seen[jet_id] = split
                    assert group.view.is_unique and len(group) >= 2
    # no hard event contributes jets to two splits
    events = {}
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            t = pq.read_table(results / "data" / shard["path"], columns=["process", "chunk", "event"]).to_pandas()
            for key in set(map(tuple, t.itertuples(index=False))):
                assert events.setdefault(key, split) == split
    # the ROOT export reads back with uproot
    import uproot

    tree = uproot.open(results / "data" / "test.root")["jets"]
    assert tree.num_entries == manifest["splits"]["test"]["rows"]
    assert len(tree["part_deta"].array()) == tree.num_entries
    # logs and benchmarks of every job
    assert list((results / "logs" / "resimulate").glob("*.log"))
    assert list((results / "benchmarks" / "resimulate").glob("*.tsv"))


def test_rerunning_a_finished_workflow_does_nothing(smoke_run):
    res = snakemake("-n", results_dir=smoke_run["results"])
    assert "Nothing to be done" in res.stdout + res.stderr


def test_merge_refuses_fragments_of_another_config_or_schema(smoke_run, tmp_path):
    results = smoke_run["results"]
    cfg = load(results / "config.yaml")
    frags = sorted((results / "fragments").rglob("*.parquet"))
    other = resolve({**yaml.safe_load((results / "config.yaml").read_text()), "seed": 99})
    with pytest.raises(ValueError, match="simulated with a different configuration"):
        merge(other, frags, tmp_path / "out")
    bogus = tmp_path / "bogus.parquet"
    pq.write_table(pa.table({"process": ["top"], "pt": [1.0]}).replace_schema_metadata(
        {"rs3l.schema_version": "1", "rs3l.process": "top", "rs3l.chunk": "0"}), bogus)
    with pytest.raises(ValueError, match="missing columns"):
        read_fragment(bogus, cfg)
    res = subprocess.run([str(Path(VENV_BIN) / "rs3l"), "merge", "--config", str(results / "config.yaml"),
                          "--fragments", str(bogus), "--out-dir", str(tmp_path / "out2")],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "schema does not match" in res.stderr
    assert not (tmp_path / "out2" / "manifest.json").exists()


def test_killed_workflow_leaves_nothing_complete_and_a_rerun_resumes(smoke_run, tmp_path):
    results = tmp_path / "results"
    proc = snakemake("--cores", "2", "--workflow-profile", "workflow/profiles/default", "merge",
                     results_dir=results, popen=True, start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # kill everything (snakemake and its jobs) while re-simulation jobs are running
    while time.time() < deadline and not any((results / "logs" / "resimulate").glob("*.log")):
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (results / "data" / "manifest.json").exists()
    cfg = load(smoke_run["results"] / "config.yaml")
    for frag in (results / "fragments").rglob("*.parquet"):
        read_fragment(frag, cfg)  # whatever carries a final name is complete and readable
    # as after any kill: release Snakemake's lock, then run again (incomplete jobs are re-run)
    snakemake("--unlock", results_dir=results)
    snakemake("--cores", "2", "--workflow-profile", "workflow/profiles/default", "merge", results_dir=results)
    resumed = json.loads((results / "data" / "manifest.json").read_text())
    reference = json.loads((smoke_run["results"] / "data" / "manifest.json").read_text())
    # the same config gives bit-identical data, however often it was interrupted
    assert resumed["content_hash"] == reference["content_hash"]


def test_atomic_write_killed_mid_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.parquet"
    code = f"""
import os, signal
from rs3l.atomic import atomic_path
with atomic_path({str(target)!r}) as tmp:
    with open(tmp, "wb") as fh:
        fh.write(b"PAR1" + b"x" * 100000)
        fh.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""
    res = subprocess.run([str(Path(VENV_BIN) / "python"), "-c", code])
    assert res.returncode == -signal.SIGKILL
    assert not target.exists()
    leftovers = list(tmp_path.iterdir())
    assert leftovers and all(p.name.startswith(".out.parquet.tmp-") for p in leftovers)


def test_changing_pretraining_reruns_it_from_scratch_not_from_the_old_checkpoint(smoke_run, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(smoke_run["results"], results)  # keeps mtimes: simulation and merge stay done
    old = torch.load(results / "pretrain" / "last.ckpt", weights_only=False)["rs3l"]["resume_key"]
    # the first argument still belongs to --config (after results_dir=...); the copy has no Snakemake
    # metadata to compare params with, so the re-run that a config change triggers is forced here
    res = snakemake("pretrain={objective: vicreg}", "--cores", "2", "--workflow-profile", "workflow/profiles/default",
                    "--forcerun", "pretrain", "--until", "pretrain", results_dir=results)
    assert "rule resimulate" not in res.stdout + res.stderr  # the simulated data is reused
    log = (results / "logs" / "pretrain.log").read_text()
    assert "belongs to another configuration or dataset: deleted, pre-training starts over" in log
    state = torch.load(results / "pretrain" / "last.ckpt", weights_only=False)
    assert state["rs3l"]["resume_key"] != old
    assert state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 2  # all epochs, from scratch
