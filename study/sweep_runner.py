"""Runs one factor of a sweep (study/sweep.py) as a study of study/driver.py.

The arms are not sampled: each is an Optuna trial enqueued with its base configuration plus
the factor's level, its sweep params as user attrs, pair by pair. The bases come from a
random sampler of their own, seeded by the study's name (factor, levels, --seed), so a re-run
draws the same bases, enqueues only the arms that are missing (none WAITING, none finished, none whose
run was cut: interrupted or worker_lost) and trains only those.

With `--workers N` a supervisor queues the arms once and N `python -m study sweep-worker`
processes of one TensorFlow thread each take them from the queue, as campaign workers share a
study: small nets leave cores idle in one process (benchmarks/README.md, campaign_throughput).
The arms of a pair may then train in different processes; their seeds, data order and initial
weights do not depend on the process, and their logged hashes prove it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

import optuna
from optuna.trial import FixedTrial, TrialState

from study.config import SearchConfig
from study.contract import FAILURE_REASON
from study.cost import NO_ARM_WAITING, relative_cost
from study.data import DataError, Splits, load_dataset
from study.driver import BASELINE_RETRY_REASONS, ExitCode, StudySession, drive, finished_count
from study.inputs import BadInput, PreparedStudy, check_inputs
from study.model import InfeasibleArchitecture, feature_map_sizes
from study.sampling import suggest_params
from study.search import ConsecutiveFailures, TrialsHere
from study.secrets import mask_secrets
from study.signals import raise_at_trial_end_if_signalled
from study.space import SearchSpace
from study.supervisor import StopRequest, Supervisor, shared_worker_flags
from study.sweep import (DECAY_FACTOR, Factor, SweepArm, SweepPlan, arm_of, arms_of_pair, banner, condition_switch,
                         level_params, study_seed)
from study.tracking import Tracker
from study.workers import supervised_experiment, thread_split

# A space whose draws are nearly all over the cost cap (or infeasible) should stop, not spin.
MAX_DRAWS_PER_PAIR = 50


def draw_space(space: SearchSpace, factor: Factor) -> SearchSpace:
    """The space the bases are drawn from: the factor and its switch (use_l2 for l2) pinned,
    so not drawn, and every knob that exists only under the factor (augment's rotation, ...)
    always drawn, so that each level finds its values in the base."""
    if factor.changes_data:
        return space
    pinned = draw_pins(space, factor)
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


def draw_pins(space: SearchSpace, factor: Factor) -> dict[str, Any]:
    """The knobs a factor's levels set, at the values the bases are drawn under: the factor and
    its switch; for the decay control, Adam (Adam bases only, drawn with Adam's learning-rate
    range) and L2 off (each level then sets use_l2 and l2: DECAY_LEVELS)."""
    if factor.name == DECAY_FACTOR:
        return {"optimizer": "adam", "use_l2": False}
    switch = condition_switch(space, factor.name)
    return {factor.name: factor.values[0], **({switch[0]: switch[1]} if switch else {})}


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
            # Another process took the last waiting arm between this one's check and its ask,
            # so Optuna made a fresh trial: it ends untrained, and so does this process.
            trial.set_user_attr(FAILURE_REASON, NO_ARM_WAITING)
            trial.study.stop()
            raise optuna.TrialPruned(NO_ARM_WAITING)
        return self.objectives[arm.level](trial)


def waiting_arms(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def stop_when_no_arm_waits(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Callback: with the queue empty, the next ask would make a fresh trial, not an arm."""
    if not waiting_arms(study):
        study.stop()


def queue_arms(session: StudySession, factor: Factor, pairs: int) -> int:
    """Enqueue the arms the study lacks; how many arms wait."""
    study, space = session.study, session.config.space
    enqueue_missing(study, space, factor, draw_bases(space, factor, study.study_name, pairs, session.splits))
    return waiting_arms(study)


def all_done_line(session: StudySession, factor: Factor, pairs: int) -> str:
    return (f"[{session.item.name}] all {pairs * len(arms_of_pair(factor, 0))} arms of {pairs} pairs "
            "are done")


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
        if not queue_arms(session, self.factor, self.pairs):
            print(all_done_line(session, self.factor, self.pairs), flush=True)
            return ExitCode.OK
        return self.train_waiting(session, timeout)

    def train_waiting(self, session: StudySession, timeout: float | None) -> ExitCode:
        """Train waiting arms, in queue order, until none waits (other processes may share the queue)."""
        from study.objective import Progress, TrialFailed

        study = session.study
        waiting = waiting_arms(study)
        running = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))  # other workers'
        self.failures = ConsecutiveFailures(self.config.max_consecutive_failures)
        finished = finished_count(study)  # cut arms count here too, and are trained again
        progress = Progress(study.study_name, finished + running + waiting, timeout, finished)
        callbacks = [self.failures, progress, stop_when_no_arm_waits, raise_at_trial_end_if_signalled]
        study.optimize(ArmObjective(self.objectives(session)), n_trials=waiting, timeout=timeout,
                       callbacks=callbacks, catch=(TrialFailed,), gc_after_trial=False)  # train_trial collects
        return ExitCode.FAILURES if self.failures.tripped else ExitCode.OK


