"""Objectives and embedding diagnostics behave as their definitions say (random tensors only)."""

import math

import pytest
import torch
import torch.nn.functional as F

from rs3l.resolve import resolve
from rs3l.models import objectives
from rs3l.models.objectives import (alignment, get_objective, knn_accuracy, ntxent, objective_from_config,
                                    pair_similarities, uniformity, vicreg, vicreg_terms)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def ntxent_by_hand(z1, z2, temperature):
    """The SimCLR definition written out anchor by anchor."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    total = 0.0
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        sims = [(z[i] @ z[k]) / temperature for k in range(2 * n) if k != i]
        total += -(z[i] @ z[partner] / temperature - torch.logsumexp(torch.stack(sims), 0))
    return total / (2 * n)


def test_ntxent_matches_its_definition(gen):
    z1, z2 = torch.randn(6, 4, generator=gen), torch.randn(6, 4, generator=gen)
    for t in (0.1, 0.5):
        assert ntxent(z1, z2, t).item() == pytest.approx(ntxent_by_hand(z1, z2, t).item(), rel=1e-5)


def test_ntxent_aligned_separated_pairs_beat_shuffled_pairs(gen):
    z1 = torch.linalg.qr(torch.randn(16, 16, generator=gen))[0]  # 16 orthonormal embeddings
    z2 = z1 + 0.01 * torch.randn(16, 16, generator=gen)
    aligned = ntxent(z1, z2, 0.1)
    shuffled = ntxent(z1, z2[torch.randperm(16, generator=gen)], 0.1)
    assert aligned < 0.01  # near log(1 + 30 e^-10)
    assert shuffled > 5.0
    # symmetric in the two views, and blind to the embedding norm
    assert ntxent(z2, z1) == pytest.approx(ntxent(z1, z2).item(), rel=1e-6)
    assert ntxent(3 * z1, z2) == pytest.approx(ntxent(z1, z2).item(), rel=1e-5)


def test_vicreg_variance_term_zero_for_unit_variance_positive_for_collapse(gen):
    z = torch.randn(256, 8, generator=gen)
    z = (z - z.mean(0)) / z.std(0)  # exactly unit variance per dimension
    assert vicreg_terms(z, z)["variance"].item() == 0.0
    collapsed = torch.ones(256, 8)
    assert vicreg_terms(collapsed, collapsed)["variance"].item() == pytest.approx(1 - math.sqrt(1e-4), rel=1e-4)


def test_vicreg_invariance_and_covariance_terms(gen):
    z1, z2 = torch.randn(128, 8, generator=gen), torch.randn(128, 8, generator=gen)
    t = vicreg_terms(z1, z2)
    assert t["invariance"].item() == pytest.approx(((z1 - z2) ** 2).mean().item(), rel=1e-6)
    assert vicreg_terms(z1, z1)["invariance"].item() == 0.0
    # decorrelated (whitened) embeddings: no covariance penalty; duplicated dimensions: a large one
    white = torch.linalg.qr(z1 - z1.mean(0))[0] * math.sqrt(127)  # centred, covariance = identity
    assert vicreg_terms(white, white)["covariance"].item() < 1e-8
    dup = torch.cat([z1[:, :4], z1[:, :4]], dim=1)
    assert vicreg_terms(dup, dup)["covariance"].item() > 0.5
    # the loss is the weighted sum of the terms
    expected = 2 * t["invariance"] + 3 * t["variance"] + 0.5 * t["covariance"]
    assert vicreg(z1, z2, 2, 3, 0.5).item() == pytest.approx(expected.item(), rel=1e-6)


def test_registry_and_config_binding(gen):
    assert set(objectives.OBJECTIVES) == {"ntxent", "vicreg", "jepa", "clip"}
    with pytest.raises(ValueError, match="unknown objective 'simclr2'; known: ntxent, vicreg"):
        get_objective("simclr2")
    z1, z2 = torch.randn(8, 4, generator=gen), torch.randn(8, 4, generator=gen)
    cfg = resolve({"pretrain": {"objective": "ntxent", "temperature": 0.5}})
    assert objective_from_config(cfg)(z1, z2).item() == pytest.approx(ntxent(z1, z2, 0.5).item())
    cfg = resolve({"pretrain": {"objective": "vicreg", "vicreg_weights": {"covariance": 0.0}}})
    assert objective_from_config(cfg)(z1, z2).item() == pytest.approx(vicreg(z1, z2, 25, 25, 0).item())
    cfg = resolve({"pretrain": {"objective": "clip", "temperature": 0.5}})
    assert objective_from_config(cfg)(z1, z2).item() == pytest.approx(objectives.clip(z1, z2, 0.5).item())


def test_multi_positive_ntxent_with_two_views_is_ntxent_exactly(gen):
    """views_per_jet 2: the multi-positive loss equals NT-Xent on the same batch (1e-6)."""
    for t in (0.1, 0.5):
        z1, z2 = torch.randn(32, 8, generator=gen), torch.randn(32, 8, generator=gen)
        assert objectives.ntxent_multi(z1, z2, temperature=t).item() == pytest.approx(ntxent(z1, z2, t).item(),
                                                                                     rel=1e-6, abs=1e-6)


def test_multi_positive_ntxent_matches_its_definition_for_three_views(gen):
    """n views: each anchor's loss is minus the mean log-softmax of its n - 1 positives among all others."""
    zs = [torch.randn(5, 4, generator=gen) for _ in range(3)]
    z = F.normalize(torch.cat(zs), dim=1)
    n, total = 5, 0.0
    for i in range(15):
        others = [k for k in range(15) if k != i]
        log_den = torch.logsumexp(torch.stack([z[i] @ z[k] / 0.2 for k in others]), 0)
        positives = [k for k in others if k % n == i % n]
        total += -sum(z[i] @ z[k] / 0.2 - log_den for k in positives) / len(positives)
    assert objectives.ntxent_multi(*zs, temperature=0.2).item() == pytest.approx(total.item() / 15, rel=1e-5)
    # aligned views of each jet reach the minimum log(n - 1) (the n - 1 positives share the softmax);
    # views mixed between jets score far worse
    base = torch.linalg.qr(torch.randn(8, 8, generator=gen))[0]
    aligned = [base + 0.01 * torch.randn(8, 8, generator=gen) for _ in range(4)]
    assert objectives.ntxent_multi(*aligned).item() == pytest.approx(math.log(3), abs=0.01)
    mixed = aligned[:3] + [aligned[3][torch.arange(8).roll(1)]]
    assert objectives.ntxent_multi(*mixed) > math.log(3) + 2
    with pytest.raises(ValueError, match="at least 2 views"):
        objectives.ntxent_multi(zs[0])


