"""The derived per-constituent features of the data contract (``schema.PARTICLE_COLUMNS``).

One definition serves the re-simulation (flat arrays, one entry per constituent) and the
loader's hand-crafted augmentations (padded (jets, particles) arrays), which recompute them
after moving constituents. numpy only: the config check imports the augmentations.
"""

from __future__ import annotations

import numpy as np


def derived_features(deta, dphi, pt, e, jet_pt, jet_e) -> dict:
    """``part_deta, part_dphi, part_log_pt, part_log_e, part_log_pt_rel, part_log_e_rel,
    part_delta_r`` from Δη, Δφ (to the jet axis), pT and E (GeV) of the constituents and the
    jet's pT and E (GeV), broadcastable to the constituents' shape."""
    pt_ = np.maximum(pt, 1e-6)
    e_ = np.maximum(e, 1e-6)
    return {"part_deta": deta, "part_dphi": dphi, "part_log_pt": np.log(pt_), "part_log_e": np.log(e_),
            "part_log_pt_rel": np.log(pt_ / jet_pt), "part_log_e_rel": np.log(e_ / jet_e),
            "part_delta_r": np.hypot(deta, dphi)}