class SweepWorker(SweepRunner):
    """One of the processes of `sweep --workers N` (`python -m study sweep-worker`): trains the
    arms its supervisor queued, on the study and study run the supervisor opened."""

    reuses_study_run = True

    def __init__(self, config: SearchConfig, factor: Factor, pairs: int, data: str,
                 level_inputs: dict[str, tuple[SearchConfig, Splits]], worker_index: int) -> None:
        super().__init__(config, factor, pairs, data, level_inputs)
        self.worker_index = worker_index

    def experiment(self, tracker: Tracker, name: str) -> str:
        return supervised_experiment(tracker, name)

    def banner(self, prepared: list[PreparedStudy], splits: Splits) -> str | None:
        return None  # the supervisor printed it

    def run_trials(self, session: StudySession, timeout: float | None) -> ExitCode:
        print(f"[{session.item.name}] sweep worker {self.worker_index} (pid {os.getpid()}) started, "
              f"threads {os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')}", flush=True)
        return self.train_waiting(session, timeout)

    def exit_line(self, code: ExitCode, session: StudySession) -> str | None:
        if code == ExitCode.INTERRUPTED:  # the supervisor says how to continue
            return f"[{session.item.name}] sweep worker {self.worker_index} interrupted"
        return super().exit_line(code, session)


class SweepSupervisor(Supervisor):
    """`sweep --workers N`: queues the factor's missing arms once, then supervises N
    `python -m study sweep-worker` processes that train them (study/supervisor.py)."""

    def __init__(self, config: SearchConfig, plan: SweepPlan, data: str, sweep_args: argparse.Namespace,
                 stop: StopRequest) -> None:
        super().__init__(config, sweep_args, stop=stop)
        self.factor, self.pairs, self.data = plan.factor, plan.pairs, data

    def banner(self, prepared: list[PreparedStudy], splits: Splits) -> str | None:
        intra, inter = thread_split(self.config.workers)
        return (banner(self.factor, self.data, self.pairs) + f"\nsweep: study {prepared[0].name} on {splits.source} "
                f"({splits.sizes()}), {self.config.workers} workers with TF threads {intra} intra-op / {inter} "
                f"inter-op each, storage {mask_secrets(self.config.storage)}, "
                f"tracking {mask_secrets(self.config.tracking_uri)}")

    def worker_command(self, item: PreparedStudy, worker_index: int, timeout: float | None) -> list[str]:
        return sweep_worker_command(self.args, self.factor, self.pairs, item.seed, worker_index, timeout)

    def target_reached(self, study: optuna.Study) -> bool:
        return not waiting_arms(study)

    def after_loss(self, session: StudySession) -> None:
        queue_arms(session, self.factor, self.pairs)  # the lost worker's arm, FAILed, waits again

    def run_trials(self, session: StudySession, timeout: float | None) -> ExitCode:
        if self.stop.signum is not None:  # caught before this factor's workers exist
            return ExitCode.INTERRUPTED
        if not queue_arms(session, self.factor, self.pairs):
            print(all_done_line(session, self.factor, self.pairs), flush=True)
            return ExitCode.OK
        return self.supervise(session, timeout)

    def exit_line(self, code: ExitCode, session: StudySession) -> str | None:
        if code == ExitCode.FAILURES:
            return (f"sweep: a worker stopped after {self.config.max_consecutive_failures} consecutive failed "
                    f"arms of {session.item.name}; check the factor's levels and the space's ranges")
        if code == ExitCode.ERROR:
            return (f"sweep: workers kept dying before every arm of {session.item.name} was trained; re-run "
                    "the same command to continue")
        return super().exit_line(code, session)


def sweep_worker_command(args: argparse.Namespace, factor: Factor, pairs: int, seed: int, worker_index: int,
                         timeout: float | None) -> list[str]:
    """One sweep worker's flags: the sweep's, narrowed to one factor's study. Storage and
    tracking URIs go through the environment so that a password never shows in `ps`."""
    return [sys.executable, "-m", "study", "sweep-worker", "--worker-index", str(worker_index),
            "--factor", factor.text, "--pairs", str(pairs), "--seed", str(seed), "--data", args.data,
            *shared_worker_flags(args, timeout)]


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


def run_sweep(plans: list[SweepPlan], args: argparse.Namespace) -> int:
    """Every factor's study in turn, after every factor's inputs (each data level's too) passed;
    with --workers N, N processes share each study's arms."""
    level_inputs = [data_levels(plan.config, plan.factor) for plan in plans]  # before any store opens
    checked = [check_inputs(plan.config) for plan in plans]
    deadline = time.monotonic() + plans[0].config.timeout if plans[0].config.timeout else None
    stop = StopRequest()  # one for every factor's supervisor
    for plan, inputs, levels in zip(plans, checked, level_inputs):
        if stop.signum is not None:  # caught after the last factor's workers ended
            print("sweep: interrupted; re-run the same command to continue", flush=True)
            return ExitCode.INTERRUPTED
        config = plan.config
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                print(f"sweep: --timeout reached before {plan.factor.text}; re-run to continue", flush=True)
                return ExitCode.OK
            config = config.model_copy(update={"timeout": remaining})
        if args.workers > 1:
            config = config.model_copy(update={"workers": args.workers})  # the study run logs it
            runner = SweepSupervisor(config, plan, args.data, args, stop)
        else:
            runner = SweepRunner(config, plan.factor, plan.pairs, args.data, levels)
        code = drive(config, inputs, runner)
        if code != ExitCode.OK:
            return code
    return ExitCode.OK


def run_sweep_worker(plan: SweepPlan, data: str, worker_index: int) -> int:
    """One sweep worker: the waiting arms of one factor's study, until none is left."""
    levels = data_levels(plan.config, plan.factor)
    splits, tracker, prepared = check_inputs(plan.config)
    return drive(plan.config, (splits, tracker, prepared[:1]),
                 SweepWorker(plan.config, plan.factor, plan.pairs, data, levels, worker_index))
