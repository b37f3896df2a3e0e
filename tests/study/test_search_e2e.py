"""End to end: a real tiny search on Fashion-MNIST, read back with the MLflow client; resuming,
on the digits study that tests/conftest.py runs three times."""

from __future__ import annotations

import io
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.metrics import EPOCH_METRICS, summarize_history
from study.storage import open_storage
from study.contract import (EXPERIMENT_KIND, EXPERIMENT_KIND_VALUE, HISTORY_CSV, LEARNING_CURVES_PNG,
                            PARENT_RUN_ID, ROLE_STUDY, ROLE_TRIAL, RUN_ROLE, STUDY_NAME, TEST_PREDICTIONS,
                            TRIAL_NUMBER, TRIAL_STATE)
from tests.conftest import run_cli
from tests.study.conftest import EPOCHS, TEST_SIZE, TRAIN_SIZE, VAL_SIZE

pytestmark = pytest.mark.slow


def runs_of(searched: dict) -> tuple[MlflowClient, object, list, list]:
    client = MlflowClient(searched["tracking_uri"])
    experiment = client.get_experiment_by_name("e2e")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    studies = [r for r in runs if r.data.tags.get(RUN_ROLE) == ROLE_STUDY]
    trials = sorted((r for r in runs if r.data.tags.get(RUN_ROLE) == ROLE_TRIAL),
                    key=lambda r: int(r.data.tags[TRIAL_NUMBER]))
    return client, experiment, studies, trials


def history_csv(client: MlflowClient, run_id: str, folder: Path) -> pd.DataFrame:
    return pd.read_csv(client.download_artifacts(run_id, HISTORY_CSV, str(folder)))


def test_experiment_study_and_trial_tags(searched: dict) -> None:
    client, experiment, studies, trials = runs_of(searched)
    assert experiment.tags[EXPERIMENT_KIND] == EXPERIMENT_KIND_VALUE
    assert len(studies) == 1 and len(trials) == 3
    study = studies[0]
    assert study.info.run_name == "e2e-seed0" and study.info.status == "FINISHED"
    for key, value in {STUDY_NAME: "e2e-seed0", "sampler": "random", "pruner": "hyperband",
                       "objective": "val_accuracy", "seed": "0", "dataset": "fashion_mnist"}.items():
        assert study.data.tags[key] == value, key
    assert len(study.data.tags["space_sha"]) == 16 and study.data.tags["git_commit"]
    assert "space/cnn.yaml" in [a.path for a in client.list_artifacts(study.info.run_id, "space")]
    assert study.data.params["data.train_size"] == str(TRAIN_SIZE) and study.data.params["train.epochs"] == str(EPOCHS)

    stored = {t.number: t for t in optuna.load_study(study_name="e2e-seed0",
                                                      storage=open_storage(searched["storage"])).trials}
    for run in trials:
        number = int(run.data.tags[TRIAL_NUMBER])
        assert run.info.run_name == f"trial-{number:04d}"
        assert run.data.tags[PARENT_RUN_ID] == study.info.run_id
        assert run.data.tags[RUN_ROLE] == ROLE_TRIAL and run.data.tags[STUDY_NAME] == "e2e-seed0"
        assert run.data.tags[TRIAL_STATE] == stored[number].state.name
        assert run.info.status == "FINISHED"  # COMPLETE and PRUNED alike
        for name, value in stored[number].params.items():
            assert run.data.params[name] == str(value)
        assert run.data.params["data.val_size"] == str(VAL_SIZE)
        # Artifacts sit beside the store, never in ./mlruns of the directory the search ran from.
        assert run.info.artifact_uri.startswith((searched["folder"] / "artifacts" / "e2e").as_uri())
    # the enqueued baseline is trial 0
    assert trials[0].data.params["n_conv_blocks"] == "2" and trials[0].data.params["filters"] == "32"
    assert study.data.metrics["best_value"] == max(t.value for t in stored.values() if t.value is not None
                                                   and t.state == optuna.trial.TrialState.COMPLETE)


def test_one_value_per_epoch_and_history_agrees_with_metrics(searched: dict, tmp_path: Path) -> None:
    client, _, _, trials = runs_of(searched)
    for run in trials:
        history = history_csv(client, run.info.run_id, tmp_path / run.info.run_id)
        assert list(history.columns) == ["epoch", *EPOCH_METRICS]
        assert history["epoch"].tolist() == list(range(len(history)))
        for metric in EPOCH_METRICS:
            logged = client.get_metric_history(run.info.run_id, metric)
            assert [m.step for m in logged] == history["epoch"].tolist(), metric
            assert np.allclose([m.value for m in logged], history[metric], rtol=1e-6), metric


