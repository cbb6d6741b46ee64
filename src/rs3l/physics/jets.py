"""Jets from detector candidates: anti-kT clustering, truth labelling, substructure, constituent features.

Everything is columnar over a batch of events (awkward + numpy); the fastjet
awkward interface clusters all events of a batch in one call.
"""

from __future__ import annotations

import warnings

import awkward as ak
import fastjet
import numpy as np

from rs3l.physics.features import derived_features

PARTON_FLAVOUR = {1: "q", 2: "q", 3: "q", 4: "c", 5: "b", 21: "g"}
FLAVOUR_TABLE = np.array([PARTON_FLAVOUR.get(i, "") for i in range(22)], dtype=object)
FLAGS = ("is_electron", "is_muon", "is_photon", "is_charged_hadron", "is_neutral_hadron")


def delta_phi(a, b):
    return (a - b + np.pi) % (2 * np.pi) - np.pi


def rows(counts: np.ndarray, select: np.ndarray) -> np.ndarray:
    """Flat positions of the selected rows of a jagged array given by its per-row ``counts``."""
    starts = np.concatenate([[0], np.cumsum(counts)])[:-1][select]
    n = counts[select]
    return np.repeat(starts - np.concatenate([[0], np.cumsum(n)])[:-1], n) + np.arange(n.sum())


