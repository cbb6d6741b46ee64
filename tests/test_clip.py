"""``objective: clip``: the symmetric InfoNCE of particle-cloud and observables embeddings, its method, the
loader's per-view observables, the encoder.pt entry, cross-modal retrieval and ``rs3l neighbours --observables``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml

from rs3l import cli
from rs3l.config import ConfigError
from rs3l.evaluation import neighbours, science
from rs3l.models import observables
from rs3l.models.clip import CLIPMethod, view_pairs
from rs3l.models.methods import build_method
from rs3l.models.objectives import clip
from rs3l.training.data import dataset_from_config, load_arrays
from synthetic import make_config, make_dataset
from training_steps import train_steps

VIEWS = ["nominal", "seed", "fsr_up"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), {"train": 1200, "val": 200, "test": 300}, views=VIEWS, seed=11)


def clip_config(tmp_path, **pretrain):
    return make_config(tmp_path / "results", views=VIEWS,
                       pretrain={"objective": "clip", "augment_views": VIEWS, "temperature": 0.1, **pretrain})


# ----------------------------------------------------------------------------- the loss

def test_clip_loss_is_symmetric_and_lowest_for_aligned_pairs():
    """clip(z, u) = clip(u, z); with u = z (every jet's two embeddings aligned) the loss is below that of any
    shuffled pairing, and for orthonormal embeddings it is exactly log(1 + (n - 1) e^(-1/T))."""
    gen = torch.Generator().manual_seed(0)
    z, u = torch.randn(16, 8, generator=gen), torch.randn(16, 8, generator=gen)
    assert clip(z, u, 0.2).item() == pytest.approx(clip(u, z, 0.2).item(), rel=1e-6)
    assert clip(z, u, 0.2).item() != pytest.approx(clip(z, u.roll(1, 0), 0.2).item(), rel=1e-3)
    aligned = clip(z, z, 0.2).item()
    for k in range(20):
        perm = torch.randperm(16, generator=gen)
        if (perm != torch.arange(16)).any():
            assert clip(z, z[perm], 0.2).item() > aligned
    eye = torch.eye(8)
    for t in (0.1, 0.5):
        assert clip(eye, eye, t).item() == pytest.approx(math.log(1 + 7 * math.exp(-1 / t)), rel=1e-3, abs=1e-6)
        # every jet's partner orthogonal, another jet's aligned: log(e^(1/T) + 7)
        assert clip(eye, eye.roll(1, 0), t).item() == pytest.approx(math.log(math.exp(1 / t) + 7), rel=1e-5)


def test_view_pairs():
    assert view_pairs(3, "cross") == [(0, 1), (1, 2), (2, 0)]
    assert view_pairs(2, "same") == [(0, 0), (1, 1)]
    with pytest.raises(ValueError, match="unknown pretrain.clip_pairing 'mixed'; known: cross, same"):
        view_pairs(2, "mixed")


def test_observables_from_jet_columns_and_from_text():
    raw = torch.tensor([[500.0, 172.0, 170.0, 0.3, 0.15, 0.05, 0.04, 60.0], [450.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    o = observables.from_raw(raw)
    assert o.shape == (2, 7)
    assert o[0].tolist() == pytest.approx([172.0, 170.0, 0.5, 1 / 3, 0.8, 60.0, 500.0], rel=1e-6)
    assert o[1].tolist() == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 450.0]  # ratios of zero τ: 0, not NaN
    q = observables.parse("mass=172, sdmass=170, tau21=0.5, tau32=0.333, tau43=0.8, multiplicity=60, pt=500")
    assert q.tolist()[0] == pytest.approx([172, 170, 0.5, 0.333, 0.8, 60, 500], rel=1e-6)
    with pytest.raises(ValueError, match="missing tau43, pt"):
        observables.parse("mass=172,soft_drop_mass=170,tau21=0.5,tau32=0.3,n_constituents=60")
    with pytest.raises(ValueError, match="'width=3' is not name=value with a name among mass"):
        observables.parse("width=3")


# ----------------------------------------------------------------------------- data and method

def test_pairs_loader_emits_each_views_jet_columns(data, tmp_path):
    """With objective clip, a pre-training batch carries jets1 ... jetsn: the observables' columns of each view's
    own row (here: the multiplicity equals that view's constituent count, capped at max_constituents)."""
    cfg = clip_config(tmp_path)
    ds = dataset_from_config(cfg, data, "train", "pairs", VIEWS)
    assert ds.jet_columns == observables.RAW_COLUMNS
    batch = next(iter(ds))
    n = list(observables.RAW_COLUMNS).index("n_constituents")
    for k in (1, 2):
        assert batch[f"jets{k}"].shape == (32, len(observables.RAW_COLUMNS)) and batch[f"jets{k}"].dtype == torch.float32
        count = batch[f"mask{k}"].sum(dim=1)
        assert torch.equal(torch.minimum(batch[f"jets{k}"][:, n], torch.tensor(32.0)), count.float())
    assert not torch.equal(batch["jets1"], batch["jets2"])  # two re-simulations of the jet
    plain = dataset_from_config(make_config(tmp_path / "r2", views=VIEWS), data, "train", "pairs", VIEWS)
    assert set(next(iter(plain))) == {"x1", "mask1", "x2", "mask2", "label", "jet_id"}  # others unchanged


def _retrieval(method, data, split="test"):
    arr = load_arrays(data, split, method.cfg["training"]["features"], 32, views=["nominal"])
    with torch.no_grad():
        method.eval()
        z = method.encoder(torch.from_numpy(arr["x"]), torch.from_numpy(arr["mask"])).numpy()
        u = method.observables(torch.from_numpy(observables.from_arrays(arr))).numpy()
    method.train()
    return science.retrieval(z, u)


def test_200_steps_of_clip_retrieve_jets_from_their_observables(data, tmp_path):
    """200 optimiser steps of clip (DeepSets encoder, cross-view pairing) on the synthetic jets: given a test
    jet's observables, its own particle embedding is the nearest of 300 (chance 1/300 = 0.0033) for more than 10x
    chance, and among the 10 nearest for more than 5x chance (10/300); the same networks untrained do not."""
    cfg = clip_config(tmp_path)
    torch.manual_seed(0)
    method = CLIPMethod.from_config(cfg, len(cfg["training"]["features"]))
    method.cfg = cfg
    assert isinstance(method, CLIPMethod) and isinstance(build_method(cfg, 15), CLIPMethod)
    before = _retrieval(method, data)
    losses = train_steps(method, dataset_from_config(cfg, data, "train", "pairs", VIEWS), 200)
    after = _retrieval(method, data)
    print(f"clip loss {np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f}; retrieval top-1 {before['top1']:.4f} -> "
          f"{after['top1']:.4f}, top-10 {before['top10']:.4f} -> {after['top10']:.4f} (chance {after['chance_top1']:.4f}, "
          f"{after['chance_top10']:.4f}), median rank {before['median_rank']:.0f} -> {after['median_rank']:.0f}")
    assert after["n_jets"] == 300 and after["chance_top1"] == pytest.approx(1 / 300)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5
    assert after["top1"] > 10 * after["chance_top1"] and after["top10"] > 5 * after["chance_top10"]
    assert before["top1"] < 3 * before["chance_top1"]


def test_retrieval_counts_ties_against_the_jet():
    """A collapsed embedding (all equal) ranks every jet last; identical towers rank every jet first."""
    z = np.random.default_rng(0).normal(size=(50, 4))
    assert science.retrieval(z, z)["top1"] == 1.0
    r = science.retrieval(np.ones((50, 4)), z)
    assert r["top1"] == 0.0 and r["top10"] == 0.0 and r["median_rank"] == 49


def test_config_checks(tmp_path):
    with pytest.raises(ConfigError, match="pretrain.projection_head must be 0 with pretrain.objective 'clip'"):
        clip_config(tmp_path, projection_head=16)
    with pytest.raises(ConfigError, match="pretrain.clip_pairing'.*allowed values: cross, same"):
        clip_config(tmp_path, clip_pairing="other")


# ----------------------------------------------------------------------------- end to end

def test_clip_pretraining_science_neighbours_and_probe(data, tmp_path):
    """`rs3l pretrain` with objective clip writes encoder.pt with the observables MLP beside the encoder (every
    reader still loads it); `rs3l science` then measures retrieval, `rs3l neighbours --observables` searches the
    particle embeddings by observables (given as values or as a jet's), and `rs3l probe` runs on the encoder."""
    from rs3l.models.classifier import read_encoder_checkpoint
    from rs3l.training.pretrain import load_encoder, run

    cfg = clip_config(tmp_path, epochs=2)
    cfg["science"] = {**cfg["science"], "bootstrap": 20, "invariance_views": ["seed"]}
    cfg["evaluate"] = {**cfg["evaluate"], "seeds": 1, "probes": ["linear"], "linear_probe_c": [1.0],
                       "random_encoder": False, "substructure_bdt": False}
    cfg["finetune"] = {**cfg["finetune"], "label_fractions": [1.0]}
    out = tmp_path / "pretrain"
    s = run(cfg, data, out)
    assert s["history"][-1]["train/loss"] < s["history"][0]["train/loss"]
    info = torch.load(out / "encoder.pt", weights_only=True)
    assert set(info["observables"]) == {"state_dict", "observables", "hidden", "latent_dim", "temperature"}
    read_encoder_checkpoint(out / "encoder.pt", cfg)
    encoder, _ = load_encoder(out / "encoder.pt")
    assert observables.load(info) is not None
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    sci = tmp_path / "science.json"
    assert cli.main(["science", "--config", str(config), "--data", str(data), "--encoder", str(out / "encoder.pt"),
                     "--out", str(sci)]) == 0
    r = json.loads(sci.read_text())["retrieval"]
    assert r["n_jets"] == 300 and 0 <= r["top1"] <= r["top10"] <= 1 and r["top10"] > r["chance_top10"]

    jet = neighbours.neighbours(cfg, data, out / "encoder.pt", "1500", k=3)[0]
    by_jet = neighbours.neighbours(cfg, data, out / "encoder.pt", None, k=5, observables="1500")
    assert by_jet[0]["rank"] == 0 and by_jet[0]["class"] == jet["class"] and by_jet[0]["mass"] == jet["mass"]
    assert [e["rank"] for e in by_jet] == list(range(6))
    d = [e["distance"] for e in by_jet[1:]]
    assert d == sorted(d)
    text = "mass=170,sdmass=160,tau21=0.4,tau32=0.5,tau43=0.5,multiplicity=40,pt=700"
    by_values = neighbours.neighbours(cfg, data, out / "encoder.pt", None, k=4, observables=text)
    assert by_values[0]["mass"] == 170 and by_values[0]["pt"] == 700 and len(by_values) == 5
    assert cli.main(["neighbours", "--config", str(config), "--data", str(data), "--encoder", str(out / "encoder.pt"),
                     "--observables", text, "-k", "3"]) == 0

    probes = tmp_path / "probes.json"
    assert cli.main(["probe", "--config", str(config), "--data", str(data), "--encoder", str(out / "encoder.pt"),
                     "--out", str(probes)]) == 0
    records = json.loads(probes.read_text())
    assert {(r["method"], r["mode"]) for r in records} == {("rs3l-deepsets", "linear")}
    assert records[0]["metrics"]["auc"] > 0.6


def test_observables_query_needs_a_clip_encoder(data, tmp_path):
    from rs3l.models.encoders import build_encoder
    from rs3l.training.pretrain import save_encoder

    cfg = make_config(tmp_path / "results", views=VIEWS)
    save_encoder(tmp_path / "encoder.pt", build_encoder("deepsets", cfg, 15), cfg)
    with pytest.raises(ValueError, match="--observables needs an encoder pre-trained with objective 'clip'"):
        neighbours.neighbours(cfg, data, tmp_path / "encoder.pt", None, observables="1500")
