"""A knob whose range depends on an earlier choice (`ranges:`): the learning rate per optimizer."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from study.sampling import baseline_params, suggest_params
from study.space import SpaceError, load_space
from tests.conftest import PROJECT_ROOT

CNN = PROJECT_ROOT / "search_spaces" / "cnn.yaml"

RANGED = """
name: t
params:
  optimizer: {type: categorical, choices: [adam, sgd], role: nuisance}
  lr:
    type: float
    low: 1.0e-4
    high: 1.0
    log: true
    role: nuisance
    ranges: {optimizer: {adam: [1.0e-4, 1.0e-2], sgd: [1.0e-2, 1.0]}}
baseline: {optimizer: adam, lr: 1.0e-3}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_each_optimizer_draws_its_learning_rate_from_its_own_range(tmp_path: Path) -> None:
    space = load_space(write(tmp_path, RANGED))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    drawn = []
    for _ in range(200):
        trial = study.ask()
        drawn.append(suggest_params(trial, space))
        study.tell(trial, 0.0)
    for optimizer, (low, high) in (("adam", (1e-4, 1e-2)), ("sgd", (1e-2, 1.0))):
        rates = [d["lr"] for d in drawn if d["optimizer"] == optimizer]
        assert len(rates) > 50 and all(low <= r <= high for r in rates), optimizer
        # The whole range is used, not only a corner of it (log-uniform: a decade each way).
        assert min(rates) < low * 10 and max(rates) > high / 10, optimizer
    # One knob, one column: the analysis still finds `lr` in every trial.
    assert {name for d in drawn for name in d} == {"optimizer", "lr"}


def test_cnn_space_gives_sgd_higher_rates_than_adam_and_rmsprop() -> None:
    hp = load_space(CNN).params["learning_rate"]
    low_sgd, _ = hp.bounds({"optimizer": "sgd"})
    assert hp.bounds({"optimizer": "adam"})[1] < 0.07 and hp.bounds({"optimizer": "rmsprop"})[1] < 0.07
    assert low_sgd > 3e-4  # the chance trials: Adam/RMSprop at 0.07-0.29, SGD at 3e-4
    assert (hp.low, hp.high) == (1e-4, 0.3)  # the envelope the analysis reads as the range


@pytest.mark.parametrize(("ranges", "message"), [
    ("{optimizer: {adam: [1.0e-4, 1.0e-2]}}", "no range for optimizer='sgd'"),
    ("{optimizer: {adam: [1.0e-4, 1.0e-2], sgd: [1.0e-2, 2.0]}}", "outside low..high"),
    ("{optimizer: {adam: [1.0e-4, 1.0e-2], sgd: [1.0e-2, 1.0], rmsprop: [1.0e-3, 1.0e-2]}}",
     "'rmsprop' is not a choice of optimizer"),
    ("{optimizer: {adam: [1.0e-2, 1.0e-4], sgd: [1.0e-2, 1.0]}}", "is not a range"),
    ("{batch: {adam: [1.0e-4, 1.0e-2]}}", "'batch' must be defined above it"),
])
def test_bad_ranges_are_one_line_naming_the_knob(tmp_path: Path, ranges: str, message: str) -> None:
    text = RANGED.replace("ranges: {optimizer: {adam: [1.0e-4, 1.0e-2], sgd: [1.0e-2, 1.0]}}", f"ranges: {ranges}")
    with pytest.raises(SpaceError) as caught:
        load_space(write(tmp_path, text))
    assert "lr" in str(caught.value) and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_baseline_outside_its_optimizers_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match=r"baseline.lr: 0.5 is outside \[0.0001, 0.01\], the range for optimizer='adam'"):
        load_space(write(tmp_path, RANGED.replace("lr: 1.0e-3}", "lr: 0.5}")))


def test_pinning_the_optimizer_leaves_an_out_of_range_baseline_rate_to_the_sampler() -> None:
    space = load_space(CNN, ["params.optimizer=sgd"])
    assert "learning_rate" not in baseline_params(space)  # the file's 2e-3 is below SGD's range
    assert baseline_params(load_space(CNN))["learning_rate"] == 2e-3


def test_a_space_without_ranges_keeps_its_identity() -> None:
    """Studies created before `ranges:` existed still resume: their space hash is unchanged
    (these are the hashes of the shipped spaces on the commit before it)."""
    assert load_space(PROJECT_ROOT / "search_spaces" / "digits.yaml").sha() == "0a3e26f468273ce2"
    assert load_space(PROJECT_ROOT / "search_spaces" / "regularisation.yaml").sha() == "43e962a36ff548ce"
