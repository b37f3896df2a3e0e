"""Campaign regimes compared (analysis/regimes.py, `python -m analysis compare`).

Expected values are worked out by hand below, or by an independent brute force over every
k-subset and every relabelling, never by the code under test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from analysis import regimes
from analysis.pool import PoolColumns

ROOT = Path(__file__).resolve().parents[2]


def pool_of(name: str, loss: list[float], accuracy: list[float], epoch: list[float] | None = None,
            test: list[float] | None = None) -> regimes.RegimePool:
    """A pool whose val_crossentropy equals val_loss (no L2) and test accuracy is given."""
    loss_array, accuracy_array = np.array(loss), np.array(accuracy)
    test_array = np.array(test if test is not None else accuracy)
    scores = {"val_loss": loss_array, "val_crossentropy": loss_array, "val_accuracy": accuracy_array}
    # Each rule's test accuracy is the trial's test accuracy (one epoch per trial here).
    test_at = {rule: test_array for rule in scores}
    verdicts = np.array(epoch if epoch is not None else [np.nan] * len(loss), float)
    return regimes.RegimePool(name, PoolColumns(scores, test_at, accuracy_array), verdicts)


def brute_disagree(loss: np.ndarray, accuracy: np.ndarray, k: int) -> float:
    """Share of k-subsets whose minimal-loss trial is not a maximal-accuracy trial (no ties)."""
    subsets = list(combinations(range(len(loss)), k))
    return sum(accuracy[min(s, key=lambda i: loss[i])] < max(accuracy[list(s)]) for s in subsets) / len(subsets)


# Pool "agree": the loss order is the accuracy order, so no subset disagrees.
AGREE = dict(loss=[0.1, 0.2, 0.3], accuracy=[0.9, 0.8, 0.7])
# Pool "split": {T1, T2} and {T1, T3} pick T1 (accuracy 0.5) below the subset's best; {T2, T3}
# picks T2, the best. P(disagree | k = 2) = 2/3. The accuracy pick's test gain over the loss
# pick: {T1,T2}: 0.9 − 0.5, {T1,T3}: 0.7 − 0.5, {T2,T3}: 0 → mean 0.6/3 = 0.2.
SPLIT = dict(loss=[0.1, 0.2, 0.3], accuracy=[0.5, 0.9, 0.7])


def test_statistics_by_hand():
    agree = regimes.statistics(pool_of("a", **AGREE, epoch=[0, 0, 1]), [2])
    split = regimes.statistics(pool_of("b", **SPLIT, epoch=[1, 1, 1]), [2])
    assert agree["disagree_val_loss@2"] == 0.0
    assert split["disagree_val_loss@2"] == pytest.approx(2 / 3)
    assert split["gain_over_val_loss@2"] == pytest.approx(0.2)
    assert split["l2_effect@2"] == 0.0  # val_crossentropy is val_loss here
    assert agree[regimes.EPOCH_RATE] == pytest.approx(1 / 3)
    assert split[regimes.EPOCH_RATE] == 1.0


def test_differences_and_permutation_p_match_a_brute_force():
    first, second = pool_of("ref", **AGREE), pool_of("other", **SPLIT)
    comparison = regimes.compare([first, second], n_boot=20, n_perm=500, seed=1, ks=(2,))
    row = comparison.differences.set_index("statistic").loc["disagree_val_loss@2"]
    assert (row["regime"], row["reference"]) == ("other", "ref")
    assert row["difference"] == pytest.approx(2 / 3)
    # Every relabelling of the six trials into two pools of three, brute-forced.
    loss = np.array(AGREE["loss"] + SPLIT["loss"])
    accuracy = np.array(AGREE["accuracy"] + SPLIT["accuracy"])
    observed = brute_disagree(loss[3:], accuracy[3:], 2) - brute_disagree(loss[:3], accuracy[:3], 2)
    extreme = []
    for chosen in combinations(range(6), 3):
        rest = [i for i in range(6) if i not in chosen]
        difference = brute_disagree(loss[list(chosen)], accuracy[list(chosen)], 2) - brute_disagree(
            loss[rest], accuracy[rest], 2)
        extreme.append(abs(difference) >= abs(observed) - 1e-12)
    exact = float(np.mean(extreme))
    assert 0 < exact < 1
    assert row["p_value"] == pytest.approx(exact, abs=0.07)  # 500 relabellings: SE <= 0.023


def test_intervals_cover_the_point_and_one_pool_has_no_spread():
    constant = pool_of("constant", loss=[0.1] * 4, accuracy=[0.9, 0.9, 0.9, 0.9])
    split = pool_of("split", **SPLIT)
    comparison = regimes.compare([constant, split], n_boot=100, n_perm=0, seed=0, ks=(2,))
    rates = comparison.regimes.set_index(["regime", "statistic"])
    # Four tied trials: every pick is a maximal-accuracy trial, in every resample.
    assert tuple(rates.loc[("constant", "disagree_val_loss@2"), ["value", "lo", "hi"]]) == (0.0, 0.0, 0.0)
    low, value, high = rates.loc[("split", "disagree_val_loss@2"), ["lo", "value", "hi"]]
    assert low <= value <= high and low < high
    assert comparison.differences["p_value"].isna().all()  # no permutations asked for


def test_a_regimes_interval_does_not_depend_on_the_other_regimes():
    """Each regime resamples from its own stream: adding trials to one regime, or giving
    the regimes in another order, leaves the other's interval as it was."""
    # 12 trials with distinct values, so resamples give many different rates
    split = pool_of("split", loss=[0.1 * i for i in range(1, 13)], accuracy=[0.5, 0.9, 0.7, 0.6, 0.8, 0.4] * 2)
    small = pool_of("agree", **AGREE)
    larger = pool_of("agree", loss=AGREE["loss"] * 3, accuracy=AGREE["accuracy"] * 3)

    def interval(pools):
        rates = regimes.compare(pools, n_boot=50, n_perm=0, seed=3, ks=(2,)).regimes.set_index(["regime", "statistic"])
        return tuple(rates.loc[("split", "disagree_val_loss@2"), ["lo", "hi"]])

    first = interval([small, split])
    assert 0 < first[0] < first[1] < 1  # inside (0, 1), so an equality below is not trivial
    assert interval([larger, split]) == first
    assert interval([split, small]) == first


