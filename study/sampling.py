"""Turns a SearchSpace into Optuna suggestions, samplers and pruners (KerasTuner's
"hypermodel proposes, trainer trains" split: nothing here touches Keras)."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from study.space import Hyperparameter, SearchSpace

SAMPLERS = ("tpe", "qmc", "random", "gp", "cmaes")
PRUNERS = ("hyperband", "median", "none")
OBJECTIVES = ("val_accuracy", "val_loss", "both")
ADAPTIVE_SAMPLERS = ("tpe", "gp", "cmaes")


def _suggest(trial: optuna.Trial, name: str, hp: Hyperparameter, chosen: dict[str, Any]) -> Any:
    low, high = hp.bounds(chosen)  # a range that depends on an earlier knob (`ranges:`)
    if hp.type == "int":
        return trial.suggest_int(name, int(low), int(high), step=int(hp.step or 1), log=hp.log)
    if hp.type == "float":
        return trial.suggest_float(name, low, high, step=hp.step, log=hp.log)
    if hp.type == "bool":
        return trial.suggest_categorical(name, [False, True])
    return trial.suggest_categorical(name, hp.choices)


def suggest_params(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Every knob's value for this trial: sampled, pinned, or its default when inactive."""
    values: dict[str, Any] = {}
    for name, hp in space.params.items():
        if not hp.is_active(values):
            values[name] = hp.default
        elif hp.role == "fixed":
            values[name] = hp.value
        else:
            values[name] = _suggest(trial, name, hp, values)
    return values


def _in_bounds(hp: Hyperparameter, value: Any, chosen: dict[str, Any]) -> bool:
    """False for a baseline value outside the range a pinned parent gives it (`ranges:`)."""
    if not hp.ranges:
        return True
    low, high = hp.bounds(chosen)
    return low <= value <= high


def baseline_params(space: SearchSpace) -> dict[str, Any]:
    """The baseline restricted to knobs that are searched and active under it."""
    chosen: dict[str, Any] = {}
    for name, hp in space.params.items():
        if hp.role == "fixed":
            chosen[name] = hp.value
        elif name in space.baseline and hp.is_active(chosen) and _in_bounds(hp, space.baseline[name], chosen):
            chosen[name] = space.baseline[name]
    return {n: v for n, v in chosen.items() if n in space.baseline and space.params[n].role != "fixed"}


def sampler_seed(sampler: str, seed: int, worker_index: int, trials_so_far: int) -> int:
    """The seed one process gives its sampler, below 2**32 as numpy needs.

    With the study seed alone, every invocation would replay the previous one's random
    draws (random sampling, TPE's start-up trials, GP's and CMA-ES's independent ones), so
    (seed, worker index, trials already in the study) go through numpy's SeedSequence: a
    plain sum collides (seed s worker 1 = seed s+1 worker 0, i.e. two replicates' workers).
    QMC keeps the study seed for every worker and invocation: Optuna resumes its scrambled
    sequence by a sample id stored under that seed, and its workers must share the seed.
    """
    if sampler == "qmc":
        return seed
    return int(np.random.SeedSequence([seed, worker_index, trials_so_far]).generate_state(1)[0])


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        # multivariate + group: conditional knobs are modelled jointly with their parents.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown sampler '{name}'")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner '{name}'")


def directions(objective: str) -> list[str]:
    return {"val_accuracy": ["maximize"], "val_loss": ["minimize"],
            "both": ["minimize", "maximize"]}[objective]
