"""Edges of the analysis, met where a user meets them: `python -m analysis report --csv`
on hand-made tables whose answers are worked out by hand in each test."""

from __future__ import annotations

import hashlib
import json
import math

import pandas as pd
import pytest

from study.contract import SUMMARY_JSON
from tests.analysis.conftest import run_analysis


def _report(tmp_path, rows, columns, *flags, name="t.csv"):
    """Write `rows` as a CSV, run the report on it; returns (process, summary, report.md)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), "--out", str(out), "--bootstrap", "200",
                        *flags)
    if proc.returncode != 0:
        return proc, None, None
    return proc, json.loads((out / SUMMARY_JSON).read_text()), (out / "report.md").read_text()


def _excluded(summary) -> dict:
    return {(x["what"], x["why"]): x["count"] for x in summary["exclusions"]}


def _epochs(trials, n_epochs=2):
    """Trial rows (study, trial, loss, accuracy) as `n_epochs` per-epoch rows: the trial's
    values at its last epoch, worse ones before, so its best epoch is the last."""
    return [(s, t, e, loss + 0.1 * (n_epochs - 1 - e), acc - 0.01 * (n_epochs - 1 - e))
            for s, t, loss, acc in trials for e in range(n_epochs)]


# A agrees (t1 best on both), B disagrees: the answer is 1 of 2 studies.
PLAIN = [("A", "t0", 0.5, 0.80), ("A", "t1", 0.4, 0.90), ("B", "t0", 0.3, 0.85), ("B", "t1", 0.4, 0.90)]
# A blank study id, and a blank trial id in A that would be A's loss pick (and make A
# disagree) if it were read as a trial.
BLANK = [(None, "t9", 0.1, 0.99), ("A", None, 0.05, 0.50), ("A", "  ", 0.05, 0.50)]


@pytest.mark.parametrize("mode", ["trials", "epochs"])
def test_blank_ids_are_listed_not_crashed_or_merged(tmp_path, mode):
    if mode == "trials":
        rows, columns, flags = PLAIN + BLANK, ["study", "trial", "val_loss", "val_accuracy"], []
    else:
        rows = _epochs(PLAIN + BLANK)
        columns, flags = ["study", "trial", "epoch", "val_loss", "val_accuracy"], ["--epoch-col", "epoch"]
    proc, s, _ = _report(tmp_path, rows, columns, *flags)
    assert proc.returncode == 0, proc.stderr
    per_row = 1 if mode == "trials" else 2
    assert _excluded(s)[("rows", "blank study id (--study-col study)")] == per_row
    assert _excluded(s)[("rows", "blank trial id (--trial-col trial)")] == 2 * per_row
    assert (s["trial_level"]["studies"], s["trial_level"]["disagreements"]) == (2, 1)


def test_impossible_values_are_listed_and_decide_nothing(tmp_path):
    rows = [("A", "t0", 0.5, 0.80, 0.8), ("A", "t1", 0.4, 0.90, 0.9),
            ("A", "t2", 0.45, 1.5, 0.9),           # accuracy 1.5 would make A disagree
            ("B", "t0", 0.3, 0.85, 0.8), ("B", "t1", 0.4, 0.90, -0.1),  # test accuracy -0.1
            ("B", "t2", "-inf", 0.95, 0.9),        # -inf loss at max accuracy would make B agree
            ("C", "t0", 0.3, 0.70, 0.7), ("C", "t1", 0.35, 0.60, 0.6),
            ("C", "t2", -0.2, 0.50, 0.5)]          # negative cross-entropy: C would disagree
    proc, s, _ = _report(tmp_path, rows, ["study", "trial", "val_loss", "val_accuracy", "test"],
                         "--test-accuracy-col", "test")
    assert proc.returncode == 0, proc.stderr
    # Without the impossible rows: A agrees, B disagrees, C agrees.
    assert (s["trial_level"]["studies"], s["trial_level"]["disagreements"]) == (3, 1)
    excluded = _excluded(s)
    assert excluded[("rows", "impossible value: val_accuracy outside [0, 1]")] == 1
    assert excluded[("rows", "impossible value: val_loss negative or infinite")] == 2
    assert excluded[("values of test", "outside [0, 1]: left out of the statistics that use this "
                                       "column (the rows stay)")] == 1


@pytest.mark.parametrize("column", ["val_accuracy", "test"])
def test_accuracy_in_percent_exits_2_saying_so(tmp_path, column):
    rows = [("A", "t0", 0.5, 0.80, 0.78), ("A", "t1", 0.4, 0.90, 0.88),
            ("B", "t0", 0.3, 0.85, 0.80), ("B", "t1", 0.4, 0.90, 0.86)]
    frame = pd.DataFrame(rows, columns=["study", "trial", "val_loss", "val_accuracy", "test"])
    frame[column] *= 100
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    proc = run_analysis("report", "--csv", str(path), "--out", str(tmp_path / "out"),
                        "--test-accuracy-col", "test")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    flag = "--accuracy-col" if column == "val_accuracy" else "--test-accuracy-col"
    assert len(lines) == 1 and f"{flag}={column} looks like percent" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


EPOCH_COLUMNS = ["study", "trial", "epoch", "val_loss", "val_accuracy"]


def _one_based(first_epoch=1):
    """2 studies x 2 trials x 4 epochs; every trial has its minimal loss at its first epoch
    and its maximal accuracy at its last (so every trial disagrees)."""
    losses, accuracies = [0.2, 0.3, 0.4, 0.5], [0.5, 0.6, 0.7, 0.8]
    return [(s, t, first_epoch + e, losses[e] + d, accuracies[e] - d)
            for s in ("A", "B") for t, d in (("t0", 0.0), ("t1", 0.05)) for e in range(4)]


def test_one_based_epochs_give_the_true_budget(tmp_path):
    proc, s, _ = _report(tmp_path, _one_based(1), EPOCH_COLUMNS, "--epoch-col", "epoch")
    assert proc.returncode == 0, proc.stderr
    position = s["epoch_level"]["optimum_position"]
    # Budget 4: the first epoch ends at 1/4 of it, the last at 4/4.
    assert position["loss"]["median_fraction_of_budget"] == pytest.approx(0.25)
    assert position["accuracy"]["median_fraction_of_budget"] == pytest.approx(1.0)
    # First 10% of 4 epochs is [0, 0.4): 0.4 of the first epoch; last 25% is the last epoch.
    assert position["loss"]["first_10pct"] == pytest.approx(0.4)
    assert position["accuracy"]["last_25pct"] == pytest.approx(1.0)
    assert s["source"]["epoch_base"] == 1


def test_epochs_flag_sets_the_budget(tmp_path):
    proc, s, _ = _report(tmp_path, _one_based(0), EPOCH_COLUMNS, "--epoch-col", "epoch",
                         "--epochs", "10")
    assert proc.returncode == 0, proc.stderr
    position = s["epoch_level"]["optimum_position"]
    assert position["loss"]["median_fraction_of_budget"] == pytest.approx(0.1)
    assert position["accuracy"]["median_fraction_of_budget"] == pytest.approx(0.4)


def test_epoch_beyond_the_epochs_flag_exits_2(tmp_path):
    proc, _, _ = _report(tmp_path, _one_based(0), EPOCH_COLUMNS, "--epoch-col", "epoch",
                         "--epochs", "3")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--epochs 3" in lines[0] and "epoch 3" in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_fractional_epochs_are_listed_not_truncated(tmp_path):
    rows = _one_based(0) + [("A", "t0", 1.7, 0.01, 0.99)]  # would be epoch 1's best values
    proc, s, _ = _report(tmp_path, rows, EPOCH_COLUMNS, "--epoch-col", "epoch")
    assert proc.returncode == 0, proc.stderr
    assert _excluded(s)[("rows", "epoch (epoch) not a whole number >= 0")] == 1
    assert s["epoch_level"]["disagreements"] == 4


def test_one_epoch_trial_has_no_epoch_level_verdict(tmp_path):
    rows = _one_based(0) + [("A", "t2", 0, 0.9, 0.1)]  # one epoch: no verdict at epoch level
    proc, s, _ = _report(tmp_path, rows, EPOCH_COLUMNS, "--epoch-col", "epoch")
    assert proc.returncode == 0, proc.stderr
    assert (s["epoch_level"]["trials"], s["epoch_level"]["disagreements"]) == (4, 4)
    assert s["trial_level"]["trials"] == 5  # it still counts at trial level
    why = "fewer than 2 epochs: no epoch-level verdict (the trial still counts at trial level)"
    assert _excluded(s)[("trials (epoch level only)", why)] == 1
    # The optima sit at epochs 0 and 3 of 4: the one-epoch trial must not add 100% anywhere.
    assert s["epoch_level"]["optimum_position"]["accuracy"]["first_10pct"] == 0


def test_only_one_epoch_trials_still_give_the_trial_level_answer(tmp_path):
    """Every trial has one epoch (a 1-epoch search): no epoch-level verdict at all, and the
    report must still answer at trial level (it crashed with an IndexError on an empty pick)."""
    rows = [(study, trial, 0, loss, accuracy) for study in ("A", "B")
            for trial, loss, accuracy in (("t0", 0.3, 0.85), ("t1", 0.4, 0.90))]
    proc, s, _ = _report(tmp_path, rows, EPOCH_COLUMNS, "--epoch-col", "epoch")
    assert proc.returncode == 0, proc.stderr
    assert (s["trial_level"]["studies"], s["trial_level"]["disagreements"]) == (2, 2)  # 0.3 < 0.4, 0.85 < 0.90
    why = "fewer than 2 epochs: no epoch-level verdict (the trial still counts at trial level)"
    assert _excluded(s)[("trials (epoch level only)", why)] == 4


def test_last_quarter_of_ten_epochs_is_a_quarter(tmp_path):
    """Accuracy peaks at epoch 7 of 10, which spans [7, 8): half of it lies in [7.5, 10)."""
    accuracy = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.9, 0.8, 0.75]
    loss = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.45, 0.4, 0.42, 0.44]
    rows = [(s, t, e, loss[e] + d, accuracy[e] - d) for s in ("A", "B")
            for t, d in (("t0", 0.0), ("t1", 0.01)) for e in range(10)]
    proc, s, _ = _report(tmp_path, rows, EPOCH_COLUMNS, "--epoch-col", "epoch")
    assert proc.returncode == 0, proc.stderr
    assert s["epoch_level"]["optimum_position"]["accuracy"]["last_25pct"] == pytest.approx(0.5)


def test_bootstrap_without_an_interval_says_na_and_why(tmp_path):
    # Two studies, both disagreeing: every resample is 2/2, a zero-width "interval".
    rows = [("A", "t0", 0.3, 0.85), ("A", "t1", 0.4, 0.90), ("B", "t0", 0.3, 0.85), ("B", "t1", 0.4, 0.90)]
    proc, s, md = _report(tmp_path, _epochs(rows, 3), EPOCH_COLUMNS, "--epoch-col", "epoch")
    assert proc.returncode == 0, proc.stderr
    for level in ("trial_level", "epoch_level"):
        assert s[level]["ci95_bootstrap"] == [None, None]
        assert "2 studies, fewer than 4" in s[level]["ci95_bootstrap_missing"]
    assert "n/a (2 studies, fewer than 4" in md
    assert "honest" not in md
    assert "[100.0%, 100.0%]" not in md


def test_bootstrap_of_zero_of_n_says_na_and_why(tmp_path):
    rows = [(s, t, 0.5 - 0.1 * i, 0.8 + 0.05 * i) for s in "ABCDE" for i, t in enumerate(("t0", "t1"))]
    proc, s, md = _report(tmp_path, rows, ["study", "trial", "val_loss", "val_accuracy"])
    assert proc.returncode == 0, proc.stderr
    assert s["trial_level"]["disagreements"] == 0
    assert s["trial_level"]["ci95_bootstrap"] == [None, None]
    assert "every unit has the same value (0)" in s["trial_level"]["ci95_bootstrap_missing"]
    assert "[0.0%, 0.0%]" not in md


def test_gain_is_the_difference_of_regrets(tmp_path):
    """Both rules pick trial a, at different epochs: the loss rule deploys epoch 1 (test
    0.75), the accuracy rule epoch 2 (test 0.81). Gain 0.81 − 0.75 = 0.06; the test-best
    deployable model is a at epoch 2 (0.81), so regrets are 0.06 and 0."""
    curves = {"a": ([0.5, 0.3, 0.4], [0.7, 0.8, 0.9], [0.70, 0.75, 0.81]),
              "b": ([0.6, 0.5, 0.55], [0.6, 0.7, 0.65], [0.60, 0.70, 0.66])}
    rows = [(study, trial, e, loss[e], acc[e], test[e]) for study in ("S1", "S2")
            for trial, (loss, acc, test) in curves.items() for e in range(3)]
    proc, s, _ = _report(tmp_path, rows, [*EPOCH_COLUMNS, "test"], "--epoch-col", "epoch",
                         "--test-accuracy-col", "test")
    assert proc.returncode == 0, proc.stderr
    t = s["trial_level"]
    assert t["disagreements"] == 0
    assert t["test_accuracy_gain_of_accuracy_pick"]["mean"] == pytest.approx(0.06)
    assert t["test_regret"]["loss_pick"] == pytest.approx(0.06)
    assert t["test_regret"]["accuracy_pick"] == pytest.approx(0.0)


def _ranked(study, accuracies):
    """Trials t0.. with losses 1, 2, 3, ... and the given accuracies."""
    return [(study, f"t{i}", float(i + 1), a) for i, a in enumerate(accuracies)]


def test_k_curve_uses_one_fixed_set_of_studies_exactly(tmp_path):
    """Studies P, Q: the lowest-loss trial has the lowest accuracy (accuracies .1 .4 .3 .2).
    k = 2: of the 6 pairs the three holding t0 disagree: 1/2. k = 3: the 3 triples with t0
    disagree, {t1, t2, t3} agrees (t1 has both): 3/4. k = 4: 1. Studies R, S agree at every
    k (loss and accuracy order the trials alike). Study T has 2 trials: with 4 of 5 studies
    at 4 trials, K = 4 and T is left out rather than entering the curve at k = 2 only."""
    rows = (_ranked("P", [.1, .4, .3, .2]) + _ranked("Q", [.1, .4, .3, .2])
            + _ranked("R", [.9, .8, .7, .6]) + _ranked("S", [.9, .8, .7, .6])
            + _ranked("T", [.1, .9]))
    proc, s, md = _report(tmp_path, rows, ["study", "trial", "val_loss", "val_accuracy"])
    assert proc.returncode == 0, proc.stderr
    curve = s["study_size"]
    assert [p["k"] for p in curve] == [2, 3, 4]
    assert [p["rate"] for p in curve] == pytest.approx([0.25, 0.375, 0.5], abs=1e-12)
    assert {(p["studies"], p["left_out"]) for p in curve} == {(4, 1)}
    assert "grows with" not in md
    assert "the same 4 studies at every k" in md


def test_logistic_needs_ten_events_per_feature(tmp_path):
    """5 studies x 4 trials, 2 of 20 trials disagree at epoch level: 2 events for 1 feature."""
    rows = []
    for study in "ABCDE":
        for i in range(4):
            loss, acc = [0.5, 0.4, 0.3], [0.7, 0.8, 0.9]
            if study in "AB" and i == 0:
                acc = [0.7, 0.9, 0.8]  # the accuracy peaks before the loss minimum
            for e in range(3):
                rows.append((study, f"t{i}", e, loss[e] + 0.01 * i, acc[e] - 0.01 * i, i * 1.3 + ord(study) % 3))
    proc, s, md = _report(tmp_path, rows, [*EPOCH_COLUMNS, "width"], "--epoch-col", "epoch",
                          "--explain-col", "width")
    assert proc.returncode == 0, proc.stderr
    assert s["epoch_level"]["disagreements"] == 2
    fit = s["explanations"]["epoch_level"]["logistic"]
    assert "terms" not in fit
    assert "too few events for a model" in fit["error"] and "at least 10" in fit["error"]
    assert "No logistic regression: too few events" in md


def test_row_order_does_not_change_the_rate(tmp_path):
    """Study D: t0 and t1 tie at minimal loss, only t1 is at maximal accuracy: D counts 1/2
    whichever row comes first; lenient 0, strict 1. Study B disagrees outright."""
    rows = [("D", "t0", 0.3, 0.80), ("D", "t1", 0.3, 0.90), ("D", "t2", 0.5, 0.85),
            ("B", "t0", 0.3, 0.85), ("B", "t1", 0.4, 0.90)]
    answers, bounds = [], []
    for name, ordered in (("forward.csv", rows), ("backward.csv", rows[::-1])):
        proc, s, _ = _report(tmp_path / name[:-4], ordered, ["study", "trial", "val_loss", "val_accuracy"],
                             name=name)
        assert proc.returncode == 0, proc.stderr
        t = s["trial_level"]
        answers.append((t["disagreements"], t["rate"]))
        bounds.append((t.get("rate_lenient"), t.get("rate_strict")))
    assert answers[0] == answers[1] == (1.5, 0.75)
    assert bounds[0] == bounds[1] == (0.5, 1.0)


def test_csv_report_describes_its_own_input(tmp_path):
    path = tmp_path / "runs.csv"
    pd.DataFrame(PLAIN, columns=["g", "trial", "xent", "acc"]).to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), "--out", str(out), "--study-col", "g",
                        "--loss-col", "xent", "--accuracy-col", "acc")
    assert proc.returncode == 0, proc.stderr
    md = (out / "report.md").read_text()
    # val_crossentropy appears only where the report names the rules this input cannot feed.
    assert "L2" not in md and "val_crossentropy" not in md.replace("`min_val_crossentropy` (needs column val\\_crossentropy", "")
    assert "column `xent` and the accuracy column `acc` of `runs.csv`" in md
    source = json.loads((out / SUMMARY_JSON).read_text())["source"]
    assert source["name"] == "runs.csv"
    assert source["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert str(tmp_path) not in json.dumps(source)


def test_rank_figure_is_the_same_on_every_run(tmp_path):
    rows = [(s, f"t{i}", 0.1 * ((i * 7 + ord(s)) % 5), 0.5 + 0.1 * ((i * 3 + ord(s)) % 4))
            for s in "ABCDEFGH" for i in range(5)]
    path = tmp_path / "t.csv"
    pd.DataFrame(rows, columns=["study", "trial", "val_loss", "val_accuracy"]).to_csv(path, index=False)
    images = []
    for run in ("one", "two"):
        proc = run_analysis("report", "--csv", str(path), "--out", str(tmp_path / run),
                            "--bootstrap", "50")
        assert proc.returncode == 0, proc.stderr
        images.append((tmp_path / run / "rank_correlation.png").read_bytes())
    assert images[0] == images[1]


def test_rates_figure_shows_the_cluster_bootstrap_at_epoch_level(tmp_path):
    from analysis.plotdata import rates_table

    trials = [(s, f"t{i}", 0.5 - 0.1 * i, 0.8 + 0.05 * ((i + ord(s)) % 3))
              for s in "ABCDE" for i in range(3)]
    proc, s, md = _report(tmp_path, _epochs(trials, 3) + [("A", "t0", 3, 0.01, 0.5)],
                          EPOCH_COLUMNS, "--epoch-col", "epoch")
    assert proc.returncode == 0, proc.stderr
    table = rates_table(s).set_index("level")
    epoch = s["epoch_level"]
    assert (table.loc["epoch level", "lo"], table.loc["epoch level", "hi"]) == tuple(epoch["ci95_bootstrap"])
    assert (table.loc["epoch level", "lo"], table.loc["epoch level", "hi"]) != tuple(epoch["ci95_wilson"])
    assert "cluster bootstrap over studies at epoch level" in md
    assert not math.isnan(table.loc["epoch level", "lo"])


def test_many_studies_get_one_summary_figure_not_a_panel_each(tmp_path):
    import matplotlib.image

    # 40 studies: s0..s19 agree (lower loss, higher accuracy), s20..s39 disagree.
    rows = []
    for i in range(40):
        flip = i >= 20
        rows += [(f"s{i}", "a", 0.2, 0.7 if flip else 0.9), (f"s{i}", "b", 0.3, 0.8)]
    proc, s, md = _report(tmp_path, rows, ["study", "trial", "val_loss", "val_accuracy"])
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert not (out / "picks_scatter_all.png").exists()
    summary_png = out / "pick_gaps.png"
    assert summary_png.stat().st_size <= 2_000_000
    assert max(matplotlib.image.imread(summary_png).shape[:2]) <= 4000
    assert "Each point is one of the 40 studies" in md


def test_pick_gaps_by_hand():
    from analysis.plotdata import pick_gaps_table

    scored = pd.DataFrame({"study": ["A", "A", "B", "B"], "trial": ["a", "b", "a", "b"],
                           "val_loss": [0.2, 0.3, 0.2, 0.3], "val_accuracy": [0.7, 0.8, 0.9, 0.8]})
    picks = pd.DataFrame({"study": ["A", "B"], "loss_pick": ["a", "a"], "accuracy_pick": ["b", "a"],
                          "agree": [False, True]})
    gaps = pick_gaps_table(scored, picks).set_index("study")
    assert gaps.loc["A", "accuracy_given_up"] == pytest.approx(0.1)
    assert gaps.loc["A", "loss_given_up"] == pytest.approx(0.1)
    assert gaps.loc["B", ["accuracy_given_up", "loss_given_up"]].tolist() == [0, 0]
