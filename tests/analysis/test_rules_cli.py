"""The selection rules through `python -m analysis report --csv`, as a user runs it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.analysis.conftest import run_analysis
from tests.analysis.test_rules import table


def _csv(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "epochs.csv"
    frame.drop(columns=["n_val"]).to_csv(path, index=False)
    return path


def _with_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The hand-made table plus the columns the rules and their costs read. val_macro_f1 is
    val_accuracy, so its rule picks what the accuracy rule picks; test NLL is 1 − test
    accuracy, so the accuracy rule's NLL cost is minus its accuracy cost."""
    return frame.assign(val_macro_f1=frame["val_accuracy"],
                        test_crossentropy=1 - frame["test_accuracy"])


def test_summary_holds_every_rule_its_pairs_and_costs(tmp_path):
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(_csv(tmp_path, _with_columns(table()))),
                        "--epoch-col", "epoch", "--test-accuracy-col", "test_accuracy",
                        "--val-size", "100", "--out", str(out), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    rules = summary["rules"]
    assert len(rules) == 16 and summary["source"]["val_size"] == 100
    assert rules["accuracy_within_noise_then_loss"]["available"]
    assert rules["max_val_macro_f1"]["studies_with_pick"] == 2
    assert "val_calibrated_nll" in rules["min_val_calibrated_nll"]["unavailable_reason"]
    assert not rules["early_stopping_val_calibrated_nll_p5"]["available"]
    pairs = {tuple(pair["rules"]): pair for pair in summary["rule_pairs"]}
    # Loss rule (a0 e1), (t9 e1); accuracy rule (a0 e3), (t9 e0): same trials, other epochs.
    loss_vs_accuracy = pairs[("min_val_loss", "max_val_accuracy")]
    assert loss_vs_accuracy["trial_level"]["disagreements"] == 0
    assert loss_vs_accuracy["deployed"]["disagreements"] == 2
    # Within noise (n_val 100) picks a2 e3 in A: another trial than the loss rule's a0.
    assert pairs[("min_val_loss", "accuracy_within_noise_then_loss")]["trial_level"]["disagreements"] == 1
    assert pairs[("max_val_accuracy", "max_val_macro_f1")]["deployed"]["disagreements"] == 0
    costs = summary["rule_costs"]["max_val_accuracy"]
    # A: 0.83 − 0.77; B: 0.60 − 0.65 (test accuracy at each rule's deployed epoch).
    assert costs["test_accuracy"]["mean"] == pytest.approx(0.005)
    assert costs["test_crossentropy"]["mean"] == pytest.approx(-0.005)
    assert "test_ece" in costs["test_ece"]["missing"]
    assert "not available" in summary["rule_costs"]["min_val_calibrated_nll"]["missing"]
    assert summary["early_stopping"]["early_stopping_val_loss_p5"]["trials"] == 5
    # Keys from before are kept.
    assert {"trial_level", "epoch_level", "study_size", "exclusions"} <= set(summary)


@pytest.mark.parametrize(("flag", "value"), [("--val-size", "0"), ("--val-size", "-5"),
                                           ("--noise-replicates", "1"), ("--noise-replicates", "-3")])
def test_a_bad_count_exits_2_with_one_line_and_writes_nothing(tmp_path, flag, value):
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(_csv(tmp_path, table())), "--epoch-col", "epoch",
                        flag, value, "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and flag in proc.stderr
    assert not out.exists()


def test_without_val_size_or_test_columns_rules_say_what_they_need(tmp_path):
    """One run: no --val-size, no test column, one impossible value in a rule's column."""
    frame = table().assign(val_balanced_accuracy=lambda t: t["val_accuracy"])
    frame.loc[0, "val_balanced_accuracy"] = 1.5  # A, a0, epoch 0
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(_csv(tmp_path, frame)), "--epoch-col", "epoch",
                        "--out", str(out), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    rule = summary["rules"]["accuracy_within_noise_then_loss"]
    assert not rule["available"] and "--val-size" in rule["unavailable_reason"]
    # No test column: every cost says why, none is a number.
    assert "no test_accuracy column" in summary["rule_costs"]["max_val_accuracy"]["test_accuracy"]["missing"]
    markdown = (out / "report.md").read_text()
    assert "Not available from this input:" in markdown and "--val-size" in markdown
    # The impossible balanced accuracy is blanked and listed; the rule still picks in both
    # studies (A's best balanced accuracy, 0.84, is not the blanked row).
    listed = [item for item in summary["exclusions"] if item["what"] == "values of val_balanced_accuracy"]
    assert listed and listed[0]["count"] == 1
    assert summary["rules"]["max_val_balanced_accuracy"]["studies_with_pick"] == 2
