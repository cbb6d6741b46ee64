"""Jets from detector candidates: anti-kT clustering, truth labelling, substructure, constituent features.

Everything is columnar over a batch of events (awkward + numpy); the fastjet
awkward interface clusters all events of a batch in one call.
"""

from __future__ import annotations

import awkward as ak
import fastjet
import numpy as np
import vector

vector.register_awkward()

PARTON_FLAVOUR = {1: "q", 2: "q", 3: "q", 4: "c", 5: "b", 21: "g"}
FLAVOUR_TABLE = np.array([PARTON_FLAVOUR.get(i, "") for i in range(22)], dtype=object)
FLAGS = ("is_electron", "is_muon", "is_photon", "is_charged_hadron", "is_neutral_hadron")


def delta_phi(a, b):
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def take(values: np.ndarray, index: ak.Array) -> ak.Array:
    """``values[index]`` for a jagged index array (flat numpy values, jagged result)."""
    return ak.unflatten(values[ak.to_numpy(ak.flatten(index))], ak.num(index))


def _eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    return np.arcsinh(pz / np.maximum(pt, 1e-12)), np.arctan2(py, px)


def cluster(cands: dict, n_events: int, jet_cfg: dict) -> dict:
    """Anti-kT jets of the detector candidates, selected by the config's pT window and |eta|.

    Returns flat per-jet arrays (event, px, py, pz, e, pt, eta, phi, mass) sorted by
    event then descending pT, and ``constituents``: for each jet the flat candidate
    indices (jagged, sorted by descending candidate pT).
    """
    counts = np.bincount(cands["event"], minlength=n_events)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    momenta = ak.unflatten(ak.zip({"px": cands["px"], "py": cands["py"], "pz": cands["pz"], "E": cands["e"]},
                                  with_name="Momentum4D"), counts)
    jetdef = fastjet.JetDefinition(fastjet.antikt_algorithm, jet_cfg["radius"])
    cs = fastjet.ClusterSequence(momenta, jetdef)
    min_pt = 0.5 * jet_cfg["pt_min"]
    jets = cs.inclusive_jets(min_pt)
    index = cs.constituent_index(min_pt)
    n_jets = ak.num(jets)
    j_event = np.repeat(np.arange(n_events), ak.to_numpy(n_jets))
    flat = ak.flatten(jets)
    px, py, pz, e = (ak.to_numpy(flat[c]).astype(np.float64) for c in ("px", "py", "pz", "E"))
    pt = np.hypot(px, py)
    eta, phi = _eta_phi(px, py, pz)
    mass = np.sqrt(np.clip(e**2 - px**2 - py**2 - pz**2, 0, None))
    # constituent indices: event-local -> flat candidate indices
    local = ak.flatten(index, axis=1)
    glob = local + offsets[:-1][j_event]
    keep = (pt >= jet_cfg["pt_min"]) & (pt < jet_cfg["pt_max"]) & (np.abs(eta) < jet_cfg["eta_max"])
    order = np.lexsort((-pt, j_event))
    order = order[keep[order]]
    glob = glob[order]
    # constituents by descending pT
    c_pt = np.hypot(cands["px"], cands["py"])
    glob = glob[ak.argsort(take(c_pt, glob), axis=1, ascending=False)]
    return {"event": j_event[order], "px": px[order], "py": py[order], "pz": pz[order], "e": e[order],
            "pt": pt[order], "eta": eta[order], "phi": phi[order], "mass": mass[order], "constituents": glob}


