"""``rs3l science``: what a frozen embedding kept, what it learnt to ignore, and what it finds odd.

For one pre-trained encoder (frozen), on embeddings computed once per split:

- **invariance** per view v != nominal: a convex linear probe (:mod:`~rs3l.evaluation.linear_probe`)
  separates the nominal view from view v of the *same* jets (trained on train jets having both, C
  chosen on val jets, AUC on test jets). AUC ≈ 0.5: the embedding ignores v; near 1: it keeps v.
- **parameter** per parameter-scan view (``views.<v>.draw``): ridge regression (L2 strength by
  cross-validation on the train split, standardised embeddings) of the drawn value from the view's
  embedding, as in arXiv:2603.13227. Target log(value) for log-uniform draws, the value for uniform
  ones. R² on test jets, and the resolution: half the 16-84% width of the residual (prediction -
  truth) in the target's units (log units for log-uniform draws).
- **parameter_ratio** per parameter-scan view simulated with >= 2 replicas (``simulation.replicas``:
  several draws of the same hard event, each replica with its own value per block): for every pair
  (u, v) of draws of one jet (m draws: m(m-1)/2 pairs), log(θ_u/θ_v) (θ_u - θ_v for uniform draws)
  regressed from z_u - z_v, where the hard event's own variance cancels. Two models, trained on the
  train-split pairs (both orders: the fit is odd in z_u - z_v) and scored on the test-split pairs
  (u < v): ``linear`` (standardised ridge, α by leave-one-out CV; its ``coefficients`` per embedding
  dimension, in standardised units, say which directions carry the parameter) and ``mlp`` (scikit-learn
  MLPRegressor, ``science.mlp_hidden`` × 2, early stopping). Beside them, ``absolute``: the per-jet
  regression of the value from z_u by the same two models on the same jets' rows. R², resolution
  (ratio: in log units of the ratio; with independent errors √2 × a per-draw resolution) and their
  bootstrap std over test jets (the pairs or rows of a jet resampled together).
- **retrieval** (an encoder trained with ``objective: clip``, whose ``encoder.pt`` holds the
  observables MLP): cross-modal retrieval among the nominal test jets: given a jet's observables, the
  rank of its own particle embedding among all test jets' by cosine similarity (ties counted against
  it). ``top1``, ``top10`` accuracy (binomial std), ``median_rank``, and what chance gives.
- **anomaly**: a class held out of pre-training (``science.anomaly.class``, with
  ``pretrain.exclude_classes``) scored by the mean Euclidean distance to its k nearest background
  *train* jets (standardised embeddings, nominal view, scikit-learn ``NearestNeighbors``); ROC AUC
  of that class against the background test jets with a stratified bootstrap interval.

Uncertainties are bootstrap std over test jets (``science.bootstrap`` replicates; the invariance
bootstrap resamples jets, both views of a jet together). Writes ``--out`` (JSON, atomic)::

    {"encoder": path, "invariance": {view: {auc, auc_std, n_jets}},
     "parameter": {view: {parameter, r2, r2_std, resolution, resolution_std, n_jets}},
     "parameter_ratio": {view: {parameter, target, replicas, pairs_per_jet, n_jets, n_pairs, n_train_pairs,
                                linear: {r2, r2_std, resolution, resolution_std, coefficients}, mlp: {...},
                                absolute: {n_rows, linear: {...}, mlp: {...}}}},
     "retrieval": {top1, top1_std, top10, top10_std, chance_top1, chance_top10, median_rank, n_jets},
     "anomaly": {class, background, auc, auc_std, auc_ci, n_signal, n_background}}

A view or class missing from the data leaves its entry out (logged), or is an error with
``science.strict`` or when the view is listed explicitly in ``science.*_views``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from rs3l.atomic import write_text
from rs3l.evaluation import linear_probe, stats
from rs3l.seeds import derive_seed, rng

log = logging.getLogger(__name__)

NOMINAL = "nominal"
MIN_JETS = 10  # fewer train or test jets than this: no probe


# ----------------------------------------------------------------------------- the three probes (pure functions)

def invariance(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
               test: tuple[np.ndarray, np.ndarray], Cs=linear_probe.DEFAULT_CS, n_boot: int = 200,
               seed: int = 0) -> dict:
    """Nominal-vs-view probe. Each argument is (z_nominal (n, d), z_view (n, d)), rows aligned on the same jets.

    Returns ``auc`` (test), ``auc_std`` (bootstrap over test jets, both rows of a jet together),
    ``n_jets`` (test jets) and ``C`` (the probe's L2 strength chosen on val).
    """
    def xy(pair):
        return np.concatenate(pair), np.r_[np.zeros(len(pair[0])), np.ones(len(pair[1]))]

    model, info = linear_probe.fit(*xy(train), *xy(val), Cs=Cs)
    X, y = xy(test)
    score = model.predict_proba(X)[:, 1]
    n = len(test[0])
    per_jet = rng(seed, "science-invariance").multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    boot = stats.weighted_auc(y, score, np.concatenate([per_jet, per_jet], axis=1))
    return {"auc": float(stats.weighted_auc(y, score, np.ones((1, 2 * n)))[0]), "auc_std": float(boot.std(ddof=1)),
            "n_jets": int(n), "C": info["C"]}


def _r2_resolution(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """R² and 16-84% half-width of the residual, along the last axis (works on (B, n) resamples)."""
    resid = pred - truth
    ss_res = (resid ** 2).sum(axis=-1)
    ss_tot = ((truth - truth.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1)
    q16, q84 = np.quantile(resid, [0.16, 0.84], axis=-1)
    return 1.0 - ss_res / ss_tot, (q84 - q16) / 2


def parameter_regression(z_train: np.ndarray, t_train: np.ndarray, z_test: np.ndarray, t_test: np.ndarray,
                         alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3), n_boot: int = 200, seed: int = 0) -> dict:
    """Regress a target (n,) from embeddings (n, d): StandardScaler + RidgeCV (alpha by leave-one-out CV).

    Returns ``r2``, ``r2_std``, ``resolution`` (half the 16-84% width of prediction - truth, in the
    target's units), ``resolution_std`` (bootstrap over test jets), ``n_jets`` (test) and ``alpha``.
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas))).fit(z_train, t_train)
    pred = model.predict(z_test)
    t_test = np.asarray(t_test, np.float64)
    r2, res = _r2_resolution(t_test, pred)
    idx = rng(seed, "science-parameter").integers(0, len(t_test), size=(n_boot, len(t_test)))
    r2_b, res_b = _r2_resolution(t_test[idx], pred[idx])
    return {"r2": float(r2), "r2_std": float(np.std(r2_b[np.isfinite(r2_b)], ddof=1)), "resolution": float(res),
            "resolution_std": float(res_b.std(ddof=1)), "n_jets": int(len(t_test)), "alpha": float(model[-1].alpha_)}


