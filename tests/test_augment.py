"""Hand-crafted augmentations (JetCLR + random field) as views: physics of each transform on
hand-made jets, consistency of the derived features, and their use in the pre-training loader."""

import numpy as np
import pytest
import torch

from rs3l import config
from rs3l.resolve import resolve
from rs3l.physics import jets as jets_module
from rs3l.physics.features import derived_features
from rs3l.seeds import rng
from rs3l.training import augment
from rs3l.training.data import JetDataset, load_arrays
from synthetic import make_dataset

COLUMNS = list(augment.KINEMATIC_FEATURES) + ["part_delta_r", "part_charge", augment.JET_ETA]


def hand_made(pt, deta, dphi, jet_eta=0.7, P=8, charge=None):
    """One jet per row of ``pt`` (jets, n): massless constituents at (deta, dphi) from an axis at
    (jet_eta, φ = 0), padded to P; the jet's pT and E are the constituents' scalar sums."""
    pt, deta, dphi = (np.atleast_2d(np.asarray(a, float)) for a in (pt, deta, dphi))
    J, n = pt.shape
    e = pt * np.cosh(jet_eta + deta)
    feats = derived_features(deta, dphi, pt, e, pt.sum(1)[:, None], e.sum(1)[:, None])
    x = np.zeros((J, P, len(COLUMNS)), np.float32)
    for i, name in enumerate(COLUMNS):
        if name in feats:
            x[:, :n, i] = feats[name]
    x[:, :n, COLUMNS.index("part_charge")] = 0 if charge is None else charge
    x[:, :n, COLUMNS.index(augment.JET_ETA)] = jet_eta
    mask = np.zeros((J, P), bool)
    mask[:, :n] = True
    return x, mask


def col(x, name):
    return x[..., COLUMNS.index(name)].astype(np.float64)


def four_momentum(x, mask):
    """Sum of (px, py, pz, E) over a jet's constituents (jet axis at φ = 0)."""
    pt, eta, phi = np.exp(col(x, "part_log_pt")), col(x, augment.JET_ETA) + col(x, "part_deta"), col(x, "part_dphi")
    p4 = np.stack([pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta), np.exp(col(x, "part_log_e"))], -1)
    return (p4 * mask[..., None]).sum(1)


def assert_features_consistent(x, mask):
    """Every derived feature agrees with (Δη, Δφ, pT, E) and one jet pT and E per jet; E = pT cosh η."""
    m = mask
    np.testing.assert_allclose(col(x, "part_delta_r")[m], np.hypot(col(x, "part_deta"), col(x, "part_dphi"))[m],
                               rtol=1e-5, atol=1e-6)
    for rel, raw in (("part_log_pt_rel", "part_log_pt"), ("part_log_e_rel", "part_log_e")):
        jet_log = np.where(m, col(x, raw) - col(x, rel), np.nan)
        assert np.nanmax(jet_log, 1) - np.nanmin(jet_log, 1) == pytest.approx(0, abs=1e-5)
    eta = col(x, augment.JET_ETA) + col(x, "part_deta")
    np.testing.assert_allclose(col(x, "part_log_e")[m], (col(x, "part_log_pt") + np.log(np.cosh(eta)))[m], atol=2e-5)
    assert (x[~m] == 0).all()


def test_rotation_keeps_delta_r_and_pt_and_turns_every_constituent_by_one_angle():
    """A rotation about the jet axis keeps each constituent's ΔR and pT; all turn by the same angle."""
    gen = np.random.default_rng(1)
    pt = [[300.0, 120.0, 40.0, 5.0, 1.0]]
    deta, dphi = gen.uniform(-0.4, 0.4, (1, 5)), gen.uniform(-0.4, 0.4, (1, 5))
    x, mask = hand_made(pt, deta, dphi)
    y, ymask = augment.apply(("rotate",), x, mask, COLUMNS, rng(0, "test-rotate"))
    assert (ymask == mask).all()
    np.testing.assert_allclose(col(y, "part_log_pt"), col(x, "part_log_pt"), atol=1e-6)  # pT order kept
    np.testing.assert_allclose(col(y, "part_delta_r"), col(x, "part_delta_r"), atol=1e-6)
    c = lambda a: (col(a, "part_deta") + 1j * col(a, "part_dphi"))[mask]  # noqa: E731
    turn = np.angle(c(y) / c(x))
    assert np.ptp(turn) < 1e-4 and abs(turn[0]) > 1e-3  # one angle, and not zero
    assert_features_consistent(y, ymask)
    # the jet pT is unchanged (constituent pTs are), the jet energy follows the moved constituents
    assert col(y, "part_log_pt_rel")[0, 0] == pytest.approx(col(x, "part_log_pt_rel")[0, 0], abs=1e-6)
    assert np.exp(col(y, "part_log_e") - col(y, "part_log_e_rel"))[0, 0] == pytest.approx(
        np.exp(col(y, "part_log_e"))[mask].sum(), rel=1e-5)


