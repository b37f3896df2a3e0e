"""Each selection rule on a hand-made epoch table, with its pick worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from analysis.rule_comparison import compare
from analysis.rules import (ALL_RULES, AccuracyThenLoss, BestEpoch, EarlyStopping, LastKAverage,
                            Rule, usable_inputs, unavailable)

# Study A: three trials of four epochs. By hand:
#   min val_loss 0.40 only at a0 e1; max val_accuracy 0.84 at a0 e3, a1 e1, a2 e2 (first: a0).
CURVES = {  # (study, trial): (val_loss, val_accuracy, test_accuracy)
    ("A", "a0"): ([0.9, 0.40, 0.6, 0.7], [0.60, 0.78, 0.82, 0.84], [0.58, 0.77, 0.80, 0.83]),
    ("A", "a1"): ([0.8, 0.5, 0.55, 0.65], [0.70, 0.84, 0.83, 0.81], [0.69, 0.82, 0.82, 0.80]),
    ("A", "a2"): ([0.7, 0.6, 0.52, 0.45], [0.75, 0.80, 0.84, 0.81], [0.74, 0.79, 0.83, 0.81]),
    # Study B: two identical trials, listed t9 before t10 (t10 sorts first as text).
    ("B", "t9"): ([0.5, 0.4], [0.7, 0.7], [0.60, 0.65]),
    ("B", "t10"): ([0.5, 0.4], [0.7, 0.7], [0.60, 0.65]),
}


def table(n_val: float = 100) -> pd.DataFrame:
    rows = [{"study": study, "trial": trial, "epoch": epoch, "val_loss": loss,
             "val_accuracy": accuracy, "test_accuracy": test, "n_val": n_val}
            for (study, trial), curves in CURVES.items()
            for epoch, (loss, accuracy, test) in enumerate(zip(*curves))]
    return pd.DataFrame(rows)


def picks(pick, frame: pd.DataFrame) -> dict[str, tuple[str, int]]:
    chosen = pick(frame)
    assert list(chosen.columns) == ["study", "trial", "epoch"]
    return {row.study: (row.trial, int(row.epoch)) for row in chosen.itertuples(index=False)}


def rule(name: str) -> Rule:
    return next(r for r in ALL_RULES if r.name == name)


def test_loss_and_accuracy_rules_take_the_first_trial_and_earliest_epoch_on_ties():
    assert picks(rule("min_val_loss").pick, table()) == {"A": ("a0", 1), "B": ("t9", 1)}
    # A: three trials at 0.84, the first (a0) at its epoch 3; B: both trials tie at both
    # epochs, the first listed trial (t9, not t10) at its earliest epoch.
    assert picks(rule("max_val_accuracy").pick, table()) == {"A": ("a0", 3), "B": ("t9", 0)}


def test_an_order_column_decides_ties_instead_of_the_listing():
    ordered = table().assign(order=lambda frame: frame["trial"].map(
        {"a0": 0, "a1": 1, "a2": 2, "t10": 0, "t9": 1}))
    assert picks(rule("min_val_loss").pick, ordered)["B"] == ("t10", 1)


def test_accuracy_with_a_loss_tie_break():
    # A's epochs at 0.84 have val_loss 0.7 (a0 e3), 0.5 (a1 e1), 0.52 (a2 e2): a1 e1.
    assert picks(rule("max_val_accuracy_then_min_val_loss").pick, table())["A"] == ("a1", 1)


def test_accuracy_within_one_binomial_standard_error_then_loss():
    # n_val 100: SE = sqrt(0.84 * 0.16 / 100) = 0.0367, so accuracies >= 0.8033 count; the
    # lowest val_loss among them is a2 e3 (0.81, loss 0.45); a0 e1 (loss 0.40) has 0.78.
    assert picks(rule("accuracy_within_noise_then_loss").pick, table(100))["A"] == ("a2", 3)
    # n_val 10,000: SE = 0.0037, only the 0.84 epochs count: the tie-break rule's a1 e1.
    assert picks(AccuracyThenLoss(within_noise=True), table(10_000))["A"] == ("a1", 1)
    # A study without n_val has no pick.
    assert "A" not in picks(AccuracyThenLoss(within_noise=True), table(math.nan))


def test_last_k_average_scores_the_trial_and_deploys_its_last_epoch():
    # k = 2: mean val_loss of the last two epochs 0.65 (a0), 0.60 (a1), 0.485 (a2).
    assert picks(LastKAverage("val_loss", "min", k=2), table())["A"] == ("a2", 3)
    # k = 2 on accuracy: 0.83 (a0), 0.82 (a1), 0.825 (a2).
    assert picks(LastKAverage("val_accuracy", "max", k=2), table())["A"] == ("a0", 3)
    # k = 5 on four epochs averages all four: accuracy 0.76, 0.795, 0.80 -> a2.
    assert picks(rule("last5_avg_val_accuracy").pick, table())["A"] == ("a2", 3)
    assert picks(rule("last5_avg_val_loss").pick, table()) == {"A": ("a2", 3), "B": ("t9", 1)}


def test_early_stopping_rule_replays_each_trial_then_picks_the_best_deployed_value():
    # val_loss, patience 1: a0 stops at e2 (0.6), a1 at e2 (0.55), a2 never (e3, 0.45).
    plain = EarlyStopping("val_loss", "min", patience=1, min_delta=0.0, restore_best_weights=False)
    assert picks(plain, table())["A"] == ("a2", 3)
    # Restoring: a0 e1 (0.40), a1 e1 (0.5), a2 e3 (0.45) -> a0 e1.
    restored = EarlyStopping("val_loss", "min", patience=1, min_delta=0.0, restore_best_weights=True)
    assert picks(restored, table())["A"] == ("a0", 1)
    # val_accuracy, patience 1: a0 never stops (e3, 0.84), a1 stops at e2 (0.83), a2 at e3
    # (0.81) -> a0 e3.
    accuracy = EarlyStopping("val_accuracy", "max", patience=1, min_delta=0.0,
                             restore_best_weights=False)
    assert picks(accuracy, table())["A"] == ("a0", 3)


def test_a_rule_without_its_column_or_curves_is_unavailable_with_the_reason():
    frame = table().drop(columns=["n_val"])
    inputs = usable_inputs(frame)
    assert unavailable(rule("min_val_loss"), inputs) is None
    assert "val_calibrated_nll" in unavailable(rule("min_val_calibrated_nll"), inputs)
    assert "--val-size" in unavailable(rule("accuracy_within_noise_then_loss"), inputs)
    per_trial = frame[frame["epoch"] == 0]
    assert "no epochs" in unavailable(rule("last5_avg_val_loss"), usable_inputs(per_trial))
    assert unavailable(rule("max_val_accuracy"), usable_inputs(per_trial)) is None


def test_a_partly_missing_metric_picks_only_where_it_has_values():
    frame = table().assign(val_macro_f1=lambda t: np.where(t["study"] == "A", t["val_accuracy"], np.nan))
    assert picks(BestEpoch("val_macro_f1", "max"), frame) == {"A": ("a0", 3)}


def test_rule_names_are_unique_and_every_rule_needs_what_it_reads():
    names = [r.name for r in ALL_RULES]
    assert len(names) == len(set(names)) == 16
    assert names[0] == "min_val_loss"
    assert all(r.needs and r.description for r in ALL_RULES)


SMALL_RULES = (rule("min_val_loss"), rule("max_val_accuracy"), rule("min_val_calibrated_nll"),
               Rule("es_loss_p1", "EarlyStopping val_loss patience 1", ("val_loss", "epoch"),
                    EarlyStopping("val_loss", "min", 1, 0.0, False)))


def test_pairs_costs_and_early_stopping_blocks():
    out = compare(table(), n_boot=200, seed=0, rules=SMALL_RULES)
    assert out["rules"]["min_val_calibrated_nll"]["available"] is False
    pair = next(p for p in out["rule_pairs"] if p["rules"] == ["min_val_loss", "max_val_accuracy"])
    # A: (a0, 1) vs (a0, 3); B: (t9, 1) vs (t9, 0): the same trial, other epochs.
    assert pair["trial_level"]["disagreements"] == 0 and pair["trial_level"]["studies"] == 2
    assert pair["deployed"]["disagreements"] == 2 and pair["deployed"]["rate"] == 1.0
    assert pair["deployed"]["ci95_wilson"] == pytest.approx(
        proportion_confint(2, 2, method="wilson"), abs=1e-9)
    assert "fewer than 4" in pair["deployed"]["ci95_bootstrap_missing"]
    # Test accuracy, accuracy pick minus loss pick: A 0.83 - 0.77, B 0.60 - 0.65.
    cost = out["rule_costs"]["max_val_accuracy"]["test_accuracy"]
    assert cost["studies"] == 2 and cost["mean"] == pytest.approx((0.06 - 0.05) / 2)
    assert "no test_ece column" in out["rule_costs"]["max_val_accuracy"]["test_ece"]["missing"]
    assert "not available" in out["rule_costs"]["min_val_calibrated_nll"]["missing"]
    # Replay, val_loss patience 1: a0 and a1 stop at epoch 2 (1 epoch saved each); a2, t9
    # and t10 never stop. 16 epochs logged.
    stats = out["early_stopping"]["es_loss_p1"]
    assert (stats["trials"], stats["stopped_early"], stats["epochs_saved"], stats["epochs_logged"]) \
        == (5, 2, 2, 16)
    assert stats["mean_stop_epoch"] == 2.0
    # Deployed: a0 e2 0.80, a1 e2 0.82, a2 e3 0.81, t9 and t10 e1 0.65.
    assert stats["mean_test_accuracy_deployed"] == pytest.approx((0.80 + 0.82 + 0.81 + 0.65 * 2) / 5)


def test_cost_interval_from_a_bootstrap_over_studies():
    """Eight studies whose accuracy pick gains 0, 0.01, …, 0.07 over the loss pick: the
    mean is 0.035 and the percentile interval lies inside [0, 0.07] around it."""
    rows = []
    for study in range(8):
        gain = study / 100
        for trial, (loss, accuracy, test) in enumerate([(0.3, 0.8, 0.7), (0.4, 0.9, 0.7 + gain)]):
            rows.append({"study": f"s{study}", "trial": trial, "epoch": 0, "val_loss": loss,
                         "val_accuracy": accuracy, "test_accuracy": test})
    out = compare(pd.DataFrame(rows), n_boot=500, seed=0, rules=SMALL_RULES[:2])
    cost = out["rule_costs"]["max_val_accuracy"]["test_accuracy"]
    assert cost["mean"] == pytest.approx(0.035)
    low, high = cost["ci95_bootstrap"]
    assert 0 <= low < 0.035 < high <= 0.07 and cost["ci95_bootstrap_missing"] is None
    pair = out["rule_pairs"][0]["trial_level"]
    assert (pair["disagreements"], pair["studies"]) == (8, 8)
    assert "same value" in pair["ci95_bootstrap_missing"]


def test_row_order_of_the_table_does_not_change_any_pick_given_an_order_column():
    """The layout sorts a shuffled table back into (study, order, trial, epoch)."""
    ordered = table().assign(order=lambda frame: frame["trial"].map(
        {"a0": 0, "a1": 1, "a2": 2, "t9": 0, "t10": 1}))
    shuffled = ordered.sample(frac=1, random_state=3)
    assert not shuffled.index.equals(ordered.index)
    for each in ALL_RULES:
        if unavailable(each, usable_inputs(ordered)) is None:
            assert picks(each.pick, shuffled) == picks(each.pick, ordered), each.name
