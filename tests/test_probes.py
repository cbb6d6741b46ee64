"""The cheap arms: convex linear probe, kNN probe, substructure BDT, and the `rs3l probe` stage.

Synthetic embeddings and jets with known structure, so each protocol can be checked
against what it must find; then the stage on a synthetic merged dataset, checking that
every arm of a (task, fraction, seed) trains on exactly the same labelled jets as the
deep arms.
"""

import copy
import json

import numpy as np
import pytest

from rs3l.evaluation import knn_probe, linear_probe, metrics, substructure_bdt

from synthetic import make_dataset


def separable(n, d=8, seed=0, margin=0.5):
    """Labels from a random hyperplane, points kept only outside a margin: linearly separable."""
    r = np.random.default_rng(seed)
    w = r.normal(size=d)
    z = r.normal(size=(4 * n, d)) * r.uniform(0.5, 5, d)  # unequal scales: the probe must standardise
    proj = z @ w / np.linalg.norm(w)
    keep = np.abs(proj / np.std(proj)) > margin
    return z[keep][:n], (proj[keep][:n] > 0).astype(int)


def test_linear_probe_separates_a_linearly_separable_embedding():
    X, y = separable(1500)
    model, info = linear_probe.fit(X[:500], y[:500], X[500:800], y[500:800])
    auc = metrics.roc_auc(y[800:], model.predict_proba(X[800:])[:, 1])
    assert auc > 0.99, auc
    assert info["converged"] and info["C"] == 100.0  # separable: the weakest L2 gives the lowest val loss
    assert set(info["val_loss_per_C"]) == {"0.001", "0.01", "0.1", "1", "10", "100"}


def test_linear_probe_on_noise_is_at_chance():
    r = np.random.default_rng(1)
    X, y = r.normal(size=(2000, 8)), r.integers(0, 2, 2000)
    model, _ = linear_probe.fit(X[:1000], y[:1000], X[1000:1500], y[1000:1500])
    assert abs(metrics.roc_auc(y[1500:], model.predict_proba(X[1500:])[:, 1]) - 0.5) < 0.08


def test_knn_probe_finds_clusters_a_linear_probe_cannot():
    """Signal on a ring around background: not linearly separable, trivial for kNN."""
    r = np.random.default_rng(2)
    n = 1500
    y = r.integers(0, 2, n)
    angle = r.uniform(0, 2 * np.pi, n)
    radius = np.where(y == 1, 3.0, 0.5) + r.normal(0, 0.2, n)
    X = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    knn, info = knn_probe.fit(X[:500], y[:500], X[500:800], y[500:800], ks=(5, 10, 20, 600))
    lin, _ = linear_probe.fit(X[:500], y[:500], X[500:800], y[500:800])
    assert metrics.roc_auc(y[800:], knn.predict_proba(X[800:])[:, 1]) > 0.99
    assert metrics.roc_auc(y[800:], lin.predict_proba(X[800:])[:, 1]) < 0.7
    # k = 600 is capped at the 500 labelled jets, where every jet gets the class fractions (AUC 0.5): not chosen
    assert set(info["val_auc_per_k"]) == {"5", "10", "20", "500"} and info["k"] in (5, 10, 20)
    assert info["val_auc_per_k"]["500"] < 0.6


def jets(n, seed):
    """Top-like (mass near 173 GeV, 3-prong: small tau32) vs QCD-like (falling mass, larger tau32)."""
    r = np.random.default_rng(seed)
    y = r.integers(0, 2, n)
    mass = np.where(y == 1, r.normal(173, 15, n), r.exponential(60, n))
    tau1 = r.uniform(0.2, 0.4, n)
    tau2 = tau1 * r.uniform(0.3, 0.9, n)
    tau3 = tau2 * np.where(y == 1, r.uniform(0.3, 0.7, n), r.uniform(0.6, 0.95, n))
    return {"mass": mass, "soft_drop_mass": 0.9 * mass, "tau1": tau1, "tau2": tau2, "tau3": tau3,
            "n_constituents": r.poisson(40, n), "pt": r.uniform(500, 1000, n)}, y


def test_substructure_bdt_learns_a_mass_window_and_stops_on_val():
    arr, y = jets(3000, 0)
    X = substructure_bdt.features(arr)
    assert X.shape == (3000, len(substructure_bdt.FEATURES))
    np.testing.assert_allclose(X[:, substructure_bdt.FEATURES.index("tau32")], arr["tau3"] / arr["tau2"])
    model, info = substructure_bdt.fit(X[:1000], y[:1000], X[1000:2000], y[1000:2000], seed=0)
    auc = metrics.roc_auc(y[2000:], model.predict_proba(X[2000:])[:, 1])
    mass_cut = metrics.roc_auc(y[2000:], -np.abs(arr["soft_drop_mass"][2000:] - 0.9 * 173))
    assert auc > 0.95 and auc >= mass_cut - 0.01, (auc, mass_cut)  # at least as good as the one-variable cut
    assert 1 <= info["n_iter"] < 500 and info["converged"]
    # 20 labelled jets still train (leaves shrink with the sample)
    small, _ = substructure_bdt.fit(X[:20], y[:20], X[1000:2000], y[1000:2000], seed=0)
    assert metrics.roc_auc(y[2000:], small.predict_proba(X[2000:])[:, 1]) > 0.8


