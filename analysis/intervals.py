"""Confidence intervals: Wilson for a proportion, and a bootstrap that resamples clusters.

Trials of one study share a sampler history and a data split, so they are not
independent; resampling whole studies (clusters) keeps that dependence in the interval.
A per-study paired difference (e.g. the test-accuracy gain of one pick over the other)
resampled by study is the paired bootstrap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

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


def min_clusters(confidence: float = 0.95) -> int:
    """Fewest clusters for a percentile interval that is not just one cluster's value.

    With n clusters a resample repeats a single cluster with probability n·n⁻ⁿ; once that
    exceeds the tail share (1 − confidence)/2, a bound *is* one cluster's value (with 2
    studies, half the resamples are one study twice). For 95% this gives 4.
    """
    n = 2
    while n * float(n) ** -n >= (1 - confidence) / 2:
        n += 1
    return n


def _cluster_codes(values: Sequence[float], clusters: Sequence | None) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=float)
    keep = ~np.isnan(v)
    v = v[keep]
    if clusters is None:
        return v, np.arange(len(v))
    return v, np.unique(np.asarray(clusters, dtype=object)[keep].astype(str), return_inverse=True)[1]


def bootstrap_gap(values: Sequence[float], clusters: Sequence | None = None, *,
                  n_boot: int = 2000, confidence: float = 0.95) -> str | None:
    """Why the cluster bootstrap cannot give a `confidence` interval here, or None if it can."""
    v, codes = _cluster_codes(values, clusters)
    n_clusters = int(codes.max()) + 1 if len(codes) else 0
    if n_boot <= 0:
        return "no resamples (--bootstrap 0)"
    needed = min_clusters(confidence)
    if n_clusters < needed:
        return (f"{n_clusters} {'study' if n_clusters == 1 else 'studies'}, fewer than {needed}: "
                "too many resamples repeat a single study for a percentile interval")
    if np.ptp(v) == 0:
        return (f"every unit has the same value ({v[0]:.3g}), so every resample does: "
                "a zero-width interval is not a 95% interval")
    return None


def bootstrap_mean(values: Sequence[float], clusters: Sequence | None = None, *,
                   n_boot: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, float]:
    """Percentile CI of a mean, resampling clusters (or single values) with replacement.

    The statistic is sum/count over the resampled clusters, so a proportion is the mean of
    0/1 values and unequal cluster sizes are weighted by their trials. NaN values are
    dropped first. Where `bootstrap_gap` names a reason (too few clusters, no spread) the
    answer is (nan, nan): n/a, never a zero-width interval posing as a 95% one.
    """
    if bootstrap_gap(values, clusters, n_boot=n_boot, confidence=confidence):
        return NAN_PAIR
    v, codes = _cluster_codes(values, clusters)
    n_clusters = int(codes.max()) + 1
    sums = np.bincount(codes, weights=v, minlength=n_clusters)
    counts = np.bincount(codes, minlength=n_clusters).astype(float)
    weights = _resample_weights(n_clusters, n_boot, seed)
    stats = (weights @ sums) / (weights @ counts)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stats, [alpha, 1 - alpha])
    return float(lo), float(hi)


@lru_cache(maxsize=2)
def _resample_weights(n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each unit is drawn in each resample: multinomial counts are resampling with
    replacement, without materialising indices. Cached (read-only): a report asks for the
    same resamples of the same studies many times, and 2,000 × 10,000 draws take a second."""
    rng = np.random.default_rng(seed)
    weights = rng.multinomial(n_units, np.full(n_units, 1 / n_units), size=n_boot).astype(float)
    weights.flags.writeable = False
    return weights


def bootstrap_columns(values: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                      confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """`bootstrap_mean` of every column of a units × columns matrix (no NaN, one unit per
    study), drawing the resamples once for all columns; NaN bounds where a column has no
    interval. Column i equals `bootstrap_mean(values[:, i], n_boot=n_boot, seed=seed)`."""
    values = np.asarray(values, float)
    lo, hi = np.full(values.shape[1], np.nan), np.full(values.shape[1], np.nan)
    usable = [bootstrap_gap(values[:, i], n_boot=n_boot, confidence=confidence) is None
              for i in range(values.shape[1])]
    if any(usable):
        weights = _resample_weights(len(values), n_boot, seed)
        stats = (weights @ values[:, usable]) / len(values)
        alpha = (1 - confidence) / 2
        lo[usable], hi[usable] = np.quantile(stats, [alpha, 1 - alpha], axis=0)
    return lo, hi
