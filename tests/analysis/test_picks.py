"""Pick and tie rules on hand-made tables with known answers."""

from __future__ import annotations

import math

import pytest

from analysis.errors import AnalysisInputError
from analysis.picks import epoch_picks, score_trials, scored_trials, trial_picks
from analysis.sources import load_table
from analysis.summary import analyse
from tests.analysis.tables import epoch_table, trial_table


def _load(tmp_path, frame, **kw):
    path = tmp_path / "trials.csv"
    frame.to_csv(path, index=False)
    cols = dict(study_col="study", trial_col="trial", loss_col="val_loss",
                accuracy_col="val_accuracy", test_accuracy_col="test_accuracy")
    cols.update(kw)
    return load_table(path, **cols)


def test_trial_level_known_answers(tmp_path):
    ds = _load(tmp_path, trial_table(), state_col="state")
    picks = trial_picks(scored_trials(ds, "best")).set_index("study")
    assert sorted(picks.index) == ["A", "B", "C", "D", "E"]
    assert picks["disagree"].to_dict() == {"A": False, "B": True, "C": False, "D": True, "E": False}
    assert picks.loc["C", "loss_pick"] == "t0" and picks.loc["D", "loss_pick"] == "t0"
    assert picks.loc["E", "accuracy_pick"] == "t1"  # agreeing: the accuracy pick is the loss pick
    assert picks.loc["B", "gain"] == pytest.approx(0.06)
    assert picks.loc["D", "gain"] == pytest.approx(0.10)
    assert picks.loc["A", "gain"] == 0.0


def test_summary_counts_ties_and_exclusions(tmp_path):
    ds = _load(tmp_path, trial_table(), state_col="state")
    s = analyse(ds, n_boot=200).summary
    t = s["trial_level"]
    # D's loss rule ties t0 (not at max accuracy) and t1 (at it): D counts 1/2.
    assert (t["studies"], t["disagreements"], t["rate"]) == (5, 1.5, 0.3)
    assert (t["rate_lenient"], t["rate_strict"]) == (0.2, 0.4)
    assert t["accuracy_tie_studies"] == 2  # C and E
    assert t["loss_tie_studies"] == 2      # C and D
    gain = t["test_accuracy_gain_of_accuracy_pick"]
    assert gain["mean"] == pytest.approx(0.16 / 5)
    assert gain["mean_when_disagree"] == pytest.approx(0.08)
    why = {x["why"]: x["count"] for x in s["exclusions"]}
    assert why["trial state FAIL"] == 1
    assert why["trial state PRUNED (use --include-pruned to count them)"] == 1
    assert why["single-trial study (nothing to compare)"] == 1
    assert why["non-numeric or NaN val_loss, val_accuracy"] == 2
    assert "epoch_level" not in s  # per-trial rows have no epoch level


def test_include_pruned_changes_the_pick(tmp_path):
    ds = _load(tmp_path, trial_table(), state_col="state", include_pruned=True)
    picks = trial_picks(scored_trials(ds, "best")).set_index("study")
    assert picks.loc["A", "loss_pick"] == "tp" and picks.loc["A", "disagree"]


def test_one_study_says_it_needs_replicates(tmp_path):
    one = trial_table().query("study == 'B'")
    s = analyse(_load(tmp_path, one), n_boot=200).summary
    assert s["trial_level"]["rate"] == 1.0
    assert all(math.isnan(v) for v in s["trial_level"]["ci95_bootstrap"])
    assert any("needs replicates" in n for n in s["notes"])


def test_many_studies_have_a_bootstrap_interval(tmp_path):
    s = analyse(_load(tmp_path, trial_table()), n_boot=500).summary
    lo, hi = s["trial_level"]["ci95_bootstrap"]
    assert 0 <= lo <= s["trial_level"]["rate"] <= hi <= 1
    assert not any("needs replicates" in n for n in s["notes"])


def test_empty_after_exclusions_is_bad_input(tmp_path):
    only_single = trial_table().query("study == 'F'")
    with pytest.raises(AnalysisInputError):
        analyse(_load(tmp_path, only_single))


def test_epoch_picks_and_scores(tmp_path):
    ds = _load(tmp_path, epoch_table(), epoch_col="epoch")
    scored = scored_trials(ds, "best").set_index("trial")
    assert scored.loc["x0", "val_loss"] == 0.5 and scored.loc["x0", "val_loss_epoch"] == 1
    assert scored.loc["x0", "val_accuracy"] == 0.8 and scored.loc["x0", "val_accuracy_epoch"] == 2
    ep = epoch_picks(ds.epochs, scored.reset_index()).set_index("trial")
    assert ep["disagree"].to_dict() == {"x0": True, "x1": False, "y0": True, "y1": False}
    assert ep.loc["x0", "epoch_gap"] == 1 and ep.loc["x1", "epoch_gap"] == 0
    assert ep.loc["x0", "gain"] == pytest.approx(0.75 - 0.6)
    assert ep.loc["x0", "loss_position"] == pytest.approx(2 / 4)


