"""Pre-training stage: streaming data, positive pairs, sharding, the Lightning run, resume, DDP, errors."""

import json
import os
import shutil
import signal
import unittest.mock

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from lightning.pytorch import Callback
from torch.utils.data import DataLoader

from rs3l import schema
from rs3l.cli import main as cli_main
from rs3l.models.encoders import build_encoder
from rs3l.training.data import JetDataset, load_arrays, pad_particles
from rs3l.training.pretrain import checkpoint_epochs, load_encoder, run
from rs3l.training.requeue import RequeueRequested
from synthetic import make_config, make_dataset

FEATURES = ["part_deta", "part_dphi", "part_log_pt"]
AUGMENT = ["nominal", "seed", "fsr_up"]  # 'vincia' is held out of pre-training


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_jets_per_split={"train": 480, "val": 120, "test": 60},
                        replicas={"seed": 2}, seed=1)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """One MLflow store for the module (creating a SQLite store takes seconds)."""
    return tmp_path_factory.mktemp("results")


def pairs_dataset(data, **kw):
    args = dict(split="train", features=FEATURES, max_constituents=16, batch_size=32, mode="pairs", views=AUGMENT,
                shuffle_buffer=100, seed=7)
    args.update(kw)
    return JetDataset(data, **args)


def worker(i, n):
    info = type("WorkerInfo", (), {"id": i, "num_workers": n})
    return unittest.mock.patch("torch.utils.data.get_worker_info", return_value=info)


# ----------------------------------------------------------------------------- data

def test_padding_keeps_leading_constituents_in_order(data):
    t = pq.ParquetFile(data / "train" / "part-00000.parquet").read_row_group(0)
    x, mask = pad_particles(t, FEATURES, 16)
    lists = t.column("part_log_pt").to_pylist()
    assert x.shape == (t.num_rows, 16, 3) and x.dtype == np.float32 and mask.dtype == bool
    for i in range(t.num_rows):
        n = min(len(lists[i]), 16)
        assert mask[i].sum() == n and mask[i, :n].all()
        np.testing.assert_array_equal(x[i, :n, 2], np.float32(lists[i][:n]))
        assert (x[i, n:] == 0).all()
    assert (mask.sum(1) < t.column("n_constituents").to_numpy()).any()  # some jets were truncated


def test_pairs_are_two_distinct_augment_views_of_one_jet(data):
    rows = load_arrays(data, "train", FEATURES, 16)
    key = {(int(j), rows["x"][i].tobytes()): rows["view"][i] for i, j in enumerate(rows["jet_id"])}
    ds = pairs_dataset(data)
    batches = list(ds)
    assert all(b["x1"].shape == (32, 16, 3) and b["mask1"].dtype == torch.bool for b in batches)
    n_pairs = 0
    for b in batches:
        for j, x1, x2 in zip(b["jet_id"].tolist(), b["x1"].numpy(), b["x2"].numpy()):
            v1, v2 = key[(j, x1.tobytes())], key[(j, x2.tobytes())]  # both rows belong to jet j
            assert v1 in AUGMENT and v2 in AUGMENT
            assert not np.array_equal(x1, x2)
            n_pairs += 1
    assert n_pairs == len(batches) * 32 >= 480 - 32
    # pairs are drawn afresh each epoch, deterministically
    ds.set_epoch(1)
    again = list(ds)
    assert any(not torch.equal(a["x1"], b["x1"]) for a, b in zip(batches, again))
    assert all(torch.equal(a["x1"], b["x1"]) for a, b in zip(again, list(ds)))


def test_shards_split_between_ranks_and_workers_disjoint_and_balanced(data):
    seen = {}
    for rank in range(2):
        ds = pairs_dataset(data, rank=rank, world_size=2)
        for w in range(2):
            with worker(w, 2):
                seen[rank, w] = [b["jet_id"] for b in ds]
    per_rank = [sum(len(b) for w in range(2) for b in seen[r, w]) for r in range(2)]
    assert per_rank[0] == per_rank[1] > 0  # equal batch counts: DDP gradient sync cannot hang
    ids = torch.cat([b for v in seen.values() for b in v]).numpy()
    assert len(np.unique(ids)) == len(ids)  # disjoint
    assert len(ids) >= 480 - 4 * 32  # nearly everything is used
    assert JetDataset.__len__(pairs_dataset(data, rank=1, world_size=2)) == per_rank[1] // 32


def test_buffer_memory_is_bounded_by_buffer_and_one_row_group(data):
    class Watched(JetDataset):
        peak = 0

        def _assemble(self, chunks, cids, items):
            Watched.peak = max(Watched.peak, sum(c["n"] for c in chunks.values()))
            return super()._assemble(chunks, cids, items)

    ds = Watched(data, "train", FEATURES, 16, 32, views=AUGMENT, shuffle_buffer=100, seed=7)
    assert sum(len(b["label"]) for b in ds) >= 480 - 32
    assert Watched.peak <= 100 + 50  # buffer + one row group (50 jets): not the 480-jet split


