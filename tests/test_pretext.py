"""``pretrain.pretext``: an auxiliary head predicts the view (or the drawn parameter) from the embedding; its loss
joins the objective's with weight λ, and λ = 0 is the plain objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rs3l.config import ConfigError
from rs3l.models import pretext
from rs3l.models.methods import batch_extras, build_method
from rs3l.training.data import dataset_from_config
from synthetic import make_config, make_dataset
from training_steps import train_steps

# in the synthetic data fsr_down has 14% fewer, 14% wider-spread constituents than nominal, mpi_off 5% more, narrower
VIEWS = ["nominal", "fsr_down", "mpi_off", "fsr_scan"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 800, "val": 100, "test": 100}, views=VIEWS, seed=5)


def config(tmp_path, pretext_cfg=None, augment=("nominal", "fsr_down", "mpi_off"), **pretrain):
    cfg = make_config(tmp_path / "results", views=VIEWS, pretrain={"augment_views": list(augment), **pretrain})
    cfg["views"]["fsr_scan"]["draw"] = {"TimeShower:renormMultFac": {"log_uniform": [0.25, 4.0]}}
    if pretext_cfg is not None:
        cfg["pretrain"]["pretext"] = pretext_cfg
    from rs3l.resolve import resolve
    return resolve(cfg)


def _fit_head(head, make_batch, steps=150):
    """Train the head alone on fresh batches; (loss of the first step, mean loss of the last 10)."""
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        loss, _ = head(*make_batch(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], np.mean(losses[-10:])


def test_view_head_learns_where_the_view_is_predictable_and_not_elsewhere():
    """Three views shifting the embedding by different vectors: the head's cross entropy falls from ≈ log 3 to
    under 0.2; three views from the same distribution: it stays above 0.9 · log 3 (nothing to learn)."""
    shifts = torch.randn(3, 8, generator=torch.Generator().manual_seed(0)) * 2

    def batches(shift):
        def make(step):
            g = torch.Generator().manual_seed(step)
            hs = [torch.randn(64, 8, generator=g) + shift[k] for k in range(3)]
            return hs, [torch.full((64,), k) for k in range(3)]
        return make

    torch.manual_seed(1)
    first, last = _fit_head(pretext.PretextHead("view", 1.0, 8, 3), batches(shifts))
    assert first > 0.8 * math.log(3) and last < 0.2
    first, last = _fit_head(pretext.PretextHead("view", 1.0, 8, 3), batches(torch.zeros(3, 8)))
    assert last > 0.9 * math.log(3)


def test_parameter_head_regresses_the_standardised_log_of_the_draw():
    """target parameter: log θ standardised by the drawn range (log-uniform [0.25, 4]: center 0, scale
    log 16 / sqrt 12); rows of views without a draw (NaN) are left out; the MSE falls from ≈ 1 to < 0.1 when the
    embedding carries log θ."""
    center, scale, log = [math.nan, 0.0], [1.0, math.log(16) / math.sqrt(12)], [False, True]
    value = torch.tensor([1.0, 4.0, 0.25, 2.0])
    view = torch.tensor([1, 1, 1, 0])
    t = pretext.standardised_parameter(value, view, torch.tensor(center), torch.tensor(scale), torch.tensor(log))
    assert t[:3].tolist() == pytest.approx([0.0, math.sqrt(3), -math.sqrt(3)], rel=1e-6) and math.isnan(t[3])
    assert pretext.parameter_loss(torch.tensor([1.0, 1.0, 1.0, 5.0]), t).item() == pytest.approx(
        ((1 - 0) ** 2 + (1 - math.sqrt(3)) ** 2 + (1 + math.sqrt(3)) ** 2) / 3, rel=1e-6)
    empty = torch.zeros(2, requires_grad=True)
    assert pretext.parameter_loss(empty, torch.full((2,), math.nan)).item() == 0.0

    def make(step):
        g = torch.Generator().manual_seed(step)
        theta = torch.exp(torch.empty(64).uniform_(math.log(0.25), math.log(4.0), generator=g))
        h = torch.randn(64, 8, generator=g) * 0.1
        h[:, 0] += torch.log(theta)
        return [h, torch.randn(64, 8, generator=g)], [torch.ones(64, dtype=torch.long), torch.zeros(64, dtype=torch.long)], \
            [theta, torch.full((64,), math.nan)]

    torch.manual_seed(2)
    head = pretext.PretextHead("parameter", 1.0, 8, 2, 64, center, scale, log)
    first, last = _fit_head(head, make)
    assert first > 0.5 and last < 0.1


def test_head_on_the_method_learns_the_view_of_real_batches(data, tmp_path):
    """Through the method and the pairs loader (DeepSets, NT-Xent + λ = 5 · view pretext): batches carry view1, view2;
    over 100 steps the pretext loss falls from about log 3 to below 0.6 and its accuracy from 1/2 to above 0.65:
    the 'smear' view (nominal with every constituent's direction smeared by N(0, 5 GeV / pT)) is easy to tell from
    nominal and fsr_down, which stay hard to tell apart (the best reachable loss is then about 2/3 log 2 = 0.46,
    the accuracy 2/3). (With nominal, fsr_down and mpi_off, which differ only by 5-14% in multiplicity and spread,
    the loss stays at 1.09 over 300 steps of λ = 1.)"""
    cfg = config(tmp_path, {"target": "view", "weight": 5.0}, ("nominal", "fsr_down", "smear"),
                 augmentations={"smear": {"scale_gev": 5.0}})
    assert batch_extras(cfg) == {"jet_columns": (), "view_index": True}
    torch.manual_seed(0)
    method = build_method(cfg, 15)
    pre, acc = [], []

    def pretext_of(batch):  # the head's loss and accuracy on the batch just trained on
        assert set(batch) >= {"view1", "view2"} and batch["view1"].max() <= 2
        with torch.no_grad():
            aux, stats = method._pretext(batch, method._embed_views(batch)[0])
        pre.append(aux.item())
        acc.append(stats["pretext_acc"].item())

    train_steps(method, dataset_from_config(cfg, data, "train", "pairs", cfg["pretrain"]["augment_views"]), 100,
                after_step=pretext_of)
    print(f"pretext (view) loss {np.mean(pre[:10]):.3f} -> {np.mean(pre[-10:]):.3f}, accuracy {np.mean(acc[:10]):.3f} -> "
          f"{np.mean(acc[-10:]):.3f} (log 3 = {math.log(3):.3f}, chance 1/3)")
    assert np.mean(pre[:10]) > 0.8 * math.log(3) and np.mean(pre[-10:]) < 0.6
    assert np.mean(acc[-10:]) > 0.65


def _train(cfg, data, steps=12):
    """Losses per step and the final encoder state of ``steps`` AdamW steps from torch seed 0."""
    torch.manual_seed(0)
    method = build_method(cfg, 15)
    losses = train_steps(method, dataset_from_config(cfg, data, "train", "pairs", cfg["pretrain"]["augment_views"]),
                         steps, weight_decay=0.01)
    return np.array(losses), {k: v.detach().clone() for k, v in method.encoder.state_dict().items()}


@pytest.mark.parametrize("target", ["view", "parameter"])
def test_weight_zero_reproduces_the_plain_objective(data, tmp_path, target):
    """λ = 0: the same losses at every step and the same encoder weights after 12 steps as without a pretext head,
    to 1e-6 (transformer encoder with dropout: the head must not draw from the global random stream); λ = 0.5
    changes both."""
    encoders = {"transformer": {"dropout": 0.1, "dim": 16, "layers": 1, "heads": 2}}
    augment = ("nominal", "fsr_down", "fsr_scan")
    plain = config(tmp_path, None, augment, encoder="transformer")
    plain = {**plain, "encoders": {**plain["encoders"], "transformer": {**plain["encoders"]["transformer"],
                                                                        **encoders["transformer"]}}}
    zero = {**plain, "pretrain": {**plain["pretrain"], "pretext": {"target": target, "weight": 0.0, "hidden": 32}}}
    half = {**plain, "pretrain": {**plain["pretrain"], "pretext": {"target": target, "weight": 0.5, "hidden": 32}}}
    base_losses, base_state = _train(plain, data)
    zero_losses, zero_state = _train(zero, data)
    half_losses, half_state = _train(half, data)
    np.testing.assert_allclose(zero_losses, base_losses, rtol=0, atol=1e-6)
    assert max((zero_state[k] - base_state[k]).abs().max().item() for k in base_state) < 1e-6
    assert np.abs(half_losses - base_losses).max() > 1e-3
    assert max((half_state[k] - base_state[k]).abs().max().item() for k in base_state) > 1e-4


def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="pretrain.pretext.target 'parameter' needs a parameter-scan view"):
        config(tmp_path, {"target": "parameter", "weight": 0.1})
    with pytest.raises(ConfigError, match="'pretrain.pretext.target': 'class' is not allowed; allowed values: view, "
                                          "parameter"):
        config(tmp_path, {"target": "class", "weight": 0.1})
    with pytest.raises(ConfigError, match="pretrain.pretext': 'weight' is a required property"):
        config(tmp_path, {"target": "view"})
    cfg = config(tmp_path, {"target": "parameter", "weight": 0.1}, ("nominal", "fsr_scan+smear"))
    assert cfg["pretrain"]["pretext"] == {"target": "parameter", "weight": 0.1, "hidden": 64}
    assert batch_extras(cfg) == {"jet_columns": ("view_parameter",), "view_index": True}
    center, scale, log = pretext.draw_ranges(cfg)
    assert math.isnan(center[0]) and center[1] == pytest.approx(0.0, abs=1e-12) and log == [False, True]


@pytest.mark.parametrize("pretrain", [{"objective": "clip"}, {"pretext": {"target": "view", "weight": 0.5}}],
                         ids=["clip", "pretext"])
def test_smoke_config_pretrains_with_clip_and_with_a_pretext_weight(tmp_path, pretrain):
    """config/smoke.yaml with objective clip, or with a view pretext of weight 0.5: `rs3l pretrain` on a tiny merged
    dataset of the smoke run's classes and views trains its ParticleNet for the two epochs, logs the new terms and
    writes an encoder.pt that the fine-tuning reader accepts."""
    import json

    import yaml

    from rs3l import cli
    from rs3l.models.classifier import read_encoder_checkpoint

    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["pretrain"].update(pretrain)
    (tmp_path / "smoke.yaml").write_text(yaml.safe_dump(cfg))
    from rs3l.resolve import load
    resolved = load(tmp_path / "smoke.yaml")
    data = make_dataset(tmp_path / "data", {"train": 160, "val": 48, "test": 48}, views=resolved["simulation"]["views"],
                        classes=resolved["classes"], seed=2)
    out = tmp_path / "pretrain"
    assert cli.main(["pretrain", "--config", str(tmp_path / "smoke.yaml"), "--data", str(data), "--out-dir",
                     str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_trained"] == 2 and all(np.isfinite(e["train/loss"]) for e in summary["history"])
    if "pretext" in pretrain:
        assert {"train/pretext", "train/pretext_acc", "val/pretext"} <= set(summary["history"][-1])
    info = read_encoder_checkpoint(out / "encoder.pt", resolved)
    assert ("observables" in info) == (pretrain.get("objective") == "clip")
