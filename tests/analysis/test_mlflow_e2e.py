"""MLflow end to end: a store written per the search contract, then `python -m analysis
report`, checked against an independent recount through the MLflow client."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest
from mlflow import MlflowClient

from study.contract import (ROLE_REPORT, ROLE_TRIAL, RUN_ROLE, STUDY_NAME, SUMMARY_JSON, TRIAL_NUMBER,
                            TRIAL_STATE)
from tests.analysis.conftest import run_analysis


def _recount(uri: str, experiments: list[str]) -> dict:
    """Recount from the per-trial summary metrics and metric histories, not history.csv."""
    client = MlflowClient(uri)
    ids = [client.get_experiment_by_name(e).experiment_id for e in experiments]
    runs = client.search_runs(ids, f"tags.{RUN_ROLE} = '{ROLE_TRIAL}'", max_results=1000)
    by_study, fails, epoch_trials, epoch_dis = defaultdict(list), 0, 0, 0
    for run in runs:
        tags = run.data.tags
        if tags[TRIAL_STATE] == "FAIL":
            fails += 1
            continue
        if tags[TRIAL_STATE] != "COMPLETE":
            continue
        m = run.data.metrics
        by_study[tags[STUDY_NAME]].append(
            (int(tags[TRIAL_NUMBER]), m["best_val_loss"], m["best_val_accuracy"]))
        acc = {x.step: x.value for x in client.get_metric_history(run.info.run_id, "val_accuracy")}
        epoch_trials += 1
        epoch_dis += acc[int(m["best_val_loss_epoch"])] < max(acc.values())
    studies = disagreements = 0
    for trials in by_study.values():
        if len(trials) < 2:
            continue
        studies += 1
        loss_pick = min(trials, key=lambda t: (t[1], t[0]))
        disagreements += loss_pick[2] < max(t[2] for t in trials)
    return {"studies": studies, "disagreements": disagreements, "fails": fails,
            "epoch_trials": epoch_trials, "epoch_disagreements": epoch_dis}


def test_summary_matches_independent_recount(mlflow_report):
    s = json.loads((mlflow_report["out"] / SUMMARY_JSON).read_text())
    expected = _recount(mlflow_report["uri"], mlflow_report["experiments"])
    t = s["trial_level"]
    assert (t["studies"], t["disagreements"]) == (expected["studies"], expected["disagreements"])
    assert t["rate"] == pytest.approx(expected["disagreements"] / expected["studies"])
    e = s["epoch_level"]
    assert (e["trials"], e["disagreements"]) == (expected["epoch_trials"],
                                                 expected["epoch_disagreements"])
    fails = sum(x["count"] for x in s["exclusions"] if x["why"] == "trial state FAIL")
    assert fails == expected["fails"]
    assert set(s["by_experiment"]) == {"balanced", "imbalanced"}
    assert "val_crossentropy" in s["variants"] and "experiment_comparison" in s
    assert any("adaptive sampler" in w for w in s["warnings"])
    assert any("pruner" in w for w in s["warnings"])
    # Epoch-level McNemar: every disagreeing trial has per-epoch test predictions.
    m = e["mcnemar"]
    assert m["trials_tested"] == m["disagreeing_trials"] == e["disagreements"]
    assert len(m["per_trial"]) == m["trials_tested"]
    assert all(r["loss_epoch"] != r["accuracy_epoch"] for r in m["per_trial"])
    # The study runs logged their searched space, so the boundary check uses it.
    assert s["source"]["searched_spaces"] >= t["studies"]
    checks = {c["param"]: c for c in s["boundary_checks"]}
    assert checks["l2"]["range_source"] == "searched"
    assert checks["l2"]["range"] == "[1e-06, 0.01] (log scale)"


def test_every_referenced_file_exists(mlflow_report):
    out = mlflow_report["out"]
    refs = re.findall(r'(?:src|href)="([^"#:]+)"', (out / "index.html").read_text())
    assert len([r for r in refs if r.endswith(".png")]) >= 8
    missing = [r for r in refs if not (out / r).is_file()]
    assert not missing


def test_report_run_is_logged(mlflow_report):
    client = MlflowClient(mlflow_report["uri"])
    exp = client.get_experiment_by_name("balanced")
    runs = client.search_runs([exp.experiment_id], f"tags.{RUN_ROLE} = '{ROLE_REPORT}'")
    assert len(runs) == 1
    names = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {SUMMARY_JSON, "report.md", "index.html", "picks_scatter.png"} <= names


@pytest.mark.parametrize("experiment", ["no-such-experiment", "empty"])
def test_unknown_or_empty_experiment_exits_2(synthetic_store, experiment):
    if experiment == "empty":
        MlflowClient(synthetic_store["uri"]).create_experiment("empty")
    proc = run_analysis("report", "--experiment", experiment, "--tracking-uri",
                        synthetic_store["uri"], "--out", str(synthetic_store["root"] / "x"))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert experiment in proc.stderr


def test_calibration_difference_of_the_picks_matches_a_recount(mlflow_report):
    """Paired ECE difference (accuracy pick − loss pick), recounted from the metric histories."""
    client = MlflowClient(mlflow_report["uri"])
    ids = [client.get_experiment_by_name(e).experiment_id for e in mlflow_report["experiments"]]
    by_study = defaultdict(list)
    for run in client.search_runs(ids, f"tags.{RUN_ROLE} = '{ROLE_TRIAL}' AND tags.`{TRIAL_STATE}` = 'COMPLETE'",
                                  max_results=1000):
        m = run.data.metrics
        ece = {x.step: x.value for x in client.get_metric_history(run.info.run_id, "val_ece")}
        by_study[run.data.tags[STUDY_NAME]].append(
            (int(run.data.tags[TRIAL_NUMBER]), m["best_val_loss"], m["best_val_accuracy"],
             ece[int(m["best_val_loss_epoch"])], ece[int(m["best_val_accuracy_epoch"])]))
    differences = []
    for trials in by_study.values():
        if len(trials) < 2:
            continue
        loss_pick = min(trials, key=lambda t: (t[1], t[0]))
        best = max(t[2] for t in trials)
        accuracy_pick = loss_pick if loss_pick[2] == best else min(t for t in trials if t[2] == best)
        differences.append(accuracy_pick[4] - loss_pick[3])
    s = json.loads((mlflow_report["out"] / SUMMARY_JSON).read_text())
    paired = s["calibration_of_picks"]["val_ece_accuracy_minus_loss_pick"]
    assert paired["mean"] == pytest.approx(sum(differences) / len(differences), abs=1e-9)
    lo, hi = paired["ci95_bootstrap"]
    assert lo <= paired["mean"] <= hi
    assert "logistic" in s["explanations"]["trial_level"]
