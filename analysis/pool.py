"""A campaign's answer: rates at study size k from one pool of i.i.d. trials.

A campaign (study/campaign.py) is one study of N independently drawn, unpruned trials.
Every statistic here is an exact average over all k-subsets of the pool (a U-statistic),
so one pool answers "in a study of k such trials, ..." for every k ≤ N:

- P(disagree | k): the loss rule's pick is not among the subset's maximal-accuracy trials
  (`analysis.size.disagreement_at_k`, with its order-free tie rule), by `val_loss` and by
  `val_crossentropy`; their difference is the L2 penalty's effect (Keras adds the penalty to
  `val_loss` only);
- the expected test accuracy of each rule's pick, and the accuracy rule's gain over the
  loss rules.

The 95% intervals are percentile bootstraps over trials; every statistic of one resample
uses the same trials, so differences are paired. The numbers are computed here once, as
plain tables; the report and the figures only render them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd
from analysis.size import _log_comb, disagreement_at_k

# The study sizes quoted on their own (issue 10): a 10- and a 20-trial study.
QUOTED_KS = (10, 20)
MAX_K = 50  # the curve's last k: studies of more than 50 trials are rare in practice
# The ks whose intervals are bootstrapped: each resample recomputes every statistic, about
# 25 ms at 500 trials for these ks against 60 ms for all 49, so 2,000 resamples stay < 1 min.
CI_KS = (2, 3, 5, 7, 10, 15, 20, 30, 40, 50)
LOSSES = ("val_loss", "val_crossentropy")
RULES = {"val_loss": "min", "val_crossentropy": "min", "val_accuracy": "max"}


def pick_probabilities(score: np.ndarray, ks: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """trials × ks: P(trial i is the rule's pick in a uniformly random k-subset of the pool),
    the rule taking the best score and choosing uniformly among ties. A trial with w strictly
    worse trials and g trials tied with it (itself included) is picked in the subsets holding
    it, j − 1 of its ties and k − j worse trials, with probability 1/j."""
    score = np.asarray(score, float)
    oriented = score if higher_is_better else -score
    ordered = np.sort(oriented)
    worse = np.searchsorted(ordered, oriented, "left")
    tied = np.searchsorted(ordered, oriented, "right") - worse
    n = len(score)
    k = np.asarray(ks, float)[None, None, :]
    j = np.arange(1, int(tied.max()) + 1, dtype=float)[None, :, None]
    g, w = tied[:, None, None].astype(float), worse[:, None, None].astype(float)
    valid = (j <= g) & (j <= k) & (k - j <= w)
    log_terms = (_log_comb(g - 1, j - 1) + _log_comb(w, k - j) - _log_comb(n, k)) - np.log(j)
    return np.where(valid, np.exp(np.where(valid, log_terms, 0.0)), 0.0).sum(axis=1)


class PoolColumns(NamedTuple):
    """One pool's per-trial inputs, every array aligned on the same trials."""

    scores: dict[str, np.ndarray]         # rule metric -> the trial's best value of it
    test_at: dict[str, np.ndarray]        # rule metric -> test accuracy at that epoch
    accuracy: np.ndarray                  # best val_accuracy, what the loss picks are judged by


def complete_trials(scored: pd.DataFrame) -> pd.DataFrame:
    """The trials with every score and test accuracy present (a trial lacking one would
    give the rules different pools), in trial order whatever the source (store or export),
    so that the same seed draws the same resamples."""
    needed = [m for m in RULES if m in scored] + [f"test_accuracy_at_{m}" for m in RULES
                                                   if f"test_accuracy_at_{m}" in scored]
    complete = scored.dropna(subset=needed)
    if "trial" in complete:
        number = pd.to_numeric(complete["trial"], errors="coerce")
        complete = complete.assign(_order=number.fillna(np.inf)).sort_values(
            ["_order", "trial"], key=lambda column: column.astype(str) if column.name == "trial" else column,
            kind="stable").drop(columns="_order")
    return complete


def pool_columns(scored: pd.DataFrame) -> PoolColumns:
    """`complete_trials`' per-trial arrays."""
    return columns_of(complete_trials(scored))


def columns_of(complete: pd.DataFrame) -> PoolColumns:
    """The per-trial arrays of trials already filtered and ordered by `complete_trials`."""
    scores = {m: complete[m].to_numpy(float) for m in RULES if m in complete}
    test_at = {m: complete[f"test_accuracy_at_{m}"].to_numpy(float) for m in scores
               if f"test_accuracy_at_{m}" in complete}
    return PoolColumns(scores, test_at, complete["val_accuracy"].to_numpy(float))


def point_estimates(columns: PoolColumns, ks: np.ndarray) -> dict[str, np.ndarray]:
    """Every statistic at every k, for one set of trials: `disagree_<loss>`, `test_<rule>`,
    `l2_effect` and `gain_over_<loss>`."""
    out: dict[str, np.ndarray] = {}
    for loss in LOSSES:
        if loss in columns.scores:
            out[f"disagree_{loss}"] = disagreement_at_k(columns.scores[loss], columns.accuracy, ks).share
    for rule, direction in RULES.items():
        if rule in columns.test_at:
            chance = pick_probabilities(columns.scores[rule], ks, direction == "max")
            out[f"test_{rule}"] = columns.test_at[rule] @ chance
    if all(f"disagree_{loss}" in out for loss in LOSSES):
        out["l2_effect"] = out["disagree_val_loss"] - out["disagree_val_crossentropy"]
    for loss in LOSSES:
        if f"test_{loss}" in out and "test_val_accuracy" in out:
            out[f"gain_over_{loss}"] = out["test_val_accuracy"] - out[f"test_{loss}"]
    return out


def pool_table(scored: pd.DataFrame, *, n_boot: int, seed: int, max_k: int = MAX_K) -> pd.DataFrame:
    """One row per k = 2..min(N, max_k): each statistic of `point_estimates`, with `<name>_lo`
    and `<name>_hi` (95% percentile bootstrap over trials, paired across statistics; at the
    ks of CI_KS, NaN at the others), and `trials` (N)."""
    columns = pool_columns(scored)
    n = len(columns.accuracy)
    if n < 2:
        return pd.DataFrame()
    ks = np.arange(2, min(n, max_k) + 1)
    table = pd.DataFrame({"k": ks, **point_estimates(columns, ks)})
    with_ci = np.array([k for k in CI_KS if k <= ks[-1]])
    rng = np.random.default_rng(seed)
    draws = [point_estimates(resample_columns(columns, rng.integers(0, n, n)), with_ci) for _ in range(n_boot)]
    rows = np.searchsorted(ks, with_ci)
    for name in table.columns.drop("k"):
        lo, hi = np.full(len(ks), np.nan), np.full(len(ks), np.nan)
        if n_boot:
            lo[rows], hi[rows] = np.quantile(np.array([draw[name] for draw in draws]), [0.025, 0.975], axis=0)
        table[f"{name}_lo"], table[f"{name}_hi"] = lo, hi
    table["trials"] = n
    return table


def resample_columns(columns: PoolColumns, rows: np.ndarray) -> PoolColumns:
    return PoolColumns({m: v[rows] for m, v in columns.scores.items()},
                       {m: v[rows] for m, v in columns.test_at.items()}, columns.accuracy[rows])


def pool_summary(table: pd.DataFrame, n_boot: int) -> dict:
    """The `pool` block of summary.json, from `pool_table`: the curve and the quoted ks."""
    if table.empty:
        return {}
    records = table.to_dict(orient="records")
    return {"trials": int(table["trials"].iloc[0]), "bootstrap": n_boot,
            "at_k": {str(k): row for k in QUOTED_KS for row in records if row["k"] == k},
            "curve": records,
            "note": ("exact averages over all k-subsets of one pool of trials; valid as a rate for "
                     "studies of k trials when the pool's trials are i.i.d. draws (random sampling, "
                     "no pruning: a campaign); 95% CIs bootstrap the pool's trials")}
