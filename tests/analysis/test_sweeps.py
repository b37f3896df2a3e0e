"""Paired sweeps (issue 11): a hand-made sweep table whose every pick is known.

Each trial's curve is one of three four-epoch templates, so its picks are known by
construction:

- A (agree): val_loss and val_crossentropy fall to epoch 3, val_accuracy rises to epoch 3:
  every rule picks epoch 3.
- T (agree through the tie rule): as A, but val_accuracy is tied at epochs 1 and 3; the loss
  epoch 3 is among the tied maxima, so the trial agrees and its accuracy pick *is* epoch 3
  (the first maximum, epoch 1, would make it disagree by 2 epochs).
- D (disagree): val_loss is minimal at epoch 1, val_crossentropy at epoch 2, val_accuracy
  maximal at epoch 3.

T behaves as A in every outcome. Per trial, a constant is added to its losses and one to its
accuracies (the same at every epoch, so the epoch picks do not move) to give each arm's pool
of trials a known order for the trial-level P(disagree | k).

Expected values are worked out here: a D arm against an A reference changes, per pair,
(rule min val_loss) the verdict by +1, the gap by +2 epochs, the ECE at the loss pick by
0.05 − 0.12, the test accuracy cost by 0.68 − 0.79 and the test NLL cost by 0.55 − 0.60;
(rule min val_crossentropy) +1, +1, 0.08 − 0.12, 0.77 − 0.79 and 0.52 − 0.60. Intervals of a
mean of values that are 0 or one constant c are c/n times binomial quantiles (scipy).
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom
from statsmodels.stats.contingency_tables import mcnemar

from analysis import plotdata, sweeps
from analysis.errors import AnalysisInputError
from study.contract import (ARM_REFERENCE, ARM_REPLICATE, ARM_TREATMENT, SUMMARY_JSON, SWEEP_ARM, SWEEP_COLUMNS,
                            SWEEP_FACTOR, SWEEP_LEVEL, SWEEP_PAIR)
from tests.analysis.conftest import run_analysis

VAL_ECE = [0.10, 0.05, 0.08, 0.12]
TEST_ACCURACY = [0.50, 0.68, 0.77, 0.79]
TEST_NLL = [1.00, 0.55, 0.52, 0.60]
TEMPLATES = {  # val_loss, val_crossentropy, val_accuracy
    "A": ([1.0, 0.7, 0.6, 0.5], [0.95, 0.65, 0.55, 0.45], [0.5, 0.7, 0.75, 0.8]),
    "T": ([1.0, 0.7, 0.6, 0.5], [0.95, 0.65, 0.55, 0.45], [0.5, 0.8, 0.75, 0.8]),
    "D": ([1.0, 0.5, 0.6, 0.7], [0.95, 0.55, 0.45, 0.65], [0.5, 0.7, 0.75, 0.8]),
}
# Per pair difference of a D arm against an A reference: rule -> outcome -> value.
D_MINUS_A = {"val_loss": {"epoch_disagree": 1, "epoch_gap": 2, "val_ece_loss_pick": 0.05 - 0.12,
                          "val_ece_accuracy_pick": 0.0, "test_accuracy_cost": 0.68 - 0.79,
                          "test_nll_cost": 0.55 - 0.60},
             "val_crossentropy": {"epoch_disagree": 1, "epoch_gap": 1, "val_ece_loss_pick": 0.08 - 0.12,
                                  "val_ece_accuracy_pick": 0.0, "test_accuracy_cost": 0.77 - 0.79,
                                  "test_nll_cost": 0.52 - 0.60}}
L2_PAIRS, NOISE_PAIRS = 12, 4
FACTOR, LEVEL, PAIR, ARM = (SWEEP_COLUMNS[p] for p in (SWEEP_FACTOR, SWEEP_LEVEL, SWEEP_PAIR, SWEEP_ARM))


def _l2_arms() -> list[tuple[str, str, list[str], list[float], list[float]]]:
    """(arm, level, template per pair, loss offset per pair, accuracy offset per pair)."""
    pairs = range(L2_PAIRS)
    reference = ["D" if p == 0 else ("T" if p % 2 else "A") for p in pairs]
    return [
        (ARM_REFERENCE, "0", reference, [0.01 * p for p in pairs], [0.01 * (5 * p % 12) for p in pairs]),
        # the A/A control: pair 1 disagrees; its pool has loss ties (p // 2)
        (ARM_REPLICATE, "0", ["D" if p <= 1 else t for p, t in zip(pairs, reference)],
         [0.01 * (p // 2) for p in pairs], [0.01 * (5 * p % 12) for p in pairs]),
        (ARM_TREATMENT, "1e-4", reference, [0.01 * p for p in pairs], [0.01 * (7 * p % 12) for p in pairs]),
        (ARM_TREATMENT, "1e-3", ["D" if p <= 4 else t for p, t in zip(pairs, reference)],
         [0.01 * p for p in pairs], [0.01 * (11 - p) for p in pairs]),
        # every pair disagrees; its pool has accuracy ties (p // 2)
        (ARM_TREATMENT, "1e-2", ["D"] * L2_PAIRS, [0.01 * p for p in pairs], [0.01 * (p // 2) for p in pairs]),
    ]


def _noise_arms():
    pairs = range(NOISE_PAIRS)
    flat = [0.0] * NOISE_PAIRS
    return [(ARM_REFERENCE, "0", ["T"] * NOISE_PAIRS, [0.01 * p for p in pairs], flat),
            (ARM_REPLICATE, "0", ["T"] * NOISE_PAIRS, [0.01 * p for p in pairs], flat),
            (ARM_TREATMENT, "0.2", ["D", "D", "D", "A"], [0.01 * p for p in pairs], flat)]


def sweep_table() -> pd.DataFrame:
    """The sweep as `analysis export` writes it: one row per trial and epoch, then the arms."""
    rows = []
    for factor, study, arms in (("l2", "sweep-l2", _l2_arms()), ("data.label_noise", "sweep-noise", _noise_arms())):
        trial = 0
        for arm, level, templates, loss_offsets, accuracy_offsets in arms:
            for pair, (template, lo, ao) in enumerate(zip(templates, loss_offsets, accuracy_offsets)):
                loss, xent, accuracy = TEMPLATES[template]
                for epoch in range(4):
                    rows.append({"study": study, "trial": trial, "epoch": epoch, "val_loss": loss[epoch] + lo,
                                 "val_crossentropy": xent[epoch] + lo, "val_accuracy": accuracy[epoch] + ao,
                                 "test_accuracy": TEST_ACCURACY[epoch], "val_ece": VAL_ECE[epoch],
                                 "test_crossentropy": TEST_NLL[epoch], "state": "COMPLETE",
                                 FACTOR: factor, LEVEL: level, PAIR: pair, ARM: arm})
                trial += 1
    return pd.DataFrame(rows)


def _epochs(table: pd.DataFrame) -> pd.DataFrame:
    out = table.drop(columns=[FACTOR, LEVEL, PAIR, ARM, "state"]).copy()
    out[["study", "trial"]] = out[["study", "trial"]].astype(str)
    return out


@pytest.fixture(scope="module")
def analysed() -> dict:
    table = sweep_table()
    return sweeps.analyse_sweep(sweeps.arms_table(table), _epochs(table), n_boot=1000, seed=0)


def _row(sweep: dict, factor: str, level: str, loss: str, outcome: str) -> dict:
    [row] = [c for c in sweep["comparisons"] if (c["factor"], c["level"], c["loss"], c["outcome"])
             == (factor, level, loss, outcome)]
    return row


def _binomial_interval(count: int, n: int, step: float) -> tuple[float, float]:
    """95% percentile interval of the mean of n values, `count` of them `step`, the rest 0."""
    p = count / n
    return binom.ppf(0.025, n, p) / n * step, binom.ppf(0.975, n, p) / n * step


# ------------------------------------------------------------------ epoch level, paired

@pytest.mark.parametrize("loss", ["val_loss", "val_crossentropy"])
@pytest.mark.parametrize("outcome", ["epoch_disagree", "epoch_gap", "val_ece_loss_pick",
                                     "test_accuracy_cost", "test_nll_cost"])
@pytest.mark.parametrize("level, treated", [("1e-3", 4), ("1e-2", 11)])
def test_paired_difference_is_the_known_per_pair_change(analysed, loss, outcome, level, treated):
    step = D_MINUS_A[loss][outcome]
    row = _row(analysed, "l2", level, loss, outcome)
    effect = row["effect"]
    assert effect["pairs"] == L2_PAIRS
    assert effect["difference"] == pytest.approx(treated * step / L2_PAIRS)
    lo, hi = sorted(_binomial_interval(treated, L2_PAIRS, step))
    # a percentile bound may land one pair's step off the binomial quantile near its jump
    assert sorted(effect["ci95"]) == pytest.approx([lo, hi], abs=abs(step) / L2_PAIRS + 1e-9)
    floor = row["floor"]  # replicate − reference: pair 1 only
    assert floor["difference"] == pytest.approx(step / L2_PAIRS)
    assert sorted(floor["ci95"]) == pytest.approx(sorted(_binomial_interval(1, L2_PAIRS, step)),
                                                  abs=abs(step) / L2_PAIRS + 1e-9)
    # 1e-2: 9 or more of 12 pairs' worth of step at the lower bound, the floor 3 at most: clear.
    # 1e-3: its interval reaches into the floor's (1 of 12 against up to 3 of 12): not clear.
    assert row["clear"] is (level == "1e-2")


def test_ties_follow_the_pick_rule_and_constant_differences_have_no_interval(analysed):
    # Template T's accuracy ties at epochs 1 and 3 with its loss epoch 3: it agrees, so 1e-4
    # (the reference's templates again) changes nothing, and its interval is n/a, not [0, 0].
    for outcome in ("epoch_disagree", "epoch_gap"):
        effect = _row(analysed, "l2", "1e-4", "val_loss", outcome)["effect"]
        assert effect["difference"] == 0
        assert effect["ci95_missing"].startswith("every pair has the same difference (0)")
        assert all(math.isnan(v) for v in effect["ci95"])
    assert _row(analysed, "l2", "1e-2", "val_loss", "val_ece_accuracy_pick")["clear"] is False


def test_mcnemar_is_exact_on_the_pairs_verdicts(analysed):
    for level, treated in (("1e-3", 4), ("1e-2", 11), ("1e-4", 0)):
        m = _row(analysed, "l2", level, "val_loss", "epoch_disagree")["effect"]["mcnemar"]
        # rows: the reference disagrees (pair 0 only) / agrees; columns: the level disagrees
        # (pair 0, and `treated` more) / agrees
        table = [[1, 0], [treated, L2_PAIRS - 1 - treated]]
        assert (m["b"], m["c"]) == (table[0][1], table[1][0])
        assert m["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    floor = _row(analysed, "l2", "1e-2", "val_loss", "epoch_disagree")["floor"]["mcnemar"]
    assert (floor["b"], floor["c"]) == (0, 1)
    assert floor["p_value"] == pytest.approx(mcnemar([[1, 0], [1, 10]], exact=True).pvalue)


def test_a_deterministic_floor_is_its_value_and_few_pairs_still_give_a_verdict(analysed):
    row = _row(analysed, "data.label_noise", "0.2", "val_loss", "epoch_disagree")
    assert row["effect"]["difference"] == pytest.approx(0.75)
    assert row["effect"]["ci95"] == pytest.approx([0.25, 1.0])  # binom(4, 0.75): 2.5% at 1 of 4
    assert row["floor"]["difference"] == 0 and row["floor"]["ci95_missing"].startswith("every pair")
    assert row["clear"] is True
    at_k = _row(analysed, "data.label_noise", "0.2", "val_loss", "disagree_at_k")
    assert at_k["effect"]["ci95_missing"] == "4 pairs, fewer than k = 10" and at_k["clear"] is False


def test_a_factor_at_two_sets_of_levels_is_two_sweeps_and_seeds_of_one_pool():
    """`make sweep` runs l2 at 0, 1e-3 (seeds 0 and 1 of one pool) and then l2's dose-response:
    three studies of factor l2. The dose study and the two-level studies draw bases of their
    own, so they are two sweeps, each named as its studies are; the two seeds pool (pairs
    study/pair). Each carries the known per-pair change of the 1e-3 arm (4 of 12 pairs step)."""
    table = sweep_table()
    l2 = table[table[FACTOR] == "l2"]
    two_levels = l2[l2[LEVEL].isin(["0", "1e-3"])]
    seeds = [two_levels.assign(study=f"sweep-l2=0,1e-3-seed{seed}") for seed in (0, 1)]
    dose = l2.assign(study="sweep-l2=0,1e-4,1e-3,1e-2-seed0")
    table = pd.concat([*seeds, dose, table[table[FACTOR] != "l2"]], ignore_index=True)
    arms = sweeps.arms_table(table)
    assert sorted(arms[FACTOR].unique()) == ["data.label_noise", "l2=0,1e-3", "l2=0,1e-4,1e-3,1e-2"]
    pooled = arms[arms[FACTOR] == "l2=0,1e-3"]
    assert pooled[PAIR].nunique() == 2 * L2_PAIRS and pooled[PAIR].str.startswith("sweep-l2=0,1e-3-seed").all()
    sweep = sweeps.analyse_sweep(arms, _epochs(table), n_boot=200, seed=0)
    assert {(f["factor"], f["pairs"], tuple(f["levels"])) for f in sweep["factors"]} == {
        ("data.label_noise", NOISE_PAIRS, ("0.2",)), ("l2=0,1e-3", 2 * L2_PAIRS, ("1e-3",)),
        ("l2=0,1e-4,1e-3,1e-2", L2_PAIRS, ("1e-4", "1e-3", "1e-2"))}
    step = D_MINUS_A["val_loss"]["epoch_gap"]
    for factor, pairs in (("l2=0,1e-3", 2 * L2_PAIRS), ("l2=0,1e-4,1e-3,1e-2", L2_PAIRS)):
        effect = _row(sweep, factor, "1e-3", "val_loss", "epoch_gap")["effect"]
        assert (effect["pairs"], effect["difference"]) == (pairs, pytest.approx(4 * step / L2_PAIRS))


def test_replicate_agreement_counts_pairs_whose_replicate_curve_is_the_reference_bit_for_bit():
    """l2's replicate has the reference's template but in pair 1 (D against T), and the loss
    offset 0.01 (p // 2) against the reference's 0.01 p: pair 0 alone is the same curve."""
    table = sweep_table()
    arms, epochs = sweeps.arms_table(table), _epochs(table)
    agreement = sweeps.replicate_agreement(arms, epochs, "l2", "val_loss")
    pair_1 = max(abs(d - (t + 0.01)) for d, t in zip(TEMPLATES["D"][0], TEMPLATES["T"][0]))  # 0.21
    gaps = [0.0, pair_1, *(0.01 * (p - p // 2) for p in range(2, L2_PAIRS))]
    assert agreement["pairs"] == L2_PAIRS and agreement["identical"] == 1
    assert agreement["median_max_gap"] == pytest.approx(float(np.median(gaps)))  # 0.035
    assert sweeps.replicate_agreement(arms, epochs, "data.label_noise", "val_loss")["identical"] == NOISE_PAIRS
    # a replicate cut after 2 of its 4 epochs: still a pair with both curves, not identical,
    # its gap over the 2 epochs both have (0: the same curve so far)
    noise = table[(table[FACTOR] == "data.label_noise") & (table[PAIR] == 0) & (table[ARM] == ARM_REPLICATE)]
    cut = epochs[~((epochs["study"] == "sweep-noise") & (epochs["trial"] == str(noise["trial"].iloc[0]))
                   & (epochs["epoch"] >= 2))]
    assert sweeps.replicate_agreement(arms, cut, "data.label_noise", "val_loss") == {
        "loss": "val_loss", "pairs": NOISE_PAIRS, "identical": NOISE_PAIRS - 1, "median_max_gap": 0.0}
    no_replicate = arms[arms[ARM] != ARM_REPLICATE]
    assert sweeps.replicate_agreement(no_replicate, epochs, "l2", "val_loss") is None


def test_hand_named_studies_of_one_factor_pool_whatever_their_levels():
    """Study names not of `python -m study sweep`'s form: the factor's name stays, and every
    study of it must then have the same arms (one line, exit 2 at the CLI)."""
    table = sweep_table()
    l2 = table[table[FACTOR] == "l2"]
    other = l2[l2[LEVEL].isin(["0", "1e-3"])].assign(study="my-other-l2-study")
    with pytest.raises(AnalysisInputError, match="every study of a factor needs the same arms"):
        sweeps.arms_table(pd.concat([table, other], ignore_index=True))


# ------------------------------------------------------------------ trial level, pooled

def _brute_force_at_k(loss: np.ndarray, accuracy: np.ndarray, k: int) -> float:
    """Mean over every k-subset of the share of its tied-loss trials not at maximal accuracy."""
    shares = []
    for subset in itertools.combinations(range(len(loss)), k):
        sub_loss, sub_accuracy = loss[list(subset)], accuracy[list(subset)]
        tied = sub_loss == sub_loss.min()
        shares.append(1 - np.mean(sub_accuracy[tied] == sub_accuracy.max()))
    return float(np.mean(shares))


def _pools(loss: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """arm level (replicate: 'replicate') -> each pair's best loss and best accuracy, in pair order."""
    table = sweep_table()
    table = table[table[FACTOR] == "l2"]
    best = table.groupby([ARM, LEVEL, PAIR]).agg(best_loss=(loss, "min"), best_accuracy=("val_accuracy", "max"))
    return {(level if arm != ARM_REPLICATE else "replicate"):
            (rows["best_loss"].to_numpy(), rows["best_accuracy"].to_numpy())
            for (arm, level), rows in best.groupby(level=[0, 1])}


@pytest.mark.parametrize("loss", ["val_loss", "val_crossentropy"])
def test_pooled_disagreement_at_k_matches_every_subset_counted(analysed, loss):
    pools = _pools(loss)
    exact = {name: _brute_force_at_k(*pool, 10) for name, pool in pools.items()}
    # 1e-2: the highest-loss trials are the most accurate, so every 10 of 12 disagrees
    assert exact["1e-2"] == 1.0
    for level in ("1e-4", "1e-3", "1e-2"):
        effect = _row(analysed, "l2", level, loss, "disagree_at_k")["effect"]
        assert effect["pairs"] == L2_PAIRS
        assert effect["arm_mean"] == pytest.approx(exact[level])
        assert effect["reference_mean"] == pytest.approx(exact["0"])
        assert effect["difference"] == pytest.approx(exact[level] - exact["0"])
    floor = _row(analysed, "l2", "1e-2", loss, "disagree_at_k")["floor"]
    assert floor["difference"] == pytest.approx(exact["replicate"] - exact["0"])


def test_pooled_bootstrap_resamples_pairs_for_both_arms_at_once():
    """The interval's draws, recomputed here by brute force: each draw takes the same pairs
    (with replacement) from both arms, as the docstring says."""
    pools = _pools("val_loss")
    level, reference = (np.column_stack(pools[name]) for name in ("1e-3", "0"))
    got = sweeps.disagree_at_k_difference(pd.DataFrame(level), pd.DataFrame(reference), k=10, n_boot=40, seed=3)
    draws = np.random.default_rng(3).integers(0, L2_PAIRS, size=(40, L2_PAIRS))
    differences = [_brute_force_at_k(*level[rows].T, 10) - _brute_force_at_k(*reference[rows].T, 10)
                   for rows in draws]
    assert got["ci95"] == pytest.approx(np.quantile(differences, [0.025, 0.975]))


# ------------------------------------------------------------------ levels, figures' tables

def test_levels_and_figure_tables(analysed):
    l2 = [row for row in analysed["levels"] if row["factor"] == "l2" and row["loss"] == "val_loss"]
    assert [row["level"] for row in l2] == ["0", "1e-4", "1e-3", "1e-2"]  # numeric order, reference first
    assert [row["epoch_disagree"]["mean"] for row in l2] == pytest.approx([1 / 12, 1 / 12, 5 / 12, 1.0])
    assert l2[3]["val_ece_loss_pick"]["mean"] == pytest.approx(0.05)
    assert l2[0]["val_accuracy_accuracy_pick"]["mean"] == pytest.approx(
        np.mean([0.8 + 0.01 * (5 * p % 12) for p in range(12)]))
    [dose] = plotdata.sweep_doses(analysed)  # label noise has 2 levels: no dose plot
    assert dose.factor == "l2" and dose.levels == ["0", "1e-4", "1e-3", "1e-2"]
    forests = plotdata.sweep_forests(analysed)
    assert [f.outcome for f in forests] == [o.name for o in sweeps.OUTCOMES]
    table = forests[0].table
    floors = table[table["kind"] == "floor"]
    assert sorted(set(floors["factor"])) == ["data.label_noise", "l2"] and len(floors) == 4  # 2 factors x 2 rules
    # each factor's floor row sits directly above its levels
    first = table.sort_values("position").drop_duplicates("position")
    assert first["factor"].tolist() == ["data.label_noise"] * 2 + ["l2"] * 4
    assert first["kind"].tolist() == ["floor", "effect", "floor", "effect", "effect", "effect"]
    assert first["row"].tolist()[3:] == [f"l2 = {level} (vs 0)" for level in ("1e-4", "1e-3", "1e-2")]


# ------------------------------------------------------------------ bad input

def _broken(drop) -> pd.DataFrame:
    table = sweep_table()
    return table[~drop(table)]


@pytest.mark.parametrize("drop, message", [
    (lambda t: (t[FACTOR] == "l2") & (t[ARM] == ARM_REFERENCE), "factor 'l2' has no reference arm in any pair"),
    (lambda t: (t[FACTOR] == "l2") & (t[ARM] == ARM_TREATMENT), "factor 'l2' has no treatment arm"),
])
def test_bad_arms_are_named(drop, message):
    with pytest.raises(AnalysisInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sweeps.arms_table(_broken(drop))


def test_a_pair_whose_reference_failed_before_its_first_epoch_is_left_out_and_named():
    """2026-11-28: label_smoothing pair 53's reference ended FAIL nan_loss before any epoch,
    so the export has no row of it; publishing refused the whole sweep."""
    table = _broken(lambda t: (t[FACTOR] == "l2") & (t[PAIR] == 3) & (t[ARM] == ARM_REFERENCE))
    arms, running = sweeps.split_running_pairs(sweeps.arms_table(table))
    assert running == [{"factor": "l2", "pair": "3", "lacking": ["reference 0"]}]
    assert "3" not in set(arms.loc[arms[FACTOR] == "l2", PAIR])


def _trained_again(cut_state: str) -> pd.DataFrame:
    """l2 pair 4's replicate cut after its first epoch (a trial of its own, state `cut_state`,
    numbered before every other trial of the study), then trained again as the table has it."""
    table = sweep_table()
    again = table[(table[FACTOR] == "l2") & (table[PAIR] == 4) & (table[ARM] == ARM_REPLICATE)]
    cut = again[again["epoch"] == 0].assign(trial=-1, state=cut_state, val_loss=9.0)
    return pd.concat([cut, table], ignore_index=True)


def test_an_arm_trained_again_after_a_cut_keeps_its_later_trial_only(tmp_path):
    raw, superseded = sweeps.drop_superseded(_trained_again("FAIL"))
    assert superseded == [{"study": "sweep-l2", "trial": "-1", FACTOR: "l2", LEVEL: "0", PAIR: "4",
                           ARM: ARM_REPLICATE}]
    assert len(raw) == len(sweep_table()) and -1 not in set(raw["trial"])
    path = tmp_path / "sweep.csv"
    _trained_again("FAIL").to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), *EXPORT_FLAGS, "--out", str(out), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    sweep = json.loads((out / SUMMARY_JSON).read_text())["sweep"]
    assert [t["trial"] for t in sweep["trials_superseded"]] == ["-1"]
    assert [f["pairs"] for f in sweep["factors"] if f["factor"] == "l2"] == [L2_PAIRS]  # pair 4 stays whole
    assert "trial -1" in (out / "report.md").read_text()


def test_two_finished_trials_of_one_arm_are_still_refused():
    raw, superseded = sweeps.drop_superseded(_trained_again("COMPLETE"))
    assert superseded == []
    with pytest.raises(AnalysisInputError, match="factor 'l2' pair 4: 2 trials of arm replicate level 0"):
        sweeps.arms_table(raw)


def _running(table: pd.DataFrame, pair: int) -> pd.DataFrame:
    """The table as a running sweep leaves it: l2's pair `pair` has only its reference so far."""
    return table[~((table[FACTOR] == "l2") & (table[PAIR] == pair) & (table[ARM] != ARM_REFERENCE))]


def test_a_running_sweeps_pairs_lacking_arms_are_left_out_and_named():
    # the pair being trained (11) and a pair whose replicate was cut before it logged (4):
    # the sweep re-queues that arm after its other pairs
    table = _running(sweep_table(), L2_PAIRS - 1)
    table = table[~((table[FACTOR] == "l2") & (table[PAIR] == 4) & (table[ARM] == ARM_REPLICATE))]
    arms, running = sweeps.split_running_pairs(sweeps.arms_table(table))
    assert running == [{"factor": "l2", "pair": "4", "lacking": ["replicate 0"]},
                       {"factor": "l2", "pair": str(L2_PAIRS - 1),
                        "lacking": ["replicate 0", "treatment 1e-2", "treatment 1e-3", "treatment 1e-4"]}]
    assert arms.loc[arms[FACTOR] == "l2", PAIR].nunique() == L2_PAIRS - 2
    assert arms.loc[arms[FACTOR] == "data.label_noise", PAIR].nunique() == NOISE_PAIRS
    sweep = sweeps.analyse_sweep(arms, _epochs(table), n_boot=0, seed=0, running=running)
    assert sweep["pairs_running"] == running
    assert [f["pairs"] for f in sweep["factors"]] == [NOISE_PAIRS, L2_PAIRS - 2]


def test_a_factor_swept_by_two_studies_pools_their_pairs():
    table = sweep_table()
    l2 = table[table[FACTOR] == "l2"]
    twice = pd.concat([table, l2.assign(study="sweep-l2-seed1")], ignore_index=True)
    arms = sweeps.arms_table(twice)
    assert arms.loc[arms[FACTOR] == "l2", PAIR].nunique() == 2 * L2_PAIRS
    assert arms.loc[arms[FACTOR] == "data.label_noise", PAIR].nunique() == NOISE_PAIRS  # one study: ids as given
    sweep = sweeps.analyse_sweep(arms, _epochs(twice), n_boot=0, seed=0)
    effect = _row(sweep, "l2", "1e-3", "val_loss", "epoch_disagree")["effect"]
    assert (effect["pairs"], effect["difference"]) == (2 * L2_PAIRS, pytest.approx(4 / 12))
    # the same factor at other levels in the second study: its pairs lack the first's arms
    other = l2.assign(study="sweep-l2-seed1", level=l2[LEVEL].replace({"1e-2": "1e-1"}))
    with pytest.raises(AnalysisInputError, match="factor 'l2' study 'sweep-l2' has no arm treatment 1e-1"):
        sweeps.arms_table(pd.concat([table, other], ignore_index=True))


def test_only_a_table_with_all_four_arm_columns_is_a_sweep():
    assert sweeps.is_sweep(sweep_table().columns)
    # a table of trials from elsewhere may have a `level` or `pair` column of its own
    assert not sweeps.is_sweep(["study", "trial", "epoch", "val_loss", "level", "pair"])


def test_bad_arm_name_and_blank_arm():
    table = sweep_table()
    table.loc[table.index[:4], ARM] = "control"
    with pytest.raises(AnalysisInputError, match="unknown arm 'control'"):
        sweeps.arms_table(table)
    table.loc[table.index[:4], ARM] = None
    with pytest.raises(AnalysisInputError, match="4 rows name no factor/level/pair/arm"):
        sweeps.arms_table(table)


# ------------------------------------------------------------------ the CLI, end to end

EXPORT_FLAGS = ["--epoch-col", "epoch", "--test-accuracy-col", "test_accuracy", "--state-col", "state",
                "--crossentropy-col", "val_crossentropy"]


def test_cli_adds_the_sweep_section(tmp_path):
    path = tmp_path / "sweep.csv.gz"
    sweep_table().to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), *EXPORT_FLAGS, "--out", str(out), "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / SUMMARY_JSON).read_text())
    sweep = summary["sweep"]
    assert [f["factor"] for f in sweep["factors"]] == ["data.label_noise", "l2"]
    assert sweep["losses"] == ["val_loss", "val_crossentropy"] and sweep["columns_missing"] == []
    # the CLI read the levels as written and val_ece, which the table loader does not carry
    assert _row(sweep, "l2", "1e-2", "val_loss", "val_ece_loss_pick")["effect"]["difference"] == pytest.approx(
        11 * (0.05 - 0.12) / 12)
    assert _row(sweep, "l2", "1e-2", "val_loss", "epoch_disagree")["clear"] is True
    report = (out / "report.md").read_text()
    assert "## The sweep: what each factor changes" in report and "**Clear effects** (22 of 56 differences" in report
    assert "**Not clear**" in report
    for outcome in sweeps.OUTCOMES:
        assert (out / f"sweep_forest_{outcome.name}.png").is_file()
    assert (out / "sweep_dose_l2.png").is_file() and not (out / "sweep_dose_data_label_noise.png").exists()
    assert "sweep_forest_epoch_disagree.png" in (out / "index.html").read_text()
    # Guo et al.'s weight-decay claim on l2's four levels. Every template peaks in val_accuracy
    # at 0.8 (+ the arm's offset), so each level's mean at the accuracy pick is 0.8 plus its
    # offsets' mean: 5.5, 5.5, 5.5 and 2.5 hundredths; the optimum is the first of the tied
    # three, and the pick lands on the last epoch (ECE 0.12) in every trial: no ECE change.
    [claim] = sweep["calibration_claims"]
    assert (claim["factor"], claim["levels"], claim["optimum"]) == ("l2", ["0", "1e-4", "1e-3", "1e-2"], "0")
    assert claim["accuracy_means"] == pytest.approx([0.855, 0.855, 0.855, 0.825])
    assert [(step["from"], step["level"], step["ece"]["difference"]) for step in claim["steps"]] == [
        ("0", "1e-4", 0.0), ("1e-4", "1e-3", 0.0), ("1e-3", "1e-2", 0.0)]
    assert claim["verdict"] == "not clear"
    assert ("*ECE keeps falling with more weight decay past the accuracy optimum* (l2, 12 pairs with every "
            "level): **not clear**") in report
    assert ("*Batch norm raises ECE while accuracy barely moves*: not tested, the sweep has no `batch_norm` "
            "factor") in report


def test_cli_reports_a_running_sweep_without_its_last_pair(tmp_path):
    path = tmp_path / "sweep.csv"
    _running(sweep_table(), L2_PAIRS - 1).to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), *EXPORT_FLAGS, "--out", str(out), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / SUMMARY_JSON).read_text())["sweep"]["pairs_running"][0]["pair"] == str(L2_PAIRS - 1)
    assert f"l2 pair {L2_PAIRS - 1} (lacks replicate 0, treatment 1e-2, treatment 1e-3, treatment 1e-4)" in (out / "report.md").read_text()


def test_cli_names_the_pairs_whose_arms_trained_on_other_threads_or_cpus(tmp_path):
    """Every arm logged 1 thread on CPU "X" but l2 pair 5's 1e-2 arm (2 threads) and
    label-noise pair 2's replicate (CPU "Y"); label-noise pair 3's treatment logged no CPU,
    which is not a difference (trials before 2026-11-28 did not log it)."""
    table = sweep_table().assign(tf_intra_op_threads=1, tf_inter_op_threads=1, cpu_model="X")
    table.loc[(table[FACTOR] == "l2") & (table[PAIR] == 5) & (table[LEVEL] == "1e-2"), "tf_intra_op_threads"] = 2
    noise = table[FACTOR] == "data.label_noise"
    table.loc[noise & (table[PAIR] == 2) & (table[ARM] == ARM_REPLICATE), "cpu_model"] = "Y"
    table.loc[noise & (table[PAIR] == 3) & (table[ARM] == ARM_TREATMENT), "cpu_model"] = None
    path = tmp_path / "sweep.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), *EXPORT_FLAGS, "--out", str(out), "--bootstrap", "0")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / SUMMARY_JSON).read_text())["sweep"]["pairs_mixed"] == [
        {"factor": "data.label_noise", "pair": "2", "differs": {"cpu_model": ["X", "Y"]}},
        {"factor": "l2", "pair": "5", "differs": {"tf_intra_op_threads": ["1", "2"]}}]
    assert r"l2 pair 5 (tf\_intra\_op\_threads: 1 / 2)" in (out / "report.md").read_text()  # markdown-escaped