def test_config_binding_for_n_views(gen):
    """vicreg on n views = mean over the pairs; ntxent on n views = the multi-positive loss."""
    zs = [torch.randn(8, 4, generator=gen) for _ in range(3)]
    cfg = resolve({"simulation": {"views": ["nominal", "seed", "fsr_up"]},
                   "pretrain": {"objective": "vicreg", "augment_views": ["nominal", "seed", "fsr_up"],
                                "views_per_jet": 3}})
    pairs = [vicreg(zs[a], zs[b]) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert objective_from_config(cfg)(*zs).item() == pytest.approx(sum(pairs).item() / 3, rel=1e-6)
    cfg = resolve({"pretrain": {"objective": "ntxent", "augment_views": ["jetclr"], "views_per_jet": 3}})
    assert objective_from_config(cfg)(*zs).item() == pytest.approx(objectives.ntxent_multi(*zs).item(), rel=1e-6)


def test_diagnostics(gen):
    z = torch.randn(64, 8, generator=gen)
    pos, neg = pair_similarities(z, z)
    assert pos.item() == pytest.approx(1.0)
    assert abs(neg.item()) < 0.1  # random directions in 8-d are nearly orthogonal on average
    assert alignment(z, z).item() == pytest.approx(0.0, abs=1e-6)
    assert alignment(z, -z).item() == pytest.approx(4.0)  # antipodal: distance 2, squared
    clustered = torch.ones(64, 8) + 0.01 * torch.randn(64, 8, generator=gen)
    assert uniformity(z) < uniformity(clustered)


def test_knn_accuracy(gen):
    centres = 5 * torch.eye(3, 8)
    labels = torch.arange(3).repeat_interleave(30)
    z = centres[labels] + 0.3 * torch.randn(90, 8, generator=gen)
    assert knn_accuracy(z, labels, k=5) == 1.0
    shuffled = labels[torch.randperm(90, generator=gen)]
    assert knn_accuracy(z, shuffled, k=5) < 0.6
