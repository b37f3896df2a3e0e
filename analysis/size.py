"""Study size: P(disagree | a study of k trials), computed exactly over all k-subsets.

`disagreement_at_k` is the one exact computation: for a pool of trials it averages, over
every k-subset, whether the subset's loss pick is among its maximal-accuracy trials, with
the order-free tie rule of `analysis.picks` (the loss rule picks uniformly among its
ties; lenient and strict bounds beside it). It is a U-statistic, and it serves twice:

- `disagreement_vs_k`: the per-study curve, averaged over one *fixed* set of studies for
  every k (a changing set of studies along the curve would confound k with the studies);
- `pooled_disagreement`: one pool of independently sampled trials, the campaign's
  estimator of P(disagree | k), with a CI from a bootstrap over trials.

Counting, for trial i with g trials tied at its loss (itself included), h trials of higher
loss, t tied trials (not i) and h_le higher-loss trials with accuracy ≤ its own: the
k-subsets holding i and j − 1 of its ties and k − j higher-loss trials number
C(g−1, j−1)·C(h, k−j); in C(t, j−1)·C(h_le, k−j) of them i is at maximal accuracy; the
loss rule picks i with probability 1/j.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.special import gammaln

from analysis.intervals import bootstrap_gap, bootstrap_mean

CURVE_COLUMNS = ["k", "rate", "lenient", "strict", "lo", "hi", "studies"]
# The curve's fixed set: the studies with at least K trials, K the largest size that this
# share of the studies reaches, so most studies stay in and every point uses them all.
CURVE_COVERAGE = 0.75
BROADCAST_LIMIT = 2048  # pools up to this size count dominance by broadcasting


class AtK(NamedTuple):
    """Exact averages over all k-subsets, one entry per k."""

    k: np.ndarray
    share: np.ndarray      # primary: the uniform tie rule
    lenient: np.ndarray    # disagree only if no tied-loss trial is at maximal accuracy
    strict: np.ndarray     # disagree if any tied-loss trial is not at maximal accuracy


def _log_comb(a, b) -> np.ndarray:
    """log C(a, b), −inf where the binomial is 0 (b < 0 or b > a)."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    ok = (b >= 0) & (b <= a)
    out = np.full(a.shape, -np.inf)
    out[ok] = gammaln(a[ok] + 1) - gammaln(b[ok] + 1) - gammaln(a[ok] - b[ok] + 1)
    return out


def _dense_rank(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].ravel()


def _higher_loss_not_better(loss_rank: np.ndarray, acc_rank: np.ndarray) -> np.ndarray:
    """Per trial: how many trials have a strictly higher loss and an accuracy ≤ its own."""
    n = len(loss_rank)
    if n <= BROADCAST_LIMIT:
        return ((loss_rank[None, :] > loss_rank[:, None])
                & (acc_rank[None, :] <= acc_rank[:, None])).sum(axis=1)
    # Large pools: a Fenwick tree over accuracy ranks, filled from the highest loss down.
    tree = np.zeros(int(acc_rank.max()) + 2, dtype=np.int64)
    out = np.empty(n, dtype=np.int64)
    order = np.argsort(-loss_rank, kind="stable")
    bounds = np.flatnonzero(np.diff(loss_rank[order])) + 1
    for block in np.split(order, bounds):
        for i in block:  # query the whole tie block before inserting it: strictly higher loss
            pos, total = int(acc_rank[i]) + 1, 0
            while pos > 0:
                total += tree[pos]
                pos -= pos & -pos
            out[i] = total
        for i in block:
            pos = int(acc_rank[i]) + 1
            while pos < len(tree):
                tree[pos] += 1
                pos += pos & -pos
    return out


def disagreement_at_k(loss: Sequence[float], accuracy: Sequence[float],
                      ks: Sequence[int]) -> AtK:
    """Exact P(disagree) over all k-subsets of one pool, for each k in `ks` (2 ≤ k ≤ n)."""
    loss_rank, acc_rank = _dense_rank(np.asarray(loss, float)), _dense_rank(np.asarray(accuracy, float))
    n, k = len(loss_rank), np.asarray(ks, float)[None, :]
    if n < 2 or (k < 2).any() or (k > n).any():
        raise ValueError(f"k must lie in [2, {n}] for a pool of {n} trials")
    width = int(acc_rank.max()) + 1
    composite = np.sort(loss_rank * width + acc_rank)
    start = np.searchsorted(composite, loss_rank * width, "left")
    ties = np.searchsorted(composite, loss_rank * width + width, "left") - start      # g
    at_or_below = np.searchsorted(composite, loss_rank * width + acc_rank, "right") - start
    below = np.searchsorted(composite, loss_rank * width + acc_rank, "left") - start
    higher = n - start - ties                                                         # h
    higher_le = _higher_loss_not_better(loss_rank, acc_rank)                          # h_le
    # One representative per (loss value, accuracy value) for the lenient/strict counts.
    first = np.zeros(n, bool)
    first[np.unique(loss_rank * width + acc_rank, return_index=True)[1]] = True
    col = lambda x: np.asarray(x, float)[:, None]  # noqa: E731 - trials down, k across
    g, h, hle = col(ties), col(higher), col(higher_le)
    t, le, lt, eq = col(at_or_below - 1), col(at_or_below), col(below), col(at_or_below - below)
    norm = _log_comb(n, k)
    share = np.zeros(k.shape[1])
    lenient = np.zeros(k.shape[1])
    strict_agree = np.zeros(k.shape[1])
    for j in range(1, int(ties.max()) + 1):
        rest = k - j
        with_i = np.exp(_log_comb(g - 1, j - 1) + _log_comb(h, rest) - norm)
        i_best = np.exp(_log_comb(t, j - 1) + _log_comb(hle, rest) - norm)
        share += ((with_i - i_best) / j).sum(axis=0)
        # [C(le, j) − C(lt, j)]: j tied trials whose best accuracy is this one's;
        # [C(h, rest) − C(hle, rest)]: higher-loss trials of which one beats it.
        lenient += sum(sign * np.exp(_log_comb(a, j) + _log_comb(b, rest) - norm)
                       for sign, a, b in ((1, le, h), (-1, le, hle), (-1, lt, h), (1, lt, hle))
                       )[first].sum(axis=0)
        strict_agree += np.exp(_log_comb(eq, j) + _log_comb(hle, rest) - norm)[first].sum(axis=0)
    return AtK(np.asarray(ks, int), share, lenient, 1.0 - strict_agree)


