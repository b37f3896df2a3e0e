"""Issue 9 §2 (scale): the vectorised per-study statistics against independent
computations (scipy per study, brute force over subsets), at small sizes."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau, spearmanr

from analysis import ranks, size


def _tied_table(seed: int, studies: int = 60) -> pd.DataFrame:
    """Studies of 1..12 trials on a coarse grid (many ties), some constant, some NaN."""
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(studies):
        n = int(rng.integers(1, 13))
        loss = rng.integers(0, 4, n) / 10.0
        accuracy = rng.integers(0, 4, n) / 10.0
        if number % 7 == 0:
            accuracy[:] = 0.5  # constant accuracy: no ranking
        if number % 5 == 0 and n > 2:
            loss[0] = np.nan   # a missing loss is left out of the study's n
        for trial in range(n):
            rows.append({"experiment": f"e{number % 2}", "study": f"s{number}",
                         "trial": trial, "val_loss": loss[trial], "val_accuracy": accuracy[trial]})
    return pd.DataFrame(rows)


def _scipy_reference(scored: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (experiment, study), g in scored.groupby(["experiment", "study"], sort=False):
        g = g[["val_loss", "val_accuracy"]].dropna()
        tau = rho = math.nan
        if len(g) >= 2 and g["val_loss"].nunique() > 1 and g["val_accuracy"].nunique() > 1:
            tau = kendalltau(-g["val_loss"], g["val_accuracy"], variant="b").statistic
            rho = spearmanr(-g["val_loss"], g["val_accuracy"]).statistic
        rows.append({"experiment": experiment, "study": study, "n": len(g), "tau_b": tau, "rho": rho})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rank_agreement_matches_scipy_per_study_with_ties(seed):
    scored = _tied_table(seed)
    got = ranks.rank_agreement(scored)
    want = _scipy_reference(scored)
    assert list(got.columns) == ["experiment", "study", "n", "tau_b", "rho"]
    assert got[["experiment", "study"]].equals(want[["experiment", "study"]])
    assert got["n"].tolist() == want["n"].tolist()
    for column in ("tau_b", "rho"):
        assert got[column].isna().tolist() == want[column].isna().tolist()
        np.testing.assert_allclose(got[column].dropna(), want[column].dropna(), atol=1e-12)
    assert got["tau_b"].notna().sum() > 20  # the table is not all undefined


def test_kendall_tau_b_of_a_study_larger_than_the_broadcast_limit(monkeypatch):
    """A study beyond the sign table's limit goes to scipy alone; small ones stay vectorised."""
    monkeypatch.setattr(ranks, "BROADCAST_LIMIT", 10)
    rng = np.random.default_rng(3)
    codes = np.repeat([0, 1], [8, 40])
    x, y = rng.integers(0, 5, 48).astype(float), rng.integers(0, 5, 48).astype(float)
    got = ranks.kendall_tau_b(codes, x, y)
    want = [kendalltau(x[codes == g], y[codes == g], variant="b").statistic for g in (0, 1)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def _brute_force_share(loss, accuracy, k):
    """P(disagree) over every k-subset by enumeration, loss rule uniform among its ties."""
    total = 0.0
    subsets = list(combinations(range(len(loss)), k))
    for subset in subsets:
        l, a = loss[list(subset)], accuracy[list(subset)]
        tied = np.flatnonzero(l == l.min())
        total += np.mean(a[tied] != a.max())
    return total / len(subsets)


def test_k_curve_by_group_matches_brute_force_with_ties():
    rng = np.random.default_rng(4)
    groups = np.repeat(["a", "b", "c"], [7, 8, 9])
    loss = rng.integers(0, 3, len(groups)) / 10.0
    accuracy = rng.integers(0, 3, len(groups)) / 10.0
    labels, exact = size.disagreement_at_k_by_group(loss, accuracy, groups, [2, 3, 5, 7])
    for row, label in enumerate(labels):
        member = groups == label
        for col, k in enumerate([2, 3, 5, 7]):
            assert exact.share[row, col] == pytest.approx(
                _brute_force_share(loss[member], accuracy[member], k), abs=1e-12)


def test_k_curve_of_many_groups_sharing_count_tuples_matches_each_group_alone():
    """Groups whose trials share count tuples (computed once) give each group's own curve."""
    rng = np.random.default_rng(5)
    groups = np.repeat(np.arange(40), 9)
    loss, accuracy = rng.integers(0, 4, 360) / 10.0, rng.integers(0, 4, 360) / 10.0
    _, together = size.disagreement_at_k_by_group(loss, accuracy, groups, range(2, 10))
    for g in (0, 17, 39):
        alone = size.disagreement_at_k(loss[groups == g], accuracy[groups == g], range(2, 10))
        for got, want in zip(together[1:], alone[1:]):
            np.testing.assert_allclose(got[g], want, atol=1e-12)


def _pandas_pick(frame, group, order, loss, accuracy):
    """The groupby formulation `pick` had before it was vectorised: an independent reference."""
    d = frame.sort_values([*group, order], kind="stable")
    grouped = d.groupby(group, sort=False)
    at_min = d[loss] == grouped[loss].transform("min")
    at_max = d[accuracy] == grouped[accuracy].transform("max")
    by = [d[g] for g in group]
    first_min = d[at_min].groupby(group, sort=False).head(1)
    first_max = d[at_max].groupby(group, sort=False).head(1)
    out = pd.DataFrame({"n": grouped.size(), "loss_ties": at_min.groupby(by, sort=False).sum(),
                        "accuracy_ties": at_max.groupby(by, sort=False).sum()})
    index = (lambda f: pd.MultiIndex.from_frame(f[group]) if len(group) > 1 else pd.Index(f[group[0]]))
    out["loss_pick"] = pd.Series(first_min.index, index=index(first_min))
    out["first_max"] = pd.Series(first_max.index, index=index(first_max))
    out["agree"] = at_max.loc[out["loss_pick"]].to_numpy()
    both = (at_min & at_max).groupby(by, sort=False).sum()
    out["disagree_share"] = 1.0 - both / out["loss_ties"]
    out["disagree_lenient"] = both == 0
    out["disagree_strict"] = both < out["loss_ties"]
    out["accuracy_pick"] = np.where(out["agree"], out["loss_pick"], out["first_max"])
    return out.drop(columns=["first_max"])


@pytest.mark.parametrize("group", [["study"], ["study", "trial"]])
def test_vectorised_pick_equals_the_groupby_formulation(group):
    from analysis.picks import pick

    rng = np.random.default_rng(6)
    rows = 400
    frame = pd.DataFrame({"study": rng.choice(["b", "a", "c", "d"], rows),
                          "trial": rng.choice(["t1", "t0", "t2"], rows),
                          "epoch": rng.integers(0, 6, rows),
                          "val_loss": rng.integers(0, 4, rows) / 10.0,
                          "val_accuracy": rng.integers(0, 4, rows) / 10.0},
                         index=rng.permutation(1000)[:rows])  # labels, not positions
    got = pick(frame, group, "epoch", "val_loss", "val_accuracy")
    want = _pandas_pick(frame, group, "epoch", "val_loss", "val_accuracy")
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)
    assert (got["loss_ties"] > 1).any() and (~got["agree"]).any()  # ties and disagreement met
