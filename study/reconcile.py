"""Optuna is the source of truth; this brings MLflow back in line with it.

Run at every start (so a crashed worker's trial never stays RUNNING) and on demand via
`python -m study reconcile`.
"""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from study.storage import fail_trial, lost_trials
from study.tracking import STATUS_FOR_STATE, Tracker, run_status_is_running


def reconcile_study(study: optuna.Study, tracker: Tracker, experiment_id: str) -> dict[str, int]:
    """Fail trials whose process is gone, then end every MLflow run whose trial is finished."""
    counts = {"lost_trials_failed": 0, "runs_ended": 0}
    for trial in lost_trials(study):
        if fail_trial(study, trial, "worker_lost"):
            counts["lost_trials_failed"] += 1
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    for run in tracker.trial_runs(experiment_id, study.study_name):
        if not run_status_is_running(run):
            continue
        trial = trials.get(int(run.data.tags.get("optuna.trial_number", -1)))
        if trial is not None and trial.state == TrialState.RUNNING:
            continue  # alive somewhere: its own process will end the run
        if trial is None or trial.state == TrialState.WAITING:
            state, reason = "FAIL", "worker_lost"
        else:
            state = trial.state.name
            reason = trial.user_attrs.get("failure_reason") or ("worker_lost" if state == "FAIL" else None)
        status = "KILLED" if reason == "interrupted" else STATUS_FOR_STATE[state]
        tracker.mark_run(run.info.run_id, state, status, reason)
        counts["runs_ended"] += 1
    return counts
