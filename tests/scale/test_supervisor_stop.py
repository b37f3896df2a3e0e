"""A supervisor's stop: none of its workers counts as lost, and none starts after it.

In-process supervisors on a real journal and MLflow store, with real worker processes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from study.cli import build_parser, search_config
from study.driver import ExitCode, StudySession, drive
from study.inputs import PreparedStudy, check_inputs
from study.supervisor import Supervisor
from tests.scale.conftest import FAST, load, study_runs


@pytest.fixture
def signal_handlers() -> Iterator[None]:
    """drive() installs the supervisor's handlers in this (pytest's) process: put them back."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def supervisor_inputs(tmp_path: Path, studies: int):
    stores = {"storage": str(tmp_path / "optuna.journal"),
              "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    args = build_parser().parse_args(
        ["search", "--workers", "2", "--replicates", str(studies), "--trials", "2", "--experiment", "stop",
         "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"], *FAST])
    config = search_config(args)
    return stores, args, config, check_inputs(config)


class SupervisorThatMustNotStartWorkers(Supervisor):
    def spawn(self, item: PreparedStudy, worker_index: int, timeout: float | None) -> subprocess.Popen:
        pytest.fail(f"worker {worker_index} was started after the stop")


class SupervisorWithoutStartCheck(Supervisor):
    """The real supervisor, but it starts its workers even after a stop was caught: the watch
    loop then has to stop workers that have not yet put in their own signal handler."""

    def run_trials(self, session: StudySession, timeout: float | None) -> ExitCode:
        return self.supervise(session, timeout)


def test_a_stop_caught_before_a_study_starts_no_worker_for_it(
        tmp_path: Path, capsys: pytest.CaptureFixture, signal_handlers: None) -> None:
    stores, args, config, checked = supervisor_inputs(tmp_path, studies=2)
    supervisor = SupervisorThatMustNotStartWorkers(config, args)
    supervisor.stop.signum = signal.SIGINT  # the same path as a signal caught while a study closed

    assert drive(config, checked, supervisor) == ExitCode.INTERRUPTED

    out = capsys.readouterr().out
    assert "supervisor: worker" not in out  # no worker was started, so none was lost or replaced
    assert "interrupted; re-run the same command to continue the study" in out
    trials = load(stores["storage"], "stop-seed0").get_trials()
    assert [trial.state for trial in trials] == [optuna.trial.TrialState.WAITING]  # the baseline, untaken
    with pytest.raises(KeyError):  # the driver stopped at the first study: the second was never made
        load(stores["storage"], "stop-seed1")
    [study_run] = study_runs(stores["tracking_uri"], "stop")
    assert study_run.info.status == "KILLED"


def test_workers_stopped_before_their_own_handler_are_not_lost_and_not_replaced(
        tmp_path: Path, capfd: pytest.CaptureFixture, signal_handlers: None) -> None:
    stores, args, config, checked = supervisor_inputs(tmp_path, studies=1)
    supervisor = SupervisorWithoutStartCheck(config, args)
    supervisor.stop.signum = signal.SIGTERM  # the loop SIGTERMs both workers at once, mid-import

    assert drive(config, checked, supervisor) == ExitCode.INTERRUPTED

    out = capfd.readouterr().out
    assert "running trial(s) marked FAIL" not in out, out  # a stop is not a lost worker
    study = load(stores["storage"], "stop-seed0")
    assert all(trial.state != optuna.trial.TrialState.RUNNING for trial in study.get_trials())


class SupervisorOfScriptedWorkers(Supervisor):
    """The real watch loop over stand-in worker processes with scripted exits: worker 0 trips
    the failure limit (exit 3) once worker 1 is ready, and worker 1 crashes (exit 1) in its
    SIGTERM clean-up. A third worker would be a restart after the limit tripped."""

    def __init__(self, *args: object, folder: Path) -> None:
        super().__init__(*args)
        self.folder, self.started = folder, 0

    def spawn(self, item: PreparedStudy, worker_index: int, timeout: float | None) -> subprocess.Popen:
        self.started += 1
        if self.started > 2:
            pytest.fail(f"worker index {worker_index} was started after the failure limit tripped")
        ready = self.folder / "ready"
        scripts = [f"import pathlib, sys, time\nwhile not pathlib.Path({str(ready)!r}).exists(): time.sleep(0.05)\n"
                   "sys.exit(3)",
                   "import pathlib, signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(1))\n"
                   f"pathlib.Path({str(ready)!r}).touch()\ntime.sleep(120)"]
        return subprocess.Popen([sys.executable, "-c", scripts[self.started - 1]])


def test_after_the_failure_limit_trips_a_worker_that_crashes_while_stopping_is_not_replaced(
        tmp_path: Path, capfd: pytest.CaptureFixture, signal_handlers: None) -> None:
    stores, args, config, checked = supervisor_inputs(tmp_path, studies=1)
    supervisor = SupervisorOfScriptedWorkers(config, args, folder=tmp_path)

    assert drive(config, checked, supervisor) == ExitCode.FAILURES

    assert supervisor.started == 2
    out = capfd.readouterr().out
    assert "worker 1" in out and "exit 1" in out, out  # its crash is reported, as a lost worker's is
