"""A search: validate everything, then create the studies and their MLflow runs, then optimise.

Nothing is created before every input has been checked, so bad input leaves no trace.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from study.config import SearchConfig
from study.data import Splits
from study.inputs import PreparedStudy, check_inputs
from study.paths import PROJECT_ROOT
from study.reconcile import fail_process_trials, reconcile_study, register_mlflow_repair
from study.sampling import baseline_params, directions, make_pruner, make_sampler
from study.secrets import mask_secrets
from study.tracking import Tracker

if TYPE_CHECKING:  # the objective pulls in TensorFlow: the supervisor never needs it
    from study.objective import TrialContext

EXIT_OK, EXIT_BAD_INPUT, EXIT_FAILURES, EXIT_INTERRUPTED = 0, 2, 3, 130
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    # Only the first signal interrupts: a second one (Ctrl-C twice, or the terminal's SIGINT
    # plus the supervisor's SIGTERM) must not cut the clean-up that marks the trial and run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGTERM (kill, Slurm, Kubernetes) ends a search the same way as Ctrl-C."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)


def fail_own_trials(study: optuna.Study, tracker: Tracker, experiment_id: str | None = None,
                    reason: str = "interrupted") -> int:
    """Safety net after an interrupt: no trial of this process stays RUNNING and no run of a
    finished trial stays open, whatever line the signal landed on (the objective normally
    records it first)."""
    count = fail_process_trials(study, tracker, os.getpid(), reason)
    if experiment_id is not None:
        reconcile_study(study, tracker, experiment_id)
    return count


class ConsecutiveFailures:
    """Stops the study after N FAIL trials in a row in this process."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.tripped, self.last_reason = limit, 0, False, None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.streak = 0
            return
        self.streak += 1
        self.last_reason = trial.user_attrs.get("failure_reason")
        if self.streak >= self.limit:
            self.tripped = True
            study.stop()


def create_study(config: SearchConfig, prepared: PreparedStudy, worker_index: int = 0) -> optuna.Study:
    """Create or load; seeds the sampler with seed + worker index so workers differ."""
    study = optuna.create_study(
        study_name=prepared.name, storage=prepared.storage, load_if_exists=True,
        sampler=make_sampler(config.sampler, prepared.seed + worker_index),
        pruner=make_pruner(config.pruner if config.objective != "both" else "none", config.space.train.epochs),
        directions=directions(config.objective))
    if "space_sha" not in study.user_attrs:
        for key, value in {"space_sha": config.space.sha(), "experiment": config.experiment,
                           "seed": prepared.seed, "sampler": config.sampler, "pruner": config.pruner,
                           "objective": config.objective}.items():
            study.set_user_attr(key, value)
        if config.space.baseline and not study.get_trials(deepcopy=False):
            study.enqueue_trial(baseline_params(config.space), skip_if_exists=True)
    return study


def study_run_tags(config: SearchConfig, prepared: PreparedStudy, splits: Splits) -> dict[str, object]:
    return {"optuna.study_name": prepared.name, "sampler": config.sampler,
            "pruner": config.pruner if config.objective != "both" else "none",
            "objective": config.objective, "seed": prepared.seed, "dataset": config.space.data.name,
            "data_source": splits.source, "space_sha": config.space.sha(), "git_commit": git_commit(),
            "storage": config.storage, "workers": config.workers}


def open_study_run(config: SearchConfig, prepared: PreparedStudy, splits: Splits, tracker: Tracker,
                   experiment_id: str, study: optuna.Study) -> str:
    run_id = tracker.open_study_run(
        experiment_id, prepared.name, study_run_tags(config, prepared, splits),
        params={**config.flat(), "seed": prepared.seed, **splits.sizes(), "data.source": splits.source},
        space_file=Path(config.space_file), effective_space=config.space.model_dump(mode="json"))
    study.set_user_attr("mlflow_study_run_id", run_id)
    return run_id


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED_STATES))


def optimize(config: SearchConfig, study: optuna.Study, context: TrialContext,
             timeout: float | None) -> ConsecutiveFailures:
    """Run trials until --trials finished ones exist in the storage (any process), or timeout."""
    from study.objective import Objective, Progress, TrialFailed

    failures = ConsecutiveFailures(config.max_consecutive_failures)
    if config.trials is not None and finished_count(study) >= config.trials:
        return failures
    callbacks = [failures, Progress(study.study_name, config.trials, timeout)]
    if config.trials is not None:
        callbacks.insert(0, MaxTrialsCallback(config.trials, states=FINISHED_STATES))
    study.optimize(Objective(context), timeout=timeout, callbacks=callbacks, catch=(TrialFailed,),
                   gc_after_trial=True)
    return failures


def study_result(study: optuna.Study) -> tuple[dict[str, float], dict[str, object]]:
    """What the study run records when it ends: the best trial, or the Pareto trials."""
    metrics: dict[str, float] = {"n_finished": float(finished_count(study)),
                                 "n_complete": float(len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))))}
    tags: dict[str, object] = {}
    try:
        if len(study.directions) == 1:
            metrics["best_value"] = study.best_value
            metrics["best_trial_number"] = float(study.best_trial.number)
            tags["best_trial"] = study.best_trial.number
        else:
            tags["pareto_trials"] = ",".join(str(t.number) for t in study.best_trials)
    except ValueError:
        pass
    return metrics, tags


def run_search(config: SearchConfig, checked: tuple[Splits, Tracker, list[PreparedStudy]] | None = None,
               worker_index: int = 0) -> int:
    """The whole `python -m study search` after its inputs passed `check_inputs`; the exit code."""
    from study.objective import TrialContext

    splits, tracker, prepared = checked or check_inputs(config)
    install_signal_handlers()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our Progress lines say it better
    experiment_id = tracker.ensure_experiment(config.experiment)
    register_mlflow_repair(tracker)
    deadline = time.monotonic() + config.timeout if config.timeout else None
    print(f"search: {len(prepared)} stud{'y' if len(prepared) == 1 else 'ies'} of {config.space.name} on "
          f"{splits.source} ({splits.sizes()}), storage {mask_secrets(config.storage)}, "
          f"tracking {mask_secrets(config.tracking_uri)}", flush=True)
    for item in prepared:
        study = create_study(config, item, worker_index)
        run_id = open_study_run(config, item, splits, tracker, experiment_id, study)
        reconcile_study(study, tracker, experiment_id)
        context = TrialContext(config, splits, tracker, experiment_id, run_id, item.name, item.seed,
                               base_params={**config.flat(), **splits.sizes(), "data.source": splits.source})
        remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
        try:
            failures = optimize(config, study, context, remaining)
        except KeyboardInterrupt:
            fail_own_trials(study, tracker, experiment_id)
            metrics, tags = study_result(study)
            tracker.end_study_run(run_id, "KILLED", metrics, tags)
            print(f"[{item.name}] interrupted; re-run the same command to continue the study", flush=True)
            return EXIT_INTERRUPTED
        metrics, tags = study_result(study)
        tracker.end_study_run(run_id, "FAILED" if failures.tripped else "FINISHED", metrics, tags)
        if failures.tripped:
            print(f"search: stopped after {failures.streak} consecutive failed trials "
                  f"(last: {failures.last_reason}); check the ranges in {config.space_file}", flush=True)
            return EXIT_FAILURES
        if deadline is not None and time.monotonic() >= deadline:
            print(f"search: --timeout reached after study {item.name}", flush=True)
            break
    return EXIT_OK

