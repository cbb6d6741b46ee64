"""Fine-tuning every deep mode on a tiny synthetic task, evaluating it per view, and the report over all arms.

The "pre-trained" encoder is a randomly initialised DeepSets written in the format of
`rs3l pretrain` (encoder.pt): these tests check the plumbing (same labels for every
arm, frozen weights stay frozen, metrics in range, outputs written) and that training by
steps converges on a task a network must learn.
"""

import copy
import csv
import json

import numpy as np
import pytest
import torch

from rs3l.evaluation.evaluate import evaluate
from rs3l.evaluation.report import report
from rs3l.models.encoders import build_encoder
from rs3l.evaluation.tasks import Task, select_labels
from rs3l.models.classifier import load_model
from rs3l.training.finetune import MODES, finetune

from synthetic import make_dataset

CLASSES = ["q", "top", "wqq"]
VIEWS = ["nominal", "seed", "fsr_up", "vincia"]
FRACTION = 0.5


def tiny_cfg(cfg, results_dir):
    c = copy.deepcopy(cfg)
    c["results_dir"] = str(results_dir)
    c["classes"] = CLASSES
    c["training"].update(max_constituents=24, batch_size=32, accelerator="cpu")
    c["encoders"]["deepsets"] = {"hidden": 24, "latent_dim": 8}
    c["pretrain"].update(encoder="deepsets", augment_views=["nominal", "seed", "fsr_up"])  # vincia held out
    c["finetune"].update(max_steps=60, min_steps=10, val_every=10, warmup_steps=5, patience=3, learning_rate=3e-3,
                         seeds=2,
                         tasks={"top_vs_q": {"signal": ["top"], "background": ["q"], "multiclass": False},
                                "three_class": {"signal": ["top"], "background": ["q", "wqq"], "multiclass": True}})
    return c


def write_encoder(cfg, path):
    """A (randomly initialised) DeepSets saved by `rs3l pretrain`'s own writer: the encoder.pt contract."""
    from rs3l.training.pretrain import save_encoder

    torch.manual_seed(0)
    save_encoder(path, build_encoder("deepsets", cfg, len(cfg["training"]["features"])), cfg, content_hash="test")
    return path