def replica_pairs(jet_id: np.ndarray, replica: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of rows of the same jet: indices (a, b) into the given rows (n,), with replica[a] < replica[b];
    a jet with m rows gives m(m-1)/2 pairs. (A loop over the offset inside a jet, up to m - 1; not over rows.)"""
    order = np.lexsort((replica, jet_id))
    jets, start, count = np.unique(jet_id[order], return_index=True, return_counts=True)
    at = np.arange(len(order)) - np.repeat(start, count)  # position inside the jet
    size = np.repeat(count, count)
    a, b = [], []
    for d in range(1, int(count.max(initial=1))):
        first = np.flatnonzero(at + d < size)
        a.append(order[first])
        b.append(order[first + d])
    empty = np.zeros(0, np.int64)
    return (np.concatenate(a) if a else empty), (np.concatenate(b) if b else empty)


def _jet_resamples(groups: np.ndarray, n_boot: int, gen: np.random.Generator):
    """Bootstrap index arrays that resample whole groups (jets): every row of a drawn jet comes along."""
    order = np.argsort(groups, kind="stable")
    _, start, count = np.unique(groups[order], return_index=True, return_counts=True)
    for _ in range(n_boot):
        pick = gen.integers(0, len(start), len(start))
        c = count[pick]
        yield order[np.repeat(start[pick], c) + np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)]


def _scores(truth: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> dict:
    """R², resolution and their bootstrap std over groups (jets)."""
    r2, res = _r2_resolution(truth, pred)
    boot = np.array([_r2_resolution(truth[i], pred[i]) for i in _jet_resamples(groups, n_boot, rng(seed, "boot"))])
    ok = np.isfinite(boot[:, 0])
    return {"r2": float(r2), "r2_std": float(np.std(boot[ok, 0], ddof=1)), "resolution": float(res),
            "resolution_std": float(np.std(boot[:, 1], ddof=1))}


def regressions(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, groups: np.ndarray,
                odd: bool = False, alphas=(1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3), hidden: int = 64,
                n_boot: int = 200, seed: int = 0) -> dict:
    """A target (n,) regressed from features (n, d) by two scikit-learn models, scored on the test rows.

    ``linear``: StandardScaler + RidgeCV (alpha by leave-one-out CV), with ``coefficients`` (d,) on the
    standardised features; ``mlp``: StandardScaler + MLPRegressor (two hidden layers of ``hidden``, early
    stopping on 20% of the train rows, standardised target). ``odd``: the target is odd in the features
    (a difference of two draws): train on both signs, (X, y) and (-X, -y). Each gives ``r2``, ``r2_std``,
    ``resolution``, ``resolution_std`` (bootstrap over ``groups`` (n_test,), e.g. jet ids).
    """
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if odd:
        X_train, y_train = np.concatenate([X_train, -X_train]), np.concatenate([y_train, -y_train])
    y_test = np.asarray(y_test, np.float64)
    linear = make_pipeline(StandardScaler(), RidgeCV(alphas=list(alphas))).fit(X_train, y_train)
    mlp = TransformedTargetRegressor(
        regressor=make_pipeline(StandardScaler(), MLPRegressor(
            hidden_layer_sizes=(hidden, hidden), alpha=1e-3, early_stopping=True, validation_fraction=0.2,
            n_iter_no_change=20, max_iter=1000, random_state=derive_seed(seed, "mlp") % 2**31)),
        transformer=StandardScaler()).fit(X_train, y_train)
    out = {}
    for name, model in (("linear", linear), ("mlp", mlp)):
        out[name] = _scores(y_test, model.predict(X_test), groups, n_boot, derive_seed(seed, name))
    out["linear"]["coefficients"] = [float(c) for c in linear[-1].coef_]
    out["linear"]["alpha"] = float(linear[-1].alpha_)
    return out


def retrieval(z_particles: np.ndarray, u_observables: np.ndarray, chunk: int = 1024) -> dict:
    """Cross-modal retrieval of jets: row i of ``u_observables`` (n, d), a jet's observables embedding, against
    all rows of ``z_particles`` (n, d), the particle embeddings of the same n jets, by cosine similarity.

    The rank of jet i's own particle embedding counts the other jets scoring at least as high (ties
    against it, so a collapsed embedding ranks last). Returns ``top1``, ``top10`` (share of rank < 1,
    < 10) with binomial std, ``median_rank``, ``chance_top1`` = 1/n, ``chance_top10`` = min(10, n)/n,
    ``n_jets``.
    """
    def unit(a):
        a = np.asarray(a, np.float64)
        return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)

    z, u = unit(z_particles), unit(u_observables)
    n = len(z)
    ranks = np.empty(n, np.int64)
    for i in range(0, n, chunk):
        sim = u[i:i + chunk] @ z.T
        rows = np.arange(sim.shape[0])
        own = sim[rows, rows + i]
        ranks[i:i + chunk] = (sim >= own[:, None]).sum(axis=1) - 1
    out = {"n_jets": int(n), "median_rank": float(np.median(ranks)), "chance_top1": 1.0 / n,
           "chance_top10": min(10, n) / n}
    for k in (1, 10):
        p = float((ranks < k).mean())
        out[f"top{k}"], out[f"top{k}_std"] = p, float(np.sqrt(p * (1 - p) / n))
    return out


def knn_distance_scores(z_reference: np.ndarray, z_query: np.ndarray, k: int) -> np.ndarray:
    """Mean Euclidean distance of each query row to its ``k`` nearest reference rows, after standardising
    with the reference's mean and spread. (n_query,)."""
    from sklearn.neighbors import NearestNeighbors
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(z_reference)
    index = NearestNeighbors(n_neighbors=min(k, len(z_reference))).fit(scaler.transform(z_reference))
    dist, _ = index.kneighbors(scaler.transform(z_query))
    return dist.mean(axis=1)


