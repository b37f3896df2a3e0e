"""Runs one factor of a sweep (study/sweep.py) as a study of study/driver.py.

The arms are not sampled: each is an Optuna trial enqueued with its base configuration plus
the factor's level, its sweep params as user attrs, pair by pair. The bases come from a
random sampler of their own, seeded by the study's name (factor, levels, --seed), so a re-run
draws the same bases, enqueues only the arms that are missing (none WAITING, none finished, none whose
run was cut: interrupted or worker_lost) and trains only those.
"""

from __future__ import annotations

import time
from typing import Any

import optuna
from optuna.trial import FixedTrial, TrialState

from study.config import SearchConfig
from study.contract import FAILURE_REASON
from study.cost import relative_cost
from study.data import DataError, Splits, load_dataset
from study.driver import BASELINE_RETRY_REASONS, ExitCode, StudySession, drive, finished_count
from study.inputs import BadInput, PreparedStudy, check_inputs
from study.model import InfeasibleArchitecture, feature_map_sizes
from study.sampling import suggest_params
from study.search import ConsecutiveFailures, TrialsHere
from study.secrets import mask_secrets
from study.space import SearchSpace
from study.sweep import (Factor, SweepArm, SweepPlan, arm_of, arms_of_pair, banner, condition_switch, level_params,
                         study_seed)

# A space whose draws are nearly all over the cost cap (or infeasible) should stop, not spin.
MAX_DRAWS_PER_PAIR = 50


def draw_space(space: SearchSpace, factor: Factor) -> SearchSpace:
    """The space the bases are drawn from: the factor and its switch (use_l2 for l2) pinned,
    so not drawn, and every knob that exists only under the factor (augment's rotation, ...)
    always drawn, so that each level finds its values in the base."""
    if factor.changes_data:
        return space
    switch = condition_switch(space, factor.name)
    pinned = {factor.name: factor.values[0], **({switch[0]: switch[1]} if switch else {})}
    params = {}
    for name, hp in space.params.items():
        if name in pinned:
            params[name] = hp.model_copy(update={"role": "fixed", "value": pinned[name]})
        elif hp.condition and factor.name in hp.condition:
            rest = {parent: allowed for parent, allowed in hp.condition.items() if parent != factor.name}
            params[name] = hp.model_copy(update={"condition": rest or None})
        else:
            params[name] = hp
    return space.model_copy(update={"params": params})


def arm_params(space: SearchSpace, factor: Factor, base: dict[str, Any], level: str) -> dict[str, Any]:
    """What one arm enqueues: the base's drawn values and the level's knob values."""
    return {**base, **level_params(space, factor, factor.values[factor.levels.index(level)])}


def base_fits(space: SearchSpace, factor: Factor, base: dict[str, Any], splits: Splits) -> bool:
    """Every arm of this base can be built and is within the cost cap (skipped bases are not pairs)."""
    for level in factor.levels:
        hp = suggest_params(FixedTrial(arm_params(space, factor, base, level)), space)
        try:
            feature_map_sizes(splits.input_shape, hp["n_conv_blocks"])
        except InfeasibleArchitecture:
            return False
        cap = space.train.max_cost
        if cap is not None and relative_cost(hp, space.baseline_values(), splits.input_shape,
                                             splits.num_classes) > cap:
            return False
    return True


def draw_bases(space: SearchSpace, factor: Factor, study: str, pairs: int, splits: Splits) -> list[dict[str, Any]]:
    """The first `pairs` i.i.d. random draws (seeded by the sweep study's name) that fit."""
    drawn = draw_space(space, factor)
    sampler_study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=study_seed(study)))
    bases: list[dict[str, Any]] = []
    for _ in range(MAX_DRAWS_PER_PAIR * pairs):
        trial = sampler_study.ask()
        suggest_params(trial, drawn)
        if base_fits(space, factor, dict(trial.params), splits):
            bases.append(dict(trial.params))
            if len(bases) == pairs:
                return bases
    raise RuntimeError(f"{factor.text}: only {len(bases)} of {MAX_DRAWS_PER_PAIR * pairs} draws fit the cost "
                       f"cap; the space cannot give {pairs} pairs")


def arms_in_study(study: optuna.Study) -> set[SweepArm]:
    """Arms waiting or done: everything but a run that was cut short (it is trained again)."""
    present = set()
    for trial in study.get_trials(deepcopy=False):
        arm = arm_of(trial.user_attrs)
        cut = trial.state == TrialState.FAIL and trial.user_attrs.get(FAILURE_REASON) in BASELINE_RETRY_REASONS
        if arm is not None and not cut:
            present.add(arm)
    return present


