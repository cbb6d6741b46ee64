"""``rs3l science`` and ``rs3l neighbours``: invariance, parameter and anomaly probes on frozen embeddings.

The probes are checked on synthetic embeddings where the right answer is known by construction
(a parameter planted linearly, a class drawn from the background distribution, two views that
are identical or shifted), then end to end on tiny synthetic shards through the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from rs3l import cli
from rs3l.config import ConfigError
from rs3l.resolve import resolve
from rs3l.evaluation import neighbours, science
from synthetic import make_config, make_dataset


def _gauss(seed, n, d=8, shift=0.0):
    return np.random.default_rng(seed).normal(0, 1, (n, d)) + shift


def test_parameter_probe_recovers_a_linearly_planted_parameter():
    """A parameter that is a linear function of the embedding (plus 5% noise) is recovered: R² > 0.95,
    and the resolution is the planted noise (half the 16-84% width of a Gaussian = its sigma)."""
    w = np.random.default_rng(1).normal(0, 1, 8)
    z_train, z_test = _gauss(2, 2000), _gauss(3, 1000)
    sigma = 0.05 * np.linalg.norm(w)
    t_train = z_train @ w + np.random.default_rng(4).normal(0, sigma, 2000)
    t_test = z_test @ w + np.random.default_rng(5).normal(0, sigma, 1000)
    r = science.parameter_regression(z_train, t_train, z_test, t_test, n_boot=100)
    assert r["r2"] > 0.95
    assert r["resolution"] == pytest.approx(sigma, rel=0.15)
    assert 0 < r["r2_std"] < 0.01 and r["resolution_std"] > 0
    assert r["n_jets"] == 1000


def test_parameter_probe_finds_nothing_in_noise():
    """A target independent of the embedding: R² ≈ 0 (|R²| < 0.05) and the resolution is the target's own spread."""
    z_train, z_test = _gauss(6, 2000), _gauss(7, 1000)
    t_train, t_test = np.random.default_rng(8).uniform(-1, 1, 2000), np.random.default_rng(9).uniform(-1, 1, 1000)
    r = science.parameter_regression(z_train, t_train, z_test, t_test, n_boot=100)
    assert abs(r["r2"]) < 0.05
    assert r["resolution"] == pytest.approx(np.diff(np.quantile(t_test, [0.16, 0.84]))[0] / 2, rel=0.15)


def test_anomaly_auc_is_one_half_for_a_class_drawn_from_the_background():
    """A 'signal' class drawn from the background distribution is not anomalous: AUC ≈ 0.5, inside its
    bootstrap interval; a class shifted by 2 sigma in every latent direction is: AUC > 0.9."""
    bg_train, bg_test = _gauss(10, 3000), _gauss(11, 1000)
    same = science.anomaly(bg_train, _gauss(12, 500), bg_test, k=10, n_boot=200)
    lo, hi = same["auc_ci"]
    assert lo < 0.5 < hi and abs(same["auc"] - 0.5) < 0.05
    assert same["n_signal"] == 500 and same["n_background"] == 1000 and same["auc_std"] > 0
    shifted = science.anomaly(bg_train, _gauss(13, 500, shift=2.0), bg_test, k=10, n_boot=200)
    assert shifted["auc"] > 0.9 and shifted["auc_ci"][0] > 0.85


def test_invariance_auc_is_one_half_for_identical_views_and_high_for_shifted_ones():
    """Nominal vs view of the same jets: identical embeddings cannot be told apart (AUC 0.5); two
    re-simulations from the same distribution (shared jet part + independent noise) neither
    (AUC within 3 std of 0.5); a view shifted along one latent direction is found (AUC > 0.9)."""
    jets = {s: _gauss(20 + i, n) for i, (s, n) in enumerate((("train", 1500), ("val", 300), ("test", 800)))}
    same = science.invariance(*[(z, z.copy()) for z in jets.values()], n_boot=100)
    assert same["auc"] == pytest.approx(0.5, abs=1e-9)

    def resim(z, seed, shift=0.0):
        rng = np.random.default_rng(seed)
        return z + rng.normal(0, 0.5, z.shape) + np.r_[shift, np.zeros(z.shape[1] - 1)]

    pairs = [(resim(z, 30 + i), resim(z, 40 + i)) for i, z in enumerate(jets.values())]
    alike = science.invariance(*pairs, n_boot=200)
    assert abs(alike["auc"] - 0.5) < 3 * alike["auc_std"] + 0.01
    assert alike["n_jets"] == 800
    shifted = science.invariance(*[(resim(z, 50 + i), resim(z, 60 + i, shift=3.0)) for i, z in enumerate(jets.values())],
                                 n_boot=100)
    assert shifted["auc"] > 0.9


