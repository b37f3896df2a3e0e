"""The whole product: a replicated tiny search on Fashion-MNIST, then the report, recounted
independently from the MLflow store."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.contract import (HISTORY_CSV, ROLE_REPORT, ROLE_TRIAL, RUN_ROLE, STUDY_NAME, SUMMARY_JSON,
                            TRIAL_NUMBER, TRIAL_STATE)
from tests.conftest import FASHION_DIR, require, run_cli

pytestmark = pytest.mark.slow


def recount(client: MlflowClient, experiment_id: str, folder: Path) -> dict:
    """Trial- and epoch-level disagreements, straight from the runs' metrics and histories."""
    runs = client.search_runs([experiment_id], f"tags.{RUN_ROLE} = '{ROLE_TRIAL}'", max_results=1000)
    complete = [r for r in runs if r.data.tags[TRIAL_STATE] == "COMPLETE"]
    studies, disagreements, epoch_trials, epoch_disagreements = 0, 0, 0, 0
    for study in sorted({r.data.tags[STUDY_NAME] for r in complete}):
        trials = sorted((r for r in complete if r.data.tags[STUDY_NAME] == study),
                        key=lambda r: int(r.data.tags[TRIAL_NUMBER]))
        if len(trials) < 2:
            continue
        studies += 1
        loss_pick = min(trials, key=lambda r: r.data.metrics["best_val_loss"])  # first on ties
        best_accuracy = max(r.data.metrics["best_val_accuracy"] for r in trials)
        disagreements += loss_pick.data.metrics["best_val_accuracy"] != best_accuracy
        for run in trials:
            history = pd.read_csv(client.download_artifacts(run.info.run_id, HISTORY_CSV,
                                                            str(folder / run.info.run_id)))
            loss_epoch = int(history["val_loss"].idxmin())
            epoch_trials += 1
            epoch_disagreements += history["val_accuracy"].iloc[loss_epoch] != history["val_accuracy"].max()
    return {"studies": studies, "disagreements": int(disagreements), "epoch_trials": epoch_trials,
            "epoch_disagreements": int(epoch_disagreements)}


def test_replicated_search_then_report(stores: dict, tmp_path: Path) -> None:
    require((FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), "dataset-fashion-mnist is not installed")
    # Two trials per study (the baseline and one draw) give each study a loss pick and an
    # accuracy pick that can differ, as three did, for two thirds of the training. Lean trial
    # artifacts, as a campaign logs them: the report reads no learning-curve PNG and no model
    # (tests/study/test_search_e2e.py checks those), and each trial is shorter without them.
    search = run_cli("study", "search", "--experiment", "campaign-e2e", "--replicates", "3", "--trials", "2",
                     "--trial-artifacts", "lean",
                     "--sampler", "random", "--pruner", "none", "--storage", stores["storage"],
                     "--tracking-uri", stores["tracking_uri"], "--set", "data.train_size=600",
                     "--set", "data.val_size=300", "--set", "data.test_size=300", "--set", "train.epochs=2",
                     "--set", "params.n_conv_blocks=1", "--set", "params.augment=false")
    assert search.returncode == 0, search.stderr

    out = tmp_path / "report"
    report = run_cli("analysis", "report", "--experiment", "campaign-e2e", "--tracking-uri",
                     stores["tracking_uri"], "--out", str(out), "--bootstrap", "300")
    assert report.returncode == 0, report.stdout + report.stderr

    summary = json.loads((out / SUMMARY_JSON).read_text())
    client = MlflowClient(stores["tracking_uri"])
    experiment_id = client.get_experiment_by_name("campaign-e2e").experiment_id
    expected = recount(client, experiment_id, tmp_path / "recount")
    assert expected["studies"] == 3
    assert summary["trial_level"]["studies"] == expected["studies"]
    assert summary["trial_level"]["disagreements"] == expected["disagreements"]
    assert summary["trial_level"]["rate"] == pytest.approx(expected["disagreements"] / 3)
    assert summary["epoch_level"]["trials"] == expected["epoch_trials"]
    assert summary["epoch_level"]["disagreements"] == expected["epoch_disagreements"]
    assert summary["loss_metric"] == "val_loss" and "val_crossentropy" in summary["variants"]

    _check_validation_noise(client, experiment_id, summary, (out / "report.md").read_text())

    html = (out / "index.html").read_text()
    referenced = re.findall(r'(?:src|href)="([^"#:]+)"', html)
    assert any(name.endswith(".png") for name in referenced)
    for name in referenced:
        assert (out / name).exists(), name

    reports = client.search_runs([experiment_id], f"tags.{RUN_ROLE} = '{ROLE_REPORT}'")
    assert len(reports) == 1
    logged = {a.path for a in client.list_artifacts(reports[0].info.run_id)}
    assert {SUMMARY_JSON, "report.md", "index.html"} <= logged


def _check_validation_noise(client: MlflowClient, experiment_id: str, summary: dict, markdown: str) -> None:
    """Each study's margin is the accuracy pick's correct images minus the loss pick's: the
    logged val_accuracy at the two picks, times n_val, gives it without the bootstrap code."""
    assert "## Validation noise" in markdown
    noise = summary["validation_noise"]
    assert noise["settings"]["replicates"] == 200
    # Only the calibrated-NLL rules are left out: refitting a temperature needs every class's
    # probability, and the outcomes keep the true class's alone.
    assert {item["what"] for item in noise["excluded"]} == {"rule"}
    assert all("calibrated" in item["name"] for item in noise["excluded"])
    assert len(noise["margins"]) == 3
    runs = {(r.data.tags[STUDY_NAME], r.data.tags[TRIAL_NUMBER]): r.info.run_id
            for r in client.search_runs([experiment_id], f"tags.{RUN_ROLE} = '{ROLE_TRIAL}'")}

    def logged(study: str, trial: str, epoch: int, metric: str) -> float:
        history = client.get_metric_history(runs[(study, str(trial))], metric)
        return next(m.value for m in history if m.step == epoch)

    for row in noise["margins"]:
        study = row["study"]
        trials = [trial for (name, trial) in runs if name == study]
        best_accuracy = max(m.value for trial in trials
                            for m in client.get_metric_history(runs[(study, trial)], "val_accuracy"))
        assert logged(study, row["accuracy_trial"], row["accuracy_epoch"], "val_accuracy") == best_accuracy
        gap = (logged(study, row["accuracy_trial"], row["accuracy_epoch"], "val_accuracy")
               - logged(study, row["loss_trial"], row["loss_epoch"], "val_accuracy"))
        assert row["margin"] == round(gap * row["n_val"]) and row["n_val"] == 300
        assert row["se"] >= 0
    assert {rule["rule"] for rule in noise["rules"]} >= {"min_val_loss", "max_val_accuracy"}