def enqueue_missing(study: optuna.Study, space: SearchSpace, factor: Factor, bases: list[dict[str, Any]]) -> int:
    """Enqueue, pair by pair and arm by arm, each arm the study lacks; how many."""
    present = arms_in_study(study)
    queued = 0
    for pair, base in enumerate(bases):
        for arm in arms_of_pair(factor, pair):
            if arm not in present:
                study.enqueue_trial(arm_params(space, factor, base, arm.level), user_attrs=arm.user_attrs())
                queued += 1
    return queued


class ArmObjective:
    """Hands each arm's trial to the objective of its level (a data factor's levels train on
    data of their own; a knob's levels share one)."""

    def __init__(self, objectives: dict[str, Any]) -> None:
        self.objectives = objectives

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        arm = arm_of(trial.user_attrs)
        if arm is None:
            raise RuntimeError(f"trial {trial.number} is no sweep arm: nothing was waiting")
        return self.objectives[arm.level](trial)


class SweepRunner(TrialsHere):
    """One factor's arms, trained in this process. `level_inputs`: a data factor's config and
    data per level (loaded before anything is created); empty for a knob."""

    def __init__(self, config: SearchConfig, factor: Factor, pairs: int, data: str,
                 level_inputs: dict[str, tuple[SearchConfig, Splits]]) -> None:
        super().__init__(config)
        self.factor, self.pairs, self.data, self.level_inputs = factor, pairs, data, level_inputs

    def banner(self, prepared: list[PreparedStudy], splits: Splits) -> str | None:
        return (banner(self.factor, self.data, self.pairs) + f"\nsweep: study {prepared[0].name} on {splits.source} "
                f"({splits.sizes()}), storage {mask_secrets(self.config.storage)}, "
                f"tracking {mask_secrets(self.config.tracking_uri)}")

    def objectives(self, session: StudySession) -> dict[str, Any]:
        """Objective per level: one shared by a knob's levels, one per level of a data factor."""
        from study.objective import Objective, TrialContext, shared_trial_params

        def objective(config: SearchConfig, splits: Splits) -> Objective:
            return Objective(TrialContext(
                config, splits, session.tracker, session.experiment_id, session.run_id, session.item.name,
                session.item.seed, base_params=shared_trial_params(config, splits)))

        if not self.factor.changes_data:
            shared = objective(session.config, session.splits)
            return {level: shared for level in self.factor.levels}
        return {level: objective(*self.level_inputs[level]) for level in self.factor.levels}

    def run_trials(self, session: StudySession, timeout: float | None) -> ExitCode:
        from study.objective import Progress, TrialFailed

        study, space = session.study, session.config.space
        bases = draw_bases(space, self.factor, study.study_name, self.pairs, session.splits)
        enqueue_missing(study, space, self.factor, bases)
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        if not waiting:
            planned = self.pairs * len(arms_of_pair(self.factor, 0))
            print(f"[{study.study_name}] all {planned} arms of {self.pairs} pairs are done", flush=True)
            return ExitCode.OK
        self.failures = ConsecutiveFailures(self.config.max_consecutive_failures)
        finished = finished_count(study)  # cut arms count here too, and are trained again
        progress = Progress(study.study_name, finished + waiting, timeout, finished)
        study.optimize(ArmObjective(self.objectives(session)), n_trials=waiting, timeout=timeout,
                       callbacks=[self.failures, progress], catch=(TrialFailed,),
                       gc_after_trial=False)  # train_trial collects
        return ExitCode.FAILURES if self.failures.tripped else ExitCode.OK


def data_levels(config: SearchConfig, factor: Factor) -> dict[str, tuple[SearchConfig, Splits]]:
    """Each level of a data factor as the config and data its arms train with ({} for a knob);
    a level the data cannot give (too few images of a class) is BadInput."""
    if not factor.changes_data:
        return {}
    field, space = factor.name.removeprefix("data."), config.space
    levels = {}
    for level, value in zip(factor.levels, factor.values):
        level_space = space.model_copy(update={"data": space.data.model_copy(update={field: value})})
        try:
            splits = load_dataset(level_space.data)
        except DataError as exc:
            raise BadInput(f"--factor {factor.text}: level {level}: {exc}") from None
        levels[level] = (config.model_copy(update={"space": level_space}), splits)
    return levels


def run_sweep(plans: list[SweepPlan], data: str) -> int:
    """Every factor's study in turn, after every factor's inputs (each data level's too) passed."""
    level_inputs = [data_levels(plan.config, plan.factor) for plan in plans]  # before any store opens
    checked = [check_inputs(plan.config) for plan in plans]
    deadline = time.monotonic() + plans[0].config.timeout if plans[0].config.timeout else None
    for (config, factor, pairs), inputs, levels in zip(plans, checked, level_inputs):
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"sweep: --timeout reached before {factor.text}; re-run to continue", flush=True)
                return ExitCode.OK
            config = config.model_copy(update={"timeout": remaining})
        code = drive(config, inputs, SweepRunner(config, factor, pairs, data, levels))
        if code != ExitCode.OK:
            return code
    return ExitCode.OK
