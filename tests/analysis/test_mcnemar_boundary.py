"""Epoch-level McNemar and the boundary check against the searched range, on hand-made
arrays and spaces with known answers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from analysis import boundary, cost


def test_mcnemar_counts_known_answer():
    y = np.zeros(20, int)
    a = np.array([0] * 12 + [1] * 8)          # loss model: right on images 0-11
    b = np.array([0] * 10 + [1] * 2 + [0] * 6 + [1] * 2)  # accuracy model: 0-9 and 12-17
    got = cost.mcnemar_counts(y, a, b)
    assert (got["b"], got["c"], got["n"]) == (2, 6, 20)
    # Exact McNemar is a two-sided binomial test on the discordant pairs.
    assert got["p_value"] == pytest.approx(binomtest(2, 8, 0.5).pvalue)
    assert cost.mcnemar_counts(y, a[:5], b) is None


def _epoch_picks() -> pd.DataFrame:
    return pd.DataFrame({"study": ["S", "S", "S", "T", "T"], "trial": ["0", "1", "2", "0", "1"],
                         "disagree": [True, False, True, True, True],
                         "loss_epoch": [1, 2, 0, 0, 5], "accuracy_epoch": [2, 2, 2, 1, 1]})


def _arrays() -> dict:
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    wrong = (y + 1) % 10
    per_epoch = np.stack([np.where(np.arange(10) < k, y, wrong) for k in (2, 4, 9)])
    return {("S", "0"): {"y_true": y, "per_epoch": per_epoch},   # epochs 1 vs 2: b=0, c=5
            ("S", "1"): {"y_true": y, "per_epoch": per_epoch},   # agrees: not tested
            ("S", "2"): None,                                    # no predictions: skipped
            ("T", "0"): {"y_true": y, "per_epoch": per_epoch[::-1]},  # epochs 0 vs 1: b=5, c=0
            ("T", "1"): {"y_true": y, "per_epoch": per_epoch}}   # epoch 5 out of range: skipped


def test_epoch_mcnemar_rows_and_summary():
    rows = cost.mcnemar_epoch_rows(_epoch_picks(), _arrays())
    assert rows[["study", "trial", "loss_epoch", "accuracy_epoch", "b", "c"]].values.tolist() == [
        ["S", "0", 1, 2, 0, 5], ["T", "0", 0, 1, 5, 0]]
    assert rows["p_value"].tolist() == pytest.approx([binomtest(0, 5).pvalue] * 2)
    s = cost.mcnemar_epoch_summary(rows, disagreeing_trials=4)
    assert s["disagreeing_trials"] == 4 and s["trials_tested"] == 2
    assert s["significant_at_0.05"] == 0 and s["share_significant"] == 0
    assert (s["discordant_loss_epoch_only_right"], s["discordant_accuracy_epoch_only_right"]) == (5, 5)
    assert s["share_of_discordant_favouring_accuracy_epoch"] == pytest.approx(0.5)
    assert (s["accuracy_epoch_better"], s["loss_epoch_better"]) == (1, 1)
    assert s["test_images_per_trial"] == 10


def test_epoch_mcnemar_reads_each_disagreeing_trial_once():
    arrays, calls = _arrays(), []

    def predictions(study, trial):
        calls.append((study, trial))
        return arrays[(study, trial)]

    rows = cost.mcnemar_epochs(_epoch_picks(), predictions)
    assert sorted(calls) == [("S", "0"), ("S", "2"), ("T", "0"), ("T", "1")]
    assert len(rows) == 2
    assert cost.mcnemar_epochs(_epoch_picks(), None).empty
    empty = cost.mcnemar_epoch_summary(rows.iloc[:0], 0)
    assert empty["trials_tested"] == 0 and math.isnan(empty["share_significant"])


KNOB = {"low": None, "high": None, "log": False, "choices": None, "value": None,
        "default": None, "condition": None}


@pytest.mark.parametrize("spec, expected", [
    ({**KNOB, "type": "float", "role": "scientific", "low": 1e-4, "high": 1e-1, "log": True},
     {"kind": "interval", "low": 1e-4, "high": 1e-1, "log": True}),
    ({**KNOB, "type": "int", "role": "scientific", "low": 1, "high": 4},
     {"kind": "interval", "low": 1.0, "high": 4.0, "log": False}),
    ({**KNOB, "type": "int", "role": "scientific", "low": 1, "high": 2}, None),  # all edges
    ({**KNOB, "type": "categorical", "role": "scientific", "choices": [64, 16, 32]},
     {"kind": "choices", "choices": [16.0, 32.0, 64.0]}),
    ({**KNOB, "type": "categorical", "role": "nuisance", "choices": ["adam", "sgd", "rmsprop"]}, None),
    ({**KNOB, "type": "categorical", "role": "scientific", "choices": [16, 32]}, None),
    ({**KNOB, "type": "bool", "role": "scientific"}, None),
    ({**KNOB, "type": "float", "role": "fixed", "value": 0.1}, None),
])
def test_searched_range(spec, expected):
    assert boundary.searched_range(spec) == expected


def test_edges_on_log_linear_and_choices():
    log = {"kind": "interval", "low": 1e-4, "high": 1e-1, "log": True}
    # On a log scale 1e-4..1e-1 spans 3 decades; the outer 10% is 0.3 decade at each end.
    assert boundary.at_edge(1.5e-4, log) and boundary.at_edge(0.06, log)
    assert not boundary.at_edge(3e-4, log) and not boundary.at_edge(0.01, log)
    linear = {"kind": "interval", "low": 0.0, "high": 0.5, "log": False}
    assert boundary.at_edge(0.04, linear) and boundary.at_edge(0.46, linear)
    assert not boundary.at_edge(0.06, linear)
    choices = {"kind": "choices", "choices": [16.0, 32.0, 48.0, 64.0]}
    assert boundary.at_edge(16, choices) and boundary.at_edge(64, choices)
    assert not boundary.at_edge(32, choices) and not boundary.at_edge(48, choices)
    assert boundary.position(32, choices) == pytest.approx(1 / 3)


def _trials() -> tuple[pd.DataFrame, pd.DataFrame]:
    scored = pd.DataFrame({"study": ["A"] * 3 + ["B"] * 3, "trial": ["0", "1", "2"] * 2,
                           "hp.lr": [0.011, 0.02, 0.05, 0.012, 0.03, 0.09],
                           "hp.opt": pd.array(["adam", "sgd", "adam", "sgd", "adam", "sgd"],
                                              dtype="string")})
    picks = pd.DataFrame({"study": ["A", "B"], "loss_pick": ["0", "0"], "accuracy_pick": ["1", "2"]})
    return scored, picks


def test_boundary_checks_use_searched_range_and_fall_back():
    scored, picks = _trials()
    lr = {**KNOB, "type": "float", "role": "nuisance", "low": 1e-4, "high": 1.0, "log": True}
    # Searched 1e-4..1: the picks (0.011-0.09) sit mid-range, though they span the explored one.
    searched = boundary.boundary_checks(scored, picks, ["hp.lr", "hp.opt"], {"A": {"lr": lr}, "B": {"lr": lr}})
    assert [(c["param"], c["pick"], c["range_source"], c["picks_at_edge"], c["at_edge"])
            for c in searched] == [("lr", "loss_pick", "searched", 0, False),
                                   ("lr", "accuracy_pick", "searched", 0, False)]
    assert searched[0]["range"] == "[0.0001, 1] (log scale)"
    # Without a logged space (CSV mode), the explored range 0.011..0.09 stands in.
    explored = boundary.boundary_checks(scored, picks, ["hp.lr"])
    assert [(c["range_source"], c["picks_at_edge"], c["at_edge"]) for c in explored] == [
        ("explored", 2, True), ("explored", 1, False)]
    mixed = boundary.boundary_checks(scored, picks, ["hp.lr"], {"A": {"lr": lr}})
    assert mixed[0]["range_source"] == "searched where logged, else explored"
    assert mixed[0]["picks_at_edge"] == 1  # B's 0.012 is at the explored edge; A's 0.011 is not
    # A knob fixed in the searched space has no edge to report.
    fixed = {**KNOB, "type": "float", "role": "fixed", "value": 0.01}
    assert boundary.boundary_checks(scored, picks, ["hp.lr"], {"A": {"lr": fixed}, "B": {"lr": fixed}}) == []


def test_inactive_conditional_knobs_are_not_edge_samples():
    """`l2` logged as 0 under use_l2=False is the default, not a sample at the range's edge."""
    spec = {"l2": {"type": "float", "role": "scientific", "low": 1e-6, "high": 1e-2, "log": True,
                   "condition": {"use_l2": True}},
            "use_l2": {"type": "bool", "role": "scientific"}}
    trials = pd.DataFrame({"study": ["S1", "S1", "S1", "S2", "S2"], "trial": ["0", "1", "2", "0", "1"],
                           "hp.use_l2": ["False", "True", "True", "False", "True"],
                           "hp.l2": [0.0, 1e-4, 3e-4, 0.0, 2e-4]})
    blanked = boundary.blank_inactive(trials, {"S1": spec, "S2": spec})
    assert blanked["hp.l2"].isna().tolist() == [True, False, False, True, False]
    assert trials["hp.l2"].notna().all()  # the input is not changed in place
    # A study without a logged space is left as it is.
    assert boundary.blank_inactive(trials, {"S1": spec})["hp.l2"].isna().tolist() == [True, False, False, False, False]
    picks = pd.DataFrame({"study": ["S1", "S2"], "loss_pick": ["0", "0"], "accuracy_pick": ["1", "1"]})
    raw = {c["pick"]: c for c in boundary.boundary_checks(trials, picks, ["hp.l2"], {"S1": spec, "S2": spec})}
    assert raw["loss_pick"]["picks_at_edge"] == 2  # the defect: defaults read as edge samples
    checks = {c["pick"]: c for c in boundary.boundary_checks(blanked, picks, ["hp.l2"], {"S1": spec, "S2": spec})}
    assert "loss_pick" not in checks  # both loss picks had l2 switched off: nothing to check
    assert checks["accuracy_pick"]["picks"] == 2 and checks["accuracy_pick"]["picks_at_edge"] == 0
