"""A parametric, vectorised detector response in the spirit of the Delphes CMS card.

Input: generator-level final-state particles of many events as flat numpy arrays
(plus each particle's event number). Output: reconstructed particle-flow-like
candidates, also flat: tracks (charged particles inside the tracker, with a pT
resolution, lepton identification and smeared impact parameters d0/dz from the
production vertex) and calorimeter clusters (photons in ECAL cells, neutral and
untracked hadrons in HCAL cells, with stochastic + constant energy resolution).
All parameters come from config ``detector``; all random numbers from one
``numpy.random.Generator`` derived by rs3l.seeds. Units: GeV, mm.
"""

from __future__ import annotations

import numpy as np

NEUTRINOS = (12, 14, 16)
CANDIDATE_FIELDS = ("event", "px", "py", "pz", "e", "charge", "d0", "dz", "d0err", "dzerr",
                    "is_electron", "is_muon", "is_photon", "is_charged_hadron", "is_neutral_hadron")


def _pt_eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    eta = np.arcsinh(np.divide(pz, pt, out=np.full_like(pz, 1e6), where=pt > 0))
    return pt, eta, np.arctan2(py, px)


def _resolution(rng, n, rel_sigma):
    return np.clip(1.0 + rng.standard_normal(n) * rel_sigma, 0.0, None)