def test_real_loader_with_two_workers(data):
    ds = pairs_dataset(data)
    loader = DataLoader(ds, batch_size=None, num_workers=2)
    ds.num_workers = 2
    batches = list(loader)
    ids = torch.cat([b["jet_id"] for b in batches])
    assert len(batches) == len(ds) and len(ids.unique()) == len(ids) == len(batches) * 32


def test_jets_mode_and_load_arrays(data):
    ds = JetDataset(data, "val", FEATURES, 16, 50, mode="jets", views=["vincia", "nominal"], shuffle=False,
                    drop_last=False)
    batches = list(ds)
    assert sum(len(b["label"]) for b in batches) == 2 * 120 and len(batches) == len(ds)
    assert set(torch.cat([b["view"] for b in batches]).tolist()) == {0, 1}
    small = load_arrays(data, "test", FEATURES, 16, views=["vincia"], max_jets=25)
    assert len(small["jet_id"]) == len(np.unique(small["jet_id"])) == 25
    assert set(small["view"]) == {"vincia"} and small["x"].shape == (25, 16, 3)
    assert set(np.unique(small["label"])) <= {0, 1, 2}


def test_shard_with_another_schema_is_refused(data, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(data, bad)
    shard = bad / "train" / "part-00001.parquet"
    t = pq.read_table(shard)
    t = t.set_column(t.schema.get_field_index("label"), "label", t.column("label").cast(pa.int32()))
    pq.write_table(t.replace_schema_metadata(schema.merged_schema().metadata), shard)
    with pytest.raises(ValueError, match=r"part-00001.parquet.*wrong types \['label \(int32 instead of int16\)'\]"):
        pairs_dataset(bad)
    cfg = make_config(tmp_path / "results")
    with pytest.raises(ValueError, match="part-00001.parquet"):
        run(cfg, bad, tmp_path / "out")
    assert not (tmp_path / "results").exists()  # refused before any tracking or training


def test_bad_names_give_clear_errors(data, tmp_path):
    cfg = make_config(tmp_path / "results")
    with pytest.raises(ValueError, match="unknown feature"):
        pairs_dataset(data, features=["part_deta", "part_pt"])
    with pytest.raises(ValueError, match=r"pretrain.augment_views names view\(s\) \['had_up'\]"):
        run({**cfg, "pretrain": {**cfg["pretrain"], "augment_views": ["nominal", "had_up"]}}, data, tmp_path / "o")
    with pytest.raises(ValueError, match="unknown encoder 'pointnet'; known: particlenet, transformer, deepsets"):
        run({**cfg, "pretrain": {**cfg["pretrain"], "encoder": "pointnet"}}, data, tmp_path / "o")
    with pytest.raises(ValueError, match="unknown objective 'byol'; known: ntxent, vicreg"):
        run({**cfg, "pretrain": {**cfg["pretrain"], "objective": "byol"}}, data, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="manifest.json does not exist"):
        run(cfg, tmp_path / "nowhere", tmp_path / "o")


def test_unreachable_tracking_server_fails_before_training(data, tmp_path):
    cfg = make_config(tmp_path / "results", tracking={"uri": "http://127.0.0.1:9"})
    with pytest.raises(RuntimeError, match=r"MLflow tracking server http://127.0.0.1:9 is not reachable"):
        run(cfg, data, tmp_path / "out")
    assert not (tmp_path / "out" / "last.ckpt").exists()


# ----------------------------------------------------------------------------- the stage

def test_pretraining_learns_and_writes_the_contract(data, results, tmp_path):
    cfg = make_config(results, pretrain={"epochs": 4}, training={"learning_rate": 3e-3})
    out = tmp_path / "out"
    s = run(cfg, data, out)
    h = s["history"]
    assert [e["epoch"] for e in h] == [0, 1, 2, 3]
    assert h[-1]["train/loss"] < h[0]["train/loss"] - 0.3
    assert h[-1]["val/pos_sim"] > h[-1]["val/neg_sim"] + 0.5
    assert s["knn_acc_final"] > 0.55  # three classes: chance is about 1/3
    # the stopping point: encoder.pt holds the epoch of the lowest val loss, and says so
    best = min(range(4), key=lambda e: h[e]["val/loss"])
    assert s["best_epoch"] == best and s["best_val_loss"] == pytest.approx(h[best]["val/loss"])
    assert s["epochs_trained"] == 4 and s["converged"] is False  # the val loss still fell: budget reached
    # encoder.pt: rebuild with build_encoder and get the trained encoder back
    d = torch.load(out / "encoder.pt", weights_only=False)
    assert d["encoder"] == "deepsets" and d["n_features"] == 15 and d["latent_dim"] == 8
    assert d["features"] == cfg["training"]["features"] and d["max_constituents"] == 32
    enc = build_encoder(d["encoder"], cfg, d["n_features"])
    enc.load_state_dict(d["state_dict"])
    val = load_arrays(data, "val", d["features"], d["max_constituents"], views=["nominal"], max_jets=16)
    x, m = torch.from_numpy(val["x"]), torch.from_numpy(val["mask"])
    loaded, _ = load_encoder(out / "encoder.pt")
    assert torch.allclose(enc.eval()(x, m), loaded.eval()(x, m))
    assert (out / "embeddings.png").stat().st_size > 10_000 and (out / "last.ckpt").exists()
    # MLflow: a child run of the workflow parent, with metrics per epoch, lineage and artifacts
    client = mlflow.MlflowClient(f"sqlite:///{results / 'mlflow.db'}")
    r = client.get_run(s["run_id"])
    assert r.data.tags["rs3l.stage"] == "pretrain" and "mlflow.parentRunId" in r.data.tags
    content_hash = json.loads((data / "manifest.json").read_text())["content_hash"]
    assert r.data.params["dataset.content_hash"] == r.data.tags["dataset.content_hash"] == content_hash
    assert r.data.params["pretrain.encoder"] == "deepsets"
    assert [m.step for m in client.get_metric_history(s["run_id"], "train/loss")] == [0, 1, 2, 3]
    assert len(client.get_metric_history(s["run_id"], "val/knn_acc")) == 4
    assert r.data.metrics["pretrain/best_epoch"] == best and r.data.metrics["pretrain/converged"] == 0
    arts = {a.path for a in client.list_artifacts(s["run_id"])} | {a.path for a in client.list_artifacts(s["run_id"], "dataset")}
    assert {"encoder.pt", "last.ckpt", "embeddings.png", "dataset/manifest.json"} <= arts


class KillAtEpoch(Callback):
    """Simulate a job killed at the start of epoch ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")


def test_run_stopped_after_one_epoch_resumes_from_last_checkpoint(data, results, tmp_path):
    out = tmp_path / "out"
    cfg = make_config(results, pretrain={"epochs": 2, "max_jets_per_epoch": 160})
    with pytest.raises(RuntimeError, match="simulated kill"):
        run(cfg, data, out, callbacks=[KillAtEpoch(1)])
    assert checkpoint_epochs(out / "last.ckpt") == 1
    steps = torch.load(out / "last.ckpt", weights_only=False)["global_step"]
    assert not (out / "encoder.pt").exists()
    second = run(cfg, data, out)
    assert second["start_epoch"] == 1 and [e["epoch"] for e in second["history"]] == [1]  # only the missing epoch
    assert checkpoint_epochs(out / "last.ckpt") == 2
    assert torch.load(out / "last.ckpt", weights_only=False)["global_step"] == 2 * steps
    assert (out / "encoder.pt").exists()
    assert run(cfg, data, out)["skipped"]  # complete: nothing to do
    # Snakemake deletes a job's outputs before rerunning it: the finished pre-training is not trained further,
    # its encoder.pt comes back from the checkpoint's best epoch, bit for bit
    before = torch.load(out / "encoder.pt", weights_only=True)["state_dict"]
    (out / "encoder.pt").unlink()
    again = run(cfg, data, out)
    assert again["skipped"] and again["restored"] and checkpoint_epochs(out / "last.ckpt") == 2
    after = torch.load(out / "encoder.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(before[k], after[k]) for k in before)
    other = make_config(results, pretrain={"epochs": 1, "encoder": "transformer", "max_jets_per_epoch": 64})
    with pytest.raises(ValueError, match="another configuration or dataset"):
        run(other, data, out)  # not its checkpoint
    # the workflow's way: a changed configuration starts over instead
    fresh = run(other, data, out, restart_if_changed=True)
    assert fresh["start_epoch"] == 0 and checkpoint_epochs(out / "last.ckpt") == 1


class SignalAtEpoch(Callback):
    """Send this process Slurm's warning signal (SIGUSR1) at the end of epoch ``epoch``."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGUSR1)


def test_warning_signal_stops_at_the_next_batch_and_the_rerun_continues_the_same_mlflow_run(data, results, tmp_path):
    out = tmp_path / "out"
    cfg = make_config(results, pretrain={"epochs": 3, "max_jets_per_epoch": 160, "patience": 0})
    with pytest.raises(RequeueRequested):
        run(cfg, data, out, callbacks=[SignalAtEpoch(0)])
    # the epoch in progress is dropped: the checkpoint holds the last complete one
    assert checkpoint_epochs(out / "last.ckpt") == 1 and not (out / "encoder.pt").exists()
    record = json.loads((out / "run.json").read_text())
    client = mlflow.MlflowClient(record["uri"])
    first = client.get_run(record["run_id"])
    assert record["requeued"] == 1 and first.info.status == "SCHEDULED"  # waiting for its requeued job
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the handler is removed again
    second = run(cfg, data, out)
    assert second["start_epoch"] == 1 and second["run_id"] == record["run_id"] and second["requeued"] == 1
    assert json.loads((out / "summary.json").read_text())["requeued"] == 1
    run_ = client.get_run(record["run_id"])
    assert run_.info.status == "FINISHED" and run_.data.tags["rs3l.requeued"] == "1"
    assert sorted(m.step for m in client.get_metric_history(record["run_id"], "val/loss")) == [0, 1, 2]
    # a finished training is not reopened: more epochs start a new MLflow run from the checkpoint
    more = run(make_config(results, pretrain={"epochs": 4, "max_jets_per_epoch": 160, "patience": 0}), data, out)
    assert more["start_epoch"] == 3 and more["run_id"] != record["run_id"] and more["requeued"] == 0


def test_particlenet_vicreg_with_projection_head(data, results, tmp_path):
    cfg = make_config(results, pretrain={"encoder": "particlenet", "objective": "vicreg", "projection_head": 16,
                                         "epochs": 1, "max_jets_per_epoch": 64},
                      encoders={"particlenet": {"channels": [16, 16], "k": 4}})
    s = run(cfg, data, tmp_path / "out")
    assert np.isfinite(s["final_metrics"]["train/loss"])
    assert torch.load(tmp_path / "out" / "last.ckpt", weights_only=False)["global_step"] == 2  # 64 jets / 32


class RecordJets(Callback):
    """Write the jet ids each rank trains on to <folder>/rank<r>.npy."""

    def __init__(self, folder):
        self.folder, self.ids = folder, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.ids.append(batch["jet_id"].numpy())

    def on_train_end(self, trainer, pl_module):
        np.save(self.folder / f"rank{trainer.global_rank}.npy", np.concatenate(self.ids))


def test_ddp_two_cpu_processes_train_on_disjoint_data(data, results, tmp_path):
    # ddp_fork: two real processes with a gloo process group, without re-importing
    # everything as ddp_spawn would (the CLI uses strategy 'auto' = 'ddp').
    cfg = make_config(results, pretrain={"epochs": 1}, training={"devices": 2, "strategy": "ddp_fork"})
    s = run(cfg, data, tmp_path / "out", callbacks=[RecordJets(tmp_path)])
    ids = [np.load(tmp_path / f"rank{r}.npy") for r in range(2)]
    assert len(ids[0]) == len(ids[1]) > 0
    assert not set(ids[0]) & set(ids[1])
    assert torch.load(tmp_path / "out" / "last.ckpt", weights_only=False)["global_step"] == len(ids[0]) // 32
    assert (tmp_path / "out" / "encoder.pt").exists() and np.isfinite(s["final_metrics"]["train/loss"])


def test_cli(data, results, tmp_path, capsys):
    config = tmp_path / "config.yaml"
    cfg = make_config(results, pretrain={"epochs": 1, "max_jets_per_epoch": 64})
    import yaml
    config.write_text(yaml.safe_dump({k: cfg[k] for k in ("results_dir", "classes", "processes", "simulation",
                                                           "training", "pretrain", "finetune")}))
    assert cli_main(["pretrain", "--config", str(config), "--data", str(data), "--out-dir", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "encoder.pt").exists()
    assert cli_main(["pretrain", "--config", str(config), "--data", str(tmp_path / "none"), "--out-dir", "x"]) == 2
    assert "manifest.json does not exist" in capsys.readouterr().err


def test_three_views_per_jet_through_the_method(data, tmp_path):
    """views_per_jet 3 with a re-simulated + hand-crafted view: the method embeds all views in one pass
    and its loss is the multi-positive NT-Xent of the three embeddings; gradients reach the encoder."""
    from rs3l.models.methods import build_method
    from rs3l.models.objectives import ntxent_multi
    from rs3l.training.data import dataset_from_config

    cfg = make_config(tmp_path / "results", pretrain={"augment_views": ["nominal", "seed+jetclr", "fsr_up"],
                                                      "views_per_jet": 3})
    batch = next(iter(dataset_from_config(cfg, data, "train", "pairs", cfg["pretrain"]["augment_views"])))
    assert [batch[f"x{k}"].shape for k in (1, 2, 3)] == [(32, 32, 15)] * 3
    model = build_method(cfg, 15)
    loss, _ = model._step(batch, "val")
    hs, zs = model._embed_views(batch)
    assert loss.item() == pytest.approx(ntxent_multi(*zs, temperature=0.1).item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.encoder.parameters())