def test_nearest_lists_the_right_jets_on_a_handmade_embedding():
    """Points on a line at 0, 1, 3, 6.5, 10: the neighbours of the point at 3 are 1, 0, 6.5 in that
    order, at 2, 3 and 3.5 (divided by the points' std: standardised units); the query is not listed."""
    x = np.array([0.0, 1.0, 3.0, 6.5, 10.0])
    z = np.stack([x, np.zeros(5)], axis=1)
    rows, dist = neighbours.nearest(z, 2, k=3)
    assert rows.tolist() == [1, 0, 3]
    assert dist == pytest.approx(np.array([2.0, 3.0, 3.5]) / x.std(), rel=1e-6)
    assert neighbours.nearest(z, 2, k=10)[0].tolist() == [1, 0, 3, 4]
    data = {"jet_id": np.array([7, 8, 9]), "process": np.array(["top", "top", "qcd"], object),
            "chunk": np.array([0, 1, 0]), "event": np.array([5, 5, 5]), "object": np.array([2, 2, 2])}
    assert neighbours.find_jet(data, "9") == 2
    assert neighbours.find_jet(data, "top:1:5:2") == 1
    with pytest.raises(ValueError, match="not among"):
        neighbours.find_jet(data, "top:2:5:2")
    with pytest.raises(ValueError, match="process:chunk:event:object"):
        neighbours.find_jet(data, "top:1")


def test_config_rejects_bad_science_and_exclusion_settings(tmp_path, caplog):
    """Held-out classes must be classes (a task labelling one gets a warning naming the task);
    anomaly classes must be classes."""
    with pytest.raises(ConfigError, match="pretrain.exclude_classes: unknown class 'wq'"):
        make_config(tmp_path, pretrain={"exclude_classes": ["wq"]})
    from rs3l import config

    config._warn_once.cache_clear()  # logged once per process: an earlier test may have met the same config
    make_config(tmp_path, pretrain={"exclude_classes": ["top"]})
    assert "finetune.tasks.top_vs_q.signal: class 'top' is held out of pre-training" in caplog.text
    with pytest.raises(ConfigError, match="science.anomaly.class: unknown class 'zz'"):
        make_config(tmp_path, science={"anomaly": {"class": "zz", "background": ["q"]}})
    with pytest.raises(ConfigError, match="science.anomaly: class 'q' is also in background"):
        make_config(tmp_path, science={"anomaly": {"class": "q", "background": ["q"]}})


@pytest.fixture(scope="module")
def science_setup(tmp_path_factory):
    """Synthetic shards with a parameter-scan view (its drawn value lowers the multiplicity), wqq held
    out of pre-training, and a randomly initialised DeepSets encoder saved as encoder.pt (a frozen
    encoder like any other; sum pooling sees the multiplicity)."""
    import torch

    from rs3l.models.encoders import build_encoder
    from rs3l.training.pretrain import save_encoder

    tmp = tmp_path_factory.mktemp("science")
    views = ["nominal", "seed", "fsr_up", "fsr_scan"]
    data = make_dataset(tmp / "data", {"train": 600, "val": 150, "test": 400}, views=views)
    cfg = make_config(tmp / "results", views=views, pretrain={"exclude_classes": ["wqq"]},
                      science={"anomaly": {"class": "wqq", "background": ["q"], "k": 5}, "bootstrap": 50},
                      evaluate={"linear_probe_c": [0.1, 10.0]})
    cfg["views"]["fsr_scan"]["draw"] = {"TimeShower:renormMultFac": {"log_uniform": [0.25, 4.0]}}
    cfg = resolve(cfg)
    torch.manual_seed(0)
    encoder = build_encoder("deepsets", cfg, len(cfg["training"]["features"]))
    save_encoder(tmp / "encoder.pt", encoder, cfg)
    config_path = tmp / "config.yaml"
    config_path.write_text(yaml.safe_dump(cfg))
    return {"tmp": tmp, "data": data, "cfg": cfg, "config": config_path, "encoder": tmp / "encoder.pt"}