def _calorimeter(rng, event, e, eta, phi, cell, stochastic, constant, e_min, eta_max):
    """Sum deposits per (event, cell), smear cell energies, place clusters at the cell centre (massless)."""
    inside = np.abs(eta) < eta_max
    event, e, eta, phi = event[inside], e[inside], eta[inside], phi[inside]
    n_eta = int(np.ceil(2 * eta_max / cell))
    n_phi = max(int(round(2 * np.pi / cell)), 1)
    ieta = np.clip(((eta + eta_max) / cell).astype(np.int64), 0, n_eta - 1)
    iphi = np.clip(((phi + np.pi) / (2 * np.pi) * n_phi).astype(np.int64), 0, n_phi - 1)
    key = (event.astype(np.int64) * n_eta + ieta) * n_phi + iphi
    cells, inverse = np.unique(key, return_inverse=True)
    energy = np.bincount(inverse, weights=e, minlength=len(cells))
    sigma = np.sqrt(stochastic**2 / np.maximum(energy, 1e-9) + constant**2)
    energy = energy * _resolution(rng, len(cells), sigma)
    c_event = cells // (n_eta * n_phi)
    c_eta = -eta_max + (cells // n_phi % n_eta + 0.5) * cell
    c_phi = -np.pi + (cells % n_phi + 0.5) * (2 * np.pi / n_phi)
    keep = energy > e_min
    energy, c_event, c_eta, c_phi = energy[keep], c_event[keep], c_eta[keep], c_phi[keep]
    pt = energy / np.cosh(c_eta)
    return c_event, pt * np.cos(c_phi), pt * np.sin(c_phi), pt * np.sinh(c_eta), energy


def respond(particles: dict, charge: np.ndarray, params: dict, rng: np.random.Generator) -> dict:
    """Detector response for flat generator-level final-state particles.

    ``particles``: dict of flat arrays ``event, id, px, py, pz, e, vx, vy, vz`` (GeV, mm);
    ``charge``: electric charge per particle. Returns a dict of flat arrays
    (CANDIDATE_FIELDS), sorted by event (stable), tracks first then clusters.
    """
    event = particles["event"]
    pid = np.abs(particles["id"])
    px, py, pz, e = particles["px"], particles["py"], particles["pz"], particles["e"]
    vx, vy, vz = particles["vx"], particles["vy"], particles["vz"]
    pt, eta, phi = _pt_eta_phi(px, py, pz)
    visible = ~np.isin(pid, NEUTRINOS)
    n = len(pid)

    # --- tracker -----------------------------------------------------------------
    charged = (charge != 0) & visible
    in_tracker = (np.abs(eta) < params["tracker_eta_max"]) & (pt > params["track_pt_min"]) & \
        (np.hypot(vx, vy) < params["track_max_prod_radius"])
    u_eff, u_id = rng.random(n), rng.random(n)
    tracked = charged & in_tracker & (u_eff < params["track_efficiency"])
    t = np.flatnonzero(tracked)
    t_pt = pt[t] * _resolution(rng, len(t), np.hypot(params["track_pt_res_const"], params["track_pt_res_slope"] * pt[t]))
    scale = np.divide(t_pt, pt[t], out=np.ones_like(t_pt), where=pt[t] > 0)
    t_px, t_py, t_pz = px[t] * scale, py[t] * scale, pz[t] * scale
    mass2 = np.clip(e[t] ** 2 - px[t] ** 2 - py[t] ** 2 - pz[t] ** 2, 0.0, None)
    t_e = np.sqrt(t_px**2 + t_py**2 + t_pz**2 + mass2)
    # Straight-line impact parameters from the production vertex (the displaced
    # vertices of b and c hadron decays are what makes heavy-flavour jets visible).
    d0 = (vx[t] * py[t] - vy[t] * px[t]) / pt[t]
    dz = vz[t] - (vx[t] * px[t] + vy[t] * py[t]) / pt[t] * pz[t] / pt[t]
    # the per-track resolution is what the smearing used (JetClass part_d0err / part_dzerr)
    d0err = np.hypot(params["d0_res_const"], params["d0_res_pt"] / t_pt)
    dzerr = np.hypot(params["dz_res_const"], params["dz_res_pt"] / t_pt)
    d0 = d0 + rng.standard_normal(len(t)) * d0err
    dz = dz + rng.standard_normal(len(t)) * dzerr
    identified = u_id[t] < params["lepton_id_efficiency"]
    is_el = (pid[t] == 11) & identified
    is_mu = (pid[t] == 13) & identified

    # --- calorimeters: photons and untracked electrons in ECAL, other hadrons in HCAL (muons pass)
    untracked = visible & ~tracked & (pid != 13)
    to_ecal = untracked & ((pid == 22) | (pid == 11))
    to_hcal = untracked & ~to_ecal
    ecal = _calorimeter(rng, event[to_ecal], e[to_ecal], eta[to_ecal], phi[to_ecal], params["ecal_cell"],
                        params["ecal_stochastic"], params["ecal_constant"], params["photon_e_min"], params["calo_eta_max"])
    hcal = _calorimeter(rng, event[to_hcal], e[to_hcal], eta[to_hcal], phi[to_hcal], params["hcal_cell"],
                        params["hcal_stochastic"], params["hcal_constant"], params["neutral_hadron_e_min"],
                        params["calo_eta_max"])

    n_t, n_e, n_h = len(t), len(ecal[0]), len(hcal[0])
    zeros = np.zeros(n_e + n_h)
    out = {
        "event": np.concatenate([event[t], ecal[0], hcal[0]]).astype(np.int64),
        "px": np.concatenate([t_px, ecal[1], hcal[1]]),
        "py": np.concatenate([t_py, ecal[2], hcal[2]]),
        "pz": np.concatenate([t_pz, ecal[3], hcal[3]]),
        "e": np.concatenate([t_e, ecal[4], hcal[4]]),
        "charge": np.concatenate([charge[t], zeros]),
        "d0": np.concatenate([d0, zeros]),
        "dz": np.concatenate([dz, zeros]),
        "d0err": np.concatenate([d0err, zeros]),
        "dzerr": np.concatenate([dzerr, zeros]),
        "is_electron": np.concatenate([is_el, zeros]),
        "is_muon": np.concatenate([is_mu, zeros]),
        "is_photon": np.concatenate([np.zeros(n_t), np.ones(n_e), np.zeros(n_h)]),
        "is_charged_hadron": np.concatenate([~(is_el | is_mu), zeros]),
        "is_neutral_hadron": np.concatenate([np.zeros(n_t + n_e), np.ones(n_h)]),
    }
    order = np.argsort(out["event"], kind="stable")
    return {k: v[order].astype(np.float64) if k != "event" else v[order] for k, v in out.items()}
