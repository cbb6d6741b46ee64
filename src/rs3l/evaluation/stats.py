"""Statistics of the results table: spread over repeat seeds, bootstrap over test jets, paired comparisons.

Every arm runs with K repeat seeds (a different label subset and initialisation per seed,
see :mod:`rs3l.evaluation.tasks`) and is scored on the same test jets. Three uncertainties:

- ``mean ± std`` over the K seeds (sample std, ddof=1): training and label-subset variance;
- a bootstrap interval over the test jets of the seed-averaged metric (stratified: signal
  and background jets are resampled separately, so every replicate has both);
- a *paired* comparison of two arms (same test jets, same label subset per seed): each
  replicate resamples the test jets and the seeds (jointly for both arms) and recomputes
  the difference of the seed-averaged metrics, so the interval carries both test-set and
  training variance.

Replicates are weight matrices (B, n) of multinomial counts, and AUC and rejection are
computed for all replicates at once from one sort of the scores (ties count half, as in
:func:`rs3l.evaluation.metrics.roc_auc`; thresholds as in ``fpr_at_efficiency``).
"""

from __future__ import annotations

import math

import numpy as np

from rs3l.seeds import rng


def mean_std(values) -> tuple[float | None, float | None]:
    """(mean, sample std) of the finite values; std None for a single value, both None for none."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return None, None
    return float(v.mean()), (float(v.std(ddof=1)) if v.size > 1 else None)


def _tie_groups(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, starts): ``order`` sorts scores descending; ``starts`` are the first positions of equal-score runs."""
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    return order, starts


def weighted_auc(is_signal: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC per row of ``weights`` (B, n): P(signal outscores background), ties 1/2. Returns (B,)."""
    y = np.asarray(is_signal, bool)
    order, starts = _tie_groups(np.asarray(score, np.float64))
    w = np.atleast_2d(weights)[:, order].astype(np.float64)
    ys = y[order]
    pos = np.add.reduceat(w * ys, starts, axis=1)  # (B, groups), groups by descending score
    neg = np.add.reduceat(w * ~ys, starts, axis=1)
    neg_below = neg[:, ::-1].cumsum(axis=1)[:, ::-1] - neg  # background weight strictly below each group
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return num / (pos.sum(axis=1) * neg.sum(axis=1))


def weighted_fpr_at_efficiency(is_signal: np.ndarray, score: np.ndarray, weights: np.ndarray,
                               efficiency: float) -> np.ndarray:
    """Background efficiency at the highest threshold that keeps >= ``efficiency`` of the signal weight. (B,)."""
    y = np.asarray(is_signal, bool)
    order, starts = _tie_groups(np.asarray(score, np.float64))
    w = np.atleast_2d(weights)[:, order].astype(np.float64)
    ys = y[order]
    pos = np.add.reduceat(w * ys, starts, axis=1).cumsum(axis=1)
    neg = np.add.reduceat(w * ~ys, starts, axis=1).cumsum(axis=1)
    eff = pos / pos[:, -1:]
    first = np.argmax(eff >= efficiency - 1e-12, axis=1)  # first group (from the top) reaching the efficiency
    return neg[np.arange(len(w)), first] / neg[:, -1]


def rejection(fpr: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(fpr > 0, 1.0 / np.maximum(fpr, 1e-300), np.inf)


def metric_values(metric: str, is_signal: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``auc`` or ``rejection_at_<eff>`` for each replicate (row of ``weights``)."""
    if metric == "auc":
        return weighted_auc(is_signal, score, weights)
    if metric.startswith("rejection_at_"):
        return rejection(weighted_fpr_at_efficiency(is_signal, score, weights, float(metric.rsplit("_", 1)[1])))
    raise ValueError(f"no bootstrap for metric '{metric}'; known: auc, rejection_at_<efficiency>")


def bootstrap_weights(is_signal: np.ndarray, n_boot: int, generator: np.random.Generator) -> np.ndarray:
    """(n_boot, n) multinomial counts, signal and background resampled separately (stratified)."""
    y = np.asarray(is_signal, bool)
    w = np.zeros((n_boot, y.size), np.float64)
    for sel in (y, ~y):
        idx = np.flatnonzero(sel)
        if idx.size:
            w[:, idx] = generator.multinomial(idx.size, np.full(idx.size, 1.0 / idx.size), size=n_boot)
    return w


def _summary(values: np.ndarray, level: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if finite.size < 0.9 * values.size:  # too many infinite rejections: the upper end is unbounded
        lo = float(np.quantile(np.where(np.isfinite(values), values, np.inf), (1 - level) / 2))
        return lo, math.inf
    return tuple(float(q) for q in np.quantile(values, [(1 - level) / 2, (1 + level) / 2]))


def bootstrap_interval(metric: str, is_signal: np.ndarray, scores: np.ndarray, n_boot: int = 1000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval over test jets of the seed-averaged ``metric``; ``scores`` (K seeds, n jets)."""
    scores = np.atleast_2d(scores)
    w = bootstrap_weights(is_signal, n_boot, rng(seed, "bootstrap", metric))
    values = np.mean([metric_values(metric, is_signal, s, w) for s in scores], axis=0)
    return _summary(values, level)


def paired_bootstrap(metric: str, is_signal: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                     n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> dict:
    """Difference A - B of the seed-averaged ``metric`` on the same test jets.

    ``scores_a`` (K_a, n), ``scores_b`` (K_b, n), columns aligned on the same jets. When both
    arms have the same number of seeds the seeds are paired (seed k shares its label subset)
    and resampled jointly; otherwise each arm's seeds are resampled on their own.
    Returns ``delta`` (on the full test set), ``low``/``high`` (percentile interval),
    ``p_not_better`` (fraction of replicates with delta <= 0) and ``n_boot``.
    """
    a, b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
    gen = rng(seed, "paired-bootstrap", metric)
    w = bootstrap_weights(is_signal, n_boot, gen)
    ma = np.stack([metric_values(metric, is_signal, s, w) for s in a])  # (K_a, B)
    mb = np.stack([metric_values(metric, is_signal, s, w) for s in b])
    ka = gen.integers(0, len(a), size=(n_boot, len(a)))
    kb = ka if len(a) == len(b) else gen.integers(0, len(b), size=(n_boot, len(b)))
    cols = np.arange(n_boot)[:, None]
    with np.errstate(invalid="ignore"):
        delta = ma[ka, cols].mean(axis=1) - mb[kb, cols].mean(axis=1)
    ones = np.ones((1, len(np.asarray(is_signal))))
    with np.errstate(invalid="ignore"):  # inf - inf (no background passes in either arm) is undefined
        full = (np.mean([metric_values(metric, is_signal, s, ones)[0] for s in a])
                - np.mean([metric_values(metric, is_signal, s, ones)[0] for s in b]))
    finite = delta[np.isfinite(delta)]
    lo, hi = _summary(finite, level) if finite.size else (math.nan, math.nan)
    return {"delta": float(full), "low": lo, "high": hi, "p_not_better": float(np.mean(finite <= 0)) if finite.size
            else math.nan, "n_boot": int(n_boot), "level": level}


def pm(v, s, digits: int = 3, missing: str = "–") -> str:
    """'mean ± std' with ``digits`` decimals; just the mean without a std, ``missing`` without a value."""
    if v is None or not math.isfinite(v):
        return missing
    return f"{v:.{digits}f}" + ("" if s is None or not math.isfinite(s) else f" ± {s:.{digits}f}")