def test_summary_metrics_agree_with_the_history(searched: dict, tmp_path: Path) -> None:
    client, _, _, trials = runs_of(searched)
    for run in trials:
        history = history_csv(client, run.info.run_id, tmp_path / run.info.run_id)
        expected = summarize_history(history)
        assert expected["epochs_trained"] == run.data.metrics["epochs_trained"]
        for key, value in expected.items():
            assert run.data.metrics[key] == pytest.approx(value), key
        assert run.data.metrics["train_seconds"] > 0
        best = int(run.data.metrics["best_val_accuracy_epoch"])
        assert run.data.metrics["best_val_accuracy"] == pytest.approx(history["val_accuracy"].max())
        assert (history["val_accuracy"].iloc[:best] < history["val_accuracy"].iloc[best]).all()  # earliest wins


def test_val_loss_is_crossentropy_plus_the_l2_penalty(searched: dict, tmp_path: Path) -> None:
    client, _, _, trials = runs_of(searched)
    for run in trials:
        history = history_csv(client, run.info.run_id, tmp_path / run.info.run_id)
        gap = history["val_loss"] - history["val_crossentropy"]
        if float(run.data.params["l2"]) == 0:
            assert np.allclose(gap, 0, atol=1e-9)
        else:
            assert (gap > 0).all()
        assert np.allclose(history["test_loss"] - history["test_crossentropy"], gap, atol=1e-6)


def test_test_predictions_match_test_accuracy(searched: dict, tmp_path: Path) -> None:
    client, _, _, trials = runs_of(searched)
    for run in trials:
        path = client.download_artifacts(run.info.run_id, TEST_PREDICTIONS, str(tmp_path / run.info.run_id))
        arrays = np.load(path)
        for metric in ("val_loss", "val_crossentropy", "val_accuracy"):
            accuracy = float(np.mean(arrays[f"best_{metric}"] == arrays["y_true"]))
            assert accuracy == pytest.approx(run.data.metrics[f"test_accuracy_at_best_{metric}"], abs=1e-9)
        assert arrays["per_epoch"].shape == (run.data.metrics["epochs_trained"], TEST_SIZE)
        assert LEARNING_CURVES_PNG in [a.path for a in client.list_artifacts(run.info.run_id)]


def test_a_pruned_trial_still_has_its_last_epoch_logged(searched: dict) -> None:
    client, _, _, trials = runs_of(searched)
    pruned = [r for r in trials if r.data.tags[TRIAL_STATE] == "PRUNED"]
    assert pruned, "hyperband prunes random designs worse than the baseline at the first rung"
    stored = optuna.load_study(study_name="e2e-seed0", storage=open_storage(searched["storage"]))
    for run in pruned:
        trial = stored.trials[int(run.data.tags[TRIAL_NUMBER])]
        last_reported = max(trial.intermediate_values)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert steps and max(steps) == last_reported


def test_the_best_trial_has_its_model_logged(searched: dict) -> None:
    client, _, studies, trials = runs_of(searched)
    best = int(studies[0].data.metrics["best_trial_number"])
    run = next(r for r in trials if int(r.data.tags[TRIAL_NUMBER]) == best)
    mlflow.set_tracking_uri(searched["tracking_uri"])
    model = mlflow.keras.load_model(f"runs:/{run.info.run_id}/model")
    assert model.output_shape == (None, 10)


def test_resume_reaches_the_new_total(resumed_digits_search: dict) -> None:
    """`--trials 2`, `--trials 4`, `--trials 5` on one digits study (tests/conftest.py)."""
    storage, uri = str(resumed_digits_search["journal"]), resumed_digits_search["uri"]
    study = optuna.load_study(study_name="digits-cnn-seed0", storage=open_storage(storage))
    assert [t.number for t in study.trials] == [0, 1, 2, 3, 4]
    assert all(t.state.is_finished() for t in study.trials)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("digits-cnn").experiment_id], max_results=1000)
    assert sum(r.data.tags.get(RUN_ROLE) == ROLE_STUDY for r in runs) == 1  # the study run is reopened
    assert sum(r.data.tags.get(RUN_ROLE) == ROLE_TRIAL for r in runs) == 5

    changed = run_cli(*resumed_digits_search["command"], "--trials", "6", "--set", "params.dropout=0.1")
    assert changed.returncode == 2 and "another space" in changed.stderr
    assert len(optuna.load_study(study_name="digits-cnn-seed0", storage=open_storage(storage)).trials) == 5
