"""Hand-crafted jet augmentations as named views, applied on the fly in the data loader.

The JetCLR augmentations (Dillon, Kasieczka, Olischlager, Plehn, Sorrenson, Vogel,
SciPost Phys. 12, 188 (2022), arXiv:2108.04253) and a smooth random-field deformation
of the (η, φ) plane, acting on a batch of padded constituents:

* ``rotate``: every jet's constituents rotated in (Δη, Δφ) about the jet axis by an
  angle uniform in [0, 2π) (keeps ΔR to the axis and pT).
* ``translate``: all constituents of a jet shifted by (δη, δφ), each uniform in
  ± ``width`` × the jet's extent in that coordinate (JetCLR: width 1).
* ``smear``: soft-constituent smearing, Δη and Δφ of each constituent moved by
  N(0, σ) with σ = ``scale_gev`` / max(pT, ``pt_min_gev``) (JetCLR: 0.1 GeV / pT),
  so hard constituents stay where they are.
* ``collinear``: collinear splitting, a random ``fraction`` of a jet's constituents
  (at most as many as there are free padding slots) split into two with the same
  direction and momentum fractions z, 1 - z (z uniform); the four-momentum sum is
  conserved. The new constituent inherits the other features (charge, d0, dz, flags),
  as in JetCLR, which splits any constituent.
* ``random_field``: a smooth random displacement field D(η, φ) added to each
  constituent's (Δη, Δφ): a Gaussian random field with correlation length ``length``
  and standard deviation ``amplitude`` per component (``modes`` random Fourier features
  per jet), i.e. a translation whose parameters vary continuously over the jet.
* ``jetclr`` = rotate + collinear + smear + translate (JetCLR's composition, in that order).

A view name in ``pretrain.augment_views`` is ``<stored view>[+<transform>...]``, e.g.
``seed+jetclr`` (the re-simulated view ``seed``, then the JetCLR transforms), or only
transforms (``jetclr``, ``rotate+smear``), whose base is the stored view ``nominal``.

Kinematics and derived features. The stored features give, per constituent, Δη, Δφ,
pT, E and the jet's pT and E (pT / exp(part_log_pt_rel)); the loader adds the jet's η
(column ``eta``). A transform moves constituents, then
``rs3l.physics.features.derived_features`` (the definition the re-simulation uses too)
recomputes every derived feature. Energies follow the direction: E' = E
cosh(η') / cosh(η) (exact for massless constituents; keeps E/|p|). Relative features use
the jet's pT and E changed by the change of the constituents' scalar sums (unchanged by
a rotation's pT, a collinear split, ...); Δη, Δφ stay relative to the original jet axis.
Columns: numpy, vectorised over (jets, constituents); masks respected; the output is
sorted by pT again (highest first, padding last), as the loader delivers it.
"""

from __future__ import annotations

import numpy as np

from rs3l.physics.features import derived_features

TRANSFORMS = ("rotate", "translate", "smear", "collinear", "random_field")
COMPOSITES = {"jetclr": ("rotate", "collinear", "smear", "translate")}
NAMES = TRANSFORMS + tuple(COMPOSITES)
BASE_VIEW = "nominal"  # the stored view of a name made of transforms only

# What the transforms read and rewrite (the derived ones are recomputed).
KINEMATIC_FEATURES = ("part_deta", "part_dphi", "part_log_pt", "part_log_e", "part_log_pt_rel", "part_log_e_rel")
DERIVED_FEATURES = KINEMATIC_FEATURES + ("part_delta_r",)
JET_ETA = "jet_eta"  # the extra column the loader appends: the jet's η, repeated per constituent



# ----------------------------------------------------------------------------- names

def parse_view(name: str) -> tuple[str, tuple[str, ...]]:
    """``'seed+jetclr'`` -> ``('seed', ('rotate', 'collinear', 'smear', 'translate'))``.

    The first part is a stored view or a transform (then the base is ``nominal``); the
    others must be transforms. ValueError naming the allowed transforms otherwise.
    """
    parts = [p.strip() for p in str(name).split("+")]
    if any(not p for p in parts):
        raise ValueError(f"view '{name}': empty part; write '<view>+<transform>', e.g. 'seed+jetclr'")
    base, rest = (BASE_VIEW, parts) if parts[0] in NAMES else (parts[0], parts[1:])
    bad = [p for p in rest if p not in NAMES]
    if bad:
        raise ValueError(f"view '{name}': unknown augmentation(s) {bad}; known: {', '.join(NAMES)} "
                         f"(a view name may only come first)")
    transforms: list[str] = []
    for p in rest:
        transforms += COMPOSITES.get(p, (p,))
    return base, tuple(transforms)


