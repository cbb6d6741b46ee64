"""The Particle Transformer encoder (weaver-core's ParT): the encoder contract, its four-vectors, a tiny pre-training."""

import math

import mlflow
import pytest
import torch

from conftest import assert_padding_ignored
from rs3l.resolve import resolve
from rs3l.models.classifier import build_classifier
from rs3l.models.encoders import build_encoder, encoder_params
from rs3l.models.mlflow_model import pack
from rs3l.training.pretrain import load_encoder, run
from synthetic import make_config, make_dataset

NAME = "particle_transformer"


@pytest.fixture(scope="module")
def cfg():
    return resolve({"pretrain": {"encoder": NAME}})


@pytest.fixture(scope="module")
def n_features(cfg):
    return len(cfg["training"]["features"])


def batch(n_features, seed=0, B=6, P=20):
    """Random constituents (log pt around 2, i.e. a few GeV) with an empty jet, a single particle, ..., a full one."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, P, n_features, generator=g)
    x[..., 2] += 2.0
    n = torch.tensor([0, 1, 2, 7, 13, P][:B])
    mask = torch.arange(P)[None, :] < n[:, None]
    return x, mask


def test_output_shape_latent_dim_and_finite_gradients(cfg, n_features):
    enc = build_encoder(NAME, cfg, n_features)
    assert enc.latent_dim == cfg["encoders"][NAME]["latent_dim"] == 8
    z = enc(*batch(n_features))
    assert z.shape == (6, 8) and torch.isfinite(z).all()
    z.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


@pytest.mark.parametrize("train", [False, True])
def test_padded_entries_and_the_amount_of_padding_do_not_matter(train, cfg, n_features):
    torch.manual_seed(1)
    enc = build_encoder(NAME, cfg, n_features).train(train)
    x, mask = batch(n_features)
    z = assert_padding_ignored(enc, x, mask)
    with torch.no_grad():
        # ten more padded slots per jet (batch norms count valid constituents and pairs only)
        x3 = torch.cat([x, torch.full((6, 10, n_features), 7.0)], dim=1)
        m3 = torch.cat([mask, torch.zeros(6, 10, dtype=torch.bool)], dim=1)
        assert torch.allclose(enc(x3, m3), z, atol=1e-5)


def test_a_real_constituent_does_matter(cfg, n_features):
    torch.manual_seed(1)
    enc = build_encoder(NAME, cfg, n_features).eval()
    x, mask = batch(n_features)
    x3 = x.clone()
    x3[3, 0, :] += 1.0
    with torch.no_grad():
        z, z3 = enc(x, mask), enc(x3, mask)
    assert not torch.allclose(z3[3], z[3], atol=1e-4)
    assert torch.allclose(z3[[0, 1, 2, 4, 5]], z[[0, 1, 2, 4, 5]], atol=1e-5)


def test_particle_order_does_not_matter(cfg, n_features):
    torch.manual_seed(2)
    enc = build_encoder(NAME, cfg, n_features)
    x, mask = batch(n_features)
    perm = torch.randperm(x.shape[1])
    for mode in (True, False):
        enc.train(mode)
        with torch.no_grad():
            assert torch.allclose(enc(x[:, perm], mask[:, perm]), enc(x, mask), atol=1e-5)


def test_eval_output_of_a_jet_independent_of_the_batch(cfg, n_features):
    enc = build_encoder(NAME, cfg, n_features).eval()
    x, mask = batch(n_features)
    with torch.no_grad():
        assert torch.allclose(enc(x[3:4], mask[3:4]), enc(x, mask)[3:4], atol=1e-5)


def test_pair_features_are_those_of_the_lab_frame_constituents(cfg, n_features):
    """ln kT, ln z, ln ΔR, ln m² from the jet-frame four-vectors equal those of the lab-frame (massless) ones."""
    from weaver.nn.model.ParticleTransformer import pairwise_lv_fts_pp

    g = torch.Generator().manual_seed(3)
    jet_eta, jet_phi = 1.7, 2.9
    deta, dphi = 0.3 * torch.randn(2, 12, generator=g, dtype=torch.float64)
    pt = torch.exp(torch.randn(12, generator=g, dtype=torch.float64) + 2)
    eta, phi = jet_eta + deta, jet_phi + dphi
    lab = torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta), pt * torch.cosh(eta)])[None]
    enc = build_encoder(NAME, cfg, n_features)
    x = torch.zeros(1, 12, n_features, dtype=torch.float64)  # double: compare the physics, not the rounding
    x[0, :, :3] = torch.stack([deta, dphi, pt.log()], dim=1)  # part_deta, part_dphi, part_log_pt
    jet = enc.four_vectors(x)
    f_lab = pairwise_lv_fts_pp(lab.unsqueeze(-1), lab.unsqueeze(-2))
    f_jet = pairwise_lv_fts_pp(jet.unsqueeze(-1), jet.unsqueeze(-2))
    off_diagonal = ~torch.eye(12, dtype=torch.bool)
    assert torch.allclose(f_jet[..., off_diagonal], f_lab[..., off_diagonal], atol=1e-9)
    # a lab energy with a jet-frame pz (E = exp(part_log_e)) would not be: ΔR shrinks by about cosh(jet eta)
    wrong = jet.clone()
    wrong[:, 3] = lab[:, 3]
    f_wrong = pairwise_lv_fts_pp(wrong.unsqueeze(-1), wrong.unsqueeze(-2))
    assert not torch.allclose(f_wrong[:, 2][..., off_diagonal], f_lab[:, 2][..., off_diagonal], atol=0.1)
    assert math.isclose(float(jet[0, 3, 0]), float(pt[0] * torch.cosh(deta[0])), rel_tol=1e-12)


def test_embedding_is_not_chaotic_in_the_inputs(cfg, n_features):
    """Pair features in float64: in float32, ln m² of a particle with itself (and of nearly collinear pairs)
    lands above or below weaver's clamp at random, and a 1e-6 change of one log pt moved the embedding by 0.1."""
    torch.manual_seed(0)
    enc = build_encoder(NAME, cfg, n_features).train()
    with torch.no_grad():
        for s in range(3):
            enc(*batch(n_features, seed=s, B=6, P=30))
    enc.eval()
    x, mask = batch(n_features, seed=9, B=6, P=40)
    x2 = x.clone()
    x2[..., 2] += 1e-6 * torch.randn(x.shape[:2], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (enc(x2, mask) - enc(x, mask)).abs().max() < 1e-4


def test_needs_the_four_vector_features():
    cfg = resolve({"training": {"features": ["part_deta", "part_dphi", "part_log_e"]}})
    with pytest.raises(ValueError, match="part_deta, part_dphi, part_log_pt.*lacks part_log_pt"):
        build_encoder(NAME, cfg, 3)
    with pytest.raises(ValueError, match=r"needs the names of its input features \(training.features\)"):
        build_encoder(NAME, {"encoders": {}}, 3)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        build_encoder(NAME, resolve({"encoders": {NAME: {"embed_dims": [30], "num_heads": 4}}}), 15)


def test_the_feature_names_travel_with_the_hyper_parameters(cfg, n_features):
    """model.pt / encoder.pt store encoder_params(): a classifier rebuilt from them needs no config."""
    params = encoder_params(NAME, cfg)
    assert params["features"] == cfg["training"]["features"] and params["embed_dims"] == [64, 64]
    net = build_classifier(NAME, params, n_features, "mlp", 1, 16).eval()
    with torch.no_grad():
        assert net(*batch(n_features)).shape == (6, 1)


def test_tiny_pretraining_run_learns_and_writes_a_loadable_encoder(tmp_path):
    data = make_dataset(tmp_path / "data", n_jets_per_split={"train": 96, "val": 48, "test": 16},
                        replicas={"seed": 2}, seed=1)
    cfg = make_config(tmp_path / "results", pretrain={"encoder": NAME, "epochs": 2, "patience": 0},
                      training={"learning_rate": 3e-3, "max_constituents": 16},
                      encoders={NAME: {"embed_dims": [16], "pair_embed_dims": [8], "num_heads": 2, "num_layers": 1}})
    s = run(cfg, data, tmp_path / "out")
    h = s["history"]
    assert len(h) == 2 and all(math.isfinite(e["train/loss"]) for e in h)
    assert h[-1]["train/loss"] < h[0]["train/loss"]
    enc, info = load_encoder(tmp_path / "out" / "encoder.pt")
    assert info["encoder"] == NAME and info["encoder_params"]["features"] == cfg["training"]["features"]
    x, mask = batch(len(cfg["training"]["features"]), P=16)
    loaded = mlflow.pytorch.load_model(f"runs:/{s['run_id']}/encoder")  # logged as an MLflow model too
    with torch.no_grad():
        z = enc.eval()(x, mask)
        assert torch.isfinite(z).all()
        assert torch.allclose(loaded(pack(x, mask)), z, atol=1e-6)
