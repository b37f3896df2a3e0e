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


def dose(accuracy_means: dict[str, float], ece_means: dict[str, float], reference: str = "0") -> dict:
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
    treated = [level for level in accuracy_means if level != reference]
    arms = Arms((ARM_REFERENCE, reference), [(ARM_TREATMENT, level) for level in treated],
                (ARM_REPLICATE, reference))
    [claim] = calibration_claims(values_table(levels), "l2=0,1e-4,1e-3,1e-2", arms, n_boot=500, seed=0)
    return claim


def test_ece_falling_past_the_accuracy_optimum_reproduces_the_claim():
    claim = dose({"0": 0.80, "1e-4": 0.82, "1e-3": 0.81, "1e-2": 0.70},
                 {"0": 0.10, "1e-4": 0.08, "1e-3": 0.05, "1e-2": 0.03})
    assert claim["claim"] == "ece_falls_past_the_accuracy_optimum" and claim["optimum"] == "1e-4"
    assert claim["levels"] == ["0", "1e-4", "1e-3", "1e-2"]
    assert claim["accuracy_means"] == pytest.approx([0.80095, 0.82095, 0.81095, 0.70095])
    assert claim["optimum_share"] == 1.0  # every pair puts the optimum at 1e-4
    assert [(step["level"], step["ece"]["difference"]) for step in claim["beyond"]] == [
        ("1e-3", pytest.approx(-0.03 + 0.00095)), ("1e-2", pytest.approx(-0.05 + 2 * 0.00095))]
    assert claim["floor"]["difference"] == pytest.approx(0.0)
    assert claim["beyond"][0]["ece"]["ci95"][1] <= -0.03 + 0.002 < claim["floor"]["ci95"][0]
    assert claim["verdict"] == "reproduces"


def test_ece_rising_past_the_optimum_reverses_it_and_an_optimum_at_the_edge_is_not_testable():
    rising = dose({"0": 0.80, "1e-4": 0.82, "1e-3": 0.81, "1e-2": 0.70},
                  {"0": 0.10, "1e-4": 0.08, "1e-3": 0.05, "1e-2": 0.12})
    assert rising["verdict"] == "reversed"
    edge = dose({"0": 0.80, "1e-4": 0.81, "1e-3": 0.82, "1e-2": 0.83},
                {"0": 0.10, "1e-4": 0.08, "1e-3": 0.05, "1e-2": 0.03})
    assert (edge["optimum"], edge["beyond"], edge["verdict"]) == ("1e-2", [], "not testable")


def test_the_levels_are_taken_in_numeric_order_whatever_the_reference():
    claim = dose({"1e-3": 0.81, "0": 0.80, "1e-4": 0.82, "1e-2": 0.70},
                 {"1e-3": 0.05, "0": 0.10, "1e-4": 0.08, "1e-2": 0.03}, reference="1e-3")
    assert claim["levels"] == ["0", "1e-4", "1e-3", "1e-2"] and claim["optimum"] == "1e-4"
    assert [step["level"] for step in claim["beyond"]] == ["1e-3", "1e-2"]


def test_other_factors_and_sweeps_without_a_replicate_test_no_claim():
    table = values_table({(ARM_REFERENCE, "0"): (np.full(PAIRS, 0.1), np.full(PAIRS, 0.8)),
                          (ARM_TREATMENT, "0.3"): (np.full(PAIRS, 0.1), np.full(PAIRS, 0.8))})
    arms = Arms((ARM_REFERENCE, "0"), [(ARM_TREATMENT, "0.3")], None)
    assert calibration_claims(table, "dropout", arms, n_boot=100, seed=0) == []
    assert calibration_claims(table, "batch_norm", arms, n_boot=100, seed=0) == []  # no A/A floor
    two_levels = Arms((ARM_REFERENCE, "0"), [(ARM_TREATMENT, "0.3")], (ARM_REPLICATE, "0"))
    assert calibration_claims(table, "l2=0,1e-3", two_levels, n_boot=100, seed=0) == []  # not a dose sweep
