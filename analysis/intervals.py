"""Confidence intervals: Wilson for a proportion, and a bootstrap that resamples clusters.

Trials of one study share a sampler history and a data split, so they are not
independent; resampling whole studies (clusters) keeps that dependence in the interval.
A per-study paired difference (e.g. the test-accuracy gain of one pick over the other)
resampled by study is the paired bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import norm

NAN_PAIR = (math.nan, math.nan)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval; it stays inside [0, 1] and behaves at 0 and n, unlike Wald."""
    if n <= 0:
        return NAN_PAIR
    z = norm.ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # Rounding can put a bound a hair past p at k = 0 or k = n; the interval must contain p.
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


def bootstrap_mean(values: Sequence[float], clusters: Sequence | None = None, *,
                   n_boot: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, float]:
    """Percentile CI of a mean, resampling clusters (or single values) with replacement.

    The statistic is sum/count over the resampled clusters, so a proportion is the mean of
    0/1 values and unequal cluster sizes are weighted by their trials. NaN values are
    dropped first; fewer than two clusters give (nan, nan), since one cluster has no spread
    to resample.
    """
    v = np.asarray(values, dtype=float)
    keep = ~np.isnan(v)
    v = v[keep]
    if clusters is None:
        codes = np.arange(len(v))
    else:
        codes = np.unique(np.asarray(clusters, dtype=object)[keep].astype(str),
                          return_inverse=True)[1]
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    if n_clusters < 2 or n_boot <= 0:
        return NAN_PAIR
    sums = np.bincount(codes, weights=v, minlength=n_clusters)
    counts = np.bincount(codes, minlength=n_clusters).astype(float)
    rng = np.random.default_rng(seed)
    # Multinomial counts are resampling with replacement, without materialising indices.
    weights = rng.multinomial(n_clusters, np.full(n_clusters, 1 / n_clusters), size=n_boot)
    stats = (weights @ sums) / (weights @ counts)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)
