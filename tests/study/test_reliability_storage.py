"""Issue 8, storage side: a journal cut mid-record, a damaged journal, an unwritable storage
folder, and a pid that a restarted container reuses. Real journals, real MLflow SQLite, digits."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.storages.journal import JournalFileSymlinkLock
from optuna.trial import TrialState

from study.storage import HOST, StorageError, lost_trials, open_storage, own_process_token, process_token
from study.contract import FAILURE_REASON, ROLE_STUDY, RUN_ROLE, STUDY_NAME
from tests.conftest import CUT_RECORD, PROJECT_ROOT, require, run_cli

DIGITS = ["--space", "search_spaces/digits.yaml", "--sampler", "random", "--pruner", "none",
          "--set", "train.epochs=1"]
NAME = "digits-cnn-seed0"


def search(stores: dict[str, str], trials: int) -> subprocess.CompletedProcess:
    return run_cli("study", "search", *DIGITS, "--trials", str(trials), "--storage", stores["storage"],
                   "--tracking-uri", stores["tracking_uri"], timeout=400)


def states(storage: str) -> list[str]:
    return [t.state.name for t in optuna.load_study(study_name=NAME, storage=open_storage(storage)).trials]


def small_journal(path: Path, trials: int = 3) -> None:
    """A real Optuna journal with finished trials, written by Optuna itself (no training)."""
    study = optuna.create_study(study_name=NAME, storage=open_storage(str(path)))
    for number in range(trials):
        study.add_trial(optuna.trial.create_trial(
            params={"x": float(number)}, distributions={"x": optuna.distributions.FloatDistribution(0, 10)},
            value=float(number)))


# --- item 1: a last record cut mid-line -----------------------------------------------------

@pytest.mark.slow
def test_a_journal_cut_mid_record_is_repaired_once_and_every_later_run_appends(resumed_digits_search: dict) -> None:
    """The shared study's journal was cut mid-record after its first run (tests/conftest.py)."""
    journal, damaged = resumed_digits_search["journal"], resumed_digits_search["damaged"]
    second, third = resumed_digits_search["runs"][1:]  # on 8baedc1 these exit 1: JSONDecodeError
    (backup,) = journal.parent.glob("optuna.journal.bak-*")  # one backup: the third run found nothing to repair
    assert backup.read_bytes() == damaged  # byte-exact, beside the journal
    said = [line for line in second.stdout.splitlines() if "incomplete last record" in line]
    assert len(said) == 1 and str(journal) in said[0] and str(backup) in said[0], second.stdout
    assert journal.read_bytes().startswith(damaged[:-len(CUT_RECORD)])  # complete records kept as they were
    assert resumed_digits_search["states"][1:] == [["COMPLETE"] * 4, ["COMPLETE"] * 5]
    assert "incomplete last record" not in third.stdout