def test_cli_bad_sweep_exits_2_with_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "sweep.csv"
    _broken(lambda t: (t[FACTOR] == "l2") & (t[ARM] == ARM_REFERENCE)).to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), *EXPORT_FLAGS, "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr == "error: factor 'l2' has no reference arm in any pair\n"
    assert not out.exists()



def test_cli_one_pool_on_a_sweep_table_exits_2_with_one_line_and_writes_nothing(tmp_path):
    path = tmp_path / "sweep.csv"
    sweep_table().to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), *EXPORT_FLAGS, "--one-pool", "--out", str(out))
    assert proc.returncode == 2
    assert proc.stderr == (f"error: --one-pool: {path} is a sweep table, whose trials are paired arms within their "
                           "studies, not one pool of i.i.d. trials; drop --one-pool\n")
    assert not out.exists()

# ------------------------------------------------------------------ the export

def test_export_names_the_sweep_params_as_the_last_columns(synthetic_store, tmp_path):
    """A real MLflow store (the analysis tests' shared one, plus an experiment of its own):
    trial runs carrying the sweep params export them as `factor`, `level`, `pair`, `arm`,
    after the campaign's columns; a campaign's export has none of them."""
    from mlflow import MlflowClient

    from analysis.export import LAST_COLUMNS, export
    from benchmarks.synthetic_store import write_synthetic_store
    from study.contract import ROLE_TRIAL, RUN_ROLE, TRIAL_NUMBER

    uri = synthetic_store["uri"]
    write_synthetic_store(uri, "sweep-export", studies=1, trials=3, epochs=3, seed=0)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("sweep-export").experiment_id
    arms = {0: (ARM_REFERENCE, "0"), 1: (ARM_TREATMENT, "1e-3"), 2: (ARM_REPLICATE, "0")}
    for run in client.search_runs([experiment], f"tags.{RUN_ROLE} = '{ROLE_TRIAL}'"):
        arm, level = arms[int(run.data.tags[TRIAL_NUMBER])]
        for param, value in ((SWEEP_FACTOR, "l2"), (SWEEP_LEVEL, level), (SWEEP_PAIR, "0"), (SWEEP_ARM, arm)):
            client.log_param(run.info.run_id, param, value)
    table = export(["sweep-export"], uri, tmp_path / "sweep.csv.gz")
    assert list(table.columns[-7:]) == [*LAST_COLUMNS, FACTOR, LEVEL, PAIR, ARM]
    assert not set(SWEEP_COLUMNS) & set(table.columns)
    by_trial = table.groupby("trial")[[FACTOR, LEVEL, PAIR, ARM]].first()
    assert by_trial.to_numpy().tolist() == [["l2", "0", "0", ARM_REFERENCE], ["l2", "1e-3", "0", ARM_TREATMENT],
                                            ["l2", "0", "0", ARM_REPLICATE]]
    campaign = export(["balanced"], uri, tmp_path / "campaign.csv.gz")
    assert list(campaign.columns[-3:]) == LAST_COLUMNS and FACTOR not in campaign


