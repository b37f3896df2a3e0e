"""kill -9 and Ctrl-C mid-trial, with and without the supervisor, then re-run the command."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest

from study.contract import FAILURE_REASON
from tests.conftest import run_cli
from tests.scale.conftest import (assert_consistent, load, running_trial_with_run, search_args, start_cli,
                                  stop, study_runs, trial_runs, wait_for)

pytestmark = pytest.mark.slow

# A trial long enough (a few seconds) to be caught mid-way.
LONGER = ["--set", "data.train_size=1024", "--set", "data.val_size=256"]
FAIL, COMPLETE = optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE


def complete_numbers(storage: str, name: str) -> set[int]:
    return {t.number for t in load(storage, name).get_trials(deepcopy=False, states=(COMPLETE,))}


@pytest.mark.parametrize("supervised", [True, False], ids=["supervisor", "independent"])
def test_kill_9_mid_trial_then_rerun(stores: dict[str, str], tmp_path: Path, supervised: bool) -> None:
    name, trials = f"kill{int(supervised)}", 4
    args = search_args(stores, name, "--trials", str(trials), *LONGER,
                       *(["--workers", "2"] if supervised else []))
    log = tmp_path / "first.log"
    proc = start_cli(*args, log=log)
    try:
        victim = wait_for(lambda: running_trial_with_run(stores["storage"], f"{name}-seed0"), 240,
                          "a running trial with an MLflow run", proc, log)
        pid = int(victim.user_attrs["pid"])
        assert pid != proc.pid or not supervised  # under a supervisor, a worker runs the trial
        os.kill(pid, signal.SIGKILL)
        if supervised:  # the supervisor notices at once, replaces the worker and finishes the study
            assert proc.wait(300) == 0, log.read_text()[-3000:]
            assert f"(pid {pid}) killed by SIGKILL" in log.read_text()
        else:
            proc.wait(30)
    finally:
        stop(proc)
    killed = load(stores["storage"], f"{name}-seed0").trials[victim.number]
    if supervised:  # marked before any re-run
        assert killed.state == FAIL and killed.user_attrs[FAILURE_REASON] == "worker_lost"
    else:
        assert killed.state == optuna.trial.TrialState.RUNNING  # nothing else knows yet
    completed_before = complete_numbers(stores["storage"], f"{name}-seed0")

    rerun = run_cli(*args, timeout=400)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = assert_consistent(stores["storage"], stores["tracking_uri"], name, f"{name}-seed0")
    killed = study.trials[victim.number]
    assert killed.state == FAIL and killed.user_attrs[FAILURE_REASON] == "worker_lost"
    run = trial_runs(stores["tracking_uri"], name)[victim.number][0]
    assert run.info.status == "FAILED" and run.data.tags[FAILURE_REASON] == "worker_lost"
    assert completed_before <= complete_numbers(stores["storage"], f"{name}-seed0")  # no COMPLETE lost
    assert len([t for t in study.trials if t.state.is_finished()]) >= trials  # the study reached N


@pytest.mark.parametrize("supervised", [True, False], ids=["supervisor-ctrl-c", "independent-sigterm"])
def test_interrupt_mid_trial_exits_130_then_resumes(stores: dict[str, str], tmp_path: Path,
                                                    supervised: bool) -> None:
    name, trials = f"int{int(supervised)}", 3
    single = search_args(stores, name, "--trials", str(trials), *LONGER)
    args = single + (["--workers", "2"] if supervised else [])
    log = tmp_path / "first.log"
    proc = start_cli(*args, log=log)
    try:
        victim = wait_for(lambda: running_trial_with_run(stores["storage"], f"{name}-seed0"), 240,
                          "a running trial with an MLflow run", proc, log)
        if supervised:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        else:
            proc.send_signal(signal.SIGTERM)  # what kill, Slurm and Kubernetes do
        assert proc.wait(120) == 130, log.read_text()[-3000:]
    finally:
        stop(proc)
    assert "re-run the same command to continue" in log.read_text()
    study = assert_consistent(stores["storage"], stores["tracking_uri"], name, f"{name}-seed0")
    interrupted = study.trials[victim.number]
    assert interrupted.state == FAIL and interrupted.user_attrs[FAILURE_REASON] == "interrupted"
    run = trial_runs(stores["tracking_uri"], name)[victim.number][0]
    assert run.info.status == "KILLED" and run.data.tags[FAILURE_REASON] == "interrupted"
    (study_run,) = study_runs(stores["tracking_uri"], name)
    assert study_run.info.status == "KILLED"
    completed_before = complete_numbers(stores["storage"], f"{name}-seed0")

    resumed = run_cli(*single, timeout=300)  # the same study, resumed by one process
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    study = assert_consistent(stores["storage"], stores["tracking_uri"], name, f"{name}-seed0")
    assert len([t for t in study.trials if t.state.is_finished()]) >= trials
    assert completed_before <= complete_numbers(stores["storage"], f"{name}-seed0")
    (study_run,) = study_runs(stores["tracking_uri"], name)
    assert study_run.info.status == "FINISHED"
