"""Campaign regimes compared: each pool's rates, and each difference with a test.

A regime (balanced, imbalance, label_noise; study/campaign.py) is one pool of i.i.d.
trials. Its statistics are `analysis.pool`'s exact k-subset averages at the quoted study
sizes, plus the epoch-level rate (the share of trials whose own val_loss and val_accuracy
epochs differ). Two regimes' pools are independent samples, so:

- each regime's 95% interval is a percentile bootstrap over its trials;
- a difference's 95% interval resamples both pools independently;
- its test is a two-sided permutation test: under "the regime does not matter" the trials
  are exchangeable between the two pools, so the observed difference is compared with the
  differences of random relabellings. Holm's method adjusts a statistic's p-values over
  the pairs of regimes compared.

Plain tables here; the report renders them (analysis/regimes_report.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from typing import NamedTuple
from zlib import crc32

import numpy as np
import pandas as pd

from analysis.pool import QUOTED_KS, PoolColumns, columns_of, complete_trials, point_estimates, resample_columns

EPOCH_RATE = "epoch_disagree"
# The statistics a comparison quotes, in the report's order (each at every quoted k but the
# epoch-level rate): the loss rules' disagreement, the L2 penalty's share of it, and the test
# accuracy the accuracy rule gains over each loss rule.
QUOTED = ("disagree_val_loss", "disagree_val_crossentropy", "l2_effect", "gain_over_val_loss",
          "gain_over_val_crossentropy")


class RegimePool(NamedTuple):
    """One regime's trials: the pool's per-trial arrays and each trial's epoch-level verdict
    (1.0 disagree, 0.0 agree, NaN for a trial with one epoch), aligned on the same trials."""

    name: str
    columns: PoolColumns
    epoch_disagree: np.ndarray


def regime_pool(name: str, scored: pd.DataFrame, epoch_verdicts: pd.DataFrame | None) -> RegimePool:
    """From a report's trial table and its epoch-level picks (`analysis.picks.epoch_picks`)."""
    trials = scored
    if epoch_verdicts is not None and len(epoch_verdicts):
        verdicts = epoch_verdicts[["study", "trial", "disagree"]].rename(columns={"disagree": "_epoch"})
        trials = scored.merge(verdicts, on=["study", "trial"], how="left")
    complete = complete_trials(trials)
    epoch = complete["_epoch"].astype(float).to_numpy() if "_epoch" in complete else np.full(len(complete), np.nan)
    return RegimePool(name, columns_of(complete), epoch)


def size(pool: RegimePool) -> int:
    return len(pool.columns.accuracy)


def resample(pool: RegimePool, rows: np.ndarray) -> RegimePool:
    return RegimePool(pool.name, resample_columns(pool.columns, rows), pool.epoch_disagree[rows])


def join(first: RegimePool, second: RegimePool) -> RegimePool:
    """Both pools' trials as one (the permutation test's null pool)."""
    columns = [first.columns, second.columns]
    return RegimePool("joined",
                      PoolColumns({m: np.concatenate([c.scores[m] for c in columns]) for m in first.columns.scores},
                                  {m: np.concatenate([c.test_at[m] for c in columns]) for m in first.columns.test_at},
                                  np.concatenate([c.accuracy for c in columns])),
                      np.concatenate([first.epoch_disagree, second.epoch_disagree]))


def statistics(pool: RegimePool, ks: Sequence[int]) -> dict[str, float]:
    """`<name>@<k>` for every statistic of `analysis.pool.point_estimates` at each k, and the
    epoch-level rate (NaN when no trial has one)."""
    estimates = point_estimates(pool.columns, np.asarray(ks))
    out = {f"{name}@{k}": float(values[i]) for name, values in estimates.items() for i, k in enumerate(ks)}
    verdicts = pool.epoch_disagree[~np.isnan(pool.epoch_disagree)]
    out[EPOCH_RATE] = float(verdicts.mean()) if len(verdicts) else float("nan")
    return out


def usable_ks(pools: Sequence[RegimePool], ks: Sequence[int] = QUOTED_KS) -> list[int]:
    """The quoted study sizes every pool can answer (k ≤ its trials)."""
    smallest = min(size(pool) for pool in pools)
    return [k for k in ks if 2 <= k <= smallest]


def _draws(pool: RegimePool, ks: Sequence[int], n_boot: int, rng: np.random.Generator) -> pd.DataFrame:
    n = size(pool)
    return pd.DataFrame([statistics(resample(pool, rng.integers(0, n, n)), ks) for _ in range(n_boot)])


