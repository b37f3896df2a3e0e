"""Unit tests of the pure functions behind the analysis edges, against hand-worked answers
or brute-force enumeration with itertools (never the code under test)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis import checks, size
from analysis.explain import logistic
from analysis.intervals import bootstrap_gap, bootstrap_mean, min_clusters
from analysis.picks import pick, trial_picks
from analysis.plotdata import rates_table


def test_blank_ids() -> None:
    ids = pd.Series(["a", None, "", "  ", float("nan"), 0, "b "])
    assert checks.blank_ids(ids).tolist() == [False, True, True, True, True, False, False]


def test_impossible_values_and_percent() -> None:
    acc = pd.Series([0.0, 1.0, 1.5, -0.1, np.nan, 0.5])
    assert checks.impossible_accuracy(acc).tolist() == [False, False, True, True, False, False]
    loss = pd.Series([0.0, 2.3, -0.01, -np.inf, np.inf, np.nan])
    assert checks.impossible_loss(loss).tolist() == [False, False, True, True, True, False]
    assert checks.looks_like_percent(pd.Series([78.0, 91.5, 88.0, 0.0]))
    assert not checks.looks_like_percent(pd.Series([0.78, 0.9, 1.5]))  # one stray value
    assert not checks.looks_like_percent(pd.Series([0.78, 0.9]))
    assert not checks.looks_like_percent(pd.Series([80.0, 150.0]))  # not percent either
    epochs = pd.Series([0, 1.0, 1.7, -1, np.nan])
    assert checks.not_whole_epochs(epochs).tolist() == [False, False, True, True, False]


def test_tie_share_and_bounds() -> None:
    """Per study: L = trials at minimal loss, A = trials at maximal accuracy.
    S1: L = {a, b}, A = {b}: share 1/2, lenient agrees, strict disagrees.
    S2: L = {a, b}, A = {a, b, c}: share 0, both bounds agree.
    S3: L = {a}, A = {b}: share 1, both disagree."""
    frame = pd.DataFrame({
        "study": ["S1"] * 3 + ["S2"] * 3 + ["S3"] * 2,
        "order": [0, 1, 2, 0, 1, 2, 0, 1],
        "loss": [0.3, 0.3, 0.5, 0.2, 0.2, 0.4, 0.1, 0.2],
        "acc": [0.8, 0.9, 0.85, 0.9, 0.9, 0.9, 0.7, 0.8]})
    p = pick(frame, ["study"], "order", "loss", "acc")
    assert p["disagree_share"].tolist() == [0.5, 0.0, 1.0]
    assert p["disagree_lenient"].tolist() == [False, False, True]
    assert p["disagree_strict"].tolist() == [True, False, True]
    reversed_rows = pick(frame.assign(order=-frame["order"]), ["study"], "order", "loss", "acc")
    assert reversed_rows["disagree_share"].tolist() == [0.5, 0.0, 1.0]


def test_gain_is_regret_of_loss_pick_minus_regret_of_accuracy_pick() -> None:
    rng = np.random.default_rng(3)
    n = 60
    scored = pd.DataFrame({
        "experiment": "x", "study": np.repeat([f"s{i}" for i in range(12)], 5),
        "trial": [str(i) for i in range(n)], "order": np.arange(n),
        "val_loss": rng.integers(0, 4, n) / 10, "val_accuracy": rng.integers(0, 4, n) / 10,
        "val_loss_epoch": rng.integers(0, 5, n), "val_accuracy_epoch": rng.integers(0, 5, n),
        "test_accuracy_at_val_loss": rng.random(n), "test_accuracy_at_val_accuracy": rng.random(n)})
    picks = trial_picks(scored)
    assert np.allclose(picks["gain"], picks["regret_loss_pick"] - picks["regret_accuracy_pick"])
    same_trial = picks[picks["loss_pick"] == picks["accuracy_pick"]]
    assert (same_trial["gain"] != 0).any()  # the same trial at different epochs is not 0


def _brute(loss, acc, k):
    """Average over all k-subsets, by enumeration: (share, lenient, strict)."""
    totals, count = np.zeros(3), 0
    for subset in itertools.combinations(range(len(loss)), k):
        lowest = min(loss[i] for i in subset)
        best = max(acc[i] for i in subset)
        tied = [i for i in subset if loss[i] == lowest]
        at_best = sum(acc[i] == best for i in tied)
        totals += [1 - at_best / len(tied), at_best == 0, at_best < len(tied)]
        count += 1
    return totals / count


@pytest.mark.parametrize("limit", [size.BROADCAST_LIMIT, 0])  # broadcast and Fenwick paths
def test_exact_k_curve_matches_enumeration(monkeypatch, limit) -> None:
    monkeypatch.setattr(size, "BROADCAST_LIMIT", limit)
    rng = np.random.default_rng(7)
    for _ in range(150):
        n = int(rng.integers(2, 10))
        # Few distinct values, so ties in loss and accuracy are common.
        loss = rng.integers(0, 4, n).astype(float)
        acc = rng.integers(0, 4, n) / 4
        ks = list(range(2, n + 1))
        exact = size.disagreement_at_k(loss, acc, ks)
        for i, k in enumerate(ks):
            assert [exact.share[i], exact.lenient[i], exact.strict[i]] == pytest.approx(
                _brute(loss, acc, k), abs=1e-9)


def test_exact_k_curve_by_hand() -> None:
    """Losses 1..4, accuracies .1 .4 .3 .2: k=2 → 3/6, k=3 → 3/4, k=4 → 1."""
    exact = size.disagreement_at_k([1, 2, 3, 4], [.1, .4, .3, .2], [2, 3, 4])
    assert exact.share.tolist() == pytest.approx([0.5, 0.75, 1.0])
    with pytest.raises(ValueError):
        size.disagreement_at_k([1, 2], [.1, .2], [3])


def test_k_curve_set_is_fixed() -> None:
    """10 two-trial studies that always disagree and 10 ten-trial studies that never do:
    the old curve fell from 50% to 0% as the two-trial studies dropped out. With one
    fixed set (K = 2: only half the studies reach more) the curve is the single point 1/2."""
    rows = []
    for s in range(10):
        rows += [(f"two{s}", "a", 0.1, 0.5), (f"two{s}", "b", 0.2, 0.9)]
        rows += [(f"ten{s}", str(i), 0.1 * i, 0.9 - 0.05 * i) for i in range(10)]
    scored = pd.DataFrame(rows, columns=["study", "trial", "val_loss", "val_accuracy"])
    curve = size.disagreement_vs_k(scored, n_boot=200)
    assert curve["k"].tolist() == [2] and curve["rate"].tolist() == [0.5]
    assert curve["studies"].tolist() == [20] and curve["left_out"].tolist() == [0]
    assert curve["lo"].iloc[0] < 0.5 < curve["hi"].iloc[0]
    assert size.curve_studies(pd.Series([4, 4, 4, 4, 2])) == 4
    assert size.curve_studies(pd.Series([10] * 10 + [2] * 10)) == 2


def test_pooled_estimator() -> None:
    rng = np.random.default_rng(0)
    loss, acc = rng.random(40), rng.random(40)
    pooled = size.pooled_disagreement(loss, acc, [2, 5, 10], n_boot=100, seed=1)
    exact = size.disagreement_at_k(loss, acc, [2, 5, 10])
    assert pooled["rate"].tolist() == pytest.approx(exact.share.tolist())
    assert (pooled["lo"] <= pooled["rate"]).all() and (pooled["rate"] <= pooled["hi"]).all()
    # k = 2 by hand: a pair disagrees when its lower-loss trial has the lower accuracy.
    pairs = [(i, j) for i, j in itertools.combinations(range(40), 2)]
    by_hand = np.mean([(acc[i] < acc[j]) == (loss[i] < loss[j]) for i, j in pairs])
    assert pooled["rate"].iloc[0] == pytest.approx(by_hand)
    agree = size.pooled_disagreement(np.arange(10.0), -np.arange(10.0), [3], n_boot=50)
    assert agree[["rate", "lo", "hi"]].iloc[0].tolist() == [0, 0, 0]


def test_bootstrap_gives_no_interval_where_it_cannot() -> None:
    # n·n^-n: 3 studies → 3/27 ≈ 11% of resamples repeat one study; 4 → 4/256 ≈ 1.6% < 2.5%.
    assert min_clusters(0.95) == 4
    assert "3 studies, fewer than 4" in bootstrap_gap([0, 1, 1])
    assert all(math.isnan(v) for v in bootstrap_mean([0, 1, 1]))
    assert "same value (1)" in bootstrap_gap([1, 1, 1, 1, 1])
    assert all(math.isnan(v) for v in bootstrap_mean([1, 1, 1, 1, 1]))
    assert bootstrap_gap([0, 1, 1, 0]) is None
    lo, hi = bootstrap_mean([0, 1, 1, 0], n_boot=500)
    assert 0 <= lo < 0.5 < hi <= 1
    # Clusters: 6 trials in 2 studies is 2 clusters, not 6 units.
    assert "2 studies" in bootstrap_gap([0, 1, 0, 1, 1, 0], ["a", "a", "a", "b", "b", "b"])


def _units(n_units, n_clusters, events, seed=0):
    rng = np.random.default_rng(seed)
    outcome = np.zeros(n_units, bool)
    outcome[rng.choice(n_units, events, replace=False)] = True
    return pd.DataFrame({"disagree": outcome, "study": rng.integers(0, n_clusters, n_units),
                         "x": rng.normal(size=n_units)})


def test_logistic_needs_events_and_clusters() -> None:
    few_events = logistic(_units(300, 40, 9), ["x"])
    assert "too few events" in few_events["error"] and "terms" not in few_events
    few_clusters = logistic(_units(300, 12, 60), ["x"])
    assert "too few studies" in few_clusters["error"] and "12 clusters" in few_clusters["error"]
    fit = logistic(_units(300, 40, 60), ["x"])
    assert "terms" in fit and fit["standard_errors"] == "clustered by study"
    assert fit["clusters"] == 40


def test_rates_table_uses_the_cluster_bootstrap_at_epoch_level() -> None:
    summary = {"trial_level": {"rate": 0.5, "ci95_wilson": [0.2, 0.8], "ci95_bootstrap": [0.3, 0.7],
                               "studies": 10},
               "epoch_level": {"rate": 0.4, "ci95_wilson": [0.35, 0.45],
                               "ci95_bootstrap": [0.1, 0.7], "trials": 100},
               "by_experiment": {}}
    table = rates_table(summary).set_index("level")
    assert table.loc["trial level", ["lo", "hi"]].tolist() == [0.2, 0.8]
    assert table.loc["epoch level", ["lo", "hi"]].tolist() == [0.1, 0.7]
    summary["epoch_level"]["ci95_bootstrap"] = [None, None]
    assert rates_table(summary).set_index("level").loc["epoch level", ["lo", "hi"]].isna().all()


def test_by_group_matches_one_pool_at_a_time() -> None:
    rng = np.random.default_rng(11)
    sizes = rng.integers(4, 9, 30)
    groups = np.repeat([f"g{i:02d}" for i in range(30)], sizes)
    rng.shuffle(groups)  # groups need not be contiguous
    loss = rng.integers(0, 5, len(groups)).astype(float)
    acc = rng.integers(0, 5, len(groups)) / 5
    labels, together = size.disagreement_at_k_by_group(loss, acc, groups, [2, 3, 4])
    for row, label in enumerate(labels):
        mine = groups == label
        for i, k in enumerate([2, 3, 4]):
            assert [together.share[row, i], together.lenient[row, i], together.strict[row, i]] == \
                pytest.approx(_brute(loss[mine], acc[mine], k), abs=1e-9)


def test_bootstrap_columns_equal_one_column_at_a_time() -> None:
    from analysis.intervals import bootstrap_columns

    rng = np.random.default_rng(5)
    matrix = np.column_stack([rng.random(30), np.zeros(30), (rng.random(30) > 0.5).astype(float)])
    lo, hi = bootstrap_columns(matrix, n_boot=300, seed=2)
    for i in range(3):
        one = bootstrap_mean(matrix[:, i], n_boot=300, seed=2)
        assert [lo[i], hi[i]] == pytest.approx(list(one), nan_ok=True)
    assert np.isnan(lo[1]) and np.isnan(hi[1])  # a column of zeros has no interval