def anomaly(z_background_train: np.ndarray, z_signal_test: np.ndarray, z_background_test: np.ndarray, k: int = 10,
            n_boot: int = 200, level: float = 0.95, seed: int = 0) -> dict:
    """kNN-distance anomaly score; AUC of the held-out class (signal) against background test jets.

    Returns ``auc``, ``auc_std`` and ``auc_ci`` (stratified bootstrap over test jets, percentile
    interval at ``level``), ``n_signal``, ``n_background``.
    """
    score = knn_distance_scores(z_background_train, np.concatenate([z_signal_test, z_background_test]), k)
    y = np.r_[np.ones(len(z_signal_test), bool), np.zeros(len(z_background_test), bool)]
    boot_seed = derive_seed(seed, "science-anomaly")
    lo, hi = stats.bootstrap_interval("auc", y, score, n_boot=n_boot, level=level, seed=boot_seed)
    # the same replicates as the interval (same stream), for the std
    boot = stats.weighted_auc(y, score, stats.bootstrap_weights(y, n_boot, rng(boot_seed, "bootstrap", "auc")))
    return {"auc": float(stats.weighted_auc(y, score, np.ones((1, len(y))))[0]), "auc_std": float(boot.std(ddof=1)),
            "auc_ci": [lo, hi], "n_signal": int(len(z_signal_test)), "n_background": int(len(z_background_test))}