def test_collinear_split_conserves_the_four_momentum_and_fills_padding():
    """Collinear splitting: more constituents, same direction, same four-momentum sum; daughters keep
    the parent's other features; jet pT/E (hence the rel features) unchanged; pT order restored."""
    x, mask = hand_made([[300.0, 120.0, 40.0, 5.0]], [[0.01, -0.2, 0.3, 0.05]], [[0.0, 0.1, -0.25, 0.4]], P=7,
                        charge=[[1, -1, 0, 1]])
    y, ymask = augment.apply(("collinear",), x, mask, COLUMNS, rng(0, "test-collinear"))
    assert ymask.sum() == 7  # 4 constituents, 3 free slots: three splits
    np.testing.assert_allclose(four_momentum(y, ymask), four_momentum(x, mask), rtol=1e-5)
    # every new constituent sits exactly on a parent's direction and has the parent's charge
    parents = {(round(float(a), 5), round(float(b), 5)): c for a, b, c in
               zip(col(x, "part_deta")[mask], col(x, "part_dphi")[mask], col(x, "part_charge")[mask])}
    for a, b, c in zip(col(y, "part_deta")[ymask], col(y, "part_dphi")[ymask], col(y, "part_charge")[ymask]):
        assert parents[(round(float(a), 5), round(float(b), 5))] == c
    assert (np.diff(col(y, "part_log_pt")[ymask]) <= 0).all()
    np.testing.assert_allclose(col(y, "part_log_pt") - col(y, "part_log_pt_rel"),
                               np.full((1, 7), np.log(465.0)), atol=1e-5)
    assert_features_consistent(y, ymask)
    # a full jet has no room: nothing to split
    z, zmask = augment.apply(("collinear",), x[:, :4], mask[:, :4], COLUMNS, rng(0, "test-collinear"))
    assert zmask.all() and np.allclose(z, x[:, :4], atol=1e-6)


def test_smearing_moves_soft_constituents_and_leaves_hard_ones_almost_untouched():
    """Soft smearing: Δη, Δφ move by N(0, 0.1 GeV / pT): a 500 GeV constituent moves by ~2e-4, a 0.5 GeV one by ~0.2."""
    J = 2000
    x, mask = hand_made(np.tile([500.0, 0.5], (J, 1)), np.tile([0.02, 0.3], (J, 1)), np.tile([-0.01, -0.2], (J, 1)))
    y, ymask = augment.apply(("smear",), x, mask, COLUMNS, rng(0, "test-smear"))
    moved = col(y, "part_deta") - col(x, "part_deta")
    assert np.abs(moved[:, 0]).max() < 5 * 0.1 / 500
    assert np.std(moved[:, 1]) == pytest.approx(0.1 / 0.5, rel=0.1)
    np.testing.assert_allclose(col(y, "part_log_pt"), col(x, "part_log_pt"), atol=1e-6)
    assert_features_consistent(y, ymask)


def test_translation_shifts_all_constituents_by_one_vector_within_the_jet_extent():
    """Translation: one (δη, δφ) per jet, each within ± the jet's extent in that coordinate; pT kept."""
    J = 500
    gen = np.random.default_rng(2)
    deta, dphi = gen.uniform(-0.3, 0.3, (J, 4)), gen.uniform(-0.3, 0.3, (J, 4))
    x, mask = hand_made(np.tile([200.0, 50.0, 10.0, 2.0], (J, 1)), deta, dphi)
    y, ymask = augment.apply(("translate",), x, mask, COLUMNS, rng(0, "test-translate"))
    shift = (col(y, "part_deta") - col(x, "part_deta"))[:, :4]  # pT order kept: constituent i stays in slot i
    assert np.ptp(shift, axis=1).max() < 1e-5
    assert (np.abs(shift[:, 0]) <= np.ptp(deta, axis=1) + 1e-6).all()
    assert np.abs(shift[:, 0]).max() > 0.5 * np.ptp(deta, axis=1).mean()
    assert_features_consistent(y, ymask)


