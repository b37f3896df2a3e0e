"""The one per-study driver behind `search`, `search --workers N` and `worker`.

The three differ only in who runs a study's trials: this process (`search`, `worker`) or N
worker processes (the supervisor). Everything else about a study happens here, once:
signals, the experiment, the study and its sampler seed, the study run, the start-up
reconcile, the baseline, the exit code and its line, and the clean-up (a `finally`) that
leaves no trial and no MLflow run RUNNING whatever ends the study: a signal, a crash, or
MLflow refusing a call.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import optuna
from optuna.trial import TrialState

from study.config import SearchConfig
from study.contract import FAILURE_REASON, STUDY_NAME
from study.cost import untrained
from study.data import Splits
from study.exit_codes import ExitCode
from study.inputs import PreparedStudy
from study.paths import PROJECT_ROOT
from study.reconcile import fail_process_trials, reconcile_study, register_mlflow_repair
from study.sampling import baseline_params, directions, make_pruner, make_sampler, sampler_seed
from study.secrets import mask_secrets
from study.signals import interrupt_handled, raise_if_signalled, signal_pending
from study.tracking import Tracker


FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
STUDY_RUN_STATUS = {ExitCode.OK: "FINISHED", ExitCode.INTERRUPTED: "KILLED"}  # anything else: FAILED
# A baseline trial that ended for one of these reasons never got to say anything: train it again.
BASELINE_RETRY_REASONS = ("interrupted", "worker_lost")


@dataclass
class StudySession:
    """One study as one process drives it."""

    config: SearchConfig
    item: PreparedStudy
    splits: Splits
    tracker: Tracker
    experiment_id: str
    study: optuna.Study
    sampler_seed: int
    run_id: str | None = None
    owns_run: bool = False  # this process opened the study run, so it ends it


class TrialRunner(Protocol):
    """What differs between `search`, the supervisor and a worker: who runs the trials."""

    worker_index: int
    reuses_study_run: bool  # a worker of a supervisor: the supervisor opened (and ends) the run

    def install_signals(self) -> None: ...

    def experiment(self, tracker: Tracker, name: str) -> str: ...

    def banner(self, prepared: list[PreparedStudy], splits: Splits) -> str | None: ...

    def run_trials(self, session: StudySession, timeout: float | None) -> ExitCode: ...

    def exit_line(self, code: ExitCode, session: StudySession) -> str | None: ...


# --- the study, its run and its baseline --------------------------------------------------


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_or_create_study(config: SearchConfig, item: PreparedStudy, worker_index: int) -> tuple[optuna.Study, int]:
    """The study with this process's sampler, and the sampler's seed.

    The seed mixes in the trials already in the study, so a re-run (after Ctrl-C, a
    --timeout, a Slurm resubmission, a larger --trials) draws new samples instead of
    replaying the last invocation's; `sampler_seed` says why QMC is the exception.
    """
    study = optuna.create_study(
        study_name=item.name, storage=item.storage, load_if_exists=True,
        pruner=make_pruner(config.pruner if config.objective != "both" else "none", config.space.train.epochs),
        directions=directions(config.objective))
    seed = sampler_seed(config.sampler, item.seed, worker_index, len(study.get_trials(deepcopy=False)))
    study.sampler = make_sampler(config.sampler, seed)
    if "space_sha" not in study.user_attrs:
        for key, value in {"space_sha": config.space.sha(), "experiment": config.experiment,
                           "seed": item.seed, "sampler": config.sampler, "pruner": config.pruner,
                           "objective": config.objective}.items():
            study.set_user_attr(key, value)
    return study, seed


def queue_baseline(study: optuna.Study, params: dict[str, object]) -> bool:
    """Enqueue the baseline unless a trial of it is waiting, running, finished, or failed for a
    reason of its own (nan_loss, timeout: it would fail again). True if enqueued."""
    if not params:
        return False
    for trial in study.get_trials(deepcopy=False):
        if (trial.system_attrs.get("fixed_params") or trial.params) != params:
            continue
        if trial.state != TrialState.FAIL or trial.user_attrs.get(FAILURE_REASON) not in BASELINE_RETRY_REASONS:
            return False
    study.enqueue_trial(params)
    return True


def study_run_tags(session: StudySession) -> dict[str, object]:
    config, item, splits = session.config, session.item, session.splits
    return {STUDY_NAME: item.name, "sampler": config.sampler,
            "pruner": config.pruner if config.objective != "both" else "none",
            "objective": config.objective, "seed": item.seed, "dataset": config.space.data.name,
            "data_source": splits.source, "space_sha": config.space.sha(), "git_commit": git_commit(),
            "storage": config.storage, "workers": config.workers}


def open_study_run(session: StudySession) -> str:
    config, splits = session.config, session.splits
    run_id = session.tracker.open_study_run(
        session.experiment_id, session.item.name, study_run_tags(session),
        params={**config.flat(), "seed": session.item.seed, **splits.sizes(), "data.source": splits.source},
        space_file=Path(config.space_file), effective_space=config.space.model_dump(mode="json"))
    session.study.set_user_attr("mlflow_study_run_id", run_id)
    return run_id


def finished_count(study: optuna.Study) -> int:
    """Finished trials towards --trials: an untrained one (a draw over the cost cap) is not one."""
    return sum(not untrained(trial.user_attrs)
               for trial in study.get_trials(deepcopy=False, states=FINISHED_STATES))


class TrialTarget:
    """Stops the study once --trials finished trials exist in the storage, any process's
    (Optuna's MaxTrialsCallback, counting as `finished_count` does)."""

    def __init__(self, trials: int) -> None:
        self.trials = trials

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if finished_count(study) >= self.trials:
            study.stop()


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


# --- driving one study -------------------------------------------------------------------


def _prepare(session: StudySession, runner: TrialRunner) -> None:
    """Study run, start-up reconcile and baseline: what must be in place before any trial."""
    session.run_id = session.study.user_attrs.get("mlflow_study_run_id") if runner.reuses_study_run else None
    if session.run_id is None:  # a worker started by hand before any `search` opens it too
        session.run_id, session.owns_run = open_study_run(session), True
    reconcile_study(session.study, session.tracker, session.experiment_id)
    # Once per study, not once per worker: N workers would queue N baselines.
    if session.owns_run and session.config.baseline:
        queue_baseline(session.study, baseline_params(session.config.space))


def _attempt(what: str, step: Callable[[], object]) -> None:
    """One clean-up step; its failure is reported and must not skip the next steps."""
    try:
        step()
    except Exception as exc:  # noqa: BLE001 - e.g. MLflow is what failed; reconcile repairs later
        first = (str(exc).splitlines() or [""])[0]
        print(f"study: warning: {what} failed ({type(exc).__name__}: {mask_secrets(first)}); "
              "`python -m study reconcile` repairs it later", flush=True)


def close_study(session: StudySession, code: ExitCode, crash: BaseException | None) -> None:
    """Nothing of this process stays RUNNING: its trials FAIL, every finished trial's run
    ends, and the study run ends with the study's outcome."""
    study, tracker = session.study, session.tracker
    if code in (ExitCode.INTERRUPTED, ExitCode.ERROR):
        reason = ("interrupted" if code == ExitCode.INTERRUPTED
                  else f"exception:{type(crash).__name__}" if crash is not None else "worker_lost")
        _attempt("failing this process's running trials",
                 lambda: fail_process_trials(study, tracker, os.getpid(), reason))
        _attempt("reconciling MLflow with Optuna", lambda: reconcile_study(study, tracker, session.experiment_id))
    if session.owns_run and session.run_id is not None:
        def end_run() -> None:
            metrics, tags = study_result(study)
            tracker.end_study_run(session.run_id, STUDY_RUN_STATUS.get(code, "FAILED"), metrics, tags)

        _attempt("ending the study run", end_run)


def drive_study(session: StudySession, runner: TrialRunner, timeout: float | None) -> ExitCode:
    """Prepare, run the trials, and close the study whatever happens; the exit code."""
    code, crash = ExitCode.ERROR, None
    try:
        raise_if_signalled()  # one swallowed while the last study closed: this one stops
        _prepare(session, runner)
        code = runner.run_trials(session, timeout)
        raise_if_signalled()  # one swallowed after the last trial's end
    except KeyboardInterrupt:
        interrupt_handled()
        code = ExitCode.INTERRUPTED
    except BaseException as exc:  # re-raised: the CLI prints it; the run must not stay RUNNING
        if not (isinstance(exc, Exception) and signal_pending()):
            crash = exc
            raise
        interrupt_handled()  # the interrupt, replaced by a library's clean-up (study/signals.py)
        code = ExitCode.INTERRUPTED
    finally:
        close_study(session, code, crash)
    line = runner.exit_line(code, session)
    if line:
        print(line, flush=True)
    return code


def drive(config: SearchConfig, checked: tuple[Splits, Tracker, list[PreparedStudy]],
          runner: TrialRunner) -> ExitCode:
    """Every study of one invocation in turn, after its inputs passed `check_inputs`."""
    splits, tracker, prepared = checked
    runner.install_signals()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our Progress lines say it better
    experiment_id = runner.experiment(tracker, config.experiment)
    register_mlflow_repair(tracker)
    deadline = time.monotonic() + config.timeout if config.timeout else None
    banner = runner.banner(prepared, splits)
    if banner:
        print(banner, flush=True)
    for item in prepared:
        study, seed = load_or_create_study(config, item, runner.worker_index)
        session = StudySession(config, item, splits, tracker, experiment_id, study, seed)
        remaining = None if deadline is None else max(1.0, deadline - time.monotonic())
        code = drive_study(session, runner, remaining)
        if code != ExitCode.OK:
            return code
        if deadline is not None and time.monotonic() >= deadline:
            print(f"search: --timeout reached after study {item.name}", flush=True)
            break
    if signal_pending():  # swallowed while the last study closed: its work is done, but say so
        interrupt_handled()
        print("study: interrupted as the last study closed; its trials and runs are complete", flush=True)
        return ExitCode.INTERRUPTED
    return ExitCode.OK


def interrupted_line(session: StudySession) -> str:
    """What search and supervisor print when a study was interrupted (a worker says its own)."""
    return f"[{session.item.name}] interrupted; re-run the same command to continue the study"


def studies_text(prepared: list[PreparedStudy]) -> str:
    return f"{len(prepared)} stud{'y' if len(prepared) == 1 else 'ies'}"