def check_config(cfg: dict) -> None:
    """pretrain.augment_views: each a simulated view and known transforms; enough of them (or a
    stochastic one) for pretrain.views_per_jet; a scan view among them for a ``parameter`` pretext.
    ConfigError naming the key otherwise."""
    from rs3l.config import ConfigError  # this module stays numpy-only for the data loaders

    p, simulated = cfg["pretrain"], cfg["simulation"]["views"]
    stochastic = False
    for name in p["augment_views"]:
        try:
            base, transforms = parse_view(name)
        except ValueError as e:
            raise ConfigError(f"pretrain.augment_views: {e}") from None
        if base not in simulated:
            raise ConfigError(f"pretrain.augment_views names view '{base}', which is not simulated; "
                              f"simulation.views: {', '.join(simulated)}")
        stochastic |= bool(transforms)
    n = p["views_per_jet"]
    if len(p["augment_views"]) < n and not stochastic:
        raise ConfigError(f"pretrain.views_per_jet = {n} needs at least {n} entries in pretrain.augment_views "
                          f"(or one with a hand-crafted augmentation, e.g. 'nominal+jetclr'); got {p['augment_views']}")
    if (p.get("pretext") or {}).get("target") == "parameter":
        if not any(cfg["views"][parse_view(v)[0]]["draw"] for v in p["augment_views"]):
            scans = [v for v, d in cfg["views"].items() if d["draw"]]
            raise ConfigError(f"pretrain.pretext.target 'parameter' needs a parameter-scan view (views.<v>.draw) in "
                              f"pretrain.augment_views; got {p['augment_views']} (scan views: "
                              f"{', '.join(scans) or 'none defined'})")


def base_views(names: list[str]) -> list[str]:
    """The stored views that the view names need (in order of first use)."""
    return list(dict.fromkeys(parse_view(n)[0] for n in names))


# ----------------------------------------------------------------------------- features

def unpack(x: np.ndarray, mask: np.ndarray, columns: list[str]) -> dict:
    """Kinematics of padded constituents ``x`` (jets, particles, columns) whose columns include
    :data:`KINEMATIC_FEATURES` and :data:`JET_ETA`: deta, dphi, pt, e (jets, particles) float64,
    jet_pt, jet_e, jet_eta (jets,), and ``mask``."""
    c = {name: i for i, name in enumerate(columns)}
    get = lambda name: x[:, :, c[name]].astype(np.float64)  # noqa: E731
    log_pt, log_e = get("part_log_pt"), get("part_log_e")
    lead = lambda a: a[:, 0]  # noqa: E731 - every constituent gives the same jet value; the leading one exists
    return {"deta": get("part_deta"), "dphi": get("part_dphi"), "pt": np.exp(log_pt), "e": np.exp(log_e),
            "jet_pt": np.exp(lead(log_pt - get("part_log_pt_rel"))), "jet_e": np.exp(lead(log_e - get("part_log_e_rel"))),
            "jet_eta": lead(get(JET_ETA)), "mask": mask.copy()}


