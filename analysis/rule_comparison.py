"""Every selection rule against every other, and against the loss rule on held-out data.

Units are studies (one pick per rule per study), so a disagreement is 0/1 per study and
a cost is one paired difference per study; the bootstrap resamples studies. All pairs and
all costs share one set of resamples (`intervals.bootstrap_columns`), so 16 rules (120
pairs) at 10,000 studies cost one matrix product, not 120 bootstraps.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd

from analysis.intervals import bootstrap_columns, bootstrap_gap, bootstrap_mean, wilson
from analysis.rules import (ALL_RULES, N_VAL, REFERENCE, TEST_ACCURACY, TEST_BRIER,
                            TEST_CROSSENTROPY, TEST_ECE, EarlyStopping, Layout, Rule, pick_all)

# metric -> what the report calls it; lower is better for all but accuracy.
COST_METRICS = {TEST_ACCURACY: "test accuracy", TEST_CROSSENTROPY: "test NLL",
                TEST_ECE: "test ECE", TEST_BRIER: "test Brier score"}


def rule_input(epochs: pd.DataFrame | None, scored: pd.DataFrame, kind: str,
               val_size: int | None) -> pd.DataFrame:
    """The long epoch table the rules read: the analysed studies' epochs (a per-trial table
    is one epoch 0 per trial), `order` where the trial number is the tie rule (MLflow), and
    `n_val` (MLflow: each trial's param; CSV: `--val-size`)."""
    studies = scored["study"].unique()
    if epochs is None:
        table = scored.drop(columns=[N_VAL], errors="ignore").assign(epoch=0)
    else:
        inside = epochs["study"].isin(studies)
        table = epochs if inside.all() else epochs[inside]
    if kind == "mlflow":
        table = table.assign(order=pd.to_numeric(table["trial"], errors="coerce"))
        if N_VAL in scored:
            table = table.merge(scored[["study", "trial", N_VAL]], on=["study", "trial"], how="left")
    elif "order" in table:
        table = table.drop(columns=["order"])  # CSV: file order is first appearance already
    if val_size is not None:
        # --val-size stands in where the runs do not say (always, in CSV mode).
        # A float column, as the rules read it: an integer one would be converted, a second copy.
        table = table.assign(**{N_VAL: table[N_VAL].fillna(val_size) if N_VAL in table
                                else float(val_size)})
    return table


def compare(table: pd.DataFrame, n_boot: int, seed: int,
            rules: tuple[Rule, ...] = ALL_RULES) -> dict:
    """`rules`, `rule_pairs`, `rule_costs` and `early_stopping` blocks of summary.json."""
    layout, picked, missing = pick_all(table, rules)
    out = {"rules": {rule.name: {"description": rule.description, "needs": list(rule.needs),
                                 "available": rule.name in picked,
                                 "unavailable_reason": missing.get(rule.name),
                                 "studies_with_pick": int((picked[rule.name] >= 0).sum())
                                 if rule.name in picked else 0}
                     for rule in rules}}
    out["rule_pairs"] = _pairs(picked, layout.trial_starts, n_boot, seed)
    out["rule_costs"] = _costs(layout, picked, missing, n_boot, seed)
    out["early_stopping"] = {rule.name: _early_stopping(layout, rule.pick)
                             for rule in rules if isinstance(rule.pick, EarlyStopping)
                             and rule.name in picked}
    return out


def _pairs(picked: dict[str, np.ndarray], trial_starts: np.ndarray, n_boot: int,
           seed: int) -> list[dict]:
    """Per pair, over the studies both rules pick in: the share whose picks are different
    trials (`trial_level`) and whose deployed (trial, epoch) differ (`deployed`).
    `trial_starts`: the first sorted row of each trial, so a row's trial is a binary search."""
    row_trial = lambda rows: np.searchsorted(trial_starts, rows, side="right") - 1  # noqa: E731
    names = list(picked)
    pairs = list(combinations(names, 2))
    columns = []
    for first, second in pairs:
        a, b = picked[first], picked[second]
        both = (a >= 0) & (b >= 0)
        trial_differs = row_trial(np.maximum(a, 0)) != row_trial(np.maximum(b, 0))
        columns += [np.where(both, trial_differs, np.nan), np.where(both, a != b, np.nan)]
    blocks = _rate_blocks(np.column_stack(columns) if columns else np.zeros((0, 0)), n_boot, seed)
    return [{"rules": [first, second], "studies": blocks[2 * i]["studies"],
             "trial_level": blocks[2 * i], "deployed": blocks[2 * i + 1]}
            for i, (first, second) in enumerate(pairs)]


def _rate_blocks(matrix: np.ndarray, n_boot: int, seed: int) -> list[dict]:
    """A rate block per column of a studies × columns matrix of 0/1 (NaN: no unit)."""
    lo, hi, why = _intervals(matrix, n_boot, seed)
    blocks = []
    for i in range(matrix.shape[1]):
        values = matrix[:, i][~np.isnan(matrix[:, i])]
        k, n = int(values.sum()), len(values)
        blocks.append({"studies": n, "disagreements": k, "rate": k / n if n else math.nan,
                       "ci95_wilson": list(wilson(k, n)), "ci95_bootstrap": [lo[i], hi[i]],
                       "ci95_bootstrap_missing": why[i]})
    return blocks


def _intervals(matrix: np.ndarray, n_boot: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Bootstrap CI of each column's mean over its non-NaN studies. Complete columns share
    one set of resamples; a column with gaps (a rule that picks in fewer studies) gets its
    own (`bootstrap_mean` drops the NaN)."""
    lo, hi = np.full(matrix.shape[1], np.nan), np.full(matrix.shape[1], np.nan)
    why = [bootstrap_gap(matrix[:, i], n_boot=n_boot) for i in range(matrix.shape[1])]
    complete = ~np.isnan(matrix).any(axis=0)
    if complete.any():
        lo[complete], hi[complete] = bootstrap_columns(matrix[:, complete], n_boot=n_boot, seed=seed)
    for i in np.flatnonzero(~complete):
        lo[i], hi[i] = bootstrap_mean(matrix[:, i], n_boot=n_boot, seed=seed)
    return lo, hi, why


def _costs(layout: Layout, picked: dict[str, np.ndarray], missing: dict[str, str],
           n_boot: int, seed: int) -> dict:
    """Per rule and test metric: the rule's pick minus the loss rule's pick, paired per
    study, mean and bootstrap CI; a reason instead where it cannot be computed."""
    costs: dict = {}
    if REFERENCE not in picked:
        return {name: {"missing": f"the loss rule ({REFERENCE}) is not available"} for name in picked}
    reference = picked[REFERENCE]
    cells, columns = [], []
    present = [metric for metric in COST_METRICS if metric in layout.frame
               and not np.isnan(layout.column(metric)).all()]
    for name, positions in picked.items():
        costs[name] = {metric: {"missing": f"no {metric} column in the input"}
                       for metric in COST_METRICS if metric not in present}
        for metric in present:
            values = layout.column(metric)
            at = lambda chosen: np.where(chosen >= 0, values[np.maximum(chosen, 0)], np.nan)  # noqa: E731
            cells.append((name, metric))
            columns.append(at(positions) - at(reference))
    if columns:
        matrix = np.column_stack(columns)
        lo, hi, why = _intervals(matrix, n_boot, seed)
        for i, (name, metric) in enumerate(cells):
            values = matrix[:, i][~np.isnan(matrix[:, i])]
            costs[name][metric] = {"studies": int(len(values)),
                                   "mean": float(values.mean()) if len(values) else math.nan,
                                   "ci95_bootstrap": [lo[i], hi[i]],
                                   "ci95_bootstrap_missing": why[i]}
    for name, reason in missing.items():
        costs[name] = {"missing": f"rule not available: {reason}"}
    return costs


def _early_stopping(layout: Layout, picker: EarlyStopping) -> dict:
    """What the replayed callback does to each trial with the monitor: how many it stops,
    how many epochs that saves, and the test accuracy of what it deploys."""
    replayed = picker.replayed(layout)
    monitored = ~np.isnan(layout.curves(picker.monitor)).all(axis=1)
    stopped = monitored & (replayed.stop >= 0)
    trained = int(replayed.length[monitored].sum())
    saved = int(replayed.epochs_saved[monitored].sum())
    out = {"monitor": picker.monitor, "mode": picker.direction, "patience": picker.patience,
           "min_delta": picker.min_delta, "restore_best_weights": picker.restore_best_weights,
           "trials": int(monitored.sum()), "stopped_early": int(stopped.sum()),
           "share_stopped_early": _share(stopped.sum(), monitored.sum()),
           "mean_stop_epoch": _mean(replayed.stop[stopped]),
           "mean_deployed_epoch": _mean(replayed.deployed[monitored]),
           "epochs_logged": trained, "epochs_saved": saved,
           "share_of_epochs_saved": _share(saved, trained)}
    if TEST_ACCURACY in layout.frame:
        test = layout.column(TEST_ACCURACY)
        deployed = test[layout.trial_starts + replayed.deployed][monitored]
        last = test[layout.trial_last_row()][monitored]
        out["mean_test_accuracy_deployed"] = _mean(deployed)
        out["mean_test_accuracy_last_epoch"] = _mean(last)
    return out


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else math.nan


def _share(part, whole) -> float:
    return float(part) / float(whole) if whole else math.nan
