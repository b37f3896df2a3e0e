"""Optuna is the source of truth; this brings MLflow back in line with it.

Run at every start (so a crashed worker's trial never stays RUNNING), by the supervisor
whenever a worker dies, and on demand via `python -m study reconcile`.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from study.contract import FAILURE_REASON, TRIAL_NUMBER
from study.storage import LOST_TRIAL_HOOKS, fail_trial, heartbeat_enabled, lost_trials
from study.tracking import STATUS_FOR_STATE, Tracker, run_status_is_running


def mark_trial_run(tracker: Tracker, trial: optuna.trial.FrozenTrial, reason: str) -> None:
    """End a failed-from-outside trial's MLflow run: FAILED, or KILLED when interrupted."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        tracker.mark_run(run_id, "FAIL", "KILLED" if reason == "interrupted" else "FAILED", reason)


def register_mlflow_repair(tracker: Tracker) -> None:
    """Heartbeat-stale trials (failed inside Optuna's callback) also end their MLflow run."""
    LOST_TRIAL_HOOKS[:] = [lambda study, trial: mark_trial_run(
        tracker, trial, trial.user_attrs.get(FAILURE_REASON) or "worker_lost")]


def fail_trials(study: optuna.Study, tracker: Tracker, trials: list[optuna.trial.FrozenTrial],
                reason: str) -> int:
    """FAIL each RUNNING trial with `reason` in Optuna, then its MLflow run; the number failed."""
    count = 0
    for trial in trials:
        if fail_trial(study, trial, reason):
            count += 1
            try:
                mark_trial_run(tracker, trial, reason)
            except Exception as exc:  # noqa: BLE001 - the next reconcile ends the run
                print(f"study: warning: trial {trial.number}: MLflow run not ended ({type(exc).__name__})",
                      flush=True)
    return count


def fail_process_trials(study: optuna.Study, tracker: Tracker, pid: int, reason: str) -> int:
    """The RUNNING trials of one (dead or dying) process on this host."""
    return fail_trials(study, tracker, lost_trials(study, pid=pid), reason)


def reconcile_study(study: optuna.Study, tracker: Tracker, experiment_id: str) -> dict[str, int]:
    """Fail trials whose process is gone, then end every MLflow run whose trial is finished."""
    counts = {"lost_trials_failed": fail_trials(study, tracker, lost_trials(study), "worker_lost"),
              "runs_ended": 0}
    if heartbeat_enabled(study):  # other hosts' dead workers: stale heartbeat -> FAIL + bounded retry
        register_mlflow_repair(tracker)
        optuna.storages.fail_stale_trials(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for run in tracker.trial_runs(experiment_id, study.study_name):
        if not run_status_is_running(run):
            continue
        trial = trials.get(int(run.data.tags.get(TRIAL_NUMBER, -1)))
        if trial is not None and trial.state == TrialState.RUNNING:
            continue  # alive somewhere: its own process will end the run
        if trial is None or trial.state == TrialState.WAITING:
            state, reason = "FAIL", "worker_lost"
        else:
            state = trial.state.name
            reason = trial.user_attrs.get(FAILURE_REASON) or ("worker_lost" if state == "FAIL" else None)
        status = "KILLED" if reason == "interrupted" else STATUS_FOR_STATE[state]
        tracker.mark_run(run.info.run_id, state, status, reason)
        counts["runs_ended"] += 1
    return counts
