"""The detector reproduces the Delphes CMS card (delphes/delphes cards/delphes_card_CMS.tcl at 0ee14ba7).

Single particles of known kind, energy and direction, many at a time (one per event), go through
``detector.respond`` with the default config; the card's own formulas, written out here as in the
card, are the reference:

- ECAL photon energy resolution in the barrel at 10 and 100 GeV (card:301) and HCAL resolution
  for neutral hadrons at 50 and 200 GeV (card:381), to statistical precision;
- charged-hadron tracking efficiency in two (pT, |eta|) bins (card:92-97);
- energy flow: a tracked pion's energy is removed from its HCAL tower, only the surplus becomes a
  neutral hadron, an untracked pion is a neutral hadron (card:312-323, SimpleCalorimeter);
- tower granularity: two photons in one 0.0174 x 1 degree ECAL tower merge, in neighbouring towers
  they do not (card:234-243);
- helix propagation in 3.8 T (card:73-78): a stiff track's calorimeter hit is rotated by half its
  turning angle, a soft one curls up and leaves through the end-cap;
- d0err/dzerr equal trackResolutionCMS.tcl's table and d0/d0err is a unit Gaussian (pull);
- lepton identification efficiencies (card:500-503, 534-537); determinism with a fixed seed;
- bad detector tables are rejected at config resolution, naming the key.
"""

from __future__ import annotations

import numpy as np
import pytest

from rs3l import config, seeds
from rs3l.resolve import resolve
from rs3l.physics import detector

PDG = {"photon": 22, "pi+": 211, "k_long": 130, "electron": 11, "muon": 13}


def single(kind: str, energy_or_pt: float, eta: float, n: int, phi: float = 0.3, by_pt: bool = False) -> tuple[dict, np.ndarray]:
    """n events with one particle each, from the origin, of the given energy (or pT) and direction."""
    pid = PDG[kind]
    mass = {22: 0.0, 211: 0.13957, 130: 0.497611, 11: 0.000511, 13: 0.105658}[pid]
    pt = energy_or_pt if by_pt else np.sqrt(energy_or_pt**2 - mass**2) / np.cosh(eta)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    charge = {22: 0.0, 211: 1.0, 130: 0.0, 11: -1.0, 13: -1.0}[pid]
    particles = {"event": np.arange(n), "id": np.full(n, pid),
                 "px": np.full(n, px), "py": np.full(n, py), "pz": np.full(n, pz), "e": np.full(n, e),
                 "vx": np.zeros(n), "vy": np.zeros(n), "vz": np.zeros(n)}
    return particles, np.full(n, charge)


def combine(*parts):
    """Particles of several ``single`` sets in the same events."""
    particles = {k: np.concatenate([p[k] for p, _ in parts]) for k in parts[0][0]}
    return particles, np.concatenate([c for _, c in parts])


def ecal_tower_center(eta: float) -> float:
    """Centre of the barrel ECAL tower containing eta: edges at i * 0.0174 (card:240-243)."""
    k = np.ceil(eta / 0.0174)
    return (k - 0.5) * 0.0174


def card_ecal_sigma(energy: float, eta: float) -> float:
    # delphes_card_CMS.tcl:301, |eta| <= 1.5
    return (1 + 0.64 * eta**2) * np.sqrt(energy**2 * 0.008**2 + energy * 0.11**2 + 0.40**2)


def card_hcal_sigma(energy: float) -> float:
    # delphes_card_CMS.tcl:381, |eta| <= 3.0
    return np.sqrt(energy**2 * 0.050**2 + energy * 1.50**2)


@pytest.fixture(scope="module")
def params(cfg):
    return cfg["detector"]


@pytest.mark.parametrize("energy", [10.0, 100.0])
def test_photon_energy_resolution_in_the_barrel_is_the_cards(params, energy):
    """Single photons at eta = 0.3: one eflow photon each, energy spread = the card's ECAL sigma(E)
    at the tower centre, mean = the true energy (log-normal smearing keeps the mean)."""
    n, eta = 20000, 0.3
    out = detector.respond(*single("photon", energy, eta, n), params, seeds.rng(1, "photon", energy))
    assert np.all(out["is_photon"] == 1) and len(out["e"]) == n
    sigma = card_ecal_sigma(energy, ecal_tower_center(eta))
    assert np.std(out["e"]) == pytest.approx(sigma, rel=4 / np.sqrt(2 * n))
    assert np.mean(out["e"]) == pytest.approx(energy, abs=4 * sigma / np.sqrt(n))
    # the photons sit inside their tower (SmearTowerCenter), massless
    out_eta = np.arcsinh(out["pz"] / np.hypot(out["px"], out["py"]))
    assert np.all(np.abs(out_eta - ecal_tower_center(eta)) <= 0.0087 + 1e-9)
    np.testing.assert_allclose(out["e"] ** 2, out["px"] ** 2 + out["py"] ** 2 + out["pz"] ** 2, rtol=1e-9)