def test_a_record_being_written_is_waited_for_not_cut(tmp_path: Path) -> None:
    """A partial last line under Optuna's lock is a live writer's: open waits, then keeps it."""
    journal = tmp_path / "optuna.journal"
    small_journal(journal, trials=1)
    record = (b'{"op_code":2,"worker_id":"w","study_id":0,"user_attr":{"note":"written while '
              b'another process opened the journal"}}\n')
    lock = JournalFileSymlinkLock(str(journal))
    lock.acquire()  # what Optuna's append_logs holds while it writes
    opened: list[optuna.storages.BaseStorage] = []
    try:
        with open(journal, "ab") as handle:
            handle.write(record[:30])
            handle.flush()
            opener = threading.Thread(target=lambda: opened.append(open_storage(str(journal))))
            opener.start()
            time.sleep(1.5)
            assert not opened and journal.read_bytes().endswith(record[:30])  # waiting, nothing cut
            handle.write(record[30:])
    finally:
        lock.release()
    opener.join(30)
    assert opened, "open_storage never returned"
    assert not list(tmp_path.glob("*.bak-*"))
    study = optuna.load_study(study_name=NAME, storage=opened[0])
    assert study.user_attrs["note"].startswith("written while")


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_garbage_line_exits_2_naming_file_and_line_and_touches_nothing(tmp_path: Path, where: str) -> None:
    journal = tmp_path / "optuna.journal"
    small_journal(journal)
    lines = journal.read_bytes().splitlines(keepends=True)
    position = 4 if where == "middle" else len(lines)  # 0-based: line 5, or a new last line
    lines.insert(position, b"\x00\xff\xfe\x89PNG binary garbage\n")
    journal.write_bytes(b"".join(lines))
    # reconcile repairs existing stores only (a missing one is its own exit 2): make a real one
    MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()
    before = sorted(p.name for p in tmp_path.iterdir()), journal.read_bytes()

    commands = [["reconcile"]] + ([["search", *DIGITS, "--trials", "5"]] if where == "middle" else [])
    for command in commands:
        result = run_cli("study", *command, "--storage", str(journal),
                         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", timeout=300)
        assert result.returncode == 2, result.stdout + result.stderr  # 8baedc1: exit 1, a traceback
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
        assert str(journal) in result.stderr and f"line {position + 1} " in result.stderr, result.stderr
        assert (sorted(p.name for p in tmp_path.iterdir()), journal.read_bytes()) == before


# --- item 10: an unwritable storage folder --------------------------------------------------

def make_unwritable(folder: Path) -> bool:
    """chmod stops a user; root needs the immutable attribute (chattr +i)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return True
    return subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0


@pytest.mark.parametrize("inside", ["optuna.journal", "new/sub/optuna.journal"])
def test_an_unwritable_storage_folder_exits_2_creating_nothing(tmp_path: Path, inside: str) -> None:
    folder = tmp_path / "readonly"
    folder.mkdir()
    require(make_unwritable(folder), "cannot make a folder unwritable here (chattr +i)")
    try:
        result = run_cli("study", "search", *DIGITS, "--trials", "1", "--storage", str(folder / inside),
                         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", timeout=300)
        assert not any(folder.iterdir())
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(0o755)
    assert result.returncode == 2, result.stdout + result.stderr  # 8baedc1: exit 1, PermissionError
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--storage" in result.stderr and f"folder {folder} is not writable" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["readonly"]  # no MLflow store either


def test_an_unwritable_journal_is_refused_before_optuna_fails_mid_study(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    small_journal(journal, trials=1)
    require(make_unwritable(tmp_path), "cannot make a folder unwritable here (chattr +i)")
    try:
        with pytest.raises(StorageError, match="is not writable"):
            open_storage(str(journal))
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path)], capture_output=True)
        tmp_path.chmod(0o755)


# --- item 3: one pid, two lives -------------------------------------------------------------

def record_trial_then_exec(storage: str, tracking_uri: str, token: str, *command: str) -> None:
    """Run in a child: leave a RUNNING trial (with an MLflow run) recorded under this pid and
    `token` ("this-life": this process's own), then exec the CLI, which keeps the pid (and
    the start time): a restarted container's pid 1 again."""
    from study.tracking import Tracker

    token = own_process_token() if token == "this-life" else token

    tracker = Tracker(tracking_uri)
    experiment_id = tracker.ensure_experiment("digits-cnn")
    study = optuna.create_study(study_name=NAME, storage=open_storage(storage), load_if_exists=True)
    if "experiment" not in study.user_attrs:
        study.set_user_attr("experiment", "digits-cnn")
    parent = study.user_attrs.get("mlflow_study_run_id") or tracker.client.create_run(
        experiment_id, tags={RUN_ROLE: ROLE_STUDY, STUDY_NAME: NAME}).info.run_id
    trial = study.ask()
    run_id = tracker.start_trial_run(experiment_id, parent, NAME, trial.number, params={},
                                     tags={"host": HOST, "pid": os.getpid()})
    for key, value in {"host": HOST, "process_token": token, "pid": os.getpid(), "mlflow_run_id": run_id}.items():
        trial.set_user_attr(key, value)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "study", *command])