def truth_objects(lhe_particles: ak.Array, labelling: dict) -> dict:
    """Truth objects of each hard event and the partons that must lie inside a jet to match them.

    ``lhe_particles``: per event, the LHE lines (fields id, status, mother1, px, py, pz).
    resonance: objects are lines with |id| == pdg_id (status 2), their decay partons the
    outgoing quarks descending from them; parton: objects are the outgoing partons.
    Returns flat arrays: object-level (event, line, label_name, n_required) and
    daughter-level (event, line, eta, phi).
    """
    counts = ak.to_numpy(ak.num(lhe_particles.id))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    event = np.repeat(np.arange(len(counts)), counts)
    line = np.arange(offsets[-1]) - offsets[:-1][event]
    pid = ak.to_numpy(ak.flatten(lhe_particles.id))
    status = ak.to_numpy(ak.flatten(lhe_particles.status))
    mother = ak.to_numpy(ak.flatten(lhe_particles.mother1)) - 1  # 0-based line, -1 = none
    eta, phi = _eta_phi(*(ak.to_numpy(ak.flatten(lhe_particles[c])) for c in ("px", "py", "pz")))
    outgoing = status == 1
    if labelling["kind"] == "parton":
        is_obj = outgoing & np.isin(np.abs(pid), list(PARTON_FLAVOUR))
        objects = np.flatnonzero(is_obj)
        label = FLAVOUR_TABLE[np.abs(pid[objects])]
        cand = d_obj = objects  # each parton is its own (only) daughter
        n_req = np.ones(len(objects), dtype=np.int64)
    else:
        is_obj = (np.abs(pid) == labelling["pdg_id"]) & (status == 2)
        objects = np.flatnonzero(is_obj)
        # walk up the mother chain (a few generations) to the first ancestor that is an object
        quark = outgoing & (np.abs(pid) <= 5)
        cand = np.flatnonzero(quark)
        anc = np.full(len(cand), -1)
        cur = np.where(mother[cand] >= 0, offsets[:-1][event[cand]] + mother[cand], -1)
        for _ in range(6):
            valid = (cur >= 0) & (anc < 0)
            hit = valid & is_obj[np.maximum(cur, 0)]
            anc[hit] = cur[hit]
            nxt = np.where(valid & ~hit, mother[np.maximum(cur, 0)], -1)
            cur = np.where(nxt >= 0, offsets[:-1][event[np.maximum(cur, 0)]] + nxt, -1)
        d_sel = anc >= 0
        cand, d_obj = cand[d_sel], anc[d_sel]
        label = np.full(len(objects), labelling["label"], dtype=object)
        n_req = np.full(len(objects), labelling["n_partons"], dtype=np.int64)
        # keep objects whose decay produced exactly the expected number of partons
        found = np.bincount(np.searchsorted(objects, d_obj), minlength=len(objects))
        ok = found == n_req
        keep_d = ok[np.searchsorted(objects, d_obj)] if len(d_obj) else np.zeros(0, bool)
        objects, label, n_req = objects[ok], label[ok], n_req[ok]
        cand, d_obj = cand[keep_d], d_obj[keep_d]
    return {"event": event[objects], "line": line[objects], "global": objects, "label_name": label,
            "n_required": n_req, "d_event": event[cand], "d_global": d_obj, "d_eta": eta[cand], "d_phi": phi[cand]}


