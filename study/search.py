"""A search: validate everything, then create the studies and their MLflow runs, then optimise.

Nothing is created before every input has been checked, so bad input leaves no trace. The
per-study work (study, study run, reconcile, clean-up, exit codes) is study/driver.py's;
this module runs the trials in this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from study.config import SearchConfig
from study.contract import FAILURE_REASON
from study.data import Splits
from study.driver import (ExitCode, StudySession, TrialTarget, drive, finished_count, interrupted_line,
                          studies_text)
from study.inputs import PreparedStudy, check_inputs
from study.secrets import mask_secrets
from study.signals import install_signal_handlers, raise_at_trial_end_if_signalled
from study.tracking import Tracker

if TYPE_CHECKING:  # the objective pulls in TensorFlow: the supervisor never needs it
    from study.objective import TrialContext


class ConsecutiveFailures:
    """Stops the study after N FAIL trials in a row in this process."""

    def __init__(self, limit: int) -> None:
        self.limit, self.streak, self.tripped, self.last_reason = limit, 0, False, None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != TrialState.FAIL:
            self.streak = 0
            return
        self.streak += 1
        self.last_reason = trial.user_attrs.get(FAILURE_REASON)
        if self.streak >= self.limit:
            self.tripped = True
            study.stop()


def optimize(config: SearchConfig, study: optuna.Study, context: TrialContext,
             timeout: float | None) -> ConsecutiveFailures:
    """Run trials until --trials finished ones exist in the storage (any process), or timeout."""
    from study.objective import Objective, Progress, TrialFailed

    failures = ConsecutiveFailures(config.max_consecutive_failures)
    if config.trials is not None and finished_count(study) >= config.trials:
        return failures
    callbacks = [failures, Progress(study.study_name, config.trials, timeout, finished_count(study)),
                 raise_at_trial_end_if_signalled]
    if config.trials is not None:
        callbacks.insert(0, TrialTarget(config.trials))
    study.optimize(Objective(context), timeout=timeout, callbacks=callbacks, catch=(TrialFailed,),
                   gc_after_trial=False)  # train_trial collects
    return failures


class TrialsHere:
    """`python -m study search` with one worker: the trials run in this process."""

    reuses_study_run = False

    def __init__(self, config: SearchConfig, worker_index: int = 0,
                 extra_trial_params: dict[str, Any] | None = None) -> None:
        self.config, self.worker_index = config, worker_index
        self.extra_trial_params = extra_trial_params or {}  # MLflow params of every trial run besides the config
        self.failures = ConsecutiveFailures(config.max_consecutive_failures)

    def install_signals(self) -> None:
        install_signal_handlers()

    def experiment(self, tracker: Tracker, name: str) -> str:
        return tracker.ensure_experiment(name)

    def banner(self, prepared: list[PreparedStudy], splits: Splits) -> str | None:
        return (f"search: {studies_text(prepared)} of {self.config.space.name} on {splits.source} "
                f"({splits.sizes()}), storage {mask_secrets(self.config.storage)}, "
                f"tracking {mask_secrets(self.config.tracking_uri)}")

    def run_trials(self, session: StudySession, timeout: float | None) -> ExitCode:
        from study.objective import TrialContext, shared_trial_params

        config, splits = session.config, session.splits
        context = TrialContext(config, splits, session.tracker, session.experiment_id, session.run_id,
                               session.item.name, session.item.seed,
                               base_params={**shared_trial_params(config, splits), **self.extra_trial_params})
        self.failures = optimize(config, session.study, context, timeout)
        return ExitCode.FAILURES if self.failures.tripped else ExitCode.OK

    def exit_line(self, code: ExitCode, session: StudySession) -> str | None:
        if code == ExitCode.INTERRUPTED:
            return interrupted_line(session)
        if code == ExitCode.FAILURES:
            return (f"search: stopped after {self.failures.streak} consecutive failed trials "
                    f"(last: {self.failures.last_reason}); check the ranges in {self.config.space_file}")
        return None


def run_search(config: SearchConfig, checked: tuple[Splits, Tracker, list[PreparedStudy]] | None = None,
               worker_index: int = 0) -> int:
    """The whole `python -m study search` after its inputs passed `check_inputs`; the exit code."""
    return drive(config, checked or check_inputs(config), TrialsHere(config, worker_index))
