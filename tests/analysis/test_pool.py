"""analysis/pool.py against brute force: every k-subset of a small pool enumerated with
itertools, the picks made by hand (ties shared out uniformly)."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
import pytest

from analysis.pool import CI_KS, pick_probabilities, point_estimates, pool_columns, pool_summary, pool_table

RULES = ("val_loss", "val_crossentropy", "val_accuracy")


def tied_pool(n: int, seed: int) -> pd.DataFrame:
    """Coarse values, so that ties at the best score are common."""
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({"val_loss": rng.integers(0, 4, n) / 4, "val_crossentropy": rng.integers(0, 4, n) / 4,
                          "val_accuracy": rng.integers(0, 3, n) / 3})
    for rule in RULES:
        table[f"test_accuracy_at_{rule}"] = rng.random(n).round(2)
    return table


def brute_force(table: pd.DataFrame, k: int) -> dict[str, float]:
    """Mean over every k-subset of: does the loss pick (uniform over tied minima) miss the
    subset's maximal accuracy; the test accuracy of each rule's pick (uniform over ties)."""
    sums = dict.fromkeys(["disagree_val_loss", "disagree_val_crossentropy", *(f"test_{r}" for r in RULES)], 0.0)
    subsets = list(combinations(range(len(table)), k))
    for subset in subsets:
        rows = table.iloc[list(subset)]
        top_accuracy = rows["val_accuracy"].max()
        for rule in RULES:
            best = rows[rule].max() if rule == "val_accuracy" else rows[rule].min()
            picked = rows[rows[rule] == best]
            sums[f"test_{rule}"] += picked[f"test_accuracy_at_{rule}"].mean()
            if rule != "val_accuracy":
                sums[f"disagree_{rule}"] += (picked["val_accuracy"] < top_accuracy).mean()
    return {name: total / len(subsets) for name, total in sums.items()}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_statistic_equals_the_mean_over_all_subsets(seed: int) -> None:
    table = tied_pool(9, seed)
    ks = np.array([2, 3, 5, 8, 9])
    exact = point_estimates(pool_columns(table), ks)
    for position, k in enumerate(ks):
        expected = brute_force(table, int(k))
        for name, value in expected.items():
            assert exact[name][position] == pytest.approx(value, abs=1e-12), (name, k)
        assert exact["l2_effect"][position] == pytest.approx(
            expected["disagree_val_loss"] - expected["disagree_val_crossentropy"], abs=1e-12)
        assert exact["gain_over_val_loss"][position] == pytest.approx(
            expected["test_val_accuracy"] - expected["test_val_loss"], abs=1e-12)


def test_pick_probabilities_by_hand() -> None:
    # scores 3, 1, 3, 2 (higher is better), k = 2: of the 6 pairs, the tied 3s are picked
    # in {0,1}, {0,3}, half of {0,2}: 2.5/6 each; trial 3 in {1,3}: 1/6; trial 1 never.
    chance = pick_probabilities(np.array([3.0, 1.0, 3.0, 2.0]), np.array([2, 4]), True)
    assert chance[:, 0] == pytest.approx([2.5 / 6, 0, 2.5 / 6, 1 / 6])
    assert chance[:, 1] == pytest.approx([0.5, 0, 0.5, 0])  # k = n: the tie splits
    lower = pick_probabilities(np.array([3.0, 1.0, 3.0, 2.0]), np.array([2]), False)
    assert lower[:, 0] == pytest.approx([0.5 / 6, 3 / 6, 0.5 / 6, 2 / 6])


def test_trials_missing_a_score_leave_the_pool_and_intervals_exist_only_at_ci_ks() -> None:
    table = tied_pool(12, 3)
    table.loc[4, "val_crossentropy"] = np.nan
    result = pool_table(table, n_boot=50, seed=0)
    assert result["trials"].eq(11).all() and result["k"].tolist() == list(range(2, 12))
    with_ci = result.loc[result["disagree_val_loss_lo"].notna(), "k"].tolist()
    assert with_ci == [k for k in CI_KS if k <= 11]
    assert (result["disagree_val_loss_lo"] <= result["disagree_val_loss"] + 1e-12).where(
        result["disagree_val_loss_lo"].notna(), True).all()
    block = pool_summary(result, 50)
    assert block["trials"] == 11 and set(block["at_k"]) == {"10"}
    assert block["at_k"]["10"]["disagree_val_loss"] == result.loc[result["k"] == 10, "disagree_val_loss"].item()


def pool_report_answer(pool: pd.DataFrame, tmp_path) -> str:
    """The **Answer** line of `analysis report --one-pool` on one epoch per trial."""
    from tests.analysis.conftest import run_analysis

    rng = np.random.default_rng(0)
    table = pool[["val_loss", "val_crossentropy", "val_accuracy"]].assign(
        study="campaign-seed0", trial=range(len(pool)), epoch=1, test_accuracy=rng.random(len(pool)).round(3))
    path, out = tmp_path / "epochs.csv", tmp_path / "report"
    table.to_csv(path, index=False)
    proc = run_analysis("report", "--csv", str(path), "--epoch-col", "epoch", "--test-accuracy-col", "test_accuracy",
                        "--crossentropy-col", "val_crossentropy", "--one-pool", "--bootstrap", "50", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("**Answer.**"))


def test_a_one_pool_report_answers_with_the_pool_rates_not_one_study(tmp_path) -> None:
    """A campaign's report leads with P(disagree | k) of its pool, worked out here over every
    10-subset, and says the whole pool is one study, instead of "0 of 1 studies"."""
    rng = np.random.default_rng(7)
    n = 12
    pool = pd.DataFrame({"val_loss": rng.permutation(n) / n + 0.5, "val_crossentropy": rng.permutation(n) / n + 0.4,
                         "val_accuracy": rng.permutation(n) / 100 + 0.6})
    for rule in RULES:
        pool[f"test_accuracy_at_{rule}"] = 0.5  # one epoch: every rule's pick is scored on the same row
    expected = brute_force(pool, 10)["disagree_val_loss"]
    whole_pool_disagrees = brute_force(pool, n)["disagree_val_loss"] == 1.0
    answer = pool_report_answer(pool, tmp_path)
    assert f"for a study of 10 trials, {100 * expected:.1f}% [" in answer, (expected, answer)
    assert "one study of 12 trials" in answer and " of 1 studies" not in answer
    assert ("its loss pick is not among" in answer) == whole_pool_disagrees


def test_a_whole_pool_tied_at_minimal_loss_reports_the_share_not_a_verdict(tmp_path) -> None:
    """Trials 0 and 1 tie at minimal val_loss; only trial 0 has the maximal accuracy, so half
    the tie falls on a trial outside the accuracy picks: neither "is" nor "is not"."""
    n = 12
    pool = pd.DataFrame({"val_loss": [0.1, 0.1, *np.linspace(0.2, 0.9, n - 2)],
                         "val_crossentropy": np.linspace(0.1, 0.9, n),
                         "val_accuracy": [0.9, 0.5, *np.linspace(0.6, 0.8, n - 2)]})
    assert brute_force(pool.assign(**{f"test_accuracy_at_{r}": 0.5 for r in RULES}), n)["disagree_val_loss"] == 0.5
    answer = pool_report_answer(pool, tmp_path)
    assert "picks one not among its trials of maximal accuracy with probability 50.0%" in answer, answer
    assert "its loss pick is not among" not in answer and "its loss pick is among" not in answer
    assert "their rates are that probability (0.5 of 1 study)" in answer and "0 or 1" not in answer