@pytest.mark.parametrize("energy", [50.0, 200.0])
def test_neutral_hadron_energy_resolution_is_the_cards_hcal(params, energy):
    """Single K_L at eta = 0.5 (HCAL only, card:360-378): spread = the card's HCAL sigma(E)."""
    n = 20000
    out = detector.respond(*single("k_long", energy, 0.5, n), params, seeds.rng(1, "klong", energy))
    assert np.all(out["is_neutral_hadron"] == 1)
    assert len(out["e"]) >= 0.999 * n  # the 1 sigma / 1 GeV threshold almost never cuts here
    assert np.std(out["e"]) == pytest.approx(card_hcal_sigma(energy), rel=4 / np.sqrt(2 * n) + 0.01)
    assert np.mean(out["e"]) == pytest.approx(energy, rel=0.01)


@pytest.mark.parametrize("pt, eta, card", [(0.9, 0.5, 0.70), (5.0, 2.0, 0.85)])
def test_charged_hadron_tracking_efficiency_is_the_cards(params, pt, eta, card):
    """Fraction of single pi+ reconstructed as tracks = the card's efficiency for its (pT, |eta|) bin
    (0.9 GeV still reaches the barrel calorimeter in 3.8 T; softer ones curl to the end-cap)."""
    n = 20000
    out = detector.respond(*single("pi+", pt, eta, n, by_pt=True), params, seeds.rng(1, "eff", pt))
    efficiency = np.sum(out["charge"] != 0) / n
    assert efficiency == pytest.approx(card, abs=4 * np.sqrt(card * (1 - card) / n))


def exact(params, track_efficiency: float) -> dict:
    """Default detector without resolutions (deterministic energies) and a fixed tracking efficiency."""
    table = {"eta_edges": [0.0, 2.5], "pt_edges": [0.1], "values": [[track_efficiency]]}
    return detector.merge_params(params, {"hcal_resolution_scale": 0.0, "momentum_resolution_scale": 0.0,
                                          "tracking_efficiency": {"charged_hadron": table}})


def test_energy_flow_removes_the_track_energy_from_its_hcal_tower(params):
    """pi+ (50 GeV) and K_L (30 GeV) in one HCAL tower: the track stays, the neutral hadron carries
    only the surplus 30 GeV; a pi+ alone leaves no neutral hadron; an untracked pi+ is one."""
    n = 200
    both = combine(single("pi+", 50.0, 0.3, n), single("k_long", 30.0, 0.3, n, phi=0.3))
    out = detector.respond(*both, exact(params, 1.0), seeds.rng(1, "eflow"))
    track, neutral = out["charge"] != 0, out["is_neutral_hadron"] == 1
    assert track.sum() == n and neutral.sum() == n
    assert np.all(np.diff(out["event"][track]) == 1)
    np.testing.assert_allclose(out["e"][neutral], 30.0, rtol=1e-9)
    np.testing.assert_allclose(out["e"][track], 50.0, rtol=1e-9)

    alone = detector.respond(*single("pi+", 50.0, 0.3, n), exact(params, 1.0), seeds.rng(1, "alone"))
    assert alone["is_neutral_hadron"].sum() == 0 and np.sum(alone["charge"] != 0) == n

    lost = detector.respond(*single("pi+", 50.0, 0.3, n), exact(params, 0.0), seeds.rng(1, "lost"))
    assert np.sum(lost["charge"] != 0) == 0 and lost["is_neutral_hadron"].sum() == n
    np.testing.assert_allclose(lost["e"], 50.0, rtol=1e-6)


def test_energy_flow_keeps_the_calorimeter_energy_when_the_calorimeter_is_precise(params):
    """With an (almost) exact HCAL, a 50 GeV pi+ track smeared by the card's resolution ends up, with
    the neutral hadron made from a significant surplus or after the tracks are pulled to the
    sigma-weighted mean, at the calorimeter's 50 GeV in every event (SimpleCalorimeter::FinalizeTower)."""
    n = 2000
    p = detector.merge_params(exact(params, 1.0), {"momentum_resolution_scale": 1.0, "hcal_resolution_scale": 1e-6})
    out = detector.respond(*single("pi+", 50.0, 0.3, n), p, seeds.rng(1, "precise"))
    total = np.bincount(out["event"], weights=out["e"], minlength=n)
    np.testing.assert_allclose(total, 50.0, rtol=1e-4)
    neutral = out["is_neutral_hadron"] == 1
    # a neutral hadron only where the track fell short by more than 1 sigma_track (card:323): ~16 %
    assert 0.12 * n < neutral.sum() < 0.21 * n


