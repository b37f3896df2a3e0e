"""Pick rules: the loss pick, the accuracy pick, ties, and whether they agree.

One function serves both levels: at trial level the groups are studies and the order is
the trial number (or file order); at epoch level the groups are trials and the order is
the epoch. The *representative* loss pick is the first row at minimal loss; the group
agrees when that row is among the rows tied at maximal accuracy.

Ties at minimal loss: the loss rule picks uniformly among its tied rows, so a group's
`disagree_share` is the fraction of its tied-loss rows not tied at maximal accuracy,
whatever the row order; `disagree_lenient` (no tied-loss row is at maximal accuracy) and
`disagree_strict` (some tied-loss row is not) bound it from below and above. The trial
level's primary rate uses the share; the epoch level keeps the earliest epoch, which is
a rule (early stopping's), not an accident of row order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.rules import first_true, is_sorted
from analysis.sources import KEY

MIN_EPOCHS = 2  # a trial needs two epochs to have an epoch-level verdict


def pick(frame: pd.DataFrame, group: Sequence[str], order: str, loss: str,
         accuracy: str) -> pd.DataFrame:
    """Per group: `n`, `loss_pick` and `accuracy_pick` (index labels into `frame`), `agree`,
    `loss_ties` and `accuracy_ties` (rows tied at the optimum), and the order-free
    `disagree_share` with its bounds `disagree_lenient` and `disagree_strict`.

    When the group agrees the accuracy pick *is* the loss pick (the same row); otherwise it
    is the first row at maximal accuracy. Groups come in sorted key order. Computed on
    sorted NumPy arrays (segment reductions, not a groupby per statistic): at 6 M epoch
    rows the pandas version took seconds per call.
    """
    group = list(group)
    codes = frame.groupby(group, sort=True).ngroup().to_numpy()
    order_values = frame[order].to_numpy()
    # Rows in (group, order) order, stable; a row with a missing key belongs to no group.
    # Without one (the usual case) the sort reads the columns as they are, not copies.
    if len(codes) and codes.min() >= 0:
        rows = np.lexsort((order_values, codes))
    else:
        rows = np.flatnonzero(codes >= 0)
        rows = rows[np.lexsort((order_values[rows], codes[rows]))]
    codes = codes[rows]
    # no rows, no groups (np.r_[True, …] would invent one empty group, which reduceat refuses)
    starts = np.flatnonzero(np.r_[len(codes) > 0, codes[1:] != codes[:-1]])
    del codes
    n = np.diff(np.r_[starts, len(rows)])
    # fmin/fmax skip NaN, as pandas' min and max do. Each row-length array is 48 MB at 6 M
    # epoch rows, so the optimum is spread over the rows once and the values are let go.
    loss_values = frame[loss].to_numpy(float)[rows]
    at_min = loss_values == np.repeat(np.fmin.reduceat(loss_values, starts), n)
    del loss_values
    accuracy_values = frame[accuracy].to_numpy(float)[rows]
    at_max = accuracy_values == np.repeat(np.fmax.reduceat(accuracy_values, starts), n)
    del accuracy_values
    sum_in_group = lambda mask: np.add.reduceat(mask.astype(np.int64), starts)  # noqa: E731
    loss_first, max_first = first_true(at_min, starts), first_true(at_max, starts)
    keys = frame[group].iloc[rows[starts]]
    out = pd.DataFrame({"n": n, "loss_ties": sum_in_group(at_min),
                        "accuracy_ties": sum_in_group(at_max)},
                       index=pd.MultiIndex.from_frame(keys) if len(group) > 1
                       else pd.Index(keys[group[0]]))
    out["loss_pick"] = _labels_at(frame.index, rows, loss_first)
    out["agree"] = np.where(loss_first >= 0, at_max[np.maximum(loss_first, 0)], False)
    both = sum_in_group(at_min & at_max)
    out["disagree_share"] = 1.0 - both / out["loss_ties"].to_numpy(float)
    out["disagree_lenient"] = both == 0
    out["disagree_strict"] = both < out["loss_ties"].to_numpy()
    out["accuracy_pick"] = np.where(out["agree"], out["loss_pick"],
                                    _labels_at(frame.index, rows, max_first))
    return out


def _labels_at(index: pd.Index, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Index labels of the sorted rows at `positions`; NaN where a group has no such row
    (as pandas aligns). Only those labels are read, not the whole index."""
    labels = index.take(rows[np.maximum(positions, 0)] if len(rows) else rows[:0]).to_numpy()
    if (positions >= 0).all():
        return labels
    return np.where(positions >= 0, labels.astype(object), np.nan)


