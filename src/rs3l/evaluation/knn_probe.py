"""kNN probe on standardised frozen embeddings: the non-parametric companion of the linear probe.

The score of a jet is the fraction of its k nearest labelled jets (Euclidean distance after
standardisation) in each class; k is chosen on the validation split by ROC AUC (kNN
probabilities are multiples of 1/k, for which a log-loss is ill-defined). scikit-learn's
KNeighborsClassifier does the work.
"""

from __future__ import annotations

import numpy as np

DEFAULT_KS = (5, 10, 20, 50)


def val_auc(model, X_val: np.ndarray, y_val: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    p = model.predict_proba(X_val)
    if p.shape[1] == 2:
        return float(roc_auc_score(y_val, p[:, 1]))
    return float(roc_auc_score(y_val, p, multi_class="ovr", labels=model.classes_))


def fit(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray, ks=DEFAULT_KS):
    """One kNN classifier per k (capped at the number of labelled jets); keep the highest val AUC.

    Returns (fitted Pipeline(StandardScaler, KNeighborsClassifier), info with ``k`` and ``val_auc`` per k).
    """
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    best, aucs = None, {}
    for k in sorted({min(int(k), len(y_train)) for k in ks}):
        model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=k)).fit(X_train, y_train)
        aucs[k] = val_auc(model, X_val, y_val)
        if best is None or aucs[k] > aucs[best[0]]:
            best = (k, model)
    return best[1], {"k": best[0], "val_auc": aucs[best[0]], "val_auc_per_k": {str(k): v for k, v in aucs.items()}}
