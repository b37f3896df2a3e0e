"""Every sampler proposes valid designs from the YAML space, conditionals included."""

from __future__ import annotations

import optuna
import pytest

from study.config import module_missing
from study.sampling import SAMPLERS, baseline_params, make_pruner, make_sampler, suggest_params
from study.space import load_space
from tests.conftest import PROJECT_ROOT, require

SPACE = load_space(PROJECT_ROOT / "search_spaces" / "cnn.yaml")


def score(params: dict) -> float:
    """A cheap, deterministic function of the design, standing in for nothing: only sampling is under test."""
    return params["learning_rate"] * params["n_conv_blocks"] + (0.1 if params["batch_norm"] else 0.0)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_samplers_respect_ranges_and_conditions(sampler: str) -> None:
    require(sampler != "gp" or not module_missing("torch"), "the gp extra (PyTorch) is not installed: make setup EXTRAS=gp")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=make_sampler(sampler, seed=1), direction="maximize")
    study.enqueue_trial(baseline_params(SPACE))
    designs: list[dict] = []

    def propose_and_score(trial: optuna.Trial) -> float:
        designs.append(suggest_params(trial, SPACE))
        return score(designs[-1])

    study.optimize(propose_and_score, n_trials=12)
    assert study.trials[0].params == baseline_params(SPACE)
    for design, trial in zip(designs, study.trials):
        assert set(design) == set(SPACE.params)
        for name, hp in SPACE.params.items():
            if name not in trial.params and hp.role == "fixed" and hp.is_active(design):
                assert design[name] == hp.value, name  # pinned (cnn.yaml's training knobs, pinned off)
                continue
            if name not in trial.params:
                assert not hp.is_active(design) and design[name] == hp.default, name
                continue
            assert hp.is_active(design), name
            if hp.type in ("int", "float"):
                assert hp.low <= design[name] <= hp.high, name
            elif hp.type == "categorical":
                assert design[name] in hp.choices, name


def test_seeded_samplers_repeat_themselves() -> None:
    def first_designs(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=make_sampler("tpe", seed=seed))
        return [suggest_params(study.ask(), SPACE) for _ in range(3)]
    assert first_designs(7) == first_designs(7) != first_designs(8)


def test_pruners_cover_the_budget() -> None:
    assert make_pruner("hyperband", 12)._max_resource == 12
    assert isinstance(make_pruner("none", 12), optuna.pruners.NopPruner)
    assert isinstance(make_pruner("median", 12), optuna.pruners.MedianPruner)