def score_trials(epochs: pd.DataFrame, scoring: str) -> pd.DataFrame:
    """One row per trial with its score for each rule and the epoch the score comes from.

    `best` takes the optimum over epochs (earliest on ties, as the search logs
    `best_*_epoch`); `final` takes the last epoch. For each scored metric `m` the row holds
    `m`, `m_epoch` and, when present, `test_accuracy_at_m`, `val_ece_at_m`,
    `val_confidence_at_m`.
    """
    # Only the columns scored here are read (a column selection copies nothing under
    # copy-on-write). Rows are found on NumPy arrays in (study, trial, epoch) order, then
    # only the chosen rows (one per trial and metric) are taken: a sorted copy of the 6 M
    # epoch rows and pandas' groupby tail/head masks over them set the report's peak memory.
    wanted = [*KEY, "epoch", "accuracy", "val_accuracy", "val_loss", "val_crossentropy",
              "test_accuracy", "val_ece", "val_confidence"]
    e = epochs[[c for c in wanted if c in epochs]]
    rows, group = _trial_order(e)
    last = rows[_last_in_groups(np.ones(len(rows), dtype=bool), group)]
    out = pd.DataFrame(index=pd.MultiIndex.from_frame(e[KEY].iloc[last]))
    out["epochs_trained"] = np.bincount(group, minlength=len(last)).astype(np.int64)
    # The train/validation gap at the end of training is the overfitting signal.
    if "accuracy" in e:
        out["overfit_gap"] = (e["accuracy"].iloc[last] - e["val_accuracy"].iloc[last]).to_numpy()
    carried = [c for c in ("test_accuracy", "val_ece", "val_confidence") if c in e]
    losses = [m for m in ("val_loss", "val_crossentropy") if m in e and e[m].notna().any()]
    # The accuracy score is computed once, over every epoch that has a val_accuracy, so a
    # trial missing one loss metric (an older store) keeps its accuracy score; the trial's
    # accuracy score is its first maximal epoch, not the agreeing one.
    chosen_rows = {"val_accuracy": _scored_row(e["val_accuracy"], rows, group, scoring, "max")}
    for loss in losses:
        chosen_rows[loss] = _scored_row(e[loss], rows, group, scoring, "min")
    for metric, positions in chosen_rows.items():
        chosen = e.iloc[positions].set_index(KEY)
        out[metric] = chosen[metric]
        out[f"{metric}_epoch"] = chosen["epoch"]
        for c in carried:
            out[f"{c}_at_{metric}"] = chosen[c]
    return out.reset_index()


def _trial_order(e: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Positions of `e`'s rows in (study, trial, epoch) order, stable, without the rows
    whose study or trial is missing; and each of those rows' trial number (0, 1, ... in
    that order, the order `groupby(sort=True)` lists the trials in)."""
    study, _ = pd.factorize(e["study"], sort=True)
    trial, _ = pd.factorize(e["trial"], sort=True)
    epoch = e["epoch"].to_numpy()
    keys = (epoch, trial, study)
    rows = np.arange(len(e)) if is_sorted(keys) else np.lexsort(keys)
    rows = rows[(study[rows] >= 0) & (trial[rows] >= 0)]  # groupby drops a missing key
    study, trial = study[rows], trial[rows]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (study[1:] != study[:-1]) | (trial[1:] != trial[:-1])
    return rows, np.cumsum(new) - 1


def _first_in_groups(mask: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Position of the first True of each group (`group` sorted) that has one."""
    hits = np.flatnonzero(mask)
    first = np.ones(len(hits), dtype=bool)
    first[1:] = group[hits[1:]] != group[hits[:-1]]
    return hits[first]