def test_a_trial_without_epochs_leaves_its_pair_out_of_its_differences_only():
    table = sweep_table()
    epochs = _epochs(table)
    lost = table[(table[FACTOR] == "l2") & (table[LEVEL] == "1e-3") & (table[PAIR] == 7)]["trial"].iloc[0]
    epochs = epochs[~((epochs["study"] == "sweep-l2") & (epochs["trial"] == str(lost)))]
    sweep = sweeps.analyse_sweep(sweeps.arms_table(table), epochs, n_boot=0, seed=0)
    assert [(t["study"], t["trial"], t[LEVEL], t[PAIR]) for t in sweep["trials_not_analysed"]] == [
        ("sweep-l2", str(lost), "1e-3", "7")]
    effect = _row(sweep, "l2", "1e-3", "val_loss", "epoch_disagree")["effect"]
    assert effect["pairs"] == 11 and effect["difference"] == pytest.approx(4 / 11)
    assert effect["ci95_missing"] == "no resamples (--bootstrap 0)"
    assert _row(sweep, "l2", "1e-2", "val_loss", "epoch_disagree")["effect"]["pairs"] == 12
    # 12 pairs, pair 7 lacking one arm's epochs: 11 complete (what the README counts)
    assert [(f["factor"], f["pairs"]) for f in sweep["factors"] if f["factor"] == "l2"] == [("l2", 11)]


