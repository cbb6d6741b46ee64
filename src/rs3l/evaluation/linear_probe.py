"""Convex linear probe: L2-regularised logistic regression on standardised frozen embeddings.

The SSL literature's measure of what a frozen representation holds: the probe is a convex
problem, fit to convergence (L-BFGS to ``tol``), so its score depends on the embedding and
not on an optimiser budget. The regularisation C is chosen on the validation split by the
class-balanced log-loss (the same loss the deep arms stop on). scikit-learn does the work.
"""

from __future__ import annotations

import warnings

import numpy as np

DEFAULT_CS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def balanced_weights(y: np.ndarray) -> np.ndarray:
    """Per-sample weights n / (n_classes * n_c): every class weighs the same in total."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return (len(y) / (len(classes) * counts))[inverse]


def val_log_loss(model, X_val: np.ndarray, y_val: np.ndarray) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y_val, model.predict_proba(X_val), labels=model.classes_,
                          sample_weight=balanced_weights(y_val)))


def fit(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
        Cs=DEFAULT_CS, max_iter: int = 10_000, tol: float = 1e-6):
    """Fit one probe per C on (X_train (n, d), y_train (n,)); keep the lowest val loss.

    Returns (fitted Pipeline(StandardScaler, LogisticRegression), info with ``C``, ``val_loss``
    per C, ``n_iter`` and ``converged`` of the kept fit).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best, losses = None, {}
    for C in Cs:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter,
                                                                   tol=tol))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # recorded below as converged=False
            model.fit(X_train, y_train)
        losses[C] = val_log_loss(model, X_val, y_val)
        if best is None or losses[C] < losses[best[0]]:
            best = (C, model)
    C, model = best
    n_iter = int(np.max(model[-1].n_iter_))
    return model, {"C": C, "val_loss": losses[C], "val_loss_per_C": {f"{c:g}": v for c, v in losses.items()},
                   "n_iter": n_iter, "converged": n_iter < max_iter}