def test_science_end_to_end_on_synthetic_shards(science_setup):
    """`rs3l science` writes the documented JSON: the seed view (same distribution as nominal) is
    invisible to the probe (AUC within 3 std of 0.5); the drawn parameter, which scales the
    multiplicity, is regressed with R² > 0.1 even by a random encoder; wqq (two prongs) is
    anomalous against q (one prong) with AUC > 0.9."""
    s = science_setup
    out = s["tmp"] / "science.json"
    rc = cli.main(["science", "--config", str(s["config"]), "--data", str(s["data"]), "--encoder", str(s["encoder"]),
                   "--out", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    assert set(r) == {"encoder", "invariance", "parameter", "parameter_ratio", "retrieval", "anomaly"}
    assert r["parameter_ratio"] == {} and r["retrieval"] == {}  # one replica per view; not a clip encoder
    assert set(r["invariance"]) == {"seed", "fsr_up", "fsr_scan"}
    for entry in r["invariance"].values():
        assert set(entry) == {"auc", "auc_std", "n_jets"} and entry["n_jets"] == 400
    seed = r["invariance"]["seed"]
    assert abs(seed["auc"] - 0.5) < 3 * seed["auc_std"] + 0.01
    assert set(r["parameter"]) == {"fsr_scan"}
    p = r["parameter"]["fsr_scan"]
    assert set(p) == {"parameter", "r2", "r2_std", "resolution", "resolution_std", "n_jets"}
    assert p["parameter"] == "TimeShower:renormMultFac" and p["r2"] > 0.1 and p["n_jets"] == 400
    a = r["anomaly"]
    assert set(a) == {"class", "background", "auc", "auc_std", "auc_ci", "n_signal", "n_background"}
    assert a["class"] == "wqq" and a["background"] == ["q"] and a["auc"] > 0.9
    assert a["auc_ci"][0] <= a["auc"] <= a["auc_ci"][1]


def test_science_leaves_out_missing_entries_unless_strict(science_setup, caplog):
    """An entry the data cannot support (here: fewer background train jets than the anomaly's k) is
    left out with a logged reason, or is an error with science.strict; a view listed explicitly in
    science.invariance_views but absent from the data is an error."""
    s = science_setup
    sc = s["cfg"]["science"]
    few = resolve({**s["cfg"], "science": {**sc, "invariance_views": ["seed"], "parameter_views": [],
                                           "anomaly": {**sc["anomaly"], "k": 100_000}}})
    r = science.science(few, s["data"], s["encoder"])
    assert r["anomaly"] == {} and set(r["invariance"]) == {"seed"} and r["parameter"] == {}
    assert "too few jets" in caplog.text
    strict = resolve({**few, "science": {**few["science"], "strict": True, "invariance_views": []}})
    with pytest.raises(ValueError, match="anomaly 'wqq'.*too few jets"):
        science.science(strict, s["data"], s["encoder"])
    explicit = resolve({**s["cfg"], "views": {**s["cfg"]["views"], "vincia": {}},
                        "science": {**sc, "invariance_views": ["vincia"]}})
    with pytest.raises(ValueError, match="invariance_views names view 'vincia'"):
        science.science(explicit, s["data"], s["encoder"])


def test_neighbours_cli_lists_k_jets(science_setup, capsys):
    """`rs3l neighbours` prints the query and its k nearest test jets (nominal view), nearest first,
    each with class, view, mass, pt and distance; the query jet is not its own neighbour."""
    s = science_setup
    entries = neighbours.neighbours(s["cfg"], s["data"], s["encoder"], "900", k=4)
    assert [e["rank"] for e in entries] == [0, 1, 2, 3, 4]
    assert entries[0]["jet_id"] == 900 and 900 not in [e["jet_id"] for e in entries[1:]]
    d = [e["distance"] for e in entries[1:]]
    assert d == sorted(d) and d[0] > 0
    assert {e["view"] for e in entries} == {"nominal"}
    rc = cli.main(["neighbours", "--config", str(s["config"]), "--data", str(s["data"]), "--encoder",
                   str(s["encoder"]), "--jet", entries[0]["key"], "-k", "4"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "distance" in printed and str(entries[4]["jet_id"]) in printed


def test_exclude_classes_keeps_the_held_out_class_out_of_the_pretraining_stream(science_setup):
    """pretrain.exclude_classes: [wqq] removes every wqq jet from the pre-training pairs (train and val);
    the other classes keep all their pairs, and fine-tuning streams are untouched."""
    from rs3l.training.data import dataset_from_config

    s = science_setup
    wqq = s["cfg"]["classes"].index("wqq")
    allowed = resolve({**s["cfg"], "pretrain": {**s["cfg"]["pretrain"], "exclude_classes": []}})
    for split in ("train", "val"):
        held_out = dataset_from_config(s["cfg"], s["data"], split, "pairs", train=False)
        full = dataset_from_config(allowed, s["data"], split, "pairs", train=False)
        labels = np.concatenate([b["label"].numpy() for b in held_out])
        all_labels = np.concatenate([b["label"].numpy() for b in full])
        assert wqq not in labels and (all_labels == wqq).sum() > 0
        assert held_out.n_items == len(labels) == (all_labels != wqq).sum()
    jets = dataset_from_config(s["cfg"], s["data"], "train", "jets", stream="finetune", train=False)
    assert wqq in np.concatenate([b["label"].numpy() for b in jets])
