"""The decisions behind the figures (scales, bounds, edge flags, which figures), on hand-made
tables, without drawing."""

from __future__ import annotations

import pandas as pd

from analysis import plotdata

# Two studies of two trials; S1 agrees (t1 is both picks), S2 disagrees.
SCORED = pd.DataFrame({"study": ["S1", "S1", "S2", "S2"], "trial": ["t0", "t1", "t2", "t3"],
                       "val_loss": [0.5, 0.4, 0.3, 0.6], "val_accuracy": [0.7, 0.8, 0.6, 0.9],
                       "hp.lr": [1e-4, 1e-3, 1e-2, 1e-1], "hp.dropout": [0.1, 0.2, 0.3, 0.4],
                       "hp.opt": ["adam", "sgd", "adam", "sgd"]})
PICKS = pd.DataFrame({"study": ["S1", "S2"], "loss_pick": ["t1", "t2"], "accuracy_pick": ["t1", "t3"],
                      "agree": [True, False]})


def _check(param: str, pick: str, at_edge: bool, **extra) -> dict:
    return {"param": param, "pick": pick, "at_edge": at_edge, "log_scale": False,
            "range_source": "explored", "range": "[0.1, 0.4]",
            "ranges": [{"kind": "interval", "low": 0.1, "high": 0.4, "log": False}], **extra}


def test_axis_without_a_check_takes_log_scale_from_its_spread():
    lr, opt = plotdata.axis_infos(SCORED, PICKS, ["hp.lr", "hp.opt"], [])
    assert (lr.name, lr.log, lr.range_source, lr.bounds, lr.at_edge) == ("lr", True, "explored", None, False)
    assert not opt.log and opt.edge_note.startswith("no edge check")
    assert lr.table.set_index("trial")["role"].to_dict() == {
        "t0": "other", "t1": "both picks", "t2": "loss pick", "t3": "accuracy pick"}


def test_axis_with_checks_is_at_the_edge_if_either_rule_is_and_draws_searched_bounds():
    searched = {"range_source": "searched", "log_scale": True, "range": "[0.01, 1] (log scale)",
                "ranges": [{"kind": "interval", "low": 0.01, "high": 1.0, "log": True}]}
    checks = [_check("dropout", "loss_pick", False), _check("dropout", "accuracy_pick", True),
              _check("lr", "loss_pick", False, **searched), _check("lr", "accuracy_pick", False, **searched)]
    dropout, lr = plotdata.axis_infos(SCORED, PICKS, ["hp.dropout", "hp.lr"], checks)
    assert dropout.at_edge and dropout.bounds is None and not dropout.log  # explored: no bounds drawn
    assert "explored range [0.1, 0.4]" in dropout.edge_note
    assert not lr.at_edge and lr.log and lr.bounds == (0.01, 1.0)


def test_two_searched_ranges_draw_no_bounds():
    two = {"range_source": "searched", "ranges": [{"kind": "interval", "low": 0.0, "high": 0.5, "log": False},
                                                   {"kind": "interval", "low": 0.0, "high": 0.9, "log": False}]}
    (info,) = plotdata.axis_infos(SCORED, PICKS, ["hp.dropout"], [_check("dropout", "loss_pick", False, **two)])
    assert info.bounds is None


def test_scatter_panels_come_disagreeing_first_and_stop_at_the_limit():
    table = plotdata.scatter_table(SCORED, PICKS)
    assert [study for study, _ in plotdata.scatter_panels(table, 12)] == ["S2", "S1"]
    ((study, trials),) = plotdata.scatter_panels(table, 1)
    # Picks sort last, so they are drawn on top of the other trials.
    assert study == "S2" and trials["role"].tolist() == ["loss pick", "accuracy pick"]


def test_calibration_pairs_are_the_disagreeing_studies_when_any():
    picks = PICKS.assign(val_ece_loss_pick=[0.01, 0.02], val_ece_accuracy_pick=[0.01, 0.05])
    assert plotdata.calibration_shown(picks)["study"].tolist() == ["S2", "S2"]
    agreeing = picks.assign(agree=True)
    assert plotdata.calibration_shown(agreeing)["study"].tolist() == ["S1", "S2", "S1", "S2"]
    assert plotdata.calibration_shown(PICKS).empty  # no val_ece: no figure
