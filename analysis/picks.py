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
    rows = np.flatnonzero(codes >= 0)  # a row with a missing key belongs to no group
    rows = rows[np.lexsort((frame[order].to_numpy()[rows], codes[rows]))]  # stable
    codes = codes[rows]
    # no rows, no groups (np.r_[True, …] would invent one empty group, which reduceat refuses)
    starts = np.flatnonzero(np.r_[len(codes) > 0, codes[1:] != codes[:-1]])
    n = np.diff(np.r_[starts, len(rows)])
    loss_values = frame[loss].to_numpy(float)[rows]
    accuracy_values = frame[accuracy].to_numpy(float)[rows]
    # fmin/fmax skip NaN, as pandas' min and max do.
    at_min = loss_values == np.fmin.reduceat(loss_values, starts)[np.repeat(np.arange(len(n)), n)]
    at_max = (accuracy_values
              == np.fmax.reduceat(accuracy_values, starts)[np.repeat(np.arange(len(n)), n)])
    sum_in_group = lambda mask: np.add.reduceat(mask.astype(np.int64), starts)  # noqa: E731
    labels = frame.index.to_numpy()[rows]
    loss_first, max_first = _first_in_group(at_min, starts, n), _first_in_group(at_max, starts, n)
    keys = frame[group].iloc[rows[starts]]
    out = pd.DataFrame({"n": n, "loss_ties": sum_in_group(at_min),
                        "accuracy_ties": sum_in_group(at_max)},
                       index=pd.MultiIndex.from_frame(keys) if len(group) > 1
                       else pd.Index(keys[group[0]]))
    out["loss_pick"] = _labels_at(labels, loss_first)
    out["agree"] = np.where(loss_first >= 0, at_max[np.maximum(loss_first, 0)], False)
    both = sum_in_group(at_min & at_max)
    out["disagree_share"] = 1.0 - both / out["loss_ties"].to_numpy(float)
    out["disagree_lenient"] = both == 0
    out["disagree_strict"] = both < out["loss_ties"].to_numpy()
    out["accuracy_pick"] = np.where(out["agree"], out["loss_pick"], _labels_at(labels, max_first))
    return out


def _first_in_group(mask: np.ndarray, starts: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Position of the first True of each group (rows sorted by group), −1 where none."""
    positions = np.where(mask, np.arange(len(mask)), len(mask))
    first = np.minimum.reduceat(positions, starts)
    return np.where(first < starts + n, first, -1)


def _labels_at(labels: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Index labels at `positions`; NaN where a group has no such row (as pandas aligns)."""
    if (positions >= 0).all():
        return labels[positions]
    return np.where(positions >= 0, labels[np.maximum(positions, 0)].astype(object), np.nan)


def score_trials(epochs: pd.DataFrame, scoring: str) -> pd.DataFrame:
    """One row per trial with its score for each rule and the epoch the score comes from.

    `best` takes the optimum over epochs (earliest on ties, as the search logs
    `best_*_epoch`); `final` takes the last epoch. For each scored metric `m` the row holds
    `m`, `m_epoch` and, when present, `test_accuracy_at_m`, `val_ece_at_m`,
    `val_confidence_at_m`.
    """
    # Only the columns scored here are sorted and filtered: every selection copies its
    # columns, and the rules' extra metrics would double the peak memory at 6 M rows.
    wanted = [*KEY, "epoch", "accuracy", "val_accuracy", "val_loss", "val_crossentropy",
              "test_accuracy", "val_ece", "val_confidence"]
    e = epochs[[c for c in wanted if c in epochs]].sort_values([*KEY, "epoch"], kind="stable")
    last = e.groupby(KEY, sort=False).tail(1).set_index(KEY)
    out = pd.DataFrame(index=last.index)
    out["epochs_trained"] = e.groupby(KEY, sort=False).size()
    # The train/validation gap at the end of training is the overfitting signal.
    if "accuracy" in e:
        out["overfit_gap"] = last["accuracy"] - last["val_accuracy"]
    carried = [c for c in ("test_accuracy", "val_ece", "val_confidence") if c in e]
    losses = [m for m in ("val_loss", "val_crossentropy") if m in e and e[m].notna().any()]
    # The accuracy score is computed once, over every epoch that has a val_accuracy, so a
    # trial missing one loss metric (an older store) keeps its accuracy score.
    with_accuracy = _rows_with(e, "val_accuracy")
    if scoring == "final":
        rows = {"val_accuracy": with_accuracy.groupby(KEY, sort=False).tail(1).index}
    else:
        # The trial's accuracy score is its first maximal epoch, not the agreeing one.
        first_max = with_accuracy.loc[with_accuracy["val_accuracy"]
                                      == with_accuracy.groupby(KEY)["val_accuracy"].transform("max")]
        rows = {"val_accuracy": first_max.groupby(KEY, sort=False).head(1).index}
    for loss in losses:
        usable = _rows_with(e, loss)
        rows[loss] = (usable.groupby(KEY, sort=False).tail(1).index if scoring == "final"
                      else pick(usable, KEY, "epoch", loss, "val_accuracy")["loss_pick"].to_numpy())
    for metric, idx in rows.items():
        chosen = e.loc[idx].set_index(KEY)
        out[metric] = chosen[metric]
        out[f"{metric}_epoch"] = chosen["epoch"]
        for c in carried:
            out[f"{c}_at_{metric}"] = chosen[c]
    return out.reset_index()


def _rows_with(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """The rows where `column` has a value; the frame itself when all do (no copy)."""
    present = frame[column].notna()
    return frame if present.all() else frame[present]


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


def epoch_picks(epochs: pd.DataFrame, scored: pd.DataFrame, loss: str = "val_loss") -> pd.DataFrame:
    """One row per trial (the same trials as the trial level): the epoch of minimal loss,
    the epoch of maximal accuracy, agreement, the gap and where both fall in the budget."""
    keep = scored[KEY + ["experiment", "budget"]]
    e = epochs.merge(keep[KEY], on=KEY)
    e = e[e[loss].notna()]
    # One epoch has nothing to disagree with: no epoch-level verdict (listed by scored_trials).
    e = e[e.groupby(KEY)["epoch"].transform("size") >= MIN_EPOCHS]
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
