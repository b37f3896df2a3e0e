"""The cost cap (`train.max_cost`): the analytic FLOP count, its validation, and a real
capped, baseline-free search on digits (real Optuna journal, real MLflow store)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study.contract import FAILURE_REASON, RELATIVE_COST, STUDY_NAME
from study.cost import OVER_COST_CAP, relative_cost, training_flops
from study.model import build_model, training_flops_per_image
from study.space import SpaceError, load_space
from tests.conftest import PROJECT_ROOT, run_cli

CNN = PROJECT_ROOT / "search_spaces" / "cnn.yaml"
DIGITS = PROJECT_ROOT / "search_spaces" / "digits.yaml"
BASE = {"n_conv_blocks": 2, "filters": 32, "filter_growth": 2.0, "convs_per_block": 1, "kernel_size": 3,
        "dense_units": 128}


def keras_flops(hp: dict, input_shape: tuple[int, int, int]) -> int:
    """The count from the built Keras model's layer shapes: independent of study/cost.py."""
    return training_flops_per_image(build_model({**hp, "dropout": 0.0}, input_shape, 10))


@pytest.mark.parametrize("changes", [
    {}, {"n_conv_blocks": 4, "filters": 64, "filter_growth": 1.5, "convs_per_block": 2, "kernel_size": 7},
    {"n_conv_blocks": 1, "filters": 16, "dense_units": 256}, {"n_conv_blocks": 3, "filter_growth": 1.0,
                                                              "kernel_size": 5, "convs_per_block": 2}])
def test_analytic_flops_equal_the_built_models(changes: dict) -> None:
    hp = {**BASE, **changes}
    assert training_flops(hp, (28, 28, 1), 10) == keras_flops(hp, (28, 28, 1))


def test_the_baseline_by_hand() -> None:
    # conv 28x28x32x3x3x1, conv 14x14x64x3x3x32, dense 7x7x64 -> 128, dense 128 -> 10; x 6
    macs = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 9 * 32 + 7 * 7 * 64 * 128 + 128 * 10
    assert training_flops(BASE, (28, 28, 1), 10) == 6 * macs


def test_relative_cost_worked_by_hand() -> None:
    """The baseline (2 blocks of 32 -> 64 filters, 3x3, dense 128) has 4,241,152 multiply-adds
    per image; halving the filters leaves 1,218,048."""
    baseline = load_space(CNN).baseline_values()
    assert relative_cost(baseline, baseline, (28, 28, 1), 10) == 1.0
    assert relative_cost({**baseline, "filters": 16}, baseline, (28, 28, 1), 10) == pytest.approx(
        1_218_048 / 4_241_152)


def test_a_space_without_a_cap_keeps_its_hash_so_its_studies_resume() -> None:
    uncapped = load_space(CNN, ["train.max_cost=null"])
    assert uncapped.train.max_cost is None
    assert uncapped.sha() == "0d1fe7e1a8024bd8"  # cnn.yaml's hash before the cap existed
    assert load_space(CNN).train.max_cost == 6.0  # the default search is capped since 2026-11-26
    assert load_space(CNN).sha() == "12cabe4c2a32bf13" != uncapped.sha()


def test_a_cap_needs_a_positive_value_and_a_baseline_net(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="max_cost"):
        load_space(CNN, ["train.max_cost=0"])
    no_baseline = tmp_path / "space.yaml"
    no_baseline.write_text(DIGITS.read_text().split("\nbaseline:")[0] + "\n")
    stores = ["--storage", str(tmp_path / "o.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    proc = run_cli("study", "search", "--space", str(no_baseline), "--set", "train.max_cost=2", *stores, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "train.max_cost" in proc.stderr and "n_conv_blocks" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]  # nothing created


CAP = 0.5  # skips about 60% of digits.yaml's draws (their median costs 0.62 baseline nets)


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("capped")
    journal, tracking = folder / "optuna.journal", f"sqlite:///{folder / 'm.db'}"
    proc = run_cli("study", "search", "--space", str(DIGITS), "--trials", "3", "--sampler", "random",
                   "--pruner", "none", "--no-baseline", "--seed", "5", "--set", "train.epochs=1",
                   "--set", f"train.max_cost={CAP}", "--experiment", "capped", "--storage", str(journal),
                   "--tracking-uri", tracking, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="capped-seed5", storage=storage)
    return {"trials": study.get_trials(), "tracking": tracking, "stdout": proc.stdout}


@pytest.mark.slow
def test_draws_above_the_cap_are_skipped_and_not_counted(capped: dict) -> None:
    trials = capped["trials"]
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
    skipped = [t for t in trials if t.state == TrialState.PRUNED]
    assert len(counted) == 3 and skipped, [t.state for t in trials]  # seed 5 draws some over the cap
    base = keras_flops(load_space(DIGITS).baseline_values(), (8, 8, 1))
    for trial in skipped:
        assert trial.user_attrs[FAILURE_REASON] == OVER_COST_CAP
        assert keras_flops({**trial.params, "convs_per_block": 1}, (8, 8, 1)) / base > CAP
    for trial in counted:
        assert keras_flops({**trial.params, "convs_per_block": 1}, (8, 8, 1)) / base <= CAP
        assert trial.user_attrs[RELATIVE_COST] == pytest.approx(
            keras_flops({**trial.params, "convs_per_block": 1}, (8, 8, 1)) / base)
    assert f"PRUNED ({OVER_COST_CAP}) | " in capped["stdout"]


@pytest.mark.slow
def test_no_baseline_means_every_trial_is_drawn_and_skipped_draws_have_no_run(capped: dict) -> None:
    from mlflow import MlflowClient

    assert all("fixed_params" not in t.system_attrs for t in capped["trials"])  # nothing enqueued
    client = MlflowClient(capped["tracking"])
    experiment = client.get_experiment_by_name("capped")
    runs = client.search_runs([experiment.experiment_id], "tags.run_role = 'trial'")
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in runs) == sorted(
        t.number for t in capped["trials"] if t.state != TrialState.PRUNED)
    assert all(r.data.tags[STUDY_NAME] == "capped-seed5" for r in runs)
    assert all(0 < r.data.metrics[RELATIVE_COST] <= CAP for r in runs)
