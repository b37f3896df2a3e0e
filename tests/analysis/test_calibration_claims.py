"""Guo et al. 2017's two calibration claims on hand-made pair tables whose paired
differences are known by construction (analysis/calibration_claims.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.calibration_claims import ACCURACY, ECE, calibration_claims
from analysis.sweeps import Arms
from study.contract import ARM_REFERENCE, ARM_REPLICATE, ARM_TREATMENT

PAIRS = 20
WIGGLE = np.array([0.001 * (p % 3) for p in range(PAIRS)])  # mean 0.00095: spread, so intervals exist
ALTERNATE = np.array([0.001 if p % 2 else -0.001 for p in range(PAIRS)])  # mean 0


def values_table(levels: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """pairs × (metric, arm, level), as `sweeps.pair_values` gives: (ECE, accuracy) per arm."""
    columns = {}
    for (arm, level), (ece, accuracy) in levels.items():
        columns[(ECE, arm, level)] = ece
        columns[(ACCURACY, arm, level)] = accuracy
    table = pd.DataFrame(columns, index=[str(p) for p in range(PAIRS)])
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def batch_norm(ece_step: np.ndarray) -> list[dict]:
    base_ece, base_accuracy = 0.05 + 0.001 * np.arange(PAIRS), np.full(PAIRS, 0.85)
    table = values_table({(ARM_REFERENCE, "false"): (base_ece, base_accuracy),
                          (ARM_TREATMENT, "true"): (base_ece + ece_step, base_accuracy + 0.001 * (np.arange(PAIRS) % 2)),
                          (ARM_REPLICATE, "false"): (base_ece + ALTERNATE, base_accuracy)})
    arms = Arms((ARM_REFERENCE, "false"), [(ARM_TREATMENT, "true")], (ARM_REPLICATE, "false"))
    return calibration_claims(table, "batch_norm", arms, n_boot=500, seed=0)


def test_batch_norm_raising_ece_clearly_reproduces_the_claim():
    [claim] = batch_norm(0.02 + WIGGLE)
    assert claim["claim"] == "batch_norm_raises_ece" and (claim["on"], claim["off"]) == ("true", "false")
    assert claim["ece"]["difference"] == pytest.approx(0.02 + 0.00095)
    assert 0.02 <= claim["ece"]["ci95"][0] <= claim["ece"]["ci95"][1] <= 0.022
    assert claim["accuracy"]["difference"] == pytest.approx(0.0005)  # half the pairs +0.001
    assert claim["floor"]["difference"] == pytest.approx(0.0)
    assert claim["verdict"] == "reproduces"


@pytest.mark.parametrize(("step", "verdict"), [(-(0.02 + WIGGLE), "reversed"),
                                               (0.02 * np.sign(ALTERNATE) + WIGGLE, "not clear")])
def test_batch_norm_lowering_ece_reverses_it_and_noise_leaves_it_open(step, verdict):
    [claim] = batch_norm(step)
    assert claim["verdict"] == verdict


def dose(accuracy_means: dict[str, float], ece_means: dict[str, float], reference: str = "0",
         whole_pairs: int = PAIRS) -> dict:
    """An l2 dose sweep: each level's accuracy its mean plus a per-pair wiggle every level
    shares (every pair has the same optimum), its ECE its mean plus the wiggle times the
    level's position + 1 in numeric order (paired differences spread, so they have intervals:
    position i minus position j differs by (i − j) × 0.00095 on average)."""
    order = sorted(accuracy_means, key=float)
    levels = {}
    for level in accuracy_means:
        arm = ARM_REFERENCE if level == reference else ARM_TREATMENT
        levels[(arm, level)] = (ece_means[level] + WIGGLE * (1 + order.index(level)), accuracy_means[level] + WIGGLE)
    levels[(ARM_REPLICATE, reference)] = (ece_means[reference] + WIGGLE * (1 + order.index(reference)) + ALTERNATE,
                                          accuracy_means[reference] + WIGGLE)
    if whole_pairs < PAIRS:  # the other pairs lack their largest level's trial
        largest = max(accuracy_means, key=float)
        levels[(ARM_TREATMENT, largest)][0][whole_pairs:] = np.nan
    treated = [level for level in accuracy_means if level != reference]
    arms = Arms((ARM_REFERENCE, reference), [(ARM_TREATMENT, level) for level in treated],
                (ARM_REPLICATE, reference))
    [claim] = calibration_claims(values_table(levels), "l2=0,1e-4,1e-3,1e-2", arms, n_boot=500, seed=0)
    return claim


def test_ece_falling_at_every_step_past_the_accuracy_optimum_reproduces_the_claim():
    claim = dose({"0": 0.80, "1e-4": 0.82, "1e-3": 0.81, "1e-2": 0.70},
                 {"0": 0.10, "1e-4": 0.08, "1e-3": 0.05, "1e-2": 0.03})
    assert claim["claim"] == "ece_falls_past_the_accuracy_optimum" and claim["optimum"] == "1e-4"
    assert claim["levels"] == ["0", "1e-4", "1e-3", "1e-2"] and claim["pairs"] == PAIRS
    assert claim["accuracy_means"] == pytest.approx([0.80095, 0.82095, 0.81095, 0.70095])
    assert claim["optimum_share"] == 1.0  # every pair puts the optimum at 1e-4
    # each step: the difference of the means plus one position's wiggle (0.00095)
    assert [(step["from"], step["level"], step["ece"]["difference"]) for step in claim["steps"]] == [
        ("1e-4", "1e-3", pytest.approx(-0.03 + 0.00095)), ("1e-3", "1e-2", pytest.approx(-0.02 + 0.00095))]
    assert claim["floor"]["difference"] == pytest.approx(0.0)
    assert claim["steps"][0]["ece"]["ci95"][1] <= -0.03 + 0.002 < claim["floor"]["ci95"][0]
    assert claim["verdict"] == "reproduces"


@pytest.mark.parametrize(("ece_1e_3", "ece_1e_2"), [(0.05, 0.12),   # rises at the last step
                                                    (0.03, 0.05)])  # below the optimum's, but rises again
def test_ece_rising_at_a_step_past_the_optimum_reverses_the_claim(ece_1e_3, ece_1e_2):
    claim = dose({"0": 0.80, "1e-4": 0.82, "1e-3": 0.81, "1e-2": 0.70},
                 {"0": 0.10, "1e-4": 0.08, "1e-3": ece_1e_3, "1e-2": ece_1e_2})
    assert claim["verdict"] == "reversed"


def test_an_optimum_at_the_largest_level_or_too_few_whole_pairs_is_not_testable():
    edge = dose({"0": 0.80, "1e-4": 0.81, "1e-3": 0.82, "1e-2": 0.83},
                {"0": 0.10, "1e-4": 0.08, "1e-3": 0.05, "1e-2": 0.03})
    assert (edge["optimum"], edge["steps"], edge["verdict"]) == ("1e-2", [], "not testable")
    assert edge["reason"] == "the optimum is the largest level: nothing lies past it"
    few = dose({"0": 0.80, "1e-4": 0.82, "1e-3": 0.81, "1e-2": 0.70},
               {"0": 0.10, "1e-4": 0.08, "1e-3": 0.05, "1e-2": 0.03}, whole_pairs=3)
    assert few["verdict"] == "not testable" and few["reason"].startswith("3 pairs with every level, fewer than")


def test_the_levels_are_taken_in_numeric_order_whatever_the_reference():
    claim = dose({"1e-3": 0.81, "0": 0.80, "1e-4": 0.82, "1e-2": 0.70},
                 {"1e-3": 0.05, "0": 0.10, "1e-4": 0.08, "1e-2": 0.03}, reference="1e-3")
    assert claim["levels"] == ["0", "1e-4", "1e-3", "1e-2"] and claim["optimum"] == "1e-4"
    assert [step["level"] for step in claim["steps"]] == ["1e-3", "1e-2"]


@pytest.mark.parametrize(("reference", "treatment"), [("true", "false"), ("True", "False"), ("1.0", "0.0")])
def test_a_sweep_with_batch_norm_on_as_its_reference_reads_on_minus_off(reference, treatment):
    """The same data as the first test with the arms' roles swapped: on − off is the
    reference − the treatment, and the floor turns with it (reference − replicate)."""
    base_ece, accuracy = 0.05 + 0.001 * np.arange(PAIRS), np.full(PAIRS, 0.85)
    table = values_table({(ARM_REFERENCE, reference): (base_ece + 0.02 + WIGGLE, accuracy),
                          (ARM_TREATMENT, treatment): (base_ece, accuracy),
                          (ARM_REPLICATE, reference): (base_ece + 0.02 + WIGGLE + ALTERNATE, accuracy)})
    arms = Arms((ARM_REFERENCE, reference), [(ARM_TREATMENT, treatment)], (ARM_REPLICATE, reference))
    [claim] = calibration_claims(table, "batch_norm", arms, n_boot=500, seed=0)
    assert (claim["on"], claim["off"]) == (reference, treatment)
    assert claim["ece"]["difference"] == pytest.approx(0.02 + 0.00095)
    assert claim["floor"]["difference"] == pytest.approx(0.0)
    assert claim["verdict"] == "reproduces"


def test_batch_norm_levels_that_are_not_one_on_and_one_off_are_not_testable():
    table = values_table({(ARM_REFERENCE, "a"): (np.full(PAIRS, 0.1), np.full(PAIRS, 0.8)),
                          (ARM_TREATMENT, "b"): (np.full(PAIRS, 0.1), np.full(PAIRS, 0.8)),
                          (ARM_REPLICATE, "a"): (np.full(PAIRS, 0.1), np.full(PAIRS, 0.8))})
    arms = Arms((ARM_REFERENCE, "a"), [(ARM_TREATMENT, "b")], (ARM_REPLICATE, "a"))
    [claim] = calibration_claims(table, "batch_norm", arms, n_boot=100, seed=0)
    assert claim["verdict"] == "not testable" and "not one on and one off" in claim["reason"]


def test_other_factors_test_no_claim_and_a_sweep_without_replicate_or_ece_says_why_not():
    table = values_table({(ARM_REFERENCE, "0"): (np.full(PAIRS, 0.1), np.full(PAIRS, 0.8)),
                          (ARM_TREATMENT, "1"): (np.full(PAIRS, 0.1), np.full(PAIRS, 0.8))})
    no_replicate = Arms((ARM_REFERENCE, "0"), [(ARM_TREATMENT, "1")], None)
    assert calibration_claims(table, "dropout", no_replicate, n_boot=100, seed=0) == []
    [claim] = calibration_claims(table, "batch_norm", no_replicate, n_boot=100, seed=0)
    assert claim["verdict"] == "not testable" and claim["reason"].startswith("no A/A replicate")
    with_replicate = Arms((ARM_REFERENCE, "0"), [(ARM_TREATMENT, "1")], (ARM_REPLICATE, "0"))
    [claim] = calibration_claims(table.drop(columns=ECE, level=0), "batch_norm", with_replicate, n_boot=100, seed=0)
    assert claim["verdict"] == "not testable" and claim["reason"].startswith(f"no {ECE}")
    assert calibration_claims(table, "l2=0,1e-3", with_replicate, n_boot=100, seed=0) == []  # 2 levels: no dose