def curve_studies(sizes: pd.Series, coverage: float = CURVE_COVERAGE) -> int:
    """K, the largest study size that at least `coverage` of the studies reach (≥ 2)."""
    ordered = np.sort(sizes.to_numpy())[::-1]
    return max(2, int(ordered[int(np.ceil(coverage * len(ordered))) - 1])) if len(ordered) else 2


def disagreement_vs_k(scored: pd.DataFrame, loss: str = "val_loss", *, n_boot: int = 2000,
                      seed: int = 0) -> pd.DataFrame:
    """The per-study curve over one fixed set of studies: those with ≥ K trials (see
    `curve_studies`), each contributing its exact P(disagree) at every k = 2..K.

    Columns `k`, `rate` (mean over the fixed studies), `lenient`, `strict`, `lo`, `hi` (95%
    bootstrap over studies; NaN where `bootstrap_gap` says there is none, with its reason in
    `ci_missing`), `studies` (the same on every row) and `left_out` (studies with fewer
    than K trials).
    """
    usable = scored[scored[loss].notna()]
    sizes = usable.groupby("study").size()
    if sizes.empty or sizes.max() < 2:
        return pd.DataFrame(columns=[*CURVE_COLUMNS, "left_out", "ci_missing"])
    top = curve_studies(sizes[sizes >= 2])
    chosen = sizes.index[sizes >= top]
    ks = np.arange(2, top + 1)
    per_study = np.array([disagreement_at_k(g[loss].to_numpy(), g["val_accuracy"].to_numpy(), ks)
                          for _, g in usable[usable["study"].isin(chosen)].groupby("study")])
    # per_study: studies × (k, share, lenient, strict) × ks
    out = pd.DataFrame({"k": ks, "rate": per_study[:, 1].mean(axis=0),
                        "lenient": per_study[:, 2].mean(axis=0),
                        "strict": per_study[:, 3].mean(axis=0)})
    bounds = [bootstrap_mean(per_study[:, 1, i], n_boot=n_boot, seed=seed) for i in range(len(ks))]
    out["lo"], out["hi"] = [b[0] for b in bounds], [b[1] for b in bounds]
    out["ci_missing"] = [bootstrap_gap(per_study[:, 1, i], n_boot=n_boot) for i in range(len(ks))]
    out["studies"] = len(chosen)
    out["left_out"] = int((sizes < top).sum())
    return out[[*CURVE_COLUMNS, "left_out", "ci_missing"]]


def pooled_disagreement(loss: Sequence[float], accuracy: Sequence[float], ks: Sequence[int], *,
                        n_boot: int = 200, seed: int = 0) -> pd.DataFrame:
    """The campaign's estimator: P(disagree | a study of k trials drawn from one pool of
    independently sampled trials), exact over all k-subsets, with a 95% percentile CI from
    resampling the pool's trials with replacement (`n_boot` times).

    Columns `k`, `rate`, `lenient`, `strict`, `lo`, `hi`, `trials`.
    """
    loss, accuracy = np.asarray(loss, float), np.asarray(accuracy, float)
    point = disagreement_at_k(loss, accuracy, ks)
    rng = np.random.default_rng(seed)
    draws = np.array([disagreement_at_k(loss[idx], accuracy[idx], ks).share
                      for idx in rng.integers(0, len(loss), size=(n_boot, len(loss)))])
    lo, hi = (np.quantile(draws, [0.025, 0.975], axis=0) if n_boot > 0
              else (np.full(len(ks), np.nan),) * 2)
    return pd.DataFrame({"k": point.k, "rate": point.share, "lenient": point.lenient,
                         "strict": point.strict, "lo": lo, "hi": hi, "trials": len(loss)})