def run_with_reused_pid(stores: dict[str, str], token: str, *command: str) -> tuple[subprocess.Popen, str, str]:
    code = (f"from tests.study.test_reliability_storage import record_trial_then_exec as go; "
            f"go(*{[stores['storage'], stores['tracking_uri'], token, *command]!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=PROJECT_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    out, err = proc.communicate(timeout=400)
    return proc, out, err


def the_reused_pid_trial(stores: dict[str, str], pid: int) -> tuple[optuna.trial.FrozenTrial, object]:
    """The trial the child left under `pid` (the CLI's own): the first one with that pid."""
    study = optuna.load_study(study_name=NAME, storage=open_storage(stores["storage"]))
    trial = [t for t in study.trials if t.user_attrs.get("pid") == pid][0]
    return trial, MlflowClient(stores["tracking_uri"]).get_run(trial.user_attrs["mlflow_run_id"])


def test_reconcile_reaps_a_trial_of_an_earlier_life_of_its_own_pid(stores: dict[str, str]) -> None:
    proc, out, err = run_with_reused_pid(stores, "start-1", "reconcile", "--storage", stores["storage"],
                                         "--tracking-uri", stores["tracking_uri"])
    assert proc.returncode == 0, out + err
    trial, run = the_reused_pid_trial(stores, proc.pid)  # recorded under the reconciling process's pid
    assert trial.state == TrialState.FAIL and trial.user_attrs[FAILURE_REASON] == "worker_lost"  # 8baedc1: RUNNING
    assert run.info.status == "FAILED" and run.data.tags[FAILURE_REASON] == "worker_lost"
    assert f"{NAME}: 1 lost trials marked FAIL (worker_lost)" in out


def test_reconcile_leaves_a_trial_of_its_own_life_running(stores: dict[str, str]) -> None:
    """The control: same pid and same start time (exec keeps both) is the living owner."""
    proc, out, err = run_with_reused_pid(stores, "this-life", "reconcile", "--storage", stores["storage"],
                                         "--tracking-uri", stores["tracking_uri"])
    assert proc.returncode == 0, out + err
    trial, run = the_reused_pid_trial(stores, proc.pid)
    assert trial.state == TrialState.RUNNING and run.info.status == "RUNNING"
    assert f"{NAME}: 0 lost trials marked FAIL" in out


@pytest.mark.slow
def test_a_restarted_search_with_the_same_pid_reaps_its_killed_trial(stores: dict[str, str]) -> None:
    first = search(stores, 1)
    assert first.returncode == 0, first.stderr
    # --trials 2: reaped at start-up, the killed trial is the study's second finished one, so
    # the restarted search trains nothing more (training a third trial checked nothing more).
    proc, out, err = run_with_reused_pid(stores, "start-1", "search", *DIGITS, "--trials", "2",
                                         "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"])
    assert proc.returncode == 0, out + err
    trial, run = the_reused_pid_trial(stores, proc.pid)
    assert trial.state == TrialState.FAIL and trial.user_attrs[FAILURE_REASON] == "worker_lost"  # 8baedc1: RUNNING
    assert run.info.status == "FAILED" and run.data.tags[FAILURE_REASON] == "worker_lost"
    assert states(stores["storage"]) == ["COMPLETE", "FAIL"]


def test_a_pid_reused_by_another_program_does_not_keep_a_trial_alive(tmp_path: Path) -> None:
    study = optuna.create_study(study_name=NAME, storage=open_storage(str(tmp_path / "optuna.journal")))
    stranger = subprocess.Popen(["sleep", "60"])  # alive, but not the process that ran the trial
    try:
        require(process_token(stranger.pid) is not None, "no /proc/<pid>/stat on this system")
        for token in ("start-1", process_token(stranger.pid)):
            trial = study.ask()
            for key, value in {"host": HOST, "process_token": token, "pid": stranger.pid}.items():
                trial.set_user_attr(key, value)
        lost = [t.user_attrs["process_token"] for t in lost_trials(study)]
        assert lost == ["start-1"]  # 8baedc1: [] (the pid is alive)
    finally:
        stranger.kill()
        stranger.wait()
    assert own_process_token() == process_token(os.getpid())
