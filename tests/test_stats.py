"""Statistics of the results table: bootstrap intervals and paired comparisons behave as advertised."""

import math

import numpy as np
import pytest
from scipy.stats import norm

from rs3l.evaluation import metrics, stats


def test_weighted_metrics_with_unit_weights_equal_the_plain_ones():
    r = np.random.default_rng(0)
    y = r.random(400) < 0.3
    s = np.round(r.normal(y * 1.2, 1.0), 1)  # rounded: many ties, which count half
    ones = np.ones((1, 400))
    assert stats.weighted_auc(y, s, ones)[0] == pytest.approx(metrics.roc_auc(y, s), abs=1e-12)
    for e in (0.3, 0.5, 0.7):
        assert stats.weighted_fpr_at_efficiency(y, s, ones, e)[0] == pytest.approx(metrics.fpr_at_efficiency(y, s, e))
    # integer weights = repeating jets
    w = r.integers(0, 3, 400)
    rep = np.repeat(np.arange(400), w)
    assert stats.weighted_auc(y, s, w[None])[0] == pytest.approx(metrics.roc_auc(y[rep], s[rep]), abs=1e-12)
    assert stats.weighted_fpr_at_efficiency(y, s, w[None], 0.5)[0] == pytest.approx(
        metrics.fpr_at_efficiency(y[rep], s[rep], 0.5))


def test_bootstrap_interval_covers_the_true_auc_at_its_nominal_rate():
    """Signal ~ N(mu, 1), background ~ N(0, 1): the true AUC is Phi(mu / sqrt 2). Over 200 independent
    test samples the 90% interval must cover it about 90% of the time (binomial sd 2%)."""
    mu, n, trials = 1.0, 300, 200
    truth = norm.cdf(mu / math.sqrt(2))
    r = np.random.default_rng(42)
    covered = 0
    for t in range(trials):
        y = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
        s = r.normal(np.where(y, mu, 0.0), 1.0)
        lo, hi = stats.bootstrap_interval("auc", y, s[None], n_boot=400, level=0.9, seed=t)
        covered += lo <= truth <= hi
    assert 0.84 <= covered / trials <= 0.96, covered / trials


def test_paired_bootstrap_sees_a_real_difference_and_not_a_fake_one():
    r = np.random.default_rng(1)
    y = r.random(1000) < 0.5
    base = r.normal(y * 1.0, 1.0)
    better = base + 0.8 * y  # more separation on the same jets
    same = base + r.normal(0, 0.05, 1000)  # the same scores up to noise
    c = stats.paired_bootstrap("auc", y, np.stack([better, better]), np.stack([base, base]), n_boot=500)
    assert c["delta"] > 0 and c["low"] > 0 and c["p_not_better"] < 0.01
    c = stats.paired_bootstrap("auc", y, same[None], base[None], n_boot=500)
    assert c["low"] < 0 < c["high"] and abs(c["delta"]) < 0.01
    c = stats.paired_bootstrap("rejection_at_0.5", y, better[None], base[None], n_boot=300)
    assert c["low"] > 0


def test_mean_std_over_seeds():
    assert stats.mean_std([0.8, 0.9, 1.0]) == (pytest.approx(0.9), pytest.approx(0.1))
    assert stats.mean_std([0.8]) == (0.8, None)
    assert stats.mean_std([None, math.inf]) == (None, None)