def momenta(px, py, pz, e, counts) -> ak.Array:
    """Jagged Momentum4D records (one list per entry of ``counts``), as fastjet's awkward interface takes them."""
    offsets = ak.index.Index64(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    record = ak.contents.RecordArray([ak.contents.NumpyArray(np.ascontiguousarray(a, dtype=np.float64))
                                      for a in (px, py, pz, e)], ["px", "py", "pz", "E"],
                                     parameters={"__record__": "Momentum4D"})
    return ak.Array(ak.contents.ListOffsetArray(offsets, record))


def _eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    return np.arcsinh(pz / np.maximum(pt, 1e-12)), np.arctan2(py, px)


def cluster(cands: dict, n_events: int, jet_cfg: dict) -> dict:
    """Anti-kT jets of the detector candidates, selected by the config's pT window and |eta|.

    Returns flat per-jet arrays (event, px, py, pz, e, pt, eta, phi, mass) sorted by
    event then descending pT; ``constituents`` (flat candidate indices, jet after jet, each
    jet's by descending candidate pT) and ``n_constituents`` per jet.
    """
    counts = np.bincount(cands["event"], minlength=n_events)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    cs = fastjet.ClusterSequence(momenta(cands["px"], cands["py"], cands["pz"], cands["e"], counts),
                                 fastjet.JetDefinition(fastjet.antikt_algorithm, jet_cfg["radius"]))
    min_pt = 0.5 * jet_cfg["pt_min"]
    jets = cs.inclusive_jets(min_pt)
    index = cs.constituent_index(min_pt)
    j_event = np.repeat(np.arange(n_events), ak.to_numpy(ak.num(jets)))
    flat = ak.flatten(jets)
    px, py, pz, e = (ak.to_numpy(flat[c]).astype(np.float64) for c in ("px", "py", "pz", "E"))
    pt = np.hypot(px, py)
    eta, phi = _eta_phi(px, py, pz)
    mass = np.sqrt(np.clip(e**2 - px**2 - py**2 - pz**2, 0, None))
    # constituent indices: event-local -> flat candidate indices
    n_const = ak.to_numpy(ak.flatten(ak.num(index, axis=2)))
    const = ak.to_numpy(ak.flatten(index, axis=None)) + np.repeat(offsets[:-1][j_event], n_const)
    keep = (pt >= jet_cfg["pt_min"]) & (pt < jet_cfg["pt_max"]) & (np.abs(eta) < jet_cfg["eta_max"])
    order = np.lexsort((-pt, j_event))
    order = order[keep[order]]
    const, n_const = const[rows(n_const, order)], n_const[order]
    # each jet's constituents by descending pT
    jet_of = np.repeat(np.arange(len(order)), n_const)
    const = const[np.lexsort((-np.hypot(cands["px"][const], cands["py"][const]), jet_of))]
    return {"event": j_event[order], "px": px[order], "py": py[order], "pz": pz[order], "e": e[order],
            "pt": pt[order], "eta": eta[order], "phi": phi[order], "mass": mass[order],
            "constituents": const, "n_constituents": n_const}


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
    if len(kj) == 0:  # no jet holds all partons of an object (small batches, e.g. one event per draw block)
        return kj, ko
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


def substructure(cands: dict, jets: dict, sel: np.ndarray, jet_cfg: dict) -> dict:
    """Energy, soft-drop mass and N-subjettiness (tau1..4) of the selected jets, from their constituents.

    Each jet's constituents are one "event" of a jagged array, so one fastjet call clusters all
    jets: C/A for soft drop (``soft_drop_mass``), kT with winner-take-all recombination for the
    N-subjettiness axes (``nsubjettiness``). ``energy`` (GeV) is the clustered jet's.
    """
    if len(sel) == 0:
        return {k: np.zeros(0) for k in ("energy", "soft_drop_mass", "tau1", "tau2", "tau3", "tau4")}
    counts = jets["n_constituents"][sel]
    const = jets["constituents"][rows(jets["n_constituents"], sel)]
    px, py, pz, e = (cands[c][const] for c in ("px", "py", "pz", "e"))
    parts = momenta(px, py, pz, e, counts)
    ca = fastjet.ClusterSequence(parts, fastjet.JetDefinition(fastjet.cambridge_algorithm, 10.0))
    msd = soft_drop_mass(ca, jet_cfg["soft_drop_beta"], jet_cfg["soft_drop_zcut"], jet_cfg["radius"])
    wta_kt = fastjet.ClusterSequence(parts, fastjet.JetDefinition(fastjet.kt_algorithm, 10.0, fastjet.WTA_pt_scheme,
                                                                  fastjet.Best, 1))
    taus = nsubjettiness(wta_kt, px, py, pz, e, counts, jet_cfg["radius"], n_max=4)
    return {"energy": jets["e"][sel], "soft_drop_mass": msd,
            **{f"tau{n}": taus[:, n - 1] for n in range(1, 5)}}


def _rap_phi(px, py, pz, e):
    return 0.5 * np.log((e + pz) / (e - pz)), np.arctan2(py, px)


def nsubjettiness(axes_cs, px, py, pz, e, counts, r0: float, n_max: int = 3) -> np.ndarray:
    """tau_1..tau_n_max per jet: sum_i pT_i min_k dR(i, axis_k) / (sum_i pT_i r0) (beta = 1, normalised).

    The N axes of a jet are its N exclusive subjets in ``axes_cs``, a kT clustering with
    winner-take-all recombination of the jets' constituents (fastjet contrib Nsubjettiness
    ``WTA_KT_Axes``, ``NormalizedMeasure(1, r0)``); dR in rapidity and azimuth. ``px..e``:
    the constituents, jet after jet, ``counts`` per jet. Returns shape (n_jets, n_max).
    """
    jet = np.repeat(np.arange(len(counts)), counts)
    pt = np.hypot(px, py)
    rap, phi = _rap_phi(px, py, pz, e)
    denominator = np.bincount(jet, weights=pt, minlength=len(counts)) * r0
    taus = np.zeros((len(counts), n_max))
    for n in range(1, n_max + 1):  # loops over the number of axes, not over particles
        with warnings.catch_warnings():  # fastjet 3.5 warns about exclusive jets even for kT (it compares
            # a JetDefinition with algorithm enums)
            warnings.filterwarnings("ignore", "dcut and exclusive jets", UserWarning)
            axes = axes_cs.exclusive_jets_up_to(n)
        n_axes = ak.to_numpy(ak.num(axes))
        flat = ak.flatten(axes)
        a_rap, a_phi = _rap_phi(*(ak.to_numpy(flat[c]) for c in ("px", "py", "pz", "E")))
        first = np.concatenate([[0], np.cumsum(n_axes)])[:-1][jet]
        nearest = np.full(len(pt), np.inf)
        for k in range(n):
            has = n_axes[jet] > k
            a = np.where(has, first + k, 0)
            dr = np.hypot(rap - a_rap[a], delta_phi(phi, a_phi[a]))
            nearest = np.where(has, np.minimum(nearest, dr), nearest)
        taus[:, n - 1] = np.bincount(jet, weights=pt * nearest, minlength=len(counts)) / denominator
    return taus


def clustering_tree(cs) -> dict:
    """The binary clustering tree of a fastjet multi-event ClusterSequence that ends in one jet per event.

    Returns flat arrays over all pseudojets of all events (fastjet's ``jets()`` order: the n
    particles of an event, then its n-1 merges): ``px, py, pz, e``, ``left``/``right`` (flat index
    of the two parents, -1 for a particle) and ``root`` (flat index of each event's jet).

    Columnar reconstruction: ``unique_history_order()`` lists each event's history in post-order
    (parents before children). Walking it with a stack (+1 per particle, -1 per merge), a merge's
    right parent is the entry just before it, and its left parent is the latest earlier entry at
    the same stack height, found for all merges at once by sorting on (event, height, position).
    """
    nodes = cs.jets()
    n_nodes = ak.to_numpy(ak.num(nodes))
    first = np.concatenate([[0], np.cumsum(n_nodes)])
    px, py, pz, e = (ak.to_numpy(ak.flatten(nodes[c])) for c in ("px", "py", "pz", "E"))
    order = cs.unique_history_order()
    hist = ak.to_numpy(ak.flatten(order))
    event = np.repeat(np.arange(len(n_nodes)), ak.to_numpy(ak.num(order)))
    if not np.array_equal(ak.to_numpy(ak.num(order)), n_nodes + 1):
        raise RuntimeError("clustering did not end in exactly one jet per event (increase the C/A radius)")
    keep = hist < n_nodes[event]  # the last history entry of an event is its jet-beam recombination
    hist, event = hist[keep], event[keep]
    leaf = hist < ((n_nodes + 1) // 2)[event]
    height = np.cumsum(np.where(leaf, 1, -1))
    height -= np.concatenate([[0], height])[first[:-1]][event]  # per-event stack height
    node = first[:-1][event] + hist
    pos = np.arange(len(hist))
    by_height = np.lexsort((pos, height, event))
    previous = np.empty_like(by_height)
    previous[by_height[1:]] = by_height[:-1]
    merge = np.flatnonzero(~leaf)
    left, right = np.full(len(px), -1), np.full(len(px), -1)
    left[node[merge]] = node[previous[merge]]
    right[node[merge]] = node[merge - 1]
    return {"px": px, "py": py, "pz": pz, "e": e, "left": left, "right": right, "root": first[1:] - 1}


def soft_drop_mass(cs, beta: float, zcut: float, r0: float) -> np.ndarray:
    """Soft-drop groomed mass per jet (fastjet contrib SoftDrop: scalar z, larger-pT branch, no mass drop).

    ``cs``: a C/A ClusterSequence with one jet per event. From the root, each jet is declustered
    into its two parents; the splitting passes if min(pT1, pT2) / (pT1 + pT2) > zcut (dR12 / r0)^beta
    (dR in rapidity and azimuth), otherwise the softer parent is dropped and the harder one is
    declustered next. All jets step together; the loop runs over the declustering depth, not over jets.
    """
    t = clustering_tree(cs)
    pt = np.hypot(t["px"], t["py"])
    rap, phi = _rap_phi(t["px"], t["py"], t["pz"], t["e"])
    left, right = t["left"], t["right"]
    current = t["root"].copy()
    active = np.flatnonzero(left[current] >= 0)
    while len(active):
        a, b = left[current[active]], right[current[active]]
        dr2 = (rap[a] - rap[b]) ** 2 + delta_phi(phi[a], phi[b]) ** 2
        passed = np.minimum(pt[a], pt[b]) / (pt[a] + pt[b]) > zcut * (dr2 / r0**2) ** (beta / 2)
        failed = active[~passed]
        current[failed] = np.where(pt[a] > pt[b], a, b)[~passed]
        active = failed[left[current[failed]] >= 0]
    c = current
    return np.sqrt(np.clip(t["e"][c] ** 2 - t["px"][c] ** 2 - t["py"][c] ** 2 - t["pz"][c] ** 2, 0, None))


def constituent_features(cands: dict, jets: dict, sel: np.ndarray) -> dict:
    """Per-constituent list features of the selected jets (schema PARTICLE_COLUMNS), jagged per jet.

    ``cands``: detector candidates (:func:`rs3l.physics.detector.respond`), including the
    impact-parameter resolutions ``d0err``/``dzerr`` (mm) the tracks were smeared with.
    """
    counts = jets["n_constituents"][sel]
    flat = jets["constituents"][rows(jets["n_constituents"], sel)]
    rep = lambda a: np.repeat(a[sel], counts)  # noqa: E731 - jet value per constituent
    px, py, pz, e = cands["px"][flat], cands["py"][flat], cands["pz"][flat], cands["e"][flat]
    pt = np.hypot(px, py)
    eta, phi = _eta_phi(px, py, pz)
    feats = {
        **derived_features(eta - rep(jets["eta"]), delta_phi(phi, rep(jets["phi"])), pt, e, rep(jets["pt"]),
                           rep(jets["e"])),
        "part_charge": cands["charge"][flat],
        "part_d0": cands["d0"][flat],
        "part_dz": cands["dz"][flat],
        "part_px": px, "part_py": py, "part_pz": pz, "part_energy": e,
        "part_d0err": cands["d0err"][flat],
        "part_dzerr": cands["dzerr"][flat],
    }
    for f in FLAGS:
        feats[f"part_{f}"] = cands[f][flat]
    return {"counts": counts, **feats}