# ----------------------------------------------------------------------------- data: embed once, select rows

def embed_split(cfg: dict, data_dir, split: str, views: list[str], encoder, max_jets: int,
                columns: tuple[str, ...] = ()) -> dict:
    """Rows of ``split`` in ``views`` with their frozen embedding ``z`` (rows, latent) and scalar columns
    (``label``, ``jet_id``, ``view``, ``replica``, jet columns, ``columns``); the padded inputs are dropped."""
    from rs3l.models.classifier import device, predict
    from rs3l.training.data import load_arrays

    arr = load_arrays(data_dir, split, cfg["training"]["features"], cfg["training"]["max_constituents"], views=views,
                      max_jets=max_jets or None, seed=derive_seed(cfg["seed"], "science", split), columns=columns)
    if len(arr["label"]) == 0:
        return {**{k: v for k, v in arr.items() if k not in ("x", "mask")}, "z": np.zeros((0, encoder.latent_dim))}
    z = predict(encoder, arr["x"], arr["mask"], cfg["evaluate"]["batch_size"], device(cfg))
    return {**{k: v for k, v in arr.items() if k not in ("x", "mask")}, "z": z}


def paired_rows(data: dict, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (nominal, view) of the jets having both (replica 0 of each), aligned by ``jet_id``."""
    first = data["replica"] == 0
    nom = np.flatnonzero((data["view"] == NOMINAL) & first)
    other = np.flatnonzero((data["view"] == view) & first)
    _, i, j = np.intersect1d(data["jet_id"][nom], data["jet_id"][other], assume_unique=True, return_indices=True)
    return nom[i], other[j]


def _missing(cfg: dict, what: str, explicit: bool = False) -> None:
    if explicit or cfg["science"]["strict"]:
        raise ValueError(f"rs3l science: {what}")
    log.warning("rs3l science: %s; entry left out", what)


def _views_to_probe(cfg: dict, key: str, candidates: list[str], present: list[str]) -> list[str]:
    listed = cfg["science"][key]
    if listed is None:
        return [v for v in candidates if v in present]
    for v in listed:
        if v not in present:
            _missing(cfg, f"science.{key} names view '{v}', which the data do not have (views: {', '.join(present)})",
                     explicit=True)
    return list(listed)


def parameter_ratio(cfg: dict, data: dict, view: str, seed: int) -> dict | None:
    """The ``parameter_ratio`` entry of one scan view from the embedded splits ``data`` (see the module
    docstring); None (logged) where the data have one draw per jet."""
    from rs3l.physics.resimulate import draw_spec

    setting, kind, _, _ = draw_spec(cfg, view)
    sc = cfg["science"]

    def target(values):
        values = values.astype(np.float64)
        return np.log(values) if kind == "log_uniform" else values

    rows, pairs = {}, {}
    for s, d in data.items():
        rows[s] = np.flatnonzero((d["view"] == view) & np.isfinite(d["view_parameter"]))
        a, b = replica_pairs(d["jet_id"][rows[s]], d["replica"][rows[s]])
        pairs[s] = (rows[s][a], rows[s][b])
    if not any(len(p[0]) for p in pairs.values()):
        log.info("rs3l science: parameter_ratio '%s': one draw per jet in the data (simulation.replicas: {%s: 2} "
                 "simulates two); entry left out", view, view)
        return None
    if min(len(pairs["train"][0]), len(pairs["test"][0])) < MIN_JETS:
        _missing(cfg, f"parameter_ratio '{view}': too few pairs of draws of one jet (train {len(pairs['train'][0])}, "
                      f"test {len(pairs['test'][0])})")
        return None

    def diff(s):
        d, (a, b) = data[s], pairs[s]
        return d["z"][a] - d["z"][b], target(d["view_parameter"][a]) - target(d["view_parameter"][b])

    def same_jets(s):  # the rows of the jets that have a pair: the absolute regression's sample
        d = data[s]
        return rows[s][np.isin(d["jet_id"][rows[s]], d["jet_id"][pairs[s][0]])]

    common = {"alphas": sc["ridge_alphas"], "hidden": sc["mlp_hidden"], "n_boot": sc["bootstrap"]}
    ratio = regressions(*diff("train"), *diff("test"), data["test"]["jet_id"][pairs["test"][0]], odd=True,
                        seed=derive_seed(seed, "science", "parameter_ratio", view), **common)
    tr, te = same_jets("train"), same_jets("test")
    absolute = regressions(data["train"]["z"][tr], target(data["train"]["view_parameter"][tr]), data["test"]["z"][te],
                           target(data["test"]["view_parameter"][te]), data["test"]["jet_id"][te],
                           seed=derive_seed(seed, "science", "parameter_absolute", view), **common)
    n_jets = len(np.unique(data["test"]["jet_id"][pairs["test"][0]]))
    entry = {"parameter": setting, "target": "log ratio" if kind == "log_uniform" else "difference",
             "replicas": int(data["test"]["replica"][rows["test"]].max()) + 1,
             "pairs_per_jet": len(pairs["test"][0]) / n_jets, "n_jets": n_jets, "n_pairs": len(pairs["test"][0]),
             "n_train_pairs": len(pairs["train"][0]), **ratio, "absolute": {"n_rows": len(te), **absolute}}
    log.info("parameter_ratio %s: %d test pairs (%.2f per jet): R² linear %.3f ± %.3f, MLP %.3f ± %.3f; per jet on "
             "the same jets: linear %.3f, MLP %.3f", view, entry["n_pairs"], entry["pairs_per_jet"],
             ratio["linear"]["r2"], ratio["linear"]["r2_std"], ratio["mlp"]["r2"], ratio["mlp"]["r2_std"],
             absolute["linear"]["r2"], absolute["mlp"]["r2"])
    return entry


def science(cfg: dict, data_dir, encoder_path, out=None) -> dict:
    """Run the invariance, parameter and anomaly probes for one frozen encoder; returns (and writes) the JSON."""
    import torch

    from rs3l.models import observables
    from rs3l.models.classifier import read_encoder_checkpoint
    from rs3l.physics.resimulate import draw_spec
    from rs3l.training.data import check_classes, read_manifest
    from rs3l.training.pretrain import load_encoder

    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    check_classes(cfg["classes"], manifest)
    read_encoder_checkpoint(encoder_path, cfg)  # inputs must match the config's
    encoder, info = load_encoder(encoder_path, cfg)
    sc, seed = cfg["science"], cfg["seed"]
    present = list(manifest["views"])
    if NOMINAL not in present:
        raise ValueError(f"{data_dir}: rs3l science needs the nominal view; the data have {', '.join(present)}")
    inv_views = _views_to_probe(cfg, "invariance_views", [v for v in present if v != NOMINAL], present)
    scan_views = [v for v in present if v in cfg["views"] and draw_spec(cfg, v) is not None]
    par_views = _views_to_probe(cfg, "parameter_views", scan_views, present)
    for v in par_views:
        if v not in cfg["views"] or draw_spec(cfg, v) is None:
            raise ValueError(f"science.parameter_views: view '{v}' draws no parameter (views.{v}.draw is empty)")
    views = sorted({NOMINAL, *inv_views, *par_views})
    data = {split: embed_split(cfg, data_dir, split, views, encoder, sc["max_jets"], ("view_parameter",))
            for split in ("train", "val", "test")}
    result = {"encoder": str(encoder_path), "invariance": {}, "parameter": {}, "parameter_ratio": {}, "retrieval": {},
              "anomaly": {}}

    for v in inv_views:
        rows = {s: paired_rows(d, v) for s, d in data.items()}
        n = {s: len(r[0]) for s, r in rows.items()}
        if min(n["train"], n["test"]) < MIN_JETS or n["val"] < 2:
            _missing(cfg, f"invariance '{v}': too few jets with both nominal and {v} ({n})")
            continue
        pairs = {s: (data[s]["z"][a], data[s]["z"][b]) for s, (a, b) in rows.items()}
        r = invariance(pairs["train"], pairs["val"], pairs["test"], Cs=cfg["evaluate"]["linear_probe_c"],
                       n_boot=sc["bootstrap"], seed=derive_seed(seed, "science", "invariance", v))
        result["invariance"][v] = {k: r[k] for k in ("auc", "auc_std", "n_jets")}
        log.info("invariance %s: AUC %.3f ± %.3f (%d test jets)", v, r["auc"], r["auc_std"], r["n_jets"])

    for v in par_views:
        setting, kind, _, _ = draw_spec(cfg, v)
        sel = {s: np.flatnonzero((d["view"] == v) & np.isfinite(d["view_parameter"])) for s, d in data.items()}
        if min(len(sel["train"]), len(sel["test"])) < MIN_JETS:
            _missing(cfg, f"parameter '{v}': too few jets with a drawn value (train {len(sel['train'])}, "
                          f"test {len(sel['test'])})")
            continue

        def target(s):
            t = data[s]["view_parameter"][sel[s]].astype(np.float64)
            return np.log(t) if kind == "log_uniform" else t

        r = parameter_regression(data["train"]["z"][sel["train"]], target("train"), data["test"]["z"][sel["test"]],
                                 target("test"), alphas=sc["ridge_alphas"], n_boot=sc["bootstrap"],
                                 seed=derive_seed(seed, "science", "parameter", v))
        result["parameter"][v] = {"parameter": setting, **{k: r[k] for k in
                                                           ("r2", "r2_std", "resolution", "resolution_std", "n_jets")}}
        log.info("parameter %s (%s%s): R² %.3f ± %.3f, resolution %.3g (%d test jets)", v, "log " if kind ==
                 "log_uniform" else "", setting, r["r2"], r["r2_std"], r["resolution"], r["n_jets"])
        ratio = parameter_ratio(cfg, data, v, seed)
        if ratio is not None:
            result["parameter_ratio"][v] = ratio

    observables_mlp = observables.load(info)
    if observables_mlp is not None:  # an encoder trained with objective: clip
        d = data["test"]
        rows = np.flatnonzero((d["view"] == NOMINAL) & (d["replica"] == 0))
        if len(rows) < MIN_JETS:
            _missing(cfg, f"retrieval: too few nominal test jets ({len(rows)})")
        else:
            with torch.no_grad():
                u = observables_mlp(torch.from_numpy(observables.from_arrays({c: d[c][rows] for c in
                                                                              observables.RAW_COLUMNS}))).numpy()
            result["retrieval"] = retrieval(d["z"][rows], u)
            r = result["retrieval"]
            log.info("retrieval (observables -> particles, %d test jets): top-1 %.3f (chance %.4f), top-10 %.3f "
                     "(chance %.4f), median rank %.0f", r["n_jets"], r["top1"], r["chance_top1"], r["top10"],
                     r["chance_top10"], r["median_rank"])

    an = sc["anomaly"]
    if an["class"] not in cfg["pretrain"]["exclude_classes"]:
        log.warning("rs3l science: anomaly class '%s' is not in pretrain.exclude_classes: the encoder may have seen it",
                    an["class"])
    classes = cfg["classes"]
    signal = classes.index(an["class"]) if an["class"] in classes else -1
    background = [classes.index(c) for c in an["background"] if c in classes]

    def nominal(s, labels):
        d = data[s]
        return np.flatnonzero((d["view"] == NOMINAL) & (d["replica"] == 0) & np.isin(d["label"], labels))

    sig, bg_train, bg_test = nominal("test", [signal]), nominal("train", background), nominal("test", background)
    if min(len(sig), len(bg_test)) < MIN_JETS or len(bg_train) < an["k"]:
        _missing(cfg, f"anomaly '{an['class']}' vs {an['background']}: too few jets (test {an['class']} {len(sig)}, "
                      f"test background {len(bg_test)}, train background {len(bg_train)}; config classes: "
                      f"{', '.join(classes)})")
    else:
        r = anomaly(data["train"]["z"][bg_train], data["test"]["z"][sig], data["test"]["z"][bg_test], k=an["k"],
                    n_boot=sc["bootstrap"], level=cfg["evaluate"]["confidence_level"],
                    seed=derive_seed(seed, "science", "anomaly"))
        result["anomaly"] = {"class": an["class"], "background": [c for c in an["background"] if c in classes], **r}
        log.info("anomaly %s vs %s: AUC %.3f [%.3f, %.3f]", an["class"], "+".join(an["background"]), r["auc"],
                 *r["auc_ci"])
    if out is not None:
        write_text(out, json.dumps(result, indent=1))
    return result


def main(cfg: dict, args) -> None:
    """``rs3l science``."""
    science(cfg, args.data, args.encoder, args.out)
    log.info("-> %s", args.out)


def markdown_lines(result: dict) -> list[str]:
    """The parameter_ratio and retrieval entries of ``rs3l science``'s JSON as Markdown lines for the report's
    section "What the representation kept" (none where the JSON has neither)."""
    from rs3l.evaluation.stats import pm

    lines = []
    ratio = result.get("parameter_ratio") or {}
    if ratio:
        lines += ["", "Paired re-simulations: for every pair (u, v) of draws of the same jet (replicas of a scan view), "
                  "log(θ_u/θ_v) regressed from z_u − z_v, where the hard event's own variance cancels; trained on "
                  "train-split pairs, scored on test-split pairs, beside the per-jet regression of log θ from one "
                  "draw's z on the same jets (resolution: in log units of the ratio).", "",
                  "| view | parameter | draws per jet | pairs per jet | test pairs | ratio R² linear | ratio R² MLP | "
                  "ratio resolution (linear) | per-jet R² linear | per-jet R² MLP |", "|---|---|---|---|---|---|---|---|---|---|"]
        for v, e in ratio.items():
            ab = e.get("absolute") or {}
            lines.append(f"| {v} | {e.get('parameter', '–')} | {e.get('replicas', '–')} | {e.get('pairs_per_jet', 0):.2f} | "
                         f"{e.get('n_pairs', '–')} | {pm(e['linear']['r2'], e['linear']['r2_std'])} | "
                         f"{pm(e['mlp']['r2'], e['mlp']['r2_std'])} | "
                         f"{pm(e['linear']['resolution'], e['linear']['resolution_std'], 4)} | "
                         f"{pm(ab['linear']['r2'], ab['linear']['r2_std'])} | {pm(ab['mlp']['r2'], ab['mlp']['r2_std'])} |")
        lines.append("")
        for v, e in ratio.items():
            lines.append(f"- {v}: {ratio_verdict(e)}")
    ret = result.get("retrieval") or {}
    if ret:
        lines += ["", f"Cross-modal retrieval (objective clip): given a test jet's observables, its own particle "
                  f"embedding is the nearest of {ret['n_jets']} for {pm(ret['top1'], ret['top1_std'])} of the jets "
                  f"(chance {ret['chance_top1']:.4f}) and among the 10 nearest for {pm(ret['top10'], ret['top10_std'])} "
                  f"(chance {ret['chance_top10']:.4f}); median rank {ret['median_rank']:.0f}."]
    return lines


def ratio_verdict(entry: dict) -> str:
    """One sentence: does the pair's difference recover the parameter where one jet's embedding cannot? (best model
    of each; 'beyond the noise' = the R² difference exceeds twice the combined bootstrap std; 'where one jet
    cannot' = beyond the noise, ratio R² >= 0.5 and per-jet R² < 0.3)."""
    def best(d):
        m = max(("linear", "mlp"), key=lambda k: d[k]["r2"])
        return m, d[m]["r2"], d[m]["r2_std"]

    (mr, r, rs), (ma, a, as_) = best(entry), best(entry["absolute"])
    beyond = r - a > 2 * math.hypot(rs, as_)
    coef = np.abs(np.asarray(entry["linear"].get("coefficients") or [0.0]))
    top = np.argsort(-coef)[:3]
    share = coef[top] ** 2 / max((coef ** 2).sum(), 1e-30)
    direction = ", ".join(f"{int(i)} ({100 * s:.0f}%)" for i, s in zip(top, share))
    verb = ("the ratio of two draws recovers the parameter where one jet's embedding cannot" if beyond and r >= 0.5 > 0.3 > a else
            "the ratio of two draws recovers more of the parameter than one jet's embedding" if beyond else
            "the ratio of two draws recovers no more of the parameter than one jet's embedding")
    return (f"{verb} (R² {r:.3f} ± {rs:.3f} with the {mr} model vs {a:.3f} ± {as_:.3f} per jet with the {ma} model, "
            f"{'beyond' if beyond else 'within'} twice the combined std); the linear model's largest weights are on "
            f"embedding dimensions {direction} of its squared weights.")
