"""Metrics against values worked out by hand on small arrays."""

import math

import numpy as np
import pytest

from rs3l.evaluation import metrics

# 4 signal and 5 background jets; sorted by score: s.9 b.85 s.8 s.7 b.65 s.6 b.5 b.3 b.2
Y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0])
S = np.array([0.9, 0.8, 0.7, 0.6, 0.85, 0.65, 0.5, 0.3, 0.2])


def test_accuracy():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    with pytest.raises(ValueError, match="length"):
        metrics.accuracy([1, 0], [1])


def test_auc_by_hand():
    # pairs (signal, background) ordered correctly: 0.9 beats 5, 0.8 beats 4, 0.7 beats 4, 0.6 beats 3 -> 16 of 20
    assert metrics.roc_auc(Y, S) == pytest.approx(16 / 20)
    # the classic 4-jet example: 3 of 4 pairs ordered
    assert metrics.roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # ties count one half; a perfect and a reversed classifier
    assert metrics.roc_auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)
    assert metrics.roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert metrics.roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0


def test_auc_agrees_with_sklearn_on_ties():
    from sklearn.metrics import roc_auc_score

    r = np.random.default_rng(1)
    y = r.integers(0, 2, 300)
    s = np.round(r.normal(y * 0.7, 1.0), 1)  # many ties
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_auc_needs_both_classes():
    with pytest.raises(ValueError, match="both signal"):
        metrics.roc_auc([1, 1], [0.1, 0.2])


def test_macro_auc_ovr():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.eye(3)[y] * 0.8 + 0.1  # each jet's highest probability is its own class: every OvR AUC is 1
    assert metrics.macro_auc_ovr(y, p) == 1.0
    p[:, 2] = [0.9, 0.8, 0.7, 0.6, 0.2, 0.1]  # class-2 jets now score lowest for class 2: its OvR AUC is 0
    assert metrics.macro_auc_ovr(y, p) == pytest.approx(2 / 3)


def test_rejection_at_efficiency_by_hand():
    # efficiency 0.5 of 4 signal jets = the 2 best: threshold 0.8; background >= 0.8: only 0.85 -> FPR 1/5
    assert metrics.threshold_at_efficiency(Y, S, 0.5) == 0.8
    assert metrics.fpr_at_efficiency(Y, S, 0.5) == pytest.approx(0.2)
    assert metrics.rejection_at_efficiency(Y, S, 0.5) == pytest.approx(5.0)
    # 0.3 -> ceil(1.2) = 2 signal jets, same threshold; 0.7 -> 3 jets, threshold 0.7, still FPR 1/5
    assert metrics.rejection_at_efficiency(Y, S, 0.3) == pytest.approx(5.0)
    assert metrics.threshold_at_efficiency(Y, S, 0.7) == 0.7
    assert metrics.rejection_at_efficiency(Y, S, 0.7) == pytest.approx(5.0)
    # all signal: threshold 0.6 lets 0.85 and 0.65 through -> FPR 2/5, rejection 2.5
    assert metrics.rejection_at_efficiency(Y, S, 1.0) == pytest.approx(2.5)
    # 1 signal jet: threshold 0.9, no background passes -> infinite rejection
    assert metrics.rejection_at_efficiency(Y, S, 0.25) == math.inf
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        metrics.rejection_at_efficiency(Y, S, 0.0)


def test_fpr_and_efficiency_at_fixed_threshold():
    assert metrics.fpr_at_threshold(Y, S, 0.6) == pytest.approx(0.4)
    assert metrics.efficiency_at_threshold(Y, S, 0.75) == pytest.approx(0.5)


def test_wasserstein1_by_hand():
    # a shift of every point by 5 costs 5
    assert metrics.wasserstein1([0, 1, 3], [5, 6, 8]) == pytest.approx(5.0)
    # CDFs differ by 1/3 on [0, 1]
    assert metrics.wasserstein1([0, 0, 1], [0, 1, 1]) == pytest.approx(1 / 3)
    # unequal sizes: {0, 1} vs {0.5}: |CDF difference| is 1/2 on [0, 1]
    assert metrics.wasserstein1([0, 1], [0.5]) == pytest.approx(0.5)
    assert metrics.wasserstein1(S, S) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        metrics.wasserstein1([], [1.0])


def test_roc_points_and_histogram():
    # ROC: (0,0) -> thr .9 (0, 1/2) -> thr .8 tie (1/2, 1) -> (1, 1)
    roc = metrics.roc_points([1, 1, 0, 0], [0.9, 0.8, 0.8, 0.1], n=5)
    assert roc["efficiency"] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert roc["fpr"] == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5])
    h = metrics.score_histogram([0.0, 0.1, 0.6, 1.0, 1.5], bins=2)
    assert h["edges"] == [0.0, 0.5, 1.0] and h["counts"] == [2, 3]
