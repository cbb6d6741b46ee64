"""A vectorised detector response that follows the Delphes CMS card parameter by parameter.

Reference: ``cards/delphes_card_CMS.tcl`` of delphes/delphes (commit 0ee14ba7, the card JetClass
used; unchanged since 2017) and, for the impact-parameter resolution that card does not apply,
``cards/trackResolutionCMS.tcl`` (the CMS card family's ``TrackSmearing`` input). Every number is
config data (``detector``, defaults in the schema; ``config/README.md`` cites the card line of each).

The chain, as in the card's ExecutionPath:

1. ParticlePropagator: every visible final-state particle produced inside the field volume
   (radius 1.29 m, half-length 3 m) is carried to its surface, charged ones on a helix in the 3.8 T
   field; the crossing point's (eta, phi) is where it hits the calorimeters.
2. Tracking efficiency (a table in pT and |eta|) and log-normal pT smearing (sigma(pT)/pT an
   |eta|-binned function of pT), separately for charged hadrons, electrons and muons.
3. Impact parameters: straight-line d0/dz from the production vertex, smeared by a Gaussian whose
   width (a table in pT and |eta|) is returned per track as d0err/dzerr.
4. ECAL, then HCAL (Delphes' SimpleCalorimeter): every particle deposits its card ``EnergyFraction``
   in the tower it hits (towers in eta x phi as the card lists them); the summed tower energy is
   smeared log-normally with the card's sigma(E, eta) and kept above ``energy_min`` and
   ``significance_min`` sigma. Energy flow: every track is kept; the tower energy left after
   subtracting the energy of the tracks that hit it (with their calorimeter fraction) becomes an
   eflow photon (ECAL) or neutral hadron (HCAL) at the (smeared) tower centre when it passes
   ``energy_min`` and ``significance_min`` (relative to the combined track and calorimeter
   uncertainty); otherwise the tracks of that tower are rescaled to the weighted mean of the track
   and calorimeter measurements. Muons and neutrinos leave nothing.
5. Lepton identification without isolation: the card's electron and muon efficiencies.

Input: final-state particles of many events as flat numpy arrays with their event number;
output: flat candidates (CANDIDATE_FIELDS). Units: GeV, mm. All random numbers from the one
``numpy.random.Generator`` the caller derives with rs3l.seeds. No per-particle Python loops.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from rs3l.config import ConfigError, fill_defaults, schema

NEUTRINOS = (12, 14, 16)
CANDIDATE_FIELDS = ("event", "px", "py", "pz", "e", "charge", "d0", "dz", "d0err", "dzerr",
                    "is_electron", "is_muon", "is_photon", "is_charged_hadron", "is_neutral_hadron")
SPECIES = ("charged_hadron", "electron", "muon")
#: pT [GeV] = 0.2998 * |q| * B [T] * R [m]
GEV_PER_TESLA_METRE = 0.299792458


def merge_params(base: dict, overrides: dict) -> dict:
    """``base`` detector parameters with a view's ``overrides``; nested parameters merged key by key.

    E.g. ``{"ecal": {"energy_min": 1.0}}`` changes only the ECAL threshold, and
    ``{"tracking_efficiency": {"muon": {...}}}`` only the muon table.
    """
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_params(out[key], value)
        else:
            out[key] = value
    return out


class DetectorConfigError(ValueError):
    """Detector parameters that the schema accepts but that do not describe a detector."""


def _check_table(table: dict, where: str, value_keys=("values",)) -> None:
    eta, pt = np.asarray(table["eta_edges"], float), np.asarray(table.get("pt_edges", [0.0]), float)
    if len(eta) < 2 or eta[0] != 0 or np.any(np.diff(eta) <= 0):
        raise DetectorConfigError(f"{where}.eta_edges must start at 0 and increase; got {table['eta_edges']}")
    if np.any(np.diff(pt) <= 0):
        raise DetectorConfigError(f"{where}.pt_edges must increase; got {table['pt_edges']}")
    want = (len(eta) - 1, len(pt)) if "pt_edges" in table else (len(eta) - 1,)
    for key in value_keys:
        try:
            shape = np.shape(np.asarray(table[key], float))
        except ValueError:
            shape = "ragged"
        if shape != want:
            raise DetectorConfigError(f"{where}.{key} must have shape {want} (|eta| bins x pT bins); got {shape}")
    if ("falloff_pt" in table) != ("falloff_slope" in table):
        raise DetectorConfigError(f"{where}: falloff_pt and falloff_slope go together")


def check_params(params: dict, where: str = "detector") -> None:
    """Consistency checks the schema cannot express: table shapes, increasing edges, tower lists.

    Raises DetectorConfigError naming the key and what would be right.
    """
    for s in SPECIES:
        _check_table(params["tracking_efficiency"][s], f"{where}.tracking_efficiency.{s}")
        _check_table(params["momentum_resolution"][s], f"{where}.momentum_resolution.{s}", ("constant", "slope"))
    _check_table(params["impact_parameter_resolution"], f"{where}.impact_parameter_resolution", ("d0", "dz"))
    for s in ("electron", "muon"):
        _check_table(params["lepton_id_efficiency"][s], f"{where}.lepton_id_efficiency.{s}")
    for calo in ("ecal", "hcal"):
        res = params[calo]["resolution"]
        keys = [k for k in ("constant", "stochastic", "noise", "eta_factor_offset", "eta_factor_slope",
                            "eta_factor_center") if k in res]
        _check_table(res, f"{where}.{calo}.resolution", keys)
        try:
            _geometry(json.dumps(params[calo]["towers"], sort_keys=True))
        except DetectorConfigError as err:
            raise DetectorConfigError(f"{where}.{calo}.towers: {err}") from None


def check_config(cfg: dict) -> None:
    """The config's detector and every view's detector (its overrides merged into it) describe a detector.

    Raises ConfigError naming the key: an unknown override, a value the schema rejects once merged, or
    a table that :func:`check_params` rejects.
    """
    def check(params: dict, where: str) -> None:
        try:
            check_params(params, where)
        except DetectorConfigError as err:
            raise ConfigError(str(err)) from None

    check(cfg["detector"], "detector")
    sch = schema()
    known = sch["properties"]["detector"]["properties"]
    for vname, view in cfg["views"].items():
        for key in view["detector"]:
            if key not in known:
                raise ConfigError(f"views.{vname}.detector: unknown parameter '{key}'; known: {', '.join(known)}")
        if view["detector"]:
            # the view's detector as it will run: its overrides merged into the base parameters
            merged = merge_params(cfg["detector"], view["detector"])
            fill_defaults({**cfg, "detector": merged}, sch, prefix=f"views.{vname}: ")
            check(merged, f"views.{vname}.detector")


# --- tables ------------------------------------------------------------------------------------

def _eta_bin(edges, abs_eta):
    """Bin of |eta| in edges[0] = 0 < ... (bins (lo, hi], the first one [0, hi]); -1 beyond the last."""
    edges = np.asarray(edges, float)
    i = np.maximum(np.searchsorted(edges, abs_eta, side="left") - 1, 0)
    return np.where(abs_eta <= edges[-1], i, -1)


def binned(table: dict, abs_eta: np.ndarray, pt: np.ndarray, key: str = "values") -> np.ndarray:
    """A (|eta|, pT) table read like the card's formulas: bins (lo, hi], the last pT bin open.

    ``table``: ``eta_edges`` (from 0), ``pt_edges``, ``values`` of shape (|eta| bins, pT bins).
    0 for pT <= pt_edges[0] or |eta| beyond the last edge. Optional ``falloff_pt``/``falloff_slope``:
    above falloff_pt the value is multiplied by exp(slope * (falloff_pt - pT)) (the card's muons).
    """
    values = np.asarray(table[key], float)
    ie = _eta_bin(table["eta_edges"], abs_eta)
    ip = np.searchsorted(np.asarray(table["pt_edges"], float), pt, side="left") - 1
    ok = (ie >= 0) & (ip >= 0)
    out = np.where(ok, values[np.maximum(ie, 0), np.clip(ip, 0, values.shape[1] - 1)], 0.0)
    if "falloff_pt" in table:
        high = pt > table["falloff_pt"]
        out = np.where(high, out * np.exp(table["falloff_slope"] * (table["falloff_pt"] - pt)), out)
    return out


def momentum_resolution(table: dict, abs_eta: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """sigma(pT)/pT = sqrt(constant^2 + (slope * pT)^2) in |eta| bins (0 beyond the last edge)."""
    ie = _eta_bin(table["eta_edges"], abs_eta)
    c = np.asarray(table["constant"], float)[np.maximum(ie, 0)]
    s = np.asarray(table["slope"], float)[np.maximum(ie, 0)]
    return np.where(ie >= 0, np.sqrt(c**2 + (s * pt) ** 2), 0.0)


def calorimeter_resolution(res: dict, eta: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """sigma(E) [GeV] = f(|eta|) * sqrt((constant E)^2 + stochastic^2 E + noise^2), per |eta| bin,
    with f = eta_factor_offset + eta_factor_slope * (|eta| - eta_factor_center)^2 (1 if not given)."""
    abs_eta = np.abs(eta)
    ie = _eta_bin(res["eta_edges"], abs_eta)
    i = np.maximum(ie, 0)
    n = len(res["eta_edges"]) - 1

    def col(key, default):
        return np.asarray(res.get(key, [default] * n), float)[i]

    factor = col("eta_factor_offset", 1.0) + col("eta_factor_slope", 0.0) * (abs_eta - col("eta_factor_center", 0.0)) ** 2
    e = np.maximum(energy, 0.0)
    sigma = factor * np.sqrt((col("constant", 0.0) * e) ** 2 + col("stochastic", 0.0) ** 2 * e + col("noise", 0.0) ** 2)
    return np.where(ie >= 0, sigma, 0.0)


def energy_fraction(fractions: dict, abs_pid: np.ndarray) -> np.ndarray:
    """The card's EnergyFraction: share of a particle's energy a calorimeter sees, by |PDG id|."""
    table = sorted((int(code), float(frac)) for code, frac in fractions.items() if code != "default")
    if not table:
        return np.full(len(abs_pid), float(fractions["default"]))
    codes, values = np.array([c for c, _ in table]), np.array([f for _, f in table])
    i = np.minimum(np.searchsorted(codes, abs_pid), len(codes) - 1)
    return np.where(codes[i] == abs_pid, values[i], float(fractions["default"]))


def log_normal(rng: np.random.Generator, mean: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Delphes' LogNormal: a log-normal variate with this mean and standard deviation (0 where mean <= 0)."""
    m = np.maximum(mean, 1e-300)
    b = np.sqrt(np.log1p((sigma / m) ** 2))
    a = np.log(m) - 0.5 * b**2
    return np.where(mean > 0, np.exp(a + b * rng.standard_normal(len(m))), 0.0)


# --- propagation -------------------------------------------------------------------------------

def propagate(px, py, pz, vx, vy, vz, charge, bz, radius, half_length):
    """Where each particle leaves the field volume (a cylinder, mm), as Delphes' ParticlePropagator.

    Neutral particles fly straight; charged ones follow the helix of the field ``bz`` (T) and may
    curl up and leave through an end-cap. Returns (x, y, z, ok) in mm; ok is False for particles
    produced outside the cylinder or with pT ~ 0 (Delphes drops them).
    """
    pt2 = px**2 + py**2
    pt = np.sqrt(pt2)
    ok = (np.hypot(vx, vy) <= radius) & (np.abs(vz) <= half_length) & (pt2 > 1e-9)
    pt_safe = np.where(ok, pt, 1.0)
    helix = ok & (charge != 0) & (bz != 0)
    x, y, z = np.array(vx, dtype=float), np.array(vy, dtype=float), np.array(vz, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.flatnonzero(~helix)
        spx, spy, spz, svx, svy, svz = px[s], py[s], pz[s], vx[s], vy[s], vz[s]
        t_z = np.where(spz != 0, (np.copysign(half_length, spz) - svz) / spz, np.inf)  # path per unit momentum
        # straight line: |v + p t|_T = radius
        cross = spx * svy - spy * svx
        t_r = (np.sqrt(np.maximum(pt2[s] * radius**2 - cross**2, 0.0)) - spx * svx - spy * svy) / np.where(ok[s], pt2[s], 1.0)
        t = np.minimum(t_r, t_z)
        x[s], y[s], z[s] = svx + spx * t, svy + spy * t, svz + spz * t

        if np.any(helix):
            h = np.flatnonzero(helix)
            q = np.sign(charge[h] * bz)
            big_r = pt_safe[h] / (GEV_PER_TESLA_METRE * np.abs(charge[h] * bz)) * 1000.0  # mm
            rho = q * big_r
            phi0 = np.arctan2(py[h], px[h])
            cx, cy = vx[h] + rho * py[h] / pt_safe[h], vy[h] - rho * px[h] / pt_safe[h]
            dc = np.hypot(cx, cy)
            # angle at the centre between the axis direction and the particle; the radius is crossed
            # where cos(beta) = (R^2 - dc^2 - r^2) / (2 dc r); the turning angle alpha >= 0 moves
            # sgn(q) * beta by -alpha
            beta0 = np.arctan2(vy[h] - cy, vx[h] - cx) - np.arctan2(cy, cx)
            cos_t = (radius**2 - dc**2 - big_r**2) / (2 * dc * big_r)
            reach = np.abs(cos_t) <= 1
            beta_t = np.arccos(np.clip(cos_t, -1, 1))
            gamma = q * beta0
            two_pi = 2 * np.pi
            alpha_r = np.where(reach, np.minimum(np.mod(gamma - beta_t, two_pi), np.mod(gamma + beta_t, two_pi)), np.inf)
            alpha_z = np.where(pz[h] != 0, (np.copysign(half_length, pz[h]) - vz[h]) * pt_safe[h] / (pz[h] * big_r), np.inf)
            alpha = np.minimum(alpha_r, alpha_z)
            ok[h] &= np.isfinite(alpha)
            alpha = np.where(np.isfinite(alpha), alpha, 0.0)
            phi = phi0 - q * alpha
            x[h], y[h] = cx - rho * np.sin(phi), cy + rho * np.cos(phi)
            z[h] = vz[h] + pz[h] / pt_safe[h] * big_r * alpha
    return x, y, z, ok & np.isfinite(x) & np.isfinite(z)


# --- calorimeters ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _geometry(towers_json: str):
    """Tower lookup arrays from the card-style tower list (cached per list).

    Each entry: ``phi_bins`` (uniform in [-pi, pi]) and eta edges, either ``eta`` (explicit) or
    ``eta_grid`` = [first, step, count]. As in Delphes, all edges are merged and sorted; the bin
    (edge[i-1], edge[i]] takes the phi division listed with its upper edge.
    """
    upper: dict[float, int] = {}
    for seg in json.loads(towers_json):
        if ("eta" in seg) == ("eta_grid" in seg):
            raise DetectorConfigError("each entry needs exactly one of 'eta' (edges) and 'eta_grid' ([first, step, count])")
        if "eta" in seg:
            etas = np.asarray(seg["eta"], float)
        else:
            first, step, count = seg["eta_grid"]
            etas = first + step * np.arange(int(count))
        for e in np.round(etas, 9):
            if upper.setdefault(float(e), seg["phi_bins"]) != seg["phi_bins"]:
                raise DetectorConfigError(f"eta edge {e} is listed with {upper[float(e)]} and {seg['phi_bins']} phi bins")
    edges = np.array(sorted(upper))
    if len(edges) < 2:
        raise DetectorConfigError("needs at least two eta edges")
    nphi = np.array([upper[e] for e in edges], dtype=np.int64)
    nphi[0] = 0  # the first edge is only a lower edge
    offset = np.concatenate([[0], np.cumsum(nphi)])[:-1]
    n_towers = int(nphi.sum())
    b = np.repeat(np.arange(len(edges)), nphi)
    k = np.arange(n_towers) - offset[b]
    width = 2 * np.pi / nphi[b]
    lookup = {"eta_lo": edges[b - 1], "eta_hi": edges[b], "phi_lo": -np.pi + k * width, "phi_hi": -np.pi + (k + 1) * width}
    # eta -> bin without a binary search: cells of half the smallest bin width hold at most one
    # edge, so the bin of a cell's lower end needs at most one correction
    step = 0.5 * np.min(np.diff(edges))
    n_cells = int(np.ceil((edges[-1] - edges[0]) / step)) + 1
    cells = np.searchsorted(edges, edges[0] + step * np.arange(n_cells), side="left") if n_cells <= 10**6 else None
    return edges, nphi, offset, n_towers, lookup, (step, cells)


def _eta_index(edges, step_cells, eta):
    """np.searchsorted(edges, eta, side="left"), by table lookup when the table is small."""
    step, cells = step_cells
    if cells is None:
        return np.searchsorted(edges, eta, side="left")
    k = np.clip(np.floor(np.nan_to_num((eta - edges[0]) / step)), 0, len(cells) - 1).astype(np.int64)
    b = cells[k]
    b = b + (edges[np.minimum(b, len(edges) - 1)] < eta)
    return np.where(eta <= edges[0], 0, np.where((eta > edges[-1]) | np.isnan(eta), len(edges), b))


def tower_index(towers: list, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Tower number of each (eta, phi) in the tower list (-1 outside the calorimeter)."""
    edges, nphi, offset, _, _, step_cells = _geometry(json.dumps(towers, sort_keys=True))
    b = _eta_index(edges, step_cells, eta)
    inside = (b >= 1) & (b < len(edges))
    b = np.where(inside, b, 1)
    n = nphi[b]
    iphi = np.clip(np.floor((phi + np.pi) / (2 * np.pi) * n).astype(np.int64), 0, n - 1)
    return np.where(inside, offset[b] + iphi, -1)


def calorimeter(rng, calo: dict, scale: float, hits: dict, tracks: dict):
    """One SimpleCalorimeter pass with energy flow (``calo``: the config's ``ecal`` or ``hcal``).

    ``hits``: particles reaching the calorimeter, flat ``event, eta, phi, e, pid`` ((eta, phi) of
    the point where they reach it). ``tracks``: ``event, hit, e, pid, res`` (hit = index of the
    track's particle in ``hits``; res = sigma(pT)/pT). ``scale`` multiplies sigma(E). Returns the eflow neutral objects
    ``(event, eta, phi, energy)`` (massless, at the smeared tower centre) and a momentum factor per
    track: 1, except in towers without a significant neutral excess, where the tracks are pulled to
    the sigma-weighted mean of the track and calorimeter energies.
    """
    towers = calo["towers"]
    _, _, _, n_towers, geo, _ = _geometry(json.dumps(towers, sort_keys=True))
    res = calo["resolution"]
    f_hit = energy_fraction(calo["energy_fraction"], np.abs(hits["pid"]))
    f_trk = energy_fraction(calo["energy_fraction"], np.abs(tracks["pid"]))
    deposit = np.flatnonzero(f_hit > 1e-9)
    tid_h = np.full(len(f_hit), -1)
    tid_h[deposit] = tower_index(towers, hits["eta"][deposit], hits["phi"][deposit])
    tid_t = tid_h[tracks["hit"]]  # a track hits the tower its particle hits (same fraction)
    use_h = tid_h >= 0
    use_t = (f_trk > 1e-9) & (tid_t >= 0)
    key_h = hits["event"][use_h].astype(np.int64) * n_towers + tid_h[use_h]
    key_t = tracks["event"][use_t].astype(np.int64) * n_towers + tid_t[use_t]
    keys, inverse = np.unique(np.concatenate([key_h, key_t]), return_inverse=True)
    inv_h, inv_t = inverse[:len(key_h)], inverse[len(key_h):]
    n = len(keys)
    tid = keys % n_towers
    eta_c = 0.5 * (geo["eta_lo"][tid] + geo["eta_hi"][tid])

    def sigma(eta, energy):
        return scale * calorimeter_resolution(res, eta, energy)

    e_true = np.bincount(inv_h, weights=hits["e"][use_h] * f_hit[use_h], minlength=n)
    t_e, t_res, t_f = tracks["e"][use_t], tracks["res"][use_t], f_trk[use_t]
    e_trk = np.bincount(inv_t, weights=t_e * t_f, minlength=n)
    # a track's energy uncertainty: its own resolution times the deposit, or times its energy when
    # the calorimeter alone would measure it better (SimpleCalorimeter::Process)
    calo_better = sigma(eta_c[inv_t], t_e) / np.maximum(t_e, 1e-300) < t_res
    guess = np.where(calo_better, t_e * t_f, t_e)
    trk_sigma2 = np.bincount(inv_t, weights=(t_res * guess) ** 2, minlength=n)

    energy = log_normal(rng, e_true, sigma(eta_c, e_true))
    s = sigma(eta_c, energy)
    energy = np.where((energy < calo["energy_min"]) | (energy < calo["significance_min"] * s), 0.0, energy)
    if calo["smear_tower_center"]:
        u = rng.random((2, n))
        eta = geo["eta_lo"][tid] + u[0] * (geo["eta_hi"][tid] - geo["eta_lo"][tid])
        phi = geo["phi_lo"][tid] + u[1] * (geo["phi_hi"][tid] - geo["phi_lo"][tid])
    else:
        eta, phi = eta_c, 0.5 * (geo["phi_lo"][tid] + geo["phi_hi"][tid])

    neutral = np.maximum(energy - e_trk, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        significance = neutral / np.sqrt(trk_sigma2 + s**2)
        is_neutral = (neutral > calo["energy_min"]) & (significance > calo["significance_min"])
        # no significant excess: the tower's tracks take the weighted mean of track and calorimeter
        w_trk = np.where(trk_sigma2 > 0, 1.0 / trk_sigma2, 0.0)
        w_calo = np.where(s > 0, 1.0 / s**2, 0.0)
        best = (w_trk * e_trk + w_calo * energy) / (w_trk + w_calo)
        factor = np.where(~is_neutral & (e_trk > 0) & (w_trk + w_calo > 0), best / e_trk, 1.0)
    rescale = np.ones(len(tracks["e"]))
    rescale[use_t] = factor[inv_t]
    event = keys // n_towers
    return (event[is_neutral], eta[is_neutral], phi[is_neutral], neutral[is_neutral]), rescale


# --- the whole detector ------------------------------------------------------------------------

def _species(abs_pid):
    return np.where(abs_pid == 11, 1, np.where(abs_pid == 13, 2, 0))  # index into SPECIES


def respond(particles: dict, charge: np.ndarray, params: dict, rng: np.random.Generator) -> dict:
    """Detector response for flat generator-level final-state particles.

    ``particles``: dict of flat arrays ``event, id, px, py, pz, e, vx, vy, vz`` (GeV, mm);
    ``charge``: electric charge per particle; ``params``: the config's ``detector`` section.
    Returns a dict of flat arrays (CANDIDATE_FIELDS), sorted by event (stable): eflow tracks
    first, then eflow photons, then eflow neutral hadrons. d0err/dzerr are the per-track Gaussian
    widths d0/dz were smeared with (0 for neutral objects).
    """
    event = np.asarray(particles["event"])
    pid = np.abs(particles["id"])
    px, py, pz, e = particles["px"], particles["py"], particles["pz"], particles["e"]
    vx, vy, vz = particles["vx"], particles["vy"], particles["vz"]
    pt = np.hypot(px, py)
    visible = (pid != 12) & (pid != 14) & (pid != 16)  # NEUTRINOS

    # --- propagation to the calorimeter surface --------------------------------------------------
    x, y, z, inside = propagate(px, py, pz, vx, vy, vz, charge, params["magnetic_field"],
                                params["propagation_radius"], params["propagation_half_length"])
    reach = visible & inside
    pos_eta = np.arcsinh(np.divide(z, np.hypot(x, y), out=np.full_like(z, 1e6), where=np.hypot(x, y) > 0))
    pos_phi = np.arctan2(y, x)

    # --- tracking: efficiency, pT smearing -------------------------------------------------------
    species = _species(pid)
    abs_pos_eta = np.abs(pos_eta)
    charged = np.flatnonzero(reach & (charge != 0))
    eff = np.zeros(len(charged))
    res = np.zeros(len(charged))
    for i, s in enumerate(SPECIES):
        m = species[charged] == i
        eff[m] = binned(params["tracking_efficiency"][s], abs_pos_eta[charged[m]], pt[charged[m]])
        res[m] = momentum_resolution(params["momentum_resolution"][s], abs_pos_eta[charged[m]], pt[charged[m]])
    u_eff = rng.random(len(charged))
    keep = u_eff < eff * params["track_efficiency_scale"]
    t, t_res = charged[keep], np.minimum(res[keep] * params["momentum_resolution_scale"], 1.0)
    t_pt = log_normal(rng, pt[t], t_res * pt[t])
    mass2 = np.clip(e[t] ** 2 - px[t] ** 2 - py[t] ** 2 - pz[t] ** 2, 0.0, None)
    p_over_pt = np.sqrt(pt[t] ** 2 + pz[t] ** 2) / pt[t]

    # --- impact parameters: straight lines from the production vertex, Gaussian smearing ----------
    # (the b and c hadron decay lengths are what makes heavy-flavour jets visible)
    mom_eta = np.arcsinh(pz[t] / pt[t])
    ip = params["impact_parameter_resolution"]
    d0err = binned(ip, np.abs(mom_eta), t_pt, "d0") * params["ip_resolution_scale"]
    dzerr = binned(ip, np.abs(mom_eta), t_pt, "dz") * params["ip_resolution_scale"]
    d0 = (vx[t] * py[t] - vy[t] * px[t]) / pt[t] + rng.standard_normal(len(t)) * d0err
    dz = vz[t] - (vx[t] * px[t] + vy[t] * py[t]) / pt[t] * pz[t] / pt[t] + rng.standard_normal(len(t)) * dzerr

    # --- calorimeters with energy flow: ECAL sees the tracks first, HCAL the ECAL's eflow tracks ----
    c = np.flatnonzero(reach)
    hits = {"event": event[c], "eta": pos_eta[c], "phi": pos_phi[c], "e": e[c], "pid": pid[c]}
    scale = np.ones(len(t))
    trk = {"event": event[t], "hit": np.searchsorted(c, t), "pid": pid[t], "res": t_res}
    neutral = {}
    for calo in ("ecal", "hcal"):
        trk["e"] = np.sqrt((t_pt * scale * p_over_pt) ** 2 + mass2)
        neutral[calo], factor = calorimeter(rng, params[calo], params[f"{calo}_resolution_scale"], hits, trk)
        scale = scale * factor
    t_pt = t_pt * scale
    t_e = np.sqrt((t_pt * p_over_pt) ** 2 + mass2)
    ratio = t_pt / pt[t]
    t_px, t_py, t_pz = px[t] * ratio, py[t] * ratio, pz[t] * ratio

    # --- lepton identification without isolation -------------------------------------------------
    lep = params["lepton_id_efficiency"]
    u_id = rng.random(len(t))
    is_el = (pid[t] == 11) & (u_id < binned(lep["electron"], abs_pos_eta[t], t_pt))
    is_mu = (pid[t] == 13) & (u_id < binned(lep["muon"], abs_pos_eta[t], t_pt))

    (ev_g, eta_g, phi_g, e_g), (ev_h, eta_h, phi_h, e_h) = neutral["ecal"], neutral["hcal"]
    eta_n, phi_n, e_n = (np.concatenate(a) for a in ((eta_g, eta_h), (phi_g, phi_h), (e_g, e_h)))
    pt_n = e_n / np.cosh(eta_n)
    n_t, n_g, n_h = len(t), len(e_g), len(e_h)
    zeros = np.zeros(n_g + n_h)
    out = {
        "event": np.concatenate([event[t], ev_g, ev_h]).astype(np.int64),
        "px": np.concatenate([t_px, pt_n * np.cos(phi_n)]),
        "py": np.concatenate([t_py, pt_n * np.sin(phi_n)]),
        "pz": np.concatenate([t_pz, pt_n * np.sinh(eta_n)]),
        "e": np.concatenate([t_e, e_n]),
        "charge": np.concatenate([charge[t], zeros]),
        "d0": np.concatenate([d0, zeros]),
        "dz": np.concatenate([dz, zeros]),
        "d0err": np.concatenate([d0err, zeros]),
        "dzerr": np.concatenate([dzerr, zeros]),
        "is_electron": np.concatenate([is_el, zeros]),
        "is_muon": np.concatenate([is_mu, zeros]),
        "is_photon": np.concatenate([np.zeros(n_t), np.ones(n_g), np.zeros(n_h)]),
        "is_charged_hadron": np.concatenate([~(is_el | is_mu), zeros]),
        "is_neutral_hadron": np.concatenate([np.zeros(n_t + n_g), np.ones(n_h)]),
    }
    order = np.argsort(out["event"], kind="stable")
    return {k: v[order].astype(np.float64) if k != "event" else v[order] for k, v in out.items()}