def pack(k: dict, x: np.ndarray, columns: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Write the kinematics ``k`` back into (a copy of) ``x``: every derived feature recomputed,
    padding zeroed, constituents sorted by pT (highest first). Returns (x, mask)."""
    x = x.copy()
    mask = k["mask"]
    feats = derived_features(k["deta"], k["dphi"], k["pt"], k["e"], k["jet_pt"][:, None], k["jet_e"][:, None])
    for i, name in enumerate(columns):
        if name in feats:
            x[:, :, i] = feats[name]
    x[~mask] = 0
    order = np.argsort(np.where(mask, -k["pt"], np.inf), axis=1, kind="stable")
    return np.take_along_axis(x, order[:, :, None], axis=1), np.take_along_axis(mask, order, axis=1)


def _move(k: dict, deta: np.ndarray, dphi: np.ndarray) -> dict:
    """New (Δη, Δφ) of the constituents; E follows the new η, the jet's E the constituents' sum."""
    eta_old = k["jet_eta"][:, None] + k["deta"]
    eta_new = k["jet_eta"][:, None] + deta
    e = np.where(k["mask"], k["e"] * np.cosh(eta_new) / np.cosh(eta_old), 0)
    dphi = (dphi + np.pi) % (2 * np.pi) - np.pi
    jet_e = k["jet_e"] + ((e - k["e"]) * k["mask"]).sum(axis=1)
    return {**k, "deta": np.where(k["mask"], deta, 0), "dphi": np.where(k["mask"], dphi, 0), "e": e, "jet_e": jet_e}


# ----------------------------------------------------------------------------- transforms

def rotate(k: dict, gen: np.random.Generator) -> dict:
    """Rotate each jet in (Δη, Δφ) about its axis by a uniform angle."""
    angle = gen.uniform(0, 2 * np.pi, len(k["jet_pt"]))[:, None]
    c, s = np.cos(angle), np.sin(angle)
    return _move(k, c * k["deta"] - s * k["dphi"], s * k["deta"] + c * k["dphi"])


def translate(k: dict, gen: np.random.Generator, width: float = 1.0) -> dict:
    """Shift all constituents of a jet by (δη, δφ) uniform in ± width × the jet's extent."""
    big = np.where(k["mask"], 0, np.inf)
    extent = lambda a: np.nan_to_num((a - big).max(axis=1) - (a + big).min(axis=1), posinf=0, neginf=0)  # noqa: E731
    n = len(k["jet_pt"])
    shift_eta = gen.uniform(-1, 1, n) * width * extent(k["deta"])
    shift_phi = gen.uniform(-1, 1, n) * width * extent(k["dphi"])
    return _move(k, k["deta"] + shift_eta[:, None], k["dphi"] + shift_phi[:, None])


def smear(k: dict, gen: np.random.Generator, scale_gev: float = 0.1, pt_min_gev: float = 0.1) -> dict:
    """Move each constituent's (Δη, Δφ) by N(0, scale / max(pT, pt_min)): soft ones move, hard ones hardly."""
    sigma = scale_gev / np.maximum(k["pt"], pt_min_gev)
    return _move(k, k["deta"] + sigma * gen.standard_normal(sigma.shape),
                 k["dphi"] + sigma * gen.standard_normal(sigma.shape))


def collinear(k: dict, gen: np.random.Generator, fraction: float = 1.0, other: np.ndarray | None = None):
    """Split round(fraction × n) random constituents of each jet (n constituents; at most the free
    padding slots) into two collinear ones with pT and E fractions z and 1 - z.

    ``other`` (jets, particles, F): features that the new constituent copies from its parent.
    Returns (kinematics, other).
    """
    mask = k["mask"]
    J, P = mask.shape
    n = mask.sum(axis=1)
    n_split = np.minimum(np.rint(fraction * n).astype(np.int64), P - n)
    # random rank of each constituent inside its jet; the n_split lowest ranks are split
    keys = np.where(mask, gen.random((J, P)), np.inf)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    split = mask & (rank < n_split[:, None])
    z = gen.random((J, P))
    jet, src = np.nonzero(split)
    dst = n[jet] + rank[jet, src]  # free slots after the jet's last constituent
    k = {key: (v.copy() if isinstance(v, np.ndarray) else v) for key, v in k.items()}
    for key in ("deta", "dphi"):
        k[key][jet, dst] = k[key][jet, src]
    for key in ("pt", "e"):
        k[key][jet, dst] = (1 - z[jet, src]) * k[key][jet, src]
        k[key][jet, src] = z[jet, src] * k[key][jet, src]
    k["mask"][jet, dst] = True
    if other is not None:
        other = other.copy()
        other[jet, dst] = other[jet, src]
    return k, other


def random_field(k: dict, gen: np.random.Generator, amplitude: float = 0.02, length: float = 0.2,
                 modes: int = 16) -> dict:
    """Add a smooth random displacement field D(Δη, Δφ) to every constituent's position.

    D is a Gaussian random field (random Fourier features of a squared-exponential kernel):
    per component ``amplitude`` · sqrt(2 / modes) · Σ_m a_m cos(ω_m · x + b_m), a_m ~ N(0, 1),
    ω_m ~ N(0, 1 / length²), b_m ~ U(0, 2π); one field per jet, so nearby constituents move together.
    """
    J = len(k["jet_pt"])
    omega = gen.standard_normal((J, modes, 2)) / length
    phase = gen.uniform(0, 2 * np.pi, (J, modes))
    a = gen.standard_normal((J, modes, 2))
    arg = k["deta"][:, :, None] * omega[:, None, :, 0] + k["dphi"][:, :, None] * omega[:, None, :, 1] + phase[:, None]
    basis = np.sqrt(2.0 / modes) * np.cos(arg)  # (J, P, modes)
    shift = amplitude * np.einsum("jpm,jmc->jpc", basis, a)
    return _move(k, k["deta"] + shift[..., 0], k["dphi"] + shift[..., 1])


def apply(transforms: tuple[str, ...], x: np.ndarray, mask: np.ndarray, columns: list[str],
          gen: np.random.Generator, params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``transforms`` in order to padded constituents ``x`` (jets, particles, columns).

    ``columns`` names the columns of ``x`` (must include :data:`KINEMATIC_FEATURES` and
    :data:`JET_ETA`); ``params``: {transform: {parameter: value}} (``pretrain.augmentations``;
    a parameter not given takes the function's default, JetCLR's value).
    Returns new (x, mask) with the same shapes; jets without constituents pass unchanged.
    """
    if not transforms:
        return x, mask
    missing = [c for c in (*KINEMATIC_FEATURES, JET_ETA) if c not in columns]
    if missing:
        raise ValueError(f"hand-crafted augmentations need the columns {missing}")
    params = params or {}
    k = unpack(x, mask, columns)
    k["jet_pt"] = np.where(mask[:, 0], k["jet_pt"], 1.0)  # empty jets: harmless values
    k["jet_e"] = np.where(mask[:, 0], k["jet_e"], 1.0)
    kin = [columns.index(c) for c in DERIVED_FEATURES if c in columns]
    other = np.delete(x, kin, axis=2)
    for name in transforms:
        p = params.get(name, {})
        if name == "collinear":
            k, other = collinear(k, gen, other=other, **p)
        else:
            k = {"rotate": rotate, "translate": translate, "smear": smear, "random_field": random_field}[name](k, gen, **p)
    out = np.zeros_like(x)
    keep = [i for i in range(x.shape[2]) if i not in kin]
    out[:, :, keep] = other
    return pack(k, out, columns)
