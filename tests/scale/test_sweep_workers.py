"""`python -m study sweep --workers 2`: two real worker processes share one factor's arms on a
real journal and MLflow store, the pairing survives the split, and a killed worker's arm is
trained again in the same run."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import optuna
import pytest

from study.contract import (ARM_REFERENCE, ARM_REPLICATE, ARM_TREATMENT, FAILURE_REASON, SWEEP_ARM,
                            SWEEP_BATCH_HASH, SWEEP_INIT_HASH, SWEEP_PAIR, TF_INTRA_OP_THREADS)
from tests.conftest import PROJECT_ROOT, run_cli
from tests.scale.conftest import (assert_consistent, load, running_trial_with_run, start_cli, stop, study_runs,
                                  trial_runs, wait_for)

pytestmark = pytest.mark.slow

EXPERIMENT = "sweep-digits-smoke"
STUDY = "sweep-dropout=0,0.3-seed0"
ARMS = [(pair, arm) for pair in (0, 1) for arm in (ARM_REFERENCE, ARM_TREATMENT, ARM_REPLICATE)]


def sweep_args(stores: dict[str, str], *extra: str) -> list[str]:
    return ["study", "sweep", "--data", "digits", "--factor", "dropout=0,0.3", "--pairs", "2", "--workers", "2",
            "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"], *extra]


SMALL = ["--set", "train.epochs=1", "--set", "data.train_size=400"]


def completed_arms(study: optuna.Study) -> list[tuple[int, str]]:
    return sorted((t.user_attrs[SWEEP_PAIR], t.user_attrs[SWEEP_ARM]) for t in study.trials
                  if t.state == optuna.trial.TrialState.COMPLETE)


def test_two_workers_train_every_arm_once_paired_across_processes(stores: dict[str, str], tmp_path: Path) -> None:
    # Run from another folder with relative store paths: the workers start in the project root
    # and must still find the supervisor's stores.
    relative = {"storage": "optuna.journal", "tracking_uri": "sqlite:///mlflow.db"}
    first = run_cli(*sweep_args(relative, *SMALL), env={"PYTHONPATH": str(PROJECT_ROOT)}, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "2 workers with TF threads 1 intra-op" in first.stdout
    assert stores["storage"] == str(tmp_path / "optuna.journal")  # the same files, named absolutely
    study = assert_consistent(stores["storage"], stores["tracking_uri"], EXPERIMENT, STUDY)
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 6
    assert sorted(completed_arms(study)) == sorted(ARMS)
    pids = {t.user_attrs["pid"] for t in study.trials}
    assert len(pids) == 2, pids  # both workers trained arms, and neither is this test's process
    assert os.getpid() not in pids
    for pair in (0, 1):  # the arms of a pair share init and first batch whichever process trained them
        arms = [t for t in study.trials if t.user_attrs[SWEEP_PAIR] == pair]
        for key in (SWEEP_INIT_HASH, SWEEP_BATCH_HASH):
            assert len({t.user_attrs[key] for t in arms}) == 1, (pair, key)
    runs = trial_runs(stores["tracking_uri"], EXPERIMENT)
    assert sorted(runs) == list(range(6))
    assert {group[0].data.params[TF_INTRA_OP_THREADS] for group in runs.values()} == {"1"}
    (study_run,) = study_runs(stores["tracking_uri"], EXPERIMENT)
    assert study_run.data.params["workers"] == "2" and study_run.info.status == "FINISHED"

    again = run_cli(*sweep_args(stores, *SMALL), timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"[{STUDY}] all 6 arms of 2 pairs are done" in again.stdout and "worker 0" not in again.stdout
    assert len(load(stores["storage"], STUDY).trials) == 6


@pytest.mark.parametrize(("signum", "exit_text", "reason"), [
    (signal.SIGKILL, "killed by SIGKILL", "worker_lost"),  # out of memory, kill -9
    (signal.SIGTERM, "exit 130", "interrupted"),           # someone else's kill of one worker
])
def test_a_lost_workers_arm_is_queued_again_and_trained_in_the_same_run(stores: dict[str, str], tmp_path: Path,
                                                                        signum: int, exit_text: str,
                                                                        reason: str) -> None:
    log = tmp_path / "sweep.log"
    proc = start_cli(*sweep_args(stores, "--set", "train.epochs=3", "--set", "data.train_size=1000"), log=log)
    try:
        victim = wait_for(lambda: running_trial_with_run(stores["storage"], STUDY), 240,
                          "a running arm with an MLflow run", proc, log)
        pid = int(victim.user_attrs["pid"])
        assert pid != proc.pid  # a worker trains it, not the supervisor
        os.kill(pid, signum)
        assert proc.wait(400) == 0, log.read_text()[-3000:]
    finally:
        stop(proc)
    assert f"(pid {pid}) {exit_text}" in log.read_text()
    study = assert_consistent(stores["storage"], stores["tracking_uri"], EXPERIMENT, STUDY)
    killed = study.trials[victim.number]
    assert killed.state == optuna.trial.TrialState.FAIL and killed.user_attrs[FAILURE_REASON] == reason
    assert sorted(completed_arms(study)) == sorted(ARMS)  # every pair whole, without a re-run
    assert len(study.trials) == 7