# ------------------------------------------------------------------ the published numbers

# The top-level README's sweep table: column heading -> (outcome, scale, unit, decimals).
README_COLUMNS = {"val ECE at the loss pick": ("val_ece_loss_pick", 1, "", 3),
                  "epoch gap": ("epoch_gap", 1, "", 2),
                  "test NLL cost": ("test_nll_cost", 1, "", 3),
                  "test accuracy cost": ("test_accuracy_cost", 100, " pp", 1),
                  "epoch-level disagreement": ("epoch_disagree", 100, " pp", 1),
                  "P(disagree), k = 10": ("disagree_at_k", 100, " pp", 1)}


def _readme_cell(effect: dict | None, scale: float, unit: str, decimals: int) -> str:
    """As the README writes a paired difference: '–' without one (summary.json's null), the
    value's sign (a real minus, none for −0.0), '(no CI)' without an interval."""
    if not effect or effect["difference"] is None or math.isnan(effect["difference"]):
        return "–"

    def number(value: float) -> str:
        return ("−" if value < 0 else "+") + f"{abs(value) * scale:.{decimals}f}"

    lo, hi = effect["ci95"]
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return f"{number(effect['difference'])}{unit} (no CI)"
    return f"{number(effect['difference'])}{unit} [{number(lo)}, {number(hi)}]"


