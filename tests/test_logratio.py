"""Log-ratio regression on paired re-simulations (``rs3l science``, entry ``parameter_ratio``).

On a synthetic embedding z = a·log θ + hard-event noise shared by the two draws of a jet, the
difference z_u - z_v of a pair recovers the parameter (and the direction a) where one jet's embedding
cannot; then end to end on synthetic shards with two replicas of a scan view.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from rs3l import cli
from rs3l.resolve import resolve
from rs3l.evaluation import science
from synthetic import make_config, make_dataset

D = 8


def _draws(n_jets: int, n_draws: int, a: np.ndarray, hard: float, noise: float, seed: int):
    """Rows (n_jets * n_draws) of z = a·log θ + h_jet + ε: h (the hard event, shared by the jet's draws) ~ N(0, hard²)
    per dimension, ε ~ N(0, noise²) per draw, θ log-uniform in [0.25, 4] per draw. Returns z, log θ, jet, replica."""
    gen = np.random.default_rng(seed)
    jet = np.repeat(np.arange(n_jets), n_draws)
    replica = np.tile(np.arange(n_draws), n_jets)
    t = gen.uniform(np.log(0.25), np.log(4.0), n_jets * n_draws)
    h = gen.normal(0, hard, (n_jets, D))[jet]
    z = t[:, None] * a[None, :] + h + gen.normal(0, noise, (n_jets * n_draws, D))
    return z, t, jet, replica


def test_each_replica_of_a_scan_view_draws_its_own_value_per_block(tmp_path):
    """The draw stream includes the replica: replicas 0 and 1 of fsr_scan draw different values for every block of
    draw_block events (so the two draws of a pair differ), each constant inside its block, within [0.25, 4]."""
    from rs3l.physics.resimulate import drawn_values

    cfg = make_config(tmp_path, views=["nominal", "fsr_scan"], simulation={"views": ["nominal", "fsr_scan"],
                                                                            "processes": ["q", "top", "wqq"],
                                                                            "replicas": {"fsr_scan": 2}})
    cfg["views"]["fsr_scan"]["draw"] = {"TimeShower:renormMultFac": {"log_uniform": [0.25, 4.0]}}
    cfg = resolve(cfg)
    block = cfg["views"]["fsr_scan"]["draw_block"]
    r0, r1 = (drawn_values(cfg, "top", 0, "fsr_scan", r, 10 * block) for r in (0, 1))
    b0, b1 = r0.reshape(10, block), r1.reshape(10, block)
    assert (b0 == b0[:, :1]).all() and (b1 == b1[:, :1]).all()
    assert (b0[:, 0] != b1[:, 0]).all() and len(np.unique(b0[:, 0])) == 10
    assert ((r0 >= 0.25) & (r0 <= 4) & (r1 >= 0.25) & (r1 <= 4)).all()
    np.testing.assert_array_equal(r0, drawn_values(cfg, "top", 0, "fsr_scan", 0, 10 * block))  # reproducible


def test_replica_pairs_gives_every_pair_of_draws_of_one_jet():
    """m draws of a jet give its m(m-1)/2 pairs, lower replica first, whatever the row order; a jet with one draw none."""
    jet = np.array([7, 3, 7, 3, 7, 9, 3, 5, 5])
    replica = np.array([2, 1, 0, 0, 1, 0, 2, 1, 0])
    a, b = science.replica_pairs(jet, replica)
    got = sorted((int(jet[i]), int(replica[i]), int(replica[j])) for i, j in zip(a, b))
    assert got == [(3, 0, 1), (3, 0, 2), (3, 1, 2), (5, 0, 1), (7, 0, 1), (7, 0, 2), (7, 1, 2)]
    assert (jet[a] == jet[b]).all() and (replica[a] < replica[b]).all()
    assert [len(x) for x in science.replica_pairs(np.array([1, 2]), np.array([0, 0]))] == [0, 0]


def test_pairwise_regression_recovers_the_parameter_where_the_per_jet_regression_cannot():
    """z = a·log θ + h + ε with the hard-event part h (shared by the pair) 3× the parameter's spread along a:
    from one jet's z, log θ is regressed with R² < 0.3 (linear and MLP: the hard event swamps it); from the
    pair's difference z_u - z_v, where h cancels, log(θ_u/θ_v) with R² > 0.9, and the linear model's weights
    (per raw dimension) point along a (cosine > 0.99)."""
    a = np.random.default_rng(0).normal(0, 1, D)
    a /= np.linalg.norm(a)
    spread = np.log(16) / np.sqrt(12)  # std of log θ
    kw = {"hard": 3 * spread, "noise": 0.1}
    z_tr, t_tr, jet_tr, rep_tr = _draws(3000, 2, a, seed=1, **kw)
    z_te, t_te, jet_te, rep_te = _draws(1500, 2, a, seed=2, **kw)
    pa_tr, pb_tr = science.replica_pairs(jet_tr, rep_tr)
    pa_te, pb_te = science.replica_pairs(jet_te, rep_te)
    assert len(pa_te) == 1500  # one pair per jet with two draws

    ratio = science.regressions(z_tr[pa_tr] - z_tr[pb_tr], t_tr[pa_tr] - t_tr[pb_tr], z_te[pa_te] - z_te[pb_te],
                                t_te[pa_te] - t_te[pb_te], jet_te[pa_te], odd=True, n_boot=50, seed=3)
    absolute = science.regressions(z_tr, t_tr, z_te, t_te, jet_te, n_boot=50, seed=4)
    for model in ("linear", "mlp"):
        assert ratio[model]["r2"] > 0.9, (model, ratio[model])
        assert absolute[model]["r2"] < 0.3, (model, absolute[model])
        assert 0 < ratio[model]["r2_std"] < 0.02 and ratio[model]["resolution_std"] > 0
    # the pair's error is two draws' noise projected on a, in the log-ratio's units: sqrt(2) * 0.1 / |a|
    assert ratio["linear"]["resolution"] == pytest.approx(np.sqrt(2) * 0.1, rel=0.2)
    dz = z_tr[pa_tr] - z_tr[pb_tr]
    w = np.array(ratio["linear"]["coefficients"]) / np.sqrt((dz ** 2).mean(axis=0))  # symmetrised: mean 0
    assert w @ a / np.linalg.norm(w) > 0.99


def test_the_difference_of_draws_finds_nothing_where_the_embedding_ignores_the_parameter():
    """Control: a = 0 (the embedding does not depend on θ): the pairwise R² is ≈ 0 (< 0.05), not > 0.9."""
    z_tr, t_tr, jet_tr, rep_tr = _draws(2000, 2, np.zeros(D), hard=1.0, noise=0.1, seed=5)
    z_te, t_te, jet_te, rep_te = _draws(1000, 2, np.zeros(D), hard=1.0, noise=0.1, seed=6)
    (a_tr, b_tr), (a_te, b_te) = science.replica_pairs(jet_tr, rep_tr), science.replica_pairs(jet_te, rep_te)
    r = science.regressions(z_tr[a_tr] - z_tr[b_tr], t_tr[a_tr] - t_tr[b_tr], z_te[a_te] - z_te[b_te],
                            t_te[a_te] - t_te[b_te], jet_te[a_te], odd=True, n_boot=20, seed=7)
    assert r["linear"]["r2"] < 0.05 and r["mlp"]["r2"] < 0.05


def test_science_reports_the_ratio_of_two_replicas_beside_the_per_jet_regression(tmp_path):
    """End to end: a scan view simulated twice (replicas 0 and 1, each drawing its own value) gives one pair per
    test jet; `rs3l science` writes the parameter_ratio entry (linear and MLP, the per-jet regression on the same
    jets, pairs per jet); the synthetic multiplicity depends on the drawn value and, more, on the hard event
    (prongs), so the pair's difference regresses the parameter better than one jet (random DeepSets encoder)."""
    import torch

    from rs3l.models.encoders import build_encoder
    from rs3l.training.pretrain import save_encoder

    views = ["nominal", "seed", "fsr_scan"]
    data = make_dataset(tmp_path / "data", {"train": 600, "val": 100, "test": 300}, views=views,
                        replicas={"fsr_scan": 2}, seed=3)
    cfg = make_config(tmp_path / "results", views=views, simulation={"views": views, "processes": ["q", "top", "wqq"],
                                                                      "replicas": {"fsr_scan": 2}},
                      science={"bootstrap": 30, "invariance_views": []}, evaluate={"linear_probe_c": [1.0]})
    cfg["views"]["fsr_scan"]["draw"] = {"TimeShower:renormMultFac": {"log_uniform": [0.25, 4.0]}}
    cfg = resolve(cfg)
    torch.manual_seed(0)
    save_encoder(tmp_path / "encoder.pt", build_encoder("deepsets", cfg, len(cfg["training"]["features"])), cfg)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "science.json"
    assert cli.main(["science", "--config", str(tmp_path / "config.yaml"), "--data", str(data), "--encoder",
                     str(tmp_path / "encoder.pt"), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["retrieval"] == {}  # not a clip encoder
    p = r["parameter_ratio"]["fsr_scan"]
    assert p["parameter"] == "TimeShower:renormMultFac" and p["target"] == "log ratio"
    assert p["replicas"] == 2 and p["pairs_per_jet"] == 1.0 and p["n_jets"] == p["n_pairs"] == 300
    assert p["n_train_pairs"] == 600 and p["absolute"]["n_rows"] == 600
    for model in ("linear", "mlp"):
        assert set(p[model]) >= {"r2", "r2_std", "resolution", "resolution_std"}
    assert len(p["linear"]["coefficients"]) == cfg["encoders"]["deepsets"]["latent_dim"]
    best_ratio = max(p["linear"]["r2"], p["mlp"]["r2"])
    best_absolute = max(p["absolute"]["linear"]["r2"], p["absolute"]["mlp"]["r2"])
    assert best_ratio > best_absolute + 0.05, (p["linear"]["r2"], p["mlp"]["r2"], p["absolute"])
    # one replica in the data: no pairs, the entry is left out (and the rest of science runs)
    one = make_dataset(tmp_path / "one", {"train": 200, "val": 50, "test": 100}, views=views, seed=4)
    assert science.science(cfg, one, tmp_path / "encoder.pt")["parameter_ratio"] == {}
