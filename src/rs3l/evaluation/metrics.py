"""Classifier metrics as small pure numpy functions.

Conventions (as in the RS3L paper, arXiv:2403.07066): ``y_true`` is 1 for signal
and 0 for background, ``score`` is larger for more signal-like jets. Signal
efficiency = true-positive rate, FPR = background (mis-tag) efficiency,
background rejection = 1 / FPR. A jet is accepted when ``score >= threshold``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import wasserstein_distance


def _binary(y_true, score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and score differ in length: {y.size} vs {s.size}")
    return y, s


def _need_both(y: np.ndarray) -> None:
    if y.all() or not y.any():
        raise ValueError("need both signal (1) and background (0) jets; got only one class")


def accuracy(y_true, y_pred) -> float:
    """Fraction of equal entries of two label arrays (shape (n,))."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.size} vs {y_pred.size}")
    if y_true.size == 0:
        raise ValueError("accuracy of an empty array is undefined")
    return float(np.mean(y_true == y_pred))


def roc_curve(y_true, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, starting at (0, 0) with threshold +inf.

    Tied scores form one point, so the area under the curve counts ties as half.
    """
    y, s = _binary(y_true, score)
    _need_both(y)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(~y)[last_of_tie]
    tpr = np.r_[0.0, tp / y.sum()]
    fpr = np.r_[0.0, fp / (~y).sum()]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def roc_auc(y_true, score) -> float:
    """Area under the ROC curve: probability that a signal jet outscores a background jet (ties: 1/2)."""
    fpr, tpr, _ = roc_curve(y_true, score)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def macro_auc_ovr(y_true, probs) -> float:
    """Mean one-vs-rest AUC over the classes present; ``y_true`` (n,) ints, ``probs`` (n, n_classes)."""
    y = np.asarray(y_true).ravel()
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"probs must have shape (n, n_classes) with n={y.size}; got {p.shape}")
    aucs = [roc_auc(y == c, p[:, c]) for c in range(p.shape[1]) if 0 < np.sum(y == c) < y.size]
    if not aucs:
        raise ValueError("macro AUC needs at least two classes present in y_true")
    return float(np.mean(aucs))


def threshold_at_efficiency(y_true, score, efficiency: float) -> float:
    """Highest threshold that accepts at least ``efficiency`` of the signal jets.

    With n signal jets the threshold is the score of the ceil(efficiency * n)-th
    most signal-like one, so for 4 signal jets and efficiency 0.5 it is the 2nd highest score.
    """
    if not 0.0 < efficiency <= 1.0:
        raise ValueError(f"signal efficiency must be in (0, 1]; got {efficiency}")
    y, s = _binary(y_true, score)
    sig = np.sort(s[y])[::-1]
    if sig.size == 0:
        raise ValueError("no signal jets: the threshold at a signal efficiency is undefined")
    k = max(1, math.ceil(efficiency * sig.size - 1e-9))
    return float(sig[k - 1])


def efficiency_at_threshold(y_true, score, threshold: float, positive: bool = True) -> float:
    """Fraction of the jets of one class (signal if ``positive`` else background) with score >= threshold."""
    y, s = _binary(y_true, score)
    sel = s[y] if positive else s[~y]
    if sel.size == 0:
        raise ValueError(f"no {'signal' if positive else 'background'} jets")
    return float(np.mean(sel >= threshold))


def fpr_at_threshold(y_true, score, threshold: float) -> float:
    """Background efficiency (false-positive rate) of the cut ``score >= threshold``."""
    return efficiency_at_threshold(y_true, score, threshold, positive=False)


def fpr_at_efficiency(y_true, score, efficiency: float) -> float:
    """False-positive rate at the threshold of :func:`threshold_at_efficiency`."""
    return fpr_at_threshold(y_true, score, threshold_at_efficiency(y_true, score, efficiency))


def rejection_at_efficiency(y_true, score, efficiency: float) -> float:
    """Background rejection 1 / FPR at a signal efficiency; ``inf`` when no background jet passes."""
    fpr = fpr_at_efficiency(y_true, score, efficiency)
    return math.inf if fpr == 0.0 else 1.0 / fpr


def wasserstein1(a, b) -> float:
    """Earth mover's (Wasserstein-1) distance between two 1-d samples, in units of the score.

    Equal to the integral of |CDF_a - CDF_b|: [0, 1, 3] vs [5, 6, 8] gives 5.
    """
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size == 0 or b.size == 0:
        raise ValueError("Wasserstein distance needs two non-empty samples")
    return float(wasserstein_distance(a, b))


def roc_points(y_true, score, n: int = 101) -> dict:
    """The ROC curve on a fixed grid of ``n`` signal efficiencies (small enough to store in JSON).

    Returns ``{"efficiency": [...], "fpr": [...]}`` with the FPR linearly interpolated.
    """
    fpr, tpr, _ = roc_curve(y_true, score)
    eff = np.linspace(0.0, 1.0, n)
    # Piecewise-linear ROC (tpr is non-decreasing): at an efficiency reached exactly take the lowest
    # fpr reaching it; in between interpolate from the last point below to the first point above.
    hi = np.clip(np.searchsorted(tpr, eff, side="left"), 1, tpr.size - 1)
    lo = hi - 1
    frac = (eff - tpr[lo]) / np.where(tpr[hi] > tpr[lo], tpr[hi] - tpr[lo], 1.0)
    out = np.where(tpr[hi] == eff, fpr[hi], fpr[lo] + np.clip(frac, 0.0, 1.0) * (fpr[hi] - fpr[lo]))
    out[eff == 0.0] = 0.0
    return {"efficiency": eff.round(6).tolist(), "fpr": out.round(8).tolist()}


def score_histogram(score, bins: int = 40, lo: float = 0.0, hi: float = 1.0) -> dict:
    """Unnormalised histogram ``{"edges": [bins + 1], "counts": [bins]}``.

    Scores outside [lo, hi] are counted in the first or last bin.
    """
    s = np.clip(np.asarray(score, dtype=np.float64).ravel(), lo, hi)
    counts, edges = np.histogram(s, bins=bins, range=(lo, hi))
    return {"edges": edges.round(6).tolist(), "counts": counts.astype(int).tolist()}