def test_final_scoring_uses_the_last_epoch(tmp_path):
    ds = _load(tmp_path, epoch_table(), epoch_col="epoch")
    final = score_trials(ds.epochs, "final").set_index("trial")
    assert final.loc["x1", "val_loss"] == 0.7 and final.loc["x1", "val_accuracy_epoch"] == 3
    s = analyse(ds, scoring="final", n_boot=100).summary
    # Final: S1 x0 (0.7, 0.8) vs x1 (0.7, 0.7) -> loss tie, x0 at max acc, x1 not: 1/2.
    # S2 y0 (0.9, 0.7) vs y1 (0.5, 0.8) -> agree. Best scoring: S1 x1 min loss 0.4 acc 0.8
    # ties x0 0.8 -> agree; S2 y1 0.3 vs y0 acc 0.9 -> disagree.
    assert s["trial_level"]["disagreements"] == 0.5
    assert analyse(ds, scoring="best", n_boot=100).summary["trial_level"]["disagreements"] == 1


def test_accuracy_score_survives_a_missing_crossentropy() -> None:
    """A trial without val_crossentropy (an older store) keeps its val_accuracy score."""
    import pandas as pd

    epochs = pd.DataFrame({
        "study": ["S"] * 4, "trial": [0, 0, 1, 1], "epoch": [0, 1, 0, 1],
        "val_loss": [0.6, 0.5, 0.7, 0.4], "val_accuracy": [0.7, 0.8, 0.75, 0.85],
        "val_crossentropy": [0.55, 0.45, float("nan"), float("nan")]})
    scored = score_trials(epochs, "best").set_index("trial")
    assert scored.loc[1, "val_accuracy"] == 0.85 and scored.loc[1, "val_accuracy_epoch"] == 1
    assert scored.loc[1, "val_loss"] == 0.4
    assert math.isnan(scored.loc[1, "val_crossentropy"])
    assert scored.loc[0, "val_crossentropy"] == 0.45


def _scored_by_hand(epochs, metric: str, scoring: str, best_is_max: bool) -> dict:
    """Per (study, trial): (score, epoch, test accuracy there), by a plain loop over each
    trial's rows in epoch order: the first epoch at the optimum, or the last with a value."""
    out = {}
    for key, rows in epochs.groupby(["study", "trial"]):
        rows = rows.sort_values("epoch", kind="stable")
        rows = rows[rows[metric].notna()]
        if rows.empty:
            continue
        if scoring == "final":
            row = rows.iloc[-1]
        else:
            target = rows[metric].max() if best_is_max else rows[metric].min()
            row = rows[rows[metric] == target].iloc[0]
        out[key] = (row[metric], row["epoch"], row["test_accuracy"])
    return out


@pytest.mark.parametrize("scoring", ["best", "final"])
def test_score_trials_on_shuffled_rows_with_ties_and_gaps(scoring) -> None:
    """Rows out of order, study names whose text order is not their number order ("10"
    before "9"), ties and missing values: each trial is scored at the row a per-trial loop
    finds, and trials come in (study, trial) text order."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(3)
    keys = [(s, t) for s in ("9", "10", "2") for t in ("b", "a", "c")]
    epochs = pd.DataFrame([(s, t, e) for s, t in keys for e in range(6)],
                          columns=["study", "trial", "epoch"])
    n = len(epochs)
    epochs["val_loss"] = rng.integers(0, 3, n) / 4  # few values: ties within a trial
    epochs["val_accuracy"] = rng.integers(0, 3, n) / 4
    epochs["test_accuracy"] = rng.integers(0, 100, n) / 100
    epochs.loc[rng.random(n) < 0.2, "val_loss"] = np.nan
    epochs.loc[(epochs["study"] == "2") & (epochs["trial"] == "c"), "val_accuracy"] = np.nan
    epochs = epochs.sample(frac=1, random_state=5).reset_index(drop=True)

    scored = score_trials(epochs, scoring)
    assert list(zip(scored["study"], scored["trial"])) == sorted(keys)
    assert scored["epochs_trained"].tolist() == [6] * len(keys)
    for metric, best_is_max in (("val_loss", False), ("val_accuracy", True)):
        expected = _scored_by_hand(epochs, metric, scoring, best_is_max)
        for row in scored.itertuples(index=False):
            got = row._asdict()
            want = expected.get((row.study, row.trial))
            if want is None:  # no value of the metric in any epoch: no score
                assert math.isnan(got[metric]) and math.isnan(got[f"{metric}_epoch"])
                continue
            assert (got[metric], got[f"{metric}_epoch"], got[f"test_accuracy_at_{metric}"]) == want


def test_budget_windows_are_exactly_their_share_of_the_budget() -> None:
    """Epoch e spans [e, e + 1); the first 10% / last 25% windows count the overlap."""
    import pandas as pd

    from analysis.summary import budget_windows

    epochs = pd.Series([0, 1, 3, 4, 7, 8, 9, 0, 4, 5])
    budgets = pd.Series([5, 5, 5, 5, 10, 10, 10, 6, 6, 6])
    early, late = budget_windows(epochs, budgets)
    # First 10% of 5 epochs is [0, 0.5): half of epoch 0; of 10 epochs, [0, 1); of 6, [0, 0.6).
    assert early.tolist() == pytest.approx([0.5, 0, 0, 0, 0, 0, 0, 0.6, 0, 0])
    # Last 25% of 5 is [3.75, 5): a quarter of epoch 3 and epoch 4; of 10, [7.5, 10); of 6, [4.5, 6).
    assert late.tolist() == pytest.approx([0, 0, 0.25, 1, 0.5, 1, 1, 0, 0.5, 1])