def test_holm_matches_statsmodels():
    p_values = pd.Series([0.01, 0.04, 0.03, np.nan])
    expected = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    assert regimes._holm(p_values).iloc[:3].to_numpy() == pytest.approx(expected)
    assert np.isnan(regimes._holm(p_values).iloc[3])


def test_usable_ks_stop_at_the_smallest_pool():
    small, large = pool_of("s", **SPLIT), pool_of("l", loss=list(np.arange(12.0)), accuracy=list(np.arange(12.0)))
    assert regimes.usable_ks([small, large], (2, 3, 10)) == [2, 3]


def epochs_csv(path: Path, experiment: str, accuracy: list[float]) -> Path:
    """An export-shaped table: two epochs per trial, the second the best in every metric,
    except trial 0, whose loss is lowest at epoch 0 (an epoch-level disagreement)."""
    rows = []
    for trial, best in enumerate(accuracy):
        loss_at = [0.4 + trial / 10, 0.5 + trial / 10] if trial == 0 else [0.5 + trial / 10, 0.4 + trial / 10]
        for epoch in (0, 1):
            rows.append({"study": f"{experiment}-seed0", "trial": trial, "epoch": epoch,
                         "val_loss": loss_at[epoch], "val_crossentropy": loss_at[epoch],
                         "val_accuracy": best - 0.1 * (1 - epoch), "test_accuracy": best - 0.1 * (1 - epoch),
                         "state": "COMPLETE", "experiment": experiment, "git_commit": "abc1234"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_pool_lists_each_studys_trials_in_counting_order(tmp_path):
    """The bootstrap draws trials by position, so a one-study export read as a pool must
    list its trials as a one-study table does (0, 1, 2, ..., 10, 11), not as text sorts
    them (0, 1, 10, 11, 2, ...); a second study's trials follow the first's."""
    from analysis.picks import scored_trials
    from analysis.regimes_report import load_regime
    from analysis.sources import load_table

    accuracy = [0.5 + 0.03 * trial for trial in range(12)]  # distinct: the order is visible
    path = epochs_csv(tmp_path / "a.csv", "campaign-balanced", accuracy)
    pool, _ = load_regime(path)
    assert list(pool.columns.accuracy) == pytest.approx(accuracy)
    second = pd.read_csv(path).query("trial < 3").assign(study="campaign-balanced-seed1")
    pd.concat([pd.read_csv(path), second]).to_csv(tmp_path / "two.csv", index=False)
    pooled = load_table(tmp_path / "two.csv", study_col="study", trial_col="trial", loss_col="val_loss",
                        accuracy_col="val_accuracy", epoch_col="epoch", one_pool=True)
    assert list(scored_trials(pooled, "best")["trial"]) == (
        [f"campaign-balanced-seed0/{trial:02d}" for trial in range(12)]
        + [f"campaign-balanced-seed1/{trial:02d}" for trial in range(3)])


def run_compare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis", "compare", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_compare_command_end_to_end(tmp_path):
    first = epochs_csv(tmp_path / "a.csv", "campaign-balanced", [0.9, 0.8, 0.7, 0.6])
    second = epochs_csv(tmp_path / "b.csv", "campaign-label_noise", [0.6, 0.9, 0.8, 0.7])
    out = tmp_path / "regimes"
    done = run_compare("--csv", str(first), "--csv", str(second), "--out", str(out),
                       "--bootstrap", "50", "--permutations", "50", "--k", "2", "10")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [source["regime"] for source in summary["sources"]] == ["campaign-balanced", "campaign-label_noise"]
    assert summary["ks"] == [2]  # k = 10 is above the 4 trials of each pool
    rates = {(row["regime"], row["statistic"]): row["value"] for row in summary["regimes"]}
    # Best loss per trial: 0.4, 0.5, 0.6, 0.7 (trial 0 at epoch 0, the others at epoch 1).
    # Balanced: best accuracies 0.9 > 0.8 > 0.7 > 0.6 follow the loss order: no pair disagrees.
    # Label noise: trial 0 has the lowest loss and the lowest accuracy (0.6), so the 3 of the
    # 6 pairs holding it disagree; the other 3 pick their best: 0.5.
    assert rates[("campaign-balanced", "disagree_val_loss@2")] == 0.0
    assert rates[("campaign-label_noise", "disagree_val_loss@2")] == pytest.approx(0.5)
    # Epoch level: only trial 0's loss and accuracy epochs differ, in both tables.
    assert rates[("campaign-balanced", regimes.EPOCH_RATE)] == pytest.approx(0.25)
    difference = {row["statistic"]: row for row in summary["differences"]}["disagree_val_loss@2"]
    assert difference["difference"] == pytest.approx(0.5) and 0 < difference["p_value"] <= 1
    assert (out / "report.md").read_text().startswith("# Campaign regimes compared")
    assert (out / "regimes_vs_k.png").stat().st_size > 0
    readme = (out / "README.md").read_text()
    assert "make compare" in readme and "campaign-balanced 4, campaign-label_noise 4" in readme


# Two studies in one export are a pool continued on two stores (analysis/publish.py): not bad input.
@pytest.mark.parametrize("case", ["one csv", "missing file", "negative bootstrap", "k of 1"])
def test_compare_bad_input_exits_2_and_creates_nothing(tmp_path, case):
    good = epochs_csv(tmp_path / "a.csv", "campaign-balanced", [0.9, 0.8, 0.7])
    other = epochs_csv(tmp_path / "b.csv", "campaign-imbalance", [0.9, 0.8, 0.7])
    args = {"one csv": ["--csv", str(good)],
            "missing file": ["--csv", str(good), "--csv", str(tmp_path / "nope.csv")],
            "negative bootstrap": ["--csv", str(good), "--csv", str(other), "--bootstrap", "-1"],
            "k of 1": ["--csv", str(good), "--csv", str(other), "--k", "1"]}[case]
    out = tmp_path / "out"
    done = run_compare(*args, "--out", str(out))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: ")
    assert not out.exists()