def _interval(values: pd.Series) -> tuple[float, float]:
    finite = values.dropna()
    if finite.empty:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [0.025, 0.975])
    return float(low), float(high)


def permutation_p(first: RegimePool, second: RegimePool, ks: Sequence[int], n_perm: int,
                  rng: np.random.Generator) -> dict[str, float]:
    """Two-sided permutation p-value of each statistic's difference (first minus second):
    (1 + relabellings at least as extreme) / (1 + n_perm)."""
    observed = pd.Series(statistics(first, ks)) - pd.Series(statistics(second, ks))
    joined, n_first = join(first, second), size(first)
    differences = []
    for _ in range(n_perm):
        order = rng.permutation(size(joined))
        differences.append(pd.Series(statistics(resample(joined, order[:n_first]), ks))
                           - pd.Series(statistics(resample(joined, order[n_first:]), ks)))
    null = pd.DataFrame(differences)
    out = {}
    for name, value in observed.items():
        # A relabelling as extreme as the data, up to float noise in the sums.
        extreme = (null[name].abs() >= abs(value) - 1e-12).sum()
        out[name] = float("nan") if np.isnan(value) else float((1 + extreme) / (1 + n_perm))
    return out


class Comparison(NamedTuple):
    """Every regime's statistics with intervals, and every pair's differences with tests."""

    regimes: pd.DataFrame      # regime, trials, statistic, value, lo, hi
    differences: pd.DataFrame  # statistic, regime, reference, difference, lo, hi, p_value, p_holm
    ks: list[int]


def compare(pools: Sequence[RegimePool], *, n_boot: int, n_perm: int, seed: int,
            ks: Sequence[int] = QUOTED_KS) -> Comparison:
    """Each pool on its own, then each pair (a later regime against an earlier one, the
    first given being the reference of the others)."""
    usable = usable_ks(pools, ks)
    points = {pool.name: pd.Series(statistics(pool, usable)) for pool in pools}
    draws = {pool.name: _draws(pool, usable, n_boot, _stream(seed, pool.name)) for pool in pools}
    rows = [{"regime": pool.name, "trials": size(pool), "statistic": name, "value": value,
             **dict(zip(("lo", "hi"), _interval(draws[pool.name][name]) if n_boot else (np.nan, np.nan)))}
            for pool in pools for name, value in points[pool.name].items()]
    pairs = []
    for reference, other in combinations(pools, 2):
        p_values = permutation_p(other, reference, usable, n_perm, _stream(seed, reference.name, other.name)) \
            if n_perm else {}
        for name in points[other.name].index:
            spread = draws[other.name][name] - draws[reference.name][name] if n_boot else pd.Series(dtype=float)
            low, high = _interval(spread) if n_boot else (np.nan, np.nan)
            pairs.append({"statistic": name, "regime": other.name, "reference": reference.name,
                          "difference": points[other.name][name] - points[reference.name][name],
                          "lo": low, "hi": high, "p_value": p_values.get(name, np.nan)})
    differences = pd.DataFrame(pairs, columns=["statistic", "regime", "reference", "difference", "lo", "hi",
                                               "p_value"])
    differences["p_holm"] = differences.groupby("statistic")["p_value"].transform(_holm)
    return Comparison(pd.DataFrame(rows), differences, usable)


def _stream(seed: int, *names: str) -> np.random.Generator:
    """One random stream per regime (and per pair), so that a regime's interval does not
    move when another regime gains trials or the regimes are given in another order."""
    return np.random.default_rng([seed, *(crc32(name.encode()) for name in names)])


def _holm(p_values: pd.Series) -> pd.Series:
    """Holm's step-down adjustment over one statistic's pairs (NaN stays NaN)."""
    finite = p_values.dropna().sort_values()
    m = len(finite)
    adjusted = np.maximum.accumulate([(m - i) * p for i, p in enumerate(finite)]) if m else []
    out = pd.Series(np.nan, index=p_values.index)
    out[finite.index] = np.minimum(1.0, adjusted)
    return out


def curves(pools: Sequence[RegimePool], max_k: int = 50) -> pd.DataFrame:
    """Each regime's k-curve (regime, k, and every `point_estimates` statistic), k = 2 up to
    its own trials or `max_k`: what the comparison figure draws."""
    frames = []
    for pool in pools:
        ks = np.arange(2, min(size(pool), max_k) + 1)
        frames.append(pd.DataFrame({"regime": pool.name, "k": ks, **point_estimates(pool.columns, ks)}))
    return pd.concat(frames, ignore_index=True)
