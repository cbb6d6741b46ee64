"""Encoders: shapes, invariance to padding and particle order, the build_encoder contract."""

import pytest
import torch

from conftest import assert_padding_ignored
from rs3l.config import ConfigError
from rs3l.resolve import resolve
from rs3l.models.encoders import ENCODERS, build_encoder

NAMES = ["particlenet", "transformer", "deepsets"]
F = 15


@pytest.fixture(scope="module")
def cfg():
    return resolve({})


def batch(seed=0, B=6, P=20):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, P, F, generator=g)
    n = torch.tensor([0, 1, 2, 7, 13, P][:B])  # an empty jet, a single particle, ..., a full one
    mask = torch.arange(P)[None, :] < n[:, None]
    return x, mask


@pytest.mark.parametrize("name", NAMES)
def test_output_shape_and_latent_dim(name, cfg):
    enc = build_encoder(name, cfg, F)
    x, mask = batch()
    z = enc(x, mask)
    assert enc.latent_dim == cfg["encoders"][name]["latent_dim"] == 8
    assert z.shape == (6, 8)
    assert torch.isfinite(z).all()
    z.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("train", [False, True])
def test_padded_entries_do_not_matter(name, train, cfg):
    torch.manual_seed(1)
    enc = build_encoder(name, cfg, F).train(train)
    x, mask = batch()
    assert_padding_ignored(enc, x, mask)


@pytest.mark.parametrize("name", NAMES)
def test_a_real_constituent_does_matter(name, cfg):
    torch.manual_seed(1)
    enc = build_encoder(name, cfg, F).eval()
    x, mask = batch()
    x3 = x.clone()
    x3[3, 0, :] += 1.0
    with torch.no_grad():
        z, z3 = enc(x, mask), enc(x3, mask)
    assert not torch.allclose(z3[3], z[3], atol=1e-4)  # that jet changes...
    assert torch.allclose(z3[[0, 1, 2, 4, 5]], z[[0, 1, 2, 4, 5]], atol=1e-5)  # ...the others do not


@pytest.mark.parametrize("name", NAMES)
def test_particle_order_does_not_matter(name, cfg):
    torch.manual_seed(2)
    enc = build_encoder(name, cfg, F)
    x, mask = batch()
    perm = torch.randperm(x.shape[1])
    for mode in (True, False):
        enc.train(mode)
        with torch.no_grad():
            assert torch.allclose(enc(x[:, perm], mask[:, perm]), enc(x, mask), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_eval_output_of_a_jet_independent_of_the_batch(name, cfg):
    enc = build_encoder(name, cfg, F).eval()
    x, mask = batch()
    with torch.no_grad():
        assert torch.allclose(enc(x[3:4], mask[3:4]), enc(x, mask)[3:4], atol=1e-5)


def test_hyper_parameters_come_from_config():
    cfg = resolve({"encoders": {"deepsets": {"latent_dim": 5, "hidden": 16},
                                "particlenet": {"channels": [16], "k": 3, "latent_dim": 4}}})
    assert build_encoder("deepsets", cfg, F)(*batch()).shape == (6, 5)
    pn = build_encoder("particlenet", cfg, F)
    assert len(pn.blocks) == 1 and pn.blocks[0].k == 3
    assert pn(*batch()).shape == (6, 4)
    # a partial config falls back to the schema's defaults
    assert build_encoder("transformer", {"encoders": {}}, F).latent_dim == 8


def test_unknown_encoder_and_bad_hyper_parameters(cfg):
    assert list(ENCODERS) == NAMES + ["particle_transformer"]  # tested in test_particle_transformer.py
    with pytest.raises(ValueError, match="unknown encoder 'pointnet'; known: particlenet, transformer, deepsets"):
        build_encoder("pointnet", cfg, F)
    with pytest.raises(ValueError, match="divisible"):
        build_encoder("transformer", resolve({"encoders": {"transformer": {"dim": 10, "heads": 4}}}), F)
    with pytest.raises(ConfigError, match="allowed values: particlenet, transformer, deepsets"):
        resolve({"pretrain": {"encoder": "pointnet"}})
    with pytest.raises(ConfigError, match="encoders.particlenet"):
        resolve({"encoders": {"particlenet": {"kk": 3}}})
