"""Intervals and rank statistics against the reference implementations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau
from statsmodels.stats.proportion import proportion_confint

from analysis.intervals import bootstrap_mean, wilson
from analysis.ranks import rank_agreement


@pytest.mark.parametrize("k,n", [(0, 5), (5, 5), (3, 7), (1, 1), (40, 1000), (17, 30)])
def test_wilson_matches_statsmodels(k, n):
    assert wilson(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"), abs=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 300])
def test_wilson_contains_the_rate_at_the_edges(n):
    assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = np.r_[np.ones(30), np.zeros(70)]
    clusters = np.repeat(np.arange(10), 10)
    a = bootstrap_mean(values, clusters, n_boot=1000, seed=3)
    assert a == bootstrap_mean(values, clusters, n_boot=1000, seed=3)
    assert a[0] <= 0.3 <= a[1]
    # All ones sit in three clusters, so resampling clusters gives a wider interval.
    iid = bootstrap_mean(values, None, n_boot=1000, seed=3)
    assert a[1] - a[0] > iid[1] - iid[0]


def test_bootstrap_needs_two_clusters():
    assert all(np.isnan(bootstrap_mean([1.0, 0.0], ["s", "s"], n_boot=100)))


def _scored(loss, acc, study="s"):
    return pd.DataFrame({"experiment": "e", "study": study, "val_loss": loss, "val_accuracy": acc})


def test_tau_sign_is_plus_one_when_both_order_alike():
    r = rank_agreement(_scored([0.1, 0.2, 0.3], [0.9, 0.8, 0.7]))
    assert r.loc[0, "tau_b"] == pytest.approx(1.0) and r.loc[0, "rho"] == pytest.approx(1.0)
    r = rank_agreement(_scored([0.1, 0.2, 0.3], [0.7, 0.8, 0.9]))
    assert r.loc[0, "tau_b"] == pytest.approx(-1.0)


def test_kendall_matches_scipy_with_ties():
    rng = np.random.default_rng(1)
    loss = rng.integers(0, 5, 40) / 10
    acc = rng.integers(0, 6, 40) / 10
    expected = kendalltau(-loss, acc).statistic
    assert rank_agreement(_scored(loss, acc)).loc[0, "tau_b"] == pytest.approx(expected)


def test_constant_metric_has_no_rank():
    assert np.isnan(rank_agreement(_scored([0.1, 0.2], [0.5, 0.5])).loc[0, "tau_b"])