# ----------------------------------------------------------------------------- the stage

CLASSES = ["q", "top", "wqq"]


@pytest.fixture(scope="module")
def probe_run(cfg, tmp_path_factory):
    from test_finetune import tiny_cfg, write_encoder

    from rs3l.evaluation.probe import probe

    tmp = tmp_path_factory.mktemp("probe")
    data = make_dataset(tmp / "data", n_jets_per_split={"train": 300, "val": 100, "test": 100},
                        views=["nominal", "seed", "fsr_up", "vincia"], classes=CLASSES, seed=0)
    c = tiny_cfg(cfg, tmp / "results")
    c["finetune"]["label_fractions"] = [0.1, 1.0]
    c["evaluate"].update(seeds=2)
    encoder = write_encoder(c, tmp / "encoder.pt")
    records = probe(c, data, encoder, tmp / "probes.json")
    return {"cfg": c, "data": data, "encoder": encoder, "records": records, "tmp": tmp}


def test_probe_stage_runs_every_arm_fraction_and_seed(probe_run):
    recs = probe_run["records"]
    assert json.loads((probe_run["tmp"] / "probes.json").read_text()) == recs
    arms = {(r["task"], r["method"], r["mode"], r["label_fraction"], r["seed"]) for r in recs}
    expected = {(t, m, mode, f, s) for t in ("top_vs_q", "three_class") for f in (0.1, 1.0) for s in (0, 1)
                for m, mode in (("rs3l-deepsets", "linear"), ("rs3l-deepsets", "knn"), ("random-deepsets", "linear"),
                                ("random-deepsets", "knn"), ("substructure-bdt", "baseline"))}
    assert arms == expected and len(recs) == len(expected)
    for r in recs:
        assert set(r["views"]) == {"nominal", "seed", "fsr_up", "vincia"}
        assert 0 <= r["metrics"]["auc"] <= 1 and 0 <= r["metrics"]["accuracy"] <= 1
        assert r["held_out_views"] == ["vincia"] and r["training"]["converged"] in (True, False)
    # the synthetic classes differ in prong count and multiplicity: the BDT (multiplicity) must see it
    bdt = [r for r in recs if r["method"] == "substructure-bdt" and r["task"] == "top_vs_q" and r["label_fraction"] == 1]
    assert min(r["metrics"]["auc"] for r in bdt) > 0.8


def test_every_arm_of_a_fraction_and_seed_uses_the_same_labelled_jets(probe_run, tmp_path):
    """Probes, random-encoder probes, the BDT and a deep arm: one jet-id hash per (task, fraction, seed)."""
    from rs3l.training.finetune import finetune

    recs = probe_run["records"]
    hashes = {}
    for r in recs:
        hashes.setdefault((r["task"], r["label_fraction"], r["seed"]), set()).add(r["labels_sha256"])
    assert all(len(h) == 1 for h in hashes.values()), hashes
    # seeds draw different subsets below 100% of the labels, the same set at 100%
    assert hashes[("top_vs_q", 0.1, 0)] != hashes[("top_vs_q", 0.1, 1)]
    assert hashes[("top_vs_q", 1.0, 0)] == hashes[("top_vs_q", 1.0, 1)]
    c = copy.deepcopy(probe_run["cfg"])
    c["finetune"].update(max_steps=10, min_steps=0, val_every=5, seeds=2)
    meta = finetune(c, probe_run["data"], "top_vs_q", "scratch", 0.1, tmp_path / "deep", seed=1)
    assert {meta["labels_sha256"]} == hashes[("top_vs_q", 0.1, 1)]


def test_pretrained_and_random_embeddings_differ(probe_run):
    recs = probe_run["records"]

    def auc(method, seed):
        return next(r["metrics"]["auc"] for r in recs if (r["task"], r["method"], r["mode"], r["label_fraction"],
                                                          r["seed"]) == ("top_vs_q", method, "linear", 1.0, seed))
    assert auc("random-deepsets", 0) != auc("random-deepsets", 1)  # a new random encoder per seed
    assert auc("rs3l-deepsets", 0) == auc("rs3l-deepsets", 1)  # convex: the same jets give the same probe