def test_two_photons_merge_in_one_ecal_tower_but_not_in_neighbouring_towers(params):
    """ECAL barrel towers are 0.0174 in eta x 1 degree in phi (card:234-243)."""
    n = 500
    phi = np.radians(10.5)  # the middle of a 1-degree bin
    same = combine(single("photon", 20.0, 0.300, n, phi=phi), single("photon", 30.0, 0.310, n, phi=phi + 0.003))
    out = detector.respond(*same, params, seeds.rng(1, "same"))
    assert len(out["e"]) == n
    assert np.mean(out["e"]) == pytest.approx(50.0, abs=5 * card_ecal_sigma(50.0, 0.3) / np.sqrt(n))
    apart_eta = combine(single("photon", 20.0, 0.300, n, phi=phi), single("photon", 30.0, 0.318, n, phi=phi))
    apart_phi = combine(single("photon", 20.0, 0.300, n, phi=phi), single("photon", 30.0, 0.300, n, phi=phi + np.radians(1)))
    for apart in (apart_eta, apart_phi):
        out = detector.respond(*apart, params, seeds.rng(1, "apart"))
        assert len(out["e"]) == 2 * n
        assert np.mean(out["e"]) == pytest.approx(25.0, abs=5 * card_ecal_sigma(30.0, 0.3) / np.sqrt(n))


def test_helix_propagation_in_the_cards_field(params):
    """A 10 GeV pi+ from the origin reaches r = 1.29 m with its position rotated by half the turning
    angle, asin(0.2998 * 3.8 T * 1.29 m / (2 pT)), against the bending of a positive charge; a
    0.5 GeV one (radius 0.44 m) never reaches r = 1.29 m and leaves through the end-cap z = 3 m."""
    px, py, pz = np.array([10.0, 0.5]), np.array([0.0, 0.0]), np.array([0.0, 0.5 * np.sinh(0.5)])
    zero = np.zeros(2)
    x, y, z, ok = detector.propagate(px, py, pz, zero, zero, zero, np.ones(2), 3.8, 1290.0, 3000.0)
    assert np.all(ok)
    assert np.hypot(x[0], y[0]) == pytest.approx(1290.0, rel=1e-9)
    assert np.arctan2(y[0], x[0]) == pytest.approx(-np.arcsin(0.299792458 * 3.8 * 1.29 / 20.0), rel=1e-9)
    assert z[1] == pytest.approx(3000.0, rel=1e-9)
    assert np.hypot(x[1], y[1]) < 2 * 0.5 / (0.299792458 * 3.8) * 1000
    # neutral particles fly straight
    x, y, z, ok = detector.propagate(px, py, pz, zero, zero, zero, np.zeros(2), 3.8, 1290.0, 3000.0)
    assert np.arctan2(y, x) == pytest.approx([0.0, 0.0], abs=1e-12)


def test_impact_parameter_resolution_is_the_cms_table_and_the_pulls_are_unit_gaussian(params):
    """Muons from the origin (true d0 = dz = 0): d0err/dzerr equal trackResolutionCMS.tcl:22/126
    (5 GeV, |eta| < 0.9) and :102/206 (55 GeV, 1.4 < |eta| < 2.5); d0/d0err has unit spread."""
    # (pT, |eta|) -> the card's pT bin and its d0, dz resolutions in mm; the resolution is looked up
    # at the measured pT (muons: 1-3 % resolution, so nearly all stay in the bin)
    for pt, eta, (lo, hi), d0_card, dz_card in ((5.0, 0.3, (4.4837, 5.4772), 0.0283, 0.0484),
                                                (55.0, 2.0, (49.5187, 60.4919), 0.0144, 0.0817)):
        out = detector.respond(*single("muon", pt, eta, 5000, by_pt=True), params, seeds.rng(1, "ip", pt))
        trk = out["charge"] != 0
        assert trk.sum() > 4000
        measured = np.hypot(out["px"], out["py"])
        in_bin = trk & (measured > lo) & (measured <= hi)
        assert in_bin.sum() > 0.95 * trk.sum()
        np.testing.assert_allclose(out["d0err"][in_bin], d0_card)
        np.testing.assert_allclose(out["dzerr"][in_bin], dz_card)
        assert np.std(out["d0"][trk] / out["d0err"][trk]) == pytest.approx(1.0, abs=0.05)
        assert np.std(out["dz"][trk] / out["dzerr"][trk]) == pytest.approx(1.0, abs=0.05)
        assert np.all(out["d0err"][~trk] == 0)