def test_random_field_is_a_smooth_deformation():
    """Random field: neighbouring constituents move together, distant ones independently; the
    displacement's spread per component is the configured amplitude."""
    J = 3000
    deta = np.tile([0.0, 0.005, 0.4], (J, 1))
    dphi = np.tile([0.0, 0.0, 0.4], (J, 1))
    x, mask = hand_made(np.tile([100.0, 90.0, 80.0], (J, 1)), deta, dphi)
    params = {"random_field": {"amplitude": 0.03, "length": 0.2, "modes": 32}}
    y, ymask = augment.apply(("random_field",), x, mask, COLUMNS, rng(0, "test-field"), params)
    d = col(y, "part_deta") - col(x, "part_deta")
    assert np.std(d[:, 0]) == pytest.approx(0.03, rel=0.1)
    near, far = np.std(d[:, 1] - d[:, 0]), np.std(d[:, 2] - d[:, 0])
    assert near < 0.1 * far and far > 0.03  # correlation exp(-r²/2ℓ²): near ~1, at r = 0.57 ~0.02
    assert_features_consistent(y, ymask)


def test_feature_derivation_reproduces_the_stored_features(tmp_path):
    """Unpacking the stored kinematics and recomputing every derived feature gives the stored rows back
    (the synthetic shards use the formulas of rs3l.physics.jets.constituent_features)."""
    data = make_dataset(tmp_path / "data", n_jets_per_split={"train": 40, "val": 0, "test": 0}, seed=3)
    feats = list(augment.KINEMATIC_FEATURES) + ["part_delta_r", "part_charge"]
    rows = load_arrays(data, "train", feats, 200)
    jet_eta = (rows["eta"][:, None] * rows["mask"]).astype(np.float32)[:, :, None]  # padded as the loader pads
    x = np.concatenate([rows["x"], jet_eta], axis=2)
    k = augment.unpack(x, rows["mask"], feats + [augment.JET_ETA])
    y, ymask = augment.pack(k, x, feats + [augment.JET_ETA])
    np.testing.assert_allclose(y, x, rtol=1e-5, atol=2e-5)
    assert (ymask == rows["mask"]).all()


@pytest.mark.slow
def test_feature_derivation_matches_the_physics_module_on_real_jets(cfg, lhe_files):
    """On Pythia jets after the detector, the features the augmentations recompute from the padded
    kinematics (derived_features on (jets, particles) arrays, as augment.pack calls it) equal
    those physics.jets.constituent_features wrote."""
    from rs3l.physics import detector
    from rs3l.physics.resimulate import generator_level

    for index, particles in generator_level(cfg, lhe_files["top"], "nominal", max_events=20):
        cands = detector.respond(particles, particles["charge"], cfg["detector"], rng(1, "test", "top"))
        found = jets_module.cluster(cands, len(index), cfg["jets"])
        sel = np.arange(len(found["pt"]))
        ref = jets_module.constituent_features(cands, found, sel)
        counts = ref["counts"]
        P = int(counts.max())
        jet = np.repeat(sel, counts)
        slot = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        grid = lambda a: _scatter(a, jet, slot, len(sel), P)  # noqa: E731 - flat -> (jets, P)
        flat = cands["e"][found["constituents"]]
        pt = np.exp(ref["part_log_pt"])
        ours = derived_features(grid(ref["part_deta"]), grid(ref["part_dphi"]), grid(pt), grid(flat),
                                found["pt"][:, None], found["e"][:, None])
        for name in augment.DERIVED_FEATURES:
            np.testing.assert_allclose(ours[name][jet, slot], ref[name], rtol=1e-6, atol=1e-6, err_msg=name)
        break


def _scatter(values, jet, slot, J, P):
    out = np.zeros((J, P))
    out[jet, slot] = values
    return out


# ----------------------------------------------------------------------------- names and config

def test_view_names_parse_and_unknown_names_are_rejected_at_config_resolution(cfg):
    assert augment.parse_view("seed+jetclr") == ("seed", ("rotate", "collinear", "smear", "translate"))
    assert augment.parse_view("jetclr") == ("nominal", ("rotate", "collinear", "smear", "translate"))
    assert augment.parse_view("fsr_up") == ("fsr_up", ())
    assert augment.parse_view("rotate+random_field") == ("nominal", ("rotate", "random_field"))
    bad = {**cfg, "pretrain": {**cfg["pretrain"], "augment_views": ["nominal", "seed+spin"]}}
    with pytest.raises(config.ConfigError, match=r"unknown augmentation\(s\) \['spin'\]; known: rotate, translate, "
                                                 r"smear, collinear, random_field, jetclr"):
        resolve(bad)
    bad = {**cfg, "pretrain": {**cfg["pretrain"], "augment_views": ["jetclr+seed"]}}
    with pytest.raises(config.ConfigError, match="may only come first"):
        resolve(bad)
    bad = {**cfg, "pretrain": {**cfg["pretrain"], "augment_views": ["nominal", "seed"], "views_per_jet": 3}}
    with pytest.raises(config.ConfigError, match="views_per_jet = 3 needs at least 3"):
        resolve(bad)
    ok = resolve({**cfg, "pretrain": {**cfg["pretrain"], "augment_views": ["jetclr"], "views_per_jet": 3}})
    assert ok["pretrain"]["augmentations"]["smear"] == {"scale_gev": 0.1, "pt_min_gev": 0.1}