def test_the_readme_quotes_the_published_sweep_table():
    """Every row of the README's sweep table ("One knob at a time") is the committed
    results/sweeps/summary.json, formatted here on its own: each factor level (bold where the
    analysis calls it clear), then the factor's A/A floor once, every outcome, the pairs."""
    from study.paths import PROJECT_ROOT

    summary = json.loads((PROJECT_ROOT / "results" / "sweeps" / SUMMARY_JSON).read_text())["sweep"]
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("### One knob at a time", 1)[1].split("\n## ", 1)[0]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[:2] == ["factor: level − reference", "pairs"] and set(header[2:]) == set(README_COLUMNS)
    rows = {(c["factor"], c["level"], c["outcome"]): c for c in summary["comparisons"] if c["loss"] == "val_loss"}
    labels = [line.split("|")[1].strip() for line in table[2:]]
    assert len(labels) == len(set(labels)), labels  # one row per level, one floor per factor
    quoted = set()
    for line in table[1:]:
        label, pairs, *cells = (cell.strip() for cell in line.strip("|").split("|"))
        factor, level = label.rsplit(": ", 1)
        floor = level == "A/A floor"
        level = None if floor else level.split(" − ")[0]
        counts = []
        for heading, cell in zip(header[2:], cells):
            outcome, scale, unit, decimals = README_COLUMNS[heading]
            [row] = [r for (f, lv, o), r in rows.items() if f == factor and o == outcome and (floor or lv == level)][:1]
            effect = row["floor"] if floor else row["effect"]
            expected = _readme_cell(effect, scale, unit, decimals)
            assert cell == (f"**{expected}**" if row["clear"] and not floor else expected), (label, heading)
            counts.append(effect["pairs"])
        assert int(pairs) == max(counts), label
        quoted.add((factor, "floor" if floor else level))
    # every comparison the summary has is in the table, with its floor
    assert quoted == {(c["factor"], c["level"]) for c in rows.values()} | {(c["factor"], "floor") for c in rows.values()}