def test_lepton_identification_efficiency_is_the_cards(params):
    """Among tracked leptons of 20 GeV: muons at |eta| = 0.3 identified at 0.95, electrons at
    |eta| = 2.0 at 0.85, none below the 10 GeV threshold; the others count as charged hadrons."""
    n = 20000
    for kind, pt, eta, card in (("muon", 20.0, 0.3, 0.95), ("electron", 20.0, 2.0, 0.85), ("muon", 5.0, 0.3, 0.0)):
        out = detector.respond(*single(kind, pt, eta, n, by_pt=True), params, seeds.rng(1, "id", kind, pt))
        trk = out["charge"] != 0
        flag = out["is_muon" if kind == "muon" else "is_electron"][trk]
        assert np.mean(flag) == pytest.approx(card, abs=4 * np.sqrt(card * (1 - card) / trk.sum()) + 1e-12)
        np.testing.assert_array_equal(out["is_charged_hadron"][trk], 1 - flag)


def test_same_seed_same_response_other_seed_other_response(params):
    """A mixed event sample: bit-identical output for the same generator seed, different otherwise."""
    gen = np.random.default_rng(5)
    n = 3000
    kinds = gen.choice([22, 211, -211, 130, 11, 13, 2112], n)
    pt, eta, phi = gen.exponential(5.0, n) + 0.2, gen.uniform(-3, 3, n), gen.uniform(-np.pi, np.pi, n)
    charge = np.select([kinds == 211, kinds == -211, kinds == 11, kinds == 13], [1.0, -1.0, -1.0, -1.0], 0.0)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    particles = {"event": np.sort(gen.integers(0, 30, n)), "id": kinds, "px": px, "py": py, "pz": pz,
                 "e": np.sqrt(px**2 + py**2 + pz**2 + 0.14**2), "vx": gen.normal(0, 0.01, n),
                 "vy": gen.normal(0, 0.01, n), "vz": gen.normal(0, 30, n)}
    a = detector.respond(particles, charge, params, seeds.rng(7, "det"))
    b = detector.respond(particles, charge, params, seeds.rng(7, "det"))
    c = detector.respond(particles, charge, params, seeds.rng(8, "det"))
    assert set(a) == set(detector.CANDIDATE_FIELDS)
    for k in detector.CANDIDATE_FIELDS:
        np.testing.assert_array_equal(a[k], b[k])
    assert len(a["e"]) != len(c["e"]) or not np.array_equal(a["e"], c["e"])
    assert np.all(np.diff(a["event"]) >= 0)


@pytest.mark.parametrize("bad, message", [
    ({"detector": {"tracking_efficiency": {"muon": {"eta_edges": [0, 2.5], "pt_edges": [0.1], "values": [[1.0, 1.0]]}}}},
     r"detector.tracking_efficiency.muon.values must have shape \(1, 1\)"),
    ({"detector": {"ecal": {"towers": [{"eta": [0.0, 1.0], "eta_grid": [0, 0.1, 3], "phi_bins": 10}]}}}, "ecal.towers"),
    ({"detector": {"hcal": {"towers": [{"eta": [0, 1], "phi_bins": 4}, {"eta": [1, 2], "phi_bins": 8}]}}},
     "detector.hcal.towers: eta edge 1.0 is listed with 4 and 8 phi bins"),
    ({"detector": {"momentum_resolution": {"muon": {"eta_edges": [0, 1.5, 1.0], "constant": [0.01, 0.02], "slope": [0, 0]}}}},
     "detector.momentum_resolution.muon.eta_edges must start at 0 and increase"),
    ({"views": {"nominal": {}, "d": {"intervention": "detector", "detector": {"hcal": {"energy_min": -1}}}},
      "simulation": {"views": ["nominal", "d"]}}, "views.d: invalid config key 'detector.hcal.energy_min'"),
    ({"views": {"nominal": {}, "d": {"intervention": "detector", "detector": {"hcal_stochastic": 1.5}}},
      "simulation": {"views": ["nominal", "d"]}}, "unknown parameter 'hcal_stochastic'"),
])
def test_bad_detector_config_is_rejected_naming_the_key(bad, message):
    with pytest.raises(config.ConfigError, match=message):
        resolve(bad)


def test_a_view_override_changes_only_the_key_it_names(cfg):
    merged = detector.merge_params(cfg["detector"], {"ecal": {"energy_min": 1.0}})
    assert merged["ecal"]["energy_min"] == 1.0
    assert merged["ecal"]["towers"] == cfg["detector"]["ecal"]["towers"]
    assert cfg["detector"]["ecal"]["energy_min"] == 0.5