def match(jets: dict, truth: dict, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Match jets to truth objects. A jet matches an object if all its required partons lie within
    ``radius`` of the jet axis ("fully merged"); each object keeps its leading matched jet, each jet
    its closest object. Returns (jet indices, object indices), both int arrays of equal length.
    """
    n_j, n_d = len(jets["event"]), len(truth["d_event"])
    if n_j == 0 or n_d == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    # all (jet, daughter) pairs within the same event, via sorted event ranges
    d_order = np.argsort(truth["d_event"], kind="stable")
    d_ev = truth["d_event"][d_order]
    lo = np.searchsorted(d_ev, jets["event"], "left")
    hi = np.searchsorted(d_ev, jets["event"], "right")
    n_pairs = hi - lo
    pj = np.repeat(np.arange(n_j), n_pairs)
    pd = d_order[np.repeat(lo, n_pairs) + (np.arange(n_pairs.sum()) - np.repeat(np.cumsum(n_pairs) - n_pairs, n_pairs))]
    dr = np.hypot(jets["eta"][pj] - truth["d_eta"][pd], delta_phi(jets["phi"][pj], truth["d_phi"][pd]))
    inside = dr < radius
    obj_index = np.searchsorted(truth["global"], truth["d_global"][pd])
    # count partons inside per (jet, object)
    key = pj * len(truth["global"]) + obj_index
    keys, inv = np.unique(key, return_inverse=True)
    n_in = np.bincount(inv, weights=inside, minlength=len(keys))
    dr_max = np.full(len(keys), -np.inf)
    np.maximum.at(dr_max, inv, dr)
    kj, ko = keys // len(truth["global"]), keys % len(truth["global"])
    full = n_in == truth["n_required"][ko]
    kj, ko, dr_max = kj[full], ko[full], dr_max[full]
    # each jet: closest object; then each object: leading jet (jets are pT-ordered per event)
    order = np.lexsort((dr_max, kj))
    kj, ko = kj[order], ko[order]
    first = np.concatenate([[True], kj[1:] != kj[:-1]])
    kj, ko = kj[first], ko[first]
    order = np.lexsort((kj, ko))
    kj, ko = kj[order], ko[order]
    first = np.concatenate([[True], ko[1:] != ko[:-1]])
    kj, ko = kj[first], ko[first]
    order = np.argsort(kj)
    return kj[order], ko[order]


def substructure(cands: dict, constituents: ak.Array, jet_cfg: dict) -> dict:
    """Soft-drop mass and N-subjettiness (tau1..3, beta=1) per jet, from its constituents.

    Each jet's constituents are one "event" of a jagged array, so one fastjet call serves all jets.
    """
    n = len(constituents)
    if n == 0:
        return {k: np.zeros(0) for k in ("soft_drop_mass", "tau1", "tau2", "tau3")}
    parts = ak.zip({"px": take(cands["px"], constituents), "py": take(cands["py"], constituents),
                    "pz": take(cands["pz"], constituents), "E": take(cands["e"], constituents)}, with_name="Momentum4D")
    cs = fastjet.ClusterSequence(parts, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
    sd = cs.exclusive_jets_softdrop_grooming(njets=1, beta=jet_cfg["soft_drop_beta"],
                                             symmetry_cut=jet_cfg["soft_drop_zcut"], R0=jet_cfg["radius"])
    taus = ak.to_numpy(cs.njettiness(njets=[1, 2, 3], beta=1.0, R0=jet_cfg["radius"]))
    return {"soft_drop_mass": ak.to_numpy(sd.msoftdrop), "tau1": taus[:, 0], "tau2": taus[:, 1], "tau3": taus[:, 2]}


def constituent_features(cands: dict, jets: dict, sel: np.ndarray) -> dict:
    """Per-constituent list features of the selected jets (schema PARTICLE_COLUMNS), jagged per jet."""
    idx = jets["constituents"][sel]
    counts = ak.to_numpy(ak.num(idx))
    flat = ak.to_numpy(ak.flatten(idx))
    rep = lambda a: np.repeat(a[sel], counts)  # noqa: E731 - jet value per constituent
    px, py, pz, e = cands["px"][flat], cands["py"][flat], cands["pz"][flat], cands["e"][flat]
    pt = np.hypot(px, py)
    eta, phi = _eta_phi(px, py, pz)
    deta = eta - rep(jets["eta"])
    dphi = delta_phi(phi, rep(jets["phi"]))
    feats = {
        "part_deta": deta,
        "part_dphi": dphi,
        "part_log_pt": np.log(np.maximum(pt, 1e-6)),
        "part_log_e": np.log(np.maximum(e, 1e-6)),
        "part_log_pt_rel": np.log(np.maximum(pt, 1e-6) / rep(jets["pt"])),
        "part_log_e_rel": np.log(np.maximum(e, 1e-6) / rep(jets["e"])),
        "part_delta_r": np.hypot(deta, dphi),
        "part_charge": cands["charge"][flat],
        "part_d0": cands["d0"][flat],
        "part_dz": cands["dz"][flat],
    }
    for f in FLAGS:
        feats[f"part_{f}"] = cands[f][flat]
    return {"counts": counts, **feats}