# ----------------------------------------------------------------------------- in the loader

@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_jets_per_split={"train": 200, "val": 0, "test": 0},
                        seed=5)


FEATURES = ["part_deta", "part_dphi", "part_log_pt"]


def views_dataset(data, views, n=2, **kw):
    return JetDataset(data, "train", FEATURES, 16, 32, mode="pairs", views=views, shuffle_buffer=64, seed=3,
                      views_per_jet=n, **kw)


def test_hand_crafted_only_views_are_two_transforms_of_the_nominal_row(data):
    """augment_views [jetclr]: both views come from the nominal row of the jet, differ, keep its
    total pT (rotation, translation, smearing keep pT; splitting shares it); deterministic per epoch."""
    nominal = load_arrays(data, "train", FEATURES, 16, views=["nominal"])
    sum_pt = dict(zip(nominal["jet_id"].tolist(), (np.exp(nominal["x"][..., 2]) * nominal["mask"]).sum(1)))
    ds = views_dataset(data, ["jetclr"])
    batches = list(ds)
    assert len(batches) == 200 // 32 and batches[0]["x1"].shape == (32, 16, 3)
    for b in batches:
        for k in (1, 2):
            pt = (np.exp(b[f"x{k}"][..., 2].numpy().astype(np.float64)) * b[f"mask{k}"].numpy()).sum(1)
            np.testing.assert_allclose(pt, [sum_pt[j] for j in b["jet_id"].tolist()], rtol=1e-4)
        assert not torch.equal(b["x1"], b["x2"])
    again = list(ds)
    assert all(torch.equal(a["x1"], c["x1"]) and torch.equal(a["x2"], c["x2"]) for a, c in zip(batches, again))
    ds.set_epoch(1)
    assert not all(torch.equal(a["x2"], c["x2"]) for a, c in zip(batches, list(ds)))


def test_resimulated_and_hand_crafted_views_compose(data):
    """'seed+rotate' is the seed row rotated about the axis: per constituent ΔR and pT of the seed row."""
    seed = load_arrays(data, "train", FEATURES + ["part_delta_r"], 16, views=["seed"])
    by_jet = {j: (np.sort(np.hypot(x[m, 0], x[m, 1])), x[m, 0]) for j, x, m in
              zip(seed["jet_id"].tolist(), seed["x"], seed["mask"])}
    ds = views_dataset(data, ["nominal", "seed+rotate"])
    n_rotated = 0
    for b in ds:
        for k in (1, 2):
            for j, x, m in zip(b["jet_id"].tolist(), b[f"x{k}"].numpy(), b[f"mask{k}"].numpy()):
                dr, deta = by_jet[j]
                if m.sum() == len(dr) and np.allclose(np.sort(np.hypot(x[m, 0], x[m, 1])), dr, atol=2e-4):
                    assert not np.allclose(x[m, 0], deta, atol=1e-3)  # rotated, not the stored row
                    n_rotated += 1
    assert n_rotated >= 200 // 32 * 32  # every item has exactly one seed+rotate view


def test_three_views_per_jet_are_distinct_views_of_one_jet(data):
    """views_per_jet 3 over three stored views: x1, x2, x3 are the three distinct rows of the jet."""
    rows = load_arrays(data, "train", FEATURES, 16, views=["nominal", "seed", "fsr_up"])
    key = {(int(j), x.tobytes()): v for j, x, v in zip(rows["jet_id"], rows["x"], rows["view"])}
    ds = views_dataset(data, ["nominal", "seed", "fsr_up"], n=3)
    b = next(iter(ds))
    assert set(b) == {"x1", "mask1", "x2", "mask2", "x3", "mask3", "label", "jet_id"}
    for i, j in enumerate(b["jet_id"].tolist()):
        assert {key[(j, b[f"x{k}"][i].numpy().tobytes())] for k in (1, 2, 3)} == {"nominal", "seed", "fsr_up"}
    with pytest.raises(ValueError, match="3 views per jet need at least 3 views"):
        views_dataset(data, ["nominal", "seed"], n=3)
