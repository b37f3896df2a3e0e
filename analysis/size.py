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

from analysis.intervals import bootstrap_columns, bootstrap_gap

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


def _log_comb(a, b, log_factorial: np.ndarray | None = None) -> np.ndarray:
    """log C(a, b) for whole numbers, −inf where the binomial is 0 (b < 0 or b > a); with a
    table of log(i!) the look-ups replace three gammaln calls per cell."""
    a, b = np.broadcast_arrays(np.asarray(a, float), np.asarray(b, float))
    ok = (b >= 0) & (b <= a)
    out = np.full(a.shape, -np.inf)
    ai, bi = a[ok].astype(np.int64), b[ok].astype(np.int64)
    if log_factorial is None:
        log_factorial = gammaln(np.arange(int(ai.max(initial=0)) + 1) + 1.0)
    out[ok] = log_factorial[ai] - log_factorial[bi] - log_factorial[ai - bi]
    return out


def _dense_rank(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].ravel()


def _higher_loss_not_better(group: np.ndarray, loss_rank: np.ndarray,
                            acc_rank: np.ndarray) -> np.ndarray:
    """Per trial: how many trials of its group have a strictly higher loss and an accuracy
    ≤ its own. `group` is sorted (trials of a group are contiguous)."""
    starts = np.flatnonzero(np.r_[True, np.diff(group) != 0])
    sizes = np.diff(np.r_[starts, len(group)])
    if sizes.max() > BROADCAST_LIMIT:
        return np.concatenate([_fenwick_count(loss_rank[a:a + n], acc_rank[a:a + n])
                               for a, n in zip(starts, sizes)])
    # Small groups: pad to a (groups × width) matrix and compare within each row, in chunks
    # that keep the groups × width × width comparison under ~20 M cells.
    width = int(sizes.max())
    slot = np.arange(len(group)) - np.repeat(starts, sizes)
    row = np.repeat(np.arange(len(starts)), sizes)
    lr = np.full((len(starts), width), -1)  # padding: a loss rank no trial is below
    ar = np.zeros((len(starts), width), dtype=np.int64)
    lr[row, slot], ar[row, slot] = loss_rank, acc_rank
    counts = np.empty((len(starts), width), dtype=np.int64)
    step = max(1, 20_000_000 // (width * width))
    for a in range(0, len(starts), step):
        l, c = lr[a:a + step], ar[a:a + step]
        counts[a:a + step] = ((l[:, None, :] > l[:, :, None])
                              & (c[:, None, :] <= c[:, :, None])).sum(axis=2)
    return counts[row, slot]


def _fenwick_count(loss_rank: np.ndarray, acc_rank: np.ndarray) -> np.ndarray:
    """The same count for one large pool: a Fenwick tree over accuracy ranks, filled from
    the highest loss down, O(n log n)."""
    tree = np.zeros(int(acc_rank.max()) + 2, dtype=np.int64)
    out = np.empty(len(loss_rank), dtype=np.int64)
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
    _, exact = disagreement_at_k_by_group(loss, accuracy, np.zeros(len(loss), int), ks)
    return AtK(exact.k, exact.share[0], exact.lenient[0], exact.strict[0])


def disagreement_at_k_by_group(loss: Sequence[float], accuracy: Sequence[float],
                               groups: Sequence, ks: Sequence[int]) -> tuple[np.ndarray, AtK]:
    """`disagreement_at_k` for every group (study) at once: returns the group labels and an
    `AtK` whose arrays are groups × ks. Every group needs at least max(ks) trials."""
    labels, group = np.unique(np.asarray(groups), return_inverse=True)
    group = group.ravel()
    order = np.argsort(group, kind="stable")
    group = group[order]
    loss_rank = _dense_rank(np.asarray(loss, float)[order])
    acc_rank = _dense_rank(np.asarray(accuracy, float)[order])
    n = np.bincount(group)
    k = np.asarray(ks, float)[None, :]
    if len(loss_rank) < 2 or (k < 2).any() or (k > n.min()).any():
        raise ValueError(f"k must lie in [2, {n.min()}] for groups of {n.min()} or more trials")
    # One sortable key per trial: (group, loss rank, accuracy rank); counts are differences
    # of positions in the sorted keys, all within a group.
    lw, aw = int(loss_rank.max()) + 1, int(acc_rank.max()) + 1
    loss_key = (group * lw + loss_rank) * aw
    keys = np.sort(loss_key + acc_rank)
    start = np.searchsorted(keys, loss_key, "left")
    ties = np.searchsorted(keys, loss_key + aw, "left") - start                        # g
    at_or_below = np.searchsorted(keys, loss_key + acc_rank, "right") - start
    below = np.searchsorted(keys, loss_key + acc_rank, "left") - start
    higher = np.searchsorted(keys, (group + 1) * lw * aw, "left") - start - ties       # h
    higher_le = _higher_loss_not_better(group, loss_rank, acc_rank)                    # h_le
    # One representative per (group, loss value, accuracy value) for the bounds.
    first = np.zeros(len(group), bool)
    first[np.unique(loss_key + acc_rank, return_index=True)[1]] = True
    # A trial's terms depend only on its counts, and the trials of thousands of studies
    # share a few hundred count tuples: each distinct tuple is computed once, then every
    # trial takes its tuple's row and the rows are added up per group.
    counts = np.column_stack([n[group], ties, higher, higher_le, at_or_below, below, first])
    distinct, which = np.unique(counts, axis=0, return_inverse=True)
    terms = _subset_terms(distinct, k, int(n.max()))
    starts = np.flatnonzero(np.r_[True, np.diff(group) != 0])
    per_group = [np.add.reduceat(m[which.ravel()], starts, axis=0) for m in terms]
    return labels, AtK(np.asarray(ks, int), per_group[0], per_group[1], 1.0 - per_group[2])


def _subset_terms(counts: np.ndarray, k: np.ndarray, top: int):
    """Per row of counts (n, g, h, h_le, at-or-below, below, first): its share of the
    loss rule's disagreement, its lenient term and its strict agreement, across ks."""
    col = lambda i: counts[:, i].astype(float)[:, None]  # noqa: E731 - rows down, k across
    n, g, h, hle, le, lt = (col(i) for i in range(6))
    t, eq, first = le - 1, le - lt, col(6)
    table = gammaln(np.arange(top + 1) + 1.0)  # log(i!) for every count needed

    def log_comb(a, b):
        return _log_comb(a, b, table)

    norm = log_comb(n, k)
    share, lenient, strict_agree = (np.zeros((len(counts), k.shape[1])) for _ in range(3))
    for j in range(1, min(int(g.max()), int(k.max())) + 1):  # j > k: no such subset
        rest = k - j
        with_i = np.exp(log_comb(g - 1, j - 1) + log_comb(h, rest) - norm)
        i_best = np.exp(log_comb(t, j - 1) + log_comb(hle, rest) - norm)
        share += (with_i - i_best) / j
        # [C(le, j) − C(lt, j)]: j tied trials whose best accuracy is this one's;
        # [C(h, rest) − C(hle, rest)]: higher-loss trials of which one beats it.
        lenient += first * sum(
            sign * np.exp(log_comb(a, j) + log_comb(b, rest) - norm)
            for sign, a, b in ((1, le, h), (-1, le, hle), (-1, lt, h), (1, lt, hle)))
        strict_agree += first * np.exp(log_comb(eq, j) + log_comb(hle, rest) - norm)
    return share, lenient, strict_agree


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
    fixed = usable[usable["study"].isin(chosen)]
    _, exact = disagreement_at_k_by_group(fixed[loss].to_numpy(), fixed["val_accuracy"].to_numpy(),
                                          fixed["study"].astype(str).to_numpy(), ks)
    out = pd.DataFrame({"k": ks, "rate": exact.share.mean(axis=0),
                        "lenient": exact.lenient.mean(axis=0), "strict": exact.strict.mean(axis=0)})
    out["lo"], out["hi"] = bootstrap_columns(exact.share, n_boot=n_boot, seed=seed)
    out["ci_missing"] = [bootstrap_gap(exact.share[:, i], n_boot=n_boot) for i in range(len(ks))]
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
