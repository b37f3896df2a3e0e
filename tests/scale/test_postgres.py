"""Many machines' setup on one: Optuna RDBStorage on a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest

from study.contract import FAILURE_REASON
from tests.conftest import free_port, run_cli
from tests.scale.conftest import (PG_PASSWORD, TINY, assert_consistent, load, running_trial_with_run, search_args,
                                  start_cli, stop, trial_runs, wait_for)

pytestmark = pytest.mark.slow


def test_three_workers_finish_n_trials(pg_url: str, stores: dict[str, str]) -> None:
    stores = {**stores, "storage": pg_url}
    result = run_cli(*search_args(stores, "pg3", "--workers", "3", "--trials", "6"), timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert PG_PASSWORD not in log  # masked in the banner and everywhere else
    study = assert_consistent(pg_url, stores["tracking_uri"], "pg3", "pg3-seed0")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert 6 <= len(finished) <= 8 and len({t.number for t in finished}) == len(finished)
    assert len({t.user_attrs["pid"] for t in finished}) == 3
    runs = trial_runs(stores["tracking_uri"], "pg3")
    assert sorted(runs) == sorted(t.number for t in study.trials)
    for group in runs.values():  # the password never reaches MLflow
        assert PG_PASSWORD not in str(group[0].data.params) + str(group[0].data.tags)


@pytest.mark.parametrize("problem", ["wrong-password", "stopped-server"])
def test_unreachable_storage_is_one_masked_line(postgres, stores: dict[str, str], problem: str) -> None:
    if isinstance(postgres, str):
        pytest.skip("needs the temporary cluster, not $SCALE_POSTGRES_URL")
    if problem == "wrong-password":
        url = postgres.url(password="WrongPass-123")
    else:  # a port where no server listens: what a stopped server looks like to a client
        url = f"postgresql://study:{PG_PASSWORD}@127.0.0.1:{free_port()}/optuna"
    started = time.monotonic()
    result = run_cli(*search_args({**stores, "storage": url}, "pgbad", "--trials", "1"), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("study: error: --storage postgresql://study:***@"), lines
    assert "WrongPass-123" not in result.stdout + result.stderr and PG_PASSWORD not in result.stderr
    assert ("password authentication failed" if problem == "wrong-password" else "refused") in lines[0]
    assert "Traceback" not in result.stderr and time.monotonic() - started < 60


def test_heartbeat_retries_a_killed_workers_trial(pg_url: str, stores: dict[str, str], tmp_path: Path) -> None:
    """kill -9 on "machine A"; a worker on "machine B" (another host name, so it cannot judge A's
    pids) finds the trial stale through Optuna's heartbeat, fails it and runs its retry."""
    stores = {**stores, "storage": pg_url}
    args = search_args(stores, "pghb", "--trials", "2", "--heartbeat-interval", "1", "--grace-period", "3",
                       "--max-retry", "1", "--set", "data.train_size=1024", "--set", "data.val_size=256")
    log = tmp_path / "a.log"
    proc = start_cli(*args, env={"STUDY_HOST": "machine-a"}, log=log)
    try:
        victim = wait_for(lambda: running_trial_with_run(pg_url, "pghb-seed0"), 240, "a running trial", proc, log)
        os.kill(int(victim.user_attrs["pid"]), signal.SIGKILL)
        proc.wait(30)
    finally:
        stop(proc)
    assert load(pg_url, "pghb-seed0").trials[victim.number].state == optuna.trial.TrialState.RUNNING

    rerun = run_cli(*args, env={"STUDY_HOST": "machine-b"}, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    study = assert_consistent(pg_url, stores["tracking_uri"], "pghb", "pghb-seed0")
    killed = study.trials[victim.number]
    assert killed.state == optuna.trial.TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    assert retries[0].state.is_finished() and retries[0].user_attrs["host"] == "machine-b"
    assert "failure_reason" not in retries[0].user_attrs or retries[0].state == optuna.trial.TrialState.FAIL
    run = trial_runs(stores["tracking_uri"], "pghb")[victim.number][0]
    assert run.info.status == "FAILED" and run.data.tags[FAILURE_REASON] == "worker_lost"
