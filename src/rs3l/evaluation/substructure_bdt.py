"""The physicist's baseline: gradient-boosted trees on the jet's high-level observables.

Features (per jet, from the merged shards): mass, soft-drop mass (GeV), tau21 = tau2/tau1,
tau32 = tau3/tau2 (N-subjettiness ratios: 2- and 3-prong likeness), number of constituents
and pT (GeV). scikit-learn's HistGradientBoostingClassifier with balanced class weights; the
number of boosting iterations is chosen on the validation split by the class-balanced
log-loss: boosting stops once it has not improved for ``patience`` iterations (scikit-learn's
early stopping, fed our validation split instead of an internal split of the few labels).
On small labelled sets this baseline is hard to beat: the table must show it.
"""

from __future__ import annotations

import numpy as np

from rs3l.evaluation.linear_probe import balanced_weights

FEATURES = ("mass", "soft_drop_mass", "tau21", "tau32", "n_constituents", "pt")


def features(arr: dict) -> np.ndarray:
    """(n, len(FEATURES)) float64 from the jet columns of :func:`rs3l.training.data.load_arrays`."""
    def ratio(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0)

    cols = {"mass": arr["mass"], "soft_drop_mass": arr["soft_drop_mass"], "tau21": ratio(arr["tau2"], arr["tau1"]),
            "tau32": ratio(arr["tau3"], arr["tau2"]), "n_constituents": arr["n_constituents"], "pt": arr["pt"]}
    return np.column_stack([np.asarray(cols[f], np.float64) for f in FEATURES])


def fit(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, seed: int,
        max_iter: int = 500, learning_rate: float = 0.1, patience: int = 20):
    """Returns (fitted HistGradientBoostingClassifier, info with ``n_iter``, ``val_loss``, ``converged``).

    ``converged``: boosting stopped on the val loss before ``max_iter``.
    Leaves need at least min(20, n/10) jets, so 20 labelled jets still grow shallow trees.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(max_iter=max_iter, learning_rate=learning_rate, early_stopping=True,
                                           scoring="loss", n_iter_no_change=patience, class_weight="balanced",
                                           random_state=seed, min_samples_leaf=int(np.clip(len(y_train) // 10, 2, 20)))
    model.fit(X_train, y_train, X_val=X_val, y_val=y_val, sample_weight_val=balanced_weights(y_val))
    return model, {"n_iter": int(model.n_iter_), "val_loss": float(-model.validation_score_[-1]),
                   "converged": bool(model.n_iter_ < max_iter)}
