"""Figures draw for the edge cases real stores produce, and their tables say the right thing."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import figures, plotdata
from analysis.sources import load_table
from analysis.summary import analyse
from tests.analysis.tables import epoch_table


def _analysis(tmp_path, frame: pd.DataFrame):
    path = tmp_path / "epochs.csv"
    frame.to_csv(path, index=False)
    ds = load_table(path, study_col="study", trial_col="trial", loss_col="val_loss",
                    accuracy_col="val_accuracy", test_accuracy_col="test_accuracy",
                    epoch_col="epoch")
    return analyse(ds, n_boot=100)


@pytest.mark.parametrize("case", ["mixed", "all_agree", "one_study"])
def test_every_figure_draws(tmp_path, case):
    frame = epoch_table()
    if case == "all_agree":  # rate 0: Wilson bounds at the edge of [0, 1]
        frame = frame[frame["trial"].isin(["x0", "x1", "y1"])]
        frame = frame[~((frame["study"] == "S1") & (frame["epoch"] >= 2))]
    if case == "one_study":
        frame = frame[frame["study"] == "S1"]
    result = _analysis(tmp_path, frame)
    figs = figures.draw_all(result, tmp_path / "out")
    assert figs and all((tmp_path / "out" / f.file).stat().st_size > 0 for f in figs)
    assert all(f.caption.endswith(".") and f.caption.count(". ") == 0 for f in figs)


def test_scatter_roles(tmp_path):
    result = _analysis(tmp_path, epoch_table())
    roles = plotdata.scatter_table(result.scored, result.trial).set_index("trial")["role"]
    # S1: x1 is both picks; S2: y1 has minimal loss, y0 maximal accuracy.
    assert roles.to_dict() == {"x0": "other", "x1": "both picks", "y1": "loss pick",
                               "y0": "accuracy pick"}