def _last_in_groups(mask: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Position of the last True of each group (`group` sorted) that has one."""
    hits = np.flatnonzero(mask)
    last = np.ones(len(hits), dtype=bool)
    last[:-1] = group[hits[1:]] != group[hits[:-1]]
    return hits[last]


def _scored_row(values: pd.Series, rows: np.ndarray, group: np.ndarray, scoring: str,
                direction: str) -> np.ndarray:
    """Per trial with a value of the metric, the position in the table of the row it is
    scored at: `final`, its last epoch with a value; `best`, its first epoch at the optimum."""
    v = values.to_numpy(dtype=float, na_value=np.nan)[rows]
    present = ~np.isnan(v)
    if scoring == "final":
        return rows[_last_in_groups(present, group)]
    if not len(v):
        return rows[:0]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])  # v is not empty
    # fmin/fmax skip NaN, as pandas' min and max do; a trial without a value never matches.
    optimum = (np.fmax if direction == "max" else np.fmin).reduceat(v, starts)
    return rows[_first_in_groups(v == optimum[group], group)]


def scored_trials(ds, scoring: str) -> pd.DataFrame:
    """The trial table both levels use: scores, plus metadata, minus single-trial studies.

    A study with one trial has nothing to disagree about; it is dropped here, once, and
    listed in the exclusions so the count is never silently smaller.
    """
    if ds.epochs is None:
        scored = ds.trials.copy()
        for metric in ("val_loss", "val_accuracy"):
            scored[f"{metric}_epoch"] = np.nan
            if "test_accuracy" in scored:
                # One test accuracy per trial: both picks are judged by the same number.
                scored[f"test_accuracy_at_{metric}"] = scored["test_accuracy"]
    else:
        scored = ds.trials.merge(score_trials(ds.epochs, scoring), on=KEY, how="inner")
    sizes = scored.groupby("study")["trial"].transform("size")
    single = sizes < 2
    ds.exclude("studies", "single-trial study (nothing to compare)",
               int(scored.loc[single, "study"].nunique()))
    scored = scored[~single].reset_index(drop=True)
    if ds.epochs is not None:
        short = scored["epochs_trained"] < MIN_EPOCHS
        ds.exclude("trials (epoch level only)", f"fewer than {MIN_EPOCHS} epochs: no epoch-level "
                   "verdict (the trial still counts at trial level)", int(short.sum()))
    return scored


def trial_picks(scored: pd.DataFrame, loss: str = "val_loss") -> pd.DataFrame:
    """One row per study: both picks, agreement, ties, and the held-out cost of each pick.

    `gain` is the test accuracy of the accuracy pick minus that of the loss pick, each at
    the epoch its rule scored (what each rule would deploy), also where both rules pick the
    same trial. The regret reference is the test-optimal trial: the highest test accuracy
    any trial of the study reached at either of its scored epochs; so gain is exactly
    `regret_loss_pick − regret_accuracy_pick`. Picks are the representative (first-in-order)
    ones.
    """
    s = scored[scored[loss].notna()]
    p = pick(s, ["study"], "order", loss, "val_accuracy")
    lp, ap = s.loc[p["loss_pick"]], s.loc[p["accuracy_pick"]]
    out = pd.DataFrame({
        "experiment": lp["experiment"].to_numpy(), "study": p.index.to_numpy(),
        "n": p["n"].to_numpy(), "agree": p["agree"].to_numpy(bool),
        "loss_ties": p["loss_ties"].to_numpy(), "accuracy_ties": p["accuracy_ties"].to_numpy(),
        "disagree_share": p["disagree_share"].to_numpy(float),
        "disagree_lenient": p["disagree_lenient"].to_numpy(bool),
        "disagree_strict": p["disagree_strict"].to_numpy(bool),
        "loss_pick": lp["trial"].to_numpy(), "accuracy_pick": ap["trial"].to_numpy(),
        "loss_pick_epoch": lp[f"{loss}_epoch"].to_numpy(),
        "accuracy_pick_epoch": ap["val_accuracy_epoch"].to_numpy()})
    out["disagree"] = ~out["agree"]
    test_l, test_a = f"test_accuracy_at_{loss}", "test_accuracy_at_val_accuracy"
    if test_l in s and s[test_l].notna().any():
        out["test_loss_pick"] = lp[test_l].to_numpy()
        out["test_accuracy_pick"] = ap[test_a].to_numpy()
        # What each rule would deploy: where both pick one trial but score it at different
        # epochs, the gain is that epoch difference, so gain = regret(loss) − regret(accuracy).
        out["gain"] = out["test_accuracy_pick"] - out["test_loss_pick"]
        oracle = s[[test_l, test_a]].max(axis=1).groupby(s["study"]).max()
        out["test_oracle"] = oracle.loc[out["study"]].to_numpy()
        out["regret_loss_pick"] = out["test_oracle"] - out["test_loss_pick"]
        out["regret_accuracy_pick"] = out["test_oracle"] - out["test_accuracy_pick"]
    for c in ("val_ece", "val_confidence"):
        if f"{c}_at_{loss}" in s:
            out[f"{c}_loss_pick"] = lp[f"{c}_at_{loss}"].to_numpy()
            out[f"{c}_accuracy_pick"] = ap[f"{c}_at_val_accuracy"].to_numpy()
    return out


def _rows(frame: pd.DataFrame, keep: pd.Series) -> pd.DataFrame:
    """The rows where `keep`; the frame itself when that is all of them (a boolean
    selection copies every column, even one that keeps every row)."""
    return frame if keep.all() else frame[keep]


def epoch_picks(epochs: pd.DataFrame, scored: pd.DataFrame, loss: str = "val_loss") -> pd.DataFrame:
    """One row per trial (the same trials as the trial level): the epoch of minimal loss,
    the epoch of maximal accuracy, agreement, the gap and where both fall in the budget."""
    keep = scored[KEY + ["experiment", "budget"]]
    # Only the columns read here go through the merge and the row filters, each of which
    # copies every column it carries (the rules' extra metrics doubled that at 6 M rows).
    used = [*KEY, "epoch", loss, "val_accuracy", "test_accuracy"]
    e = epochs[list(dict.fromkeys(c for c in used if c in epochs))].merge(keep[KEY], on=KEY)
    e = _rows(e, e[loss].notna())
    # One epoch has nothing to disagree with: no epoch-level verdict (listed by scored_trials).
    e = _rows(e, e.groupby(KEY)["epoch"].transform("size") >= MIN_EPOCHS)
    p = pick(e, KEY, "epoch", loss, "val_accuracy")
    lp, ap = e.loc[p["loss_pick"]], e.loc[p["accuracy_pick"]]
    out = pd.DataFrame({"study": lp["study"].to_numpy(), "trial": lp["trial"].to_numpy(),
                        "n_epochs": p["n"].to_numpy(), "agree": p["agree"].to_numpy(bool),
                        "accuracy_ties": p["accuracy_ties"].to_numpy(),
                        "loss_epoch": lp["epoch"].to_numpy(),
                        "accuracy_epoch": ap["epoch"].to_numpy()})
    out["disagree"] = ~out["agree"]
    out = out.merge(keep, on=KEY, how="left")
    # Positive gap: accuracy keeps improving after the loss has turned (overfitting shape).
    out["epoch_gap"] = out["accuracy_epoch"] - out["loss_epoch"]
    # Position as the fraction of the budget used, so epoch 0 of 10 is 0.1, the last is 1.0.
    out["loss_position"] = (out["loss_epoch"] + 1) / out["budget"]
    out["accuracy_position"] = (out["accuracy_epoch"] + 1) / out["budget"]
    if "test_accuracy" in e and e["test_accuracy"].notna().any():
        out["test_loss_pick"] = lp["test_accuracy"].to_numpy()
        out["test_accuracy_pick"] = ap["test_accuracy"].to_numpy()
        out["gain"] = out["test_accuracy_pick"] - out["test_loss_pick"]
    return out