@pytest.fixture(scope="module")
def setup(cfg, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    data = make_dataset(tmp / "data", n_jets_per_split={"train": 300, "val": 100, "test": 100},
                        views=VIEWS, classes=CLASSES, seed=0)
    c = tiny_cfg(cfg, tmp / "results")
    return {"tmp": tmp, "data": data, "cfg": c, "encoder": write_encoder(c, tmp / "encoder.pt")}


@pytest.fixture(scope="module")
def arms(setup):
    """Every mode of the binary task at one label fraction: fine-tuned and evaluated."""
    out = {}
    for mode in MODES:
        d = setup["tmp"] / f"top_vs_q-{mode}"
        meta = finetune(setup["cfg"], setup["data"], "top_vs_q", mode, FRACTION, d, encoder_path=setup["encoder"])
        res = evaluate(setup["cfg"], setup["data"], d, d / "metrics.json")
        out[mode] = {"dir": d, "meta": meta, "result": res}
    return out


def test_every_mode_writes_a_model_and_metrics_in_range(arms):
    for mode, arm in arms.items():
        assert (arm["dir"] / "model.pt").exists() and (arm["dir"] / "labels.json").exists()
        res = json.loads((arm["dir"] / "metrics.json").read_text())
        assert res["mode"] == mode and res["label_fraction"] == FRACTION and res["task"] == "top_vs_q"
        assert res["method"] == ("supervised-deepsets" if mode == "scratch" else "rs3l-deepsets")
        assert set(res["views"]) == set(VIEWS)
        for view, m in res["views"].items():
            assert 0 <= m["accuracy"] <= 1 and 0 <= m["auc"] <= 1, (mode, view)
            for eff in ("0.3", "0.5", "0.7"):
                assert m[f"rejection_at_{eff}"] is None or m[f"rejection_at_{eff}"] >= 1
            assert sum(m["score_hist"]["signal"]) == m["n_signal"] > 0
            assert len(m["roc"]["fpr"]) == 101
        assert set(res["robustness"]) == {"seed", "fsr_up", "vincia"}
        for view, r in res["robustness"].items():
            assert r["w1"] >= 0 and -1 <= r["fpr_shift_at_0.5"] <= 1
            assert r["in_pretraining"] == (view != "vincia")
        assert res["held_out_views"] == ["vincia"]
    # the task is easy (1 prong vs 2 prongs): training from scratch must learn something
    assert arms["scratch"]["result"]["metrics"]["auc"] > 0.7


def test_all_arms_train_on_the_same_labelled_jets(arms, setup):
    files = {mode: (arm["dir"] / "labels.json").read_text() for mode, arm in arms.items()}
    assert len(set(files.values())) == 1, "labels.json differs between arms"
    labels = json.loads(files["scratch"])
    assert {arm["meta"]["labels_sha256"] for arm in arms.values()} == {labels["jet_ids_sha256"]}
    # half of each class of the task, from the train split only
    from rs3l.training.data import load_arrays

    arr = load_arrays(setup["data"], "train", ["part_deta"], 4, views=["nominal"])
    ids = np.array(labels["jet_ids"])
    assert np.all(np.isin(ids, arr["jet_id"]))
    for cls, target in (("q", "background"), ("top", "signal")):
        n = int(np.sum(arr["label"] == CLASSES.index(cls)))
        assert labels["per_class"][target] == int(np.ceil(FRACTION * n))
    assert not np.any(np.isin(ids, arr["jet_id"][arr["label"] == CLASSES.index("wqq")]))


def test_label_subsets_are_nested_and_do_not_depend_on_the_mode():
    task = Task("t", ("top",), ("q",))
    jet_id = np.repeat(np.arange(1000, 1200), 3)  # 3 views per jet
    target = np.repeat(np.arange(200) % 2, 3)
    small, large = (select_labels(7, task, f, jet_id, target) for f in (0.1, 0.5))
    assert small.size == 20 and large.size == 100
    assert np.all(np.isin(small, large))
    assert np.array_equal(select_labels(7, task, 0.1, jet_id[::-1], target[::-1]), small)  # row order is irrelevant
    assert not np.array_equal(select_labels(8, task, 0.1, jet_id, target), small)  # the master seed matters
    # a repeat seed draws another subset, nested across fractions in the same way
    small1, large1 = (select_labels(7, task, f, jet_id, target, seed=1) for f in (0.1, 0.5))
    assert not np.array_equal(small1, small) and np.all(np.isin(small1, large1))
    assert np.array_equal(select_labels(7, task, 1.0, jet_id, target, seed=1), np.arange(1000, 1200))


def test_frozen_modes_keep_the_pretrained_encoder(arms, setup):
    ckpt = torch.load(setup["encoder"], weights_only=False)["state_dict"]

    def same(mode):
        model, _ = load_model(arms[mode]["dir"])
        return all(torch.equal(v, ckpt[k]) for k, v in model.encoder.state_dict().items())

    assert same("mlp")
    assert not same("full") and not same("scratch")


def test_multiclass_task(setup):
    d = setup["tmp"] / "three_class-scratch"
    finetune(setup["cfg"], setup["data"], "three_class", "scratch", 1.0, d)
    res = evaluate(setup["cfg"], setup["data"], d, d / "metrics.json")
    assert res["multiclass"] and res["task_classes"] == ["top", "q", "wqq"]
    m = res["metrics"]
    assert m["n_jets"] == 100  # every test jet belongs to one of the three classes
    assert 0 <= m["accuracy"] <= 1 and 0 <= m["auc"] <= 1 and 0 <= m["auc_first_signal_vs_rest"] <= 1


def test_report_over_all_arms(arms, setup, capsys):
    out = report(setup["cfg"], [arm["dir"] / "metrics.json" for arm in arms.values()], setup["tmp"] / "summary",
                 data_dir=setup["data"])
    with open(out["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["mode"] for r in rows) == sorted(MODES)
    assert {r["label_fraction"] for r in rows} == {str(FRACTION)}
    assert {"w1_seed", "w1_fsr_up", "w1_vincia", "rejection_at_0.5"} <= set(rows[0])
    assert (setup["tmp"] / "summary" / "plots" / "jet_mass.png").exists()
    assert "| top_vs_q | supervised-deepsets | scratch |" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad input, before training

@pytest.mark.parametrize("kwargs, error, match", [
    ({"task_name": "top_vs_qq"}, ValueError, r"unknown task 'top_vs_qq'; known tasks .*top_vs_q"),
    ({"fraction": 0.0}, ValueError, r"label fraction must be in \(0, 1\]; got 0.0"),
    ({"fraction": 1.5}, ValueError, r"label fraction must be in \(0, 1\]; got 1.5"),
    ({"encoder_path": "nowhere/encoder.pt"}, FileNotFoundError, r"'nowhere/encoder.pt' does not exist"),
    ({"encoder_path": None}, FileNotFoundError, r"no pre-trained encoder given"),
    ({"mode": "linear"}, ValueError, r"unknown mode 'linear'; known: mlp, full, scratch \(the linear probe is `rs3l probe`\)"),
    ({"seed": 2}, ValueError, r"repeat seed must be in 0..1 \(finetune.seeds = 2\); got 2"),
])
def test_bad_input_fails_before_training(setup, tmp_path, kwargs, error, match):
    args = {"task_name": "top_vs_q", "mode": "full", "fraction": 0.5, "encoder_path": setup["encoder"]} | kwargs
    with pytest.raises(error, match=match):
        finetune(setup["cfg"], setup["data"], out_dir=tmp_path / "arm", **args)
    assert not (tmp_path / "arm").exists()


def test_task_with_unknown_class_is_named(setup, tmp_path):
    c = copy.deepcopy(setup["cfg"])
    c["finetune"]["tasks"]["typo"] = {"signal": ["topp"], "background": ["q"], "multiclass": False}
    with pytest.raises(ValueError, match=r"finetune.tasks.typo.signal: unknown class 'topp'; classes: q, top, wqq"):
        finetune(c, setup["data"], "typo", "scratch", 0.5, tmp_path / "arm")
    assert not (tmp_path / "arm").exists()


def test_cli_exits_2_with_the_message(tmp_path, capsys):
    import yaml

    from rs3l.cli import main

    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(yaml.safe_dump({"results_dir": str(tmp_path / "results")}))
    code = main(["finetune", "--config", str(cfg_file), "--data", str(tmp_path), "--task", "top_vs_qcd",
                 "--mode", "scratch", "--fraction", "1.5", "--out-dir", str(tmp_path / "arm")])
    assert code == 2
    assert "label fraction must be in (0, 1]" in capsys.readouterr().err


# ----------------------------------------------------------------------------- training by steps converges

def test_a_deep_arm_converges_within_its_step_budget(setup, tmp_path):
    """Label = sign of the summed first feature over the constituents: a DeepSets (sum pooling) can
    represent it exactly, so training must stop by patience (converged) with a low val loss
    (class-balanced BCE < 0.25; chance is ln 2 = 0.69)."""
    from rs3l.models.classifier import build_classifier
    from rs3l.training.finetune import fit

    c = copy.deepcopy(setup["cfg"])
    c["finetune"].update(max_steps=1500, min_steps=50, val_every=20, warmup_steps=20, patience=5, learning_rate=3e-3)
    r = np.random.default_rng(3)

    def sample(n):
        x = r.normal(size=(n, 10, 3)).astype(np.float32)
        mask = np.arange(10)[None, :] < r.integers(3, 11, n)[:, None]
        y = ((x[:, :, 0] * mask).sum(axis=1) > 0).astype(np.int64)
        return torch.as_tensor(x), torch.as_tensor(mask), torch.as_tensor(y)

    torch.manual_seed(0)
    net = build_classifier("deepsets", {"hidden": 32, "latent_dim": 8}, 3, "mlp", 1, 32)
    summary = fit(net, sample(512), sample(256), False, c, seed=1, out_dir=tmp_path)
    assert summary["converged"], summary["history"][-3:]
    assert summary["best"]["val_loss"] < 0.25 and summary["best"]["val_auc"] > 0.95
    assert summary["best_step"] < summary["stopped_step"] < 1500
    steps = [h["step"] for h in summary["history"]]
    # the start, early checks at 1, 2, 4, 8, 16 steps, then every val_every optimiser steps, across epochs
    assert steps[:9] == [0, 1, 2, 4, 8, 16, 20, 40, 60]
    assert summary["history"][0]["val_loss"] > 0.6  # an untrained network is at chance (ln 2 = 0.69)


def test_an_arm_that_never_beats_its_start_is_not_converged(setup, tmp_path):
    """Val labels that contradict the train labels: no step improves the val loss on the untrained start, so the
    arm keeps its starting weights and must not count as converged (the report's `converged` column shows it)."""
    from rs3l.models.classifier import build_classifier
    from rs3l.training.finetune import fit

    c = copy.deepcopy(setup["cfg"])
    c["finetune"].update(max_steps=200, min_steps=20, val_every=10, warmup_steps=1, patience=3, learning_rate=1e-2)
    r = np.random.default_rng(5)

    def sample(n, flip):
        x = r.normal(size=(n, 10, 3)).astype(np.float32)
        y = (x[:, :, 0].sum(axis=1) > 0).astype(np.int64)
        return torch.as_tensor(x), torch.ones(n, 10, dtype=torch.bool), torch.as_tensor(1 - y if flip else y)

    torch.manual_seed(0)
    net = build_classifier("deepsets", {"hidden": 64, "latent_dim": 8}, 3, "mlp", 1, 64)
    with torch.no_grad():  # a start that predicts exactly chance: every trained step is worse on val
        net.head[-1].weight.zero_()
        net.head[-1].bias.zero_()
    summary = fit(net, sample(200, False), sample(400, True), False, c, seed=1, out_dir=tmp_path)
    assert summary["best_step"] == 0 and not summary["converged"]
    assert summary["history"][0]["val_loss"] == pytest.approx(np.log(2), abs=1e-3)


def test_lr_schedule_warms_up_then_decays():
    from rs3l.training.finetune import lr_factor

    assert lr_factor(0, 10, 100, "cosine") == pytest.approx(0.1)
    assert lr_factor(9, 10, 100, "cosine") == pytest.approx(1.0)
    assert lr_factor(55, 10, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(100, 10, 100, "cosine") == pytest.approx(0.0)
    assert lr_factor(80, 10, 100, "constant") == 1.0


def test_deep_arm_records_its_training(arms):
    for mode, arm in arms.items():
        t = arm["result"]["training"]
        assert t["max_steps"] == 60 and 0 <= t["best_step"] <= t["stopped_step"] <= 60, (mode, t)
        assert isinstance(t["converged"], bool)
        assert arm["result"]["seed"] == 0 and len(arm["result"]["test_scores"]["score"]) == arm["result"]["metrics"]["n_jets"]


# ----------------------------------------------------------------------------- safe checkpoint loading

class Payload:
    """Any class: unpickling it means running code chosen by whoever wrote the file."""


@pytest.mark.parametrize("kind", ["model", "encoder"])
def test_checkpoint_with_a_pickled_object_is_refused(arms, setup, tmp_path, kind):
    from rs3l.models.classifier import read_encoder_checkpoint

    if kind == "model":
        payload = torch.load(arms["scratch"]["dir"] / "model.pt", weights_only=True)
        payload["note"] = Payload()
        (tmp_path / "model.pt").write_bytes(b"")
        torch.save(payload, tmp_path / "model.pt")
        with pytest.raises(ValueError, match=r"refusing to load fine-tuned model .*weights_only=True"):
            load_model(tmp_path)
    else:
        payload = torch.load(setup["encoder"], weights_only=True)
        payload["note"] = Payload()
        torch.save(payload, tmp_path / "encoder.pt")
        with pytest.raises(ValueError, match=r"refusing to load encoder checkpoint"):
            read_encoder_checkpoint(tmp_path / "encoder.pt", setup["cfg"])
