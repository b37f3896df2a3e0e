"""The offline digits path end to end, and an infeasible design ending PRUNED, not failed."""

from __future__ import annotations

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study.storage import open_storage
from study.contract import FAILURE_MESSAGE, FAILURE_REASON, ROLE_TRIAL, RUN_ROLE, TRIAL_STATE
from tests.conftest import run_cli

pytestmark = pytest.mark.slow


def test_infeasible_architecture_is_pruned_and_the_study_goes_on(stores: dict) -> None:
    result = run_cli("study", "search", "--space", "search_spaces/digits.yaml", "--trials", "2",
                     "--sampler", "random", "--pruner", "none", "--max-consecutive-failures", "1",
                     "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"],
                     "--set", "train.epochs=1", "--set", "params.n_conv_blocks=4")
    assert result.returncode == 0, result.stderr
    study = optuna.load_study(study_name="digits-cnn-seed0", storage=open_storage(stores["storage"]))
    assert [t.state.name for t in study.trials] == ["PRUNED", "PRUNED"]
    assert {t.user_attrs[FAILURE_REASON] for t in study.trials} == {"infeasible_architecture"}
    client = MlflowClient(stores["tracking_uri"])
    runs = client.search_runs([client.get_experiment_by_name("digits-cnn").experiment_id],
                              f"tags.{RUN_ROLE} = '{ROLE_TRIAL}'")
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags[TRIAL_STATE] == "PRUNED"
        assert run.data.tags[FAILURE_REASON] == "infeasible_architecture"
        assert "4 conv blocks" in run.data.tags[FAILURE_MESSAGE]


def test_a_seeded_digits_study_completes_offline_and_repeats_itself(tmp_path) -> None:
    """Offline digits with TPE and the median pruner: every trial completes, the baseline
    learns, progress lines show; the same seed on fresh stores gives the same parameters
    and the same per-epoch values."""
    studies = []
    for run in ("a", "b"):
        storage = str(tmp_path / f"{run}.journal")
        result = run_cli("study", "search", "--space", "search_spaces/digits.yaml", "--trials", "3",
                         "--sampler", "tpe", "--pruner", "median", "--seed", "7", "--storage", storage,
                         "--tracking-uri", f"sqlite:///{tmp_path / run}.db", "--set", "train.epochs=3")
        assert result.returncode == 0, result.stderr
        assert "[digits-cnn-seed7] trial 1" in result.stdout and "ETA" in result.stdout
        studies.append(optuna.load_study(study_name="digits-cnn-seed7", storage=open_storage(storage)))
    assert [t.state.name for t in studies[0].trials] == ["COMPLETE"] * 3  # the median pruner waits 5 trials
    assert studies[0].trials[0].value > 0.5  # the baseline learns 8x8 digits in 3 epochs
    first, second = ([(t.params, t.value, t.intermediate_values) for t in s.trials] for s in studies)
    assert len(first) == 3 and first == second
