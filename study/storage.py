"""Optuna storages (the source of truth) and the repair of trials whose process is gone."""

from __future__ import annotations

import copy
import json
import os
import shutil
import socket
import time
import uuid
import warnings
from datetime import datetime, timezone
from collections.abc import Callable
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.trial import TrialState

from study.contract import FAILURE_REASON
from study.paths import sqlite_file
from study.secrets import mask_secrets

# STUDY_HOST overrides the host name where several containers share one (docker --net=host)
# and so could share pids: liveness by pid is only meaningful within one host identity.
HOST = os.environ.get("STUDY_HOST") or socket.gethostname()
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


# A RUNNING trial records host and pid within milliseconds of its creation; one that has
# not after this long belongs to a process that died in between (journal storage only).
ORPHAN_SECONDS = 300.0

PROCESS_ATTRS = ("host", "pid", "process_token", "mlflow_run_id", FAILURE_REASON)

# Called as hook(study, frozen_trial) when a trial is failed from outside its process
# (heartbeat stale, dead pid, dead worker): the search registers the MLflow repair here.
LOST_TRIAL_HOOKS: list[Callable[[optuna.Study, optuna.trial.FrozenTrial], None]] = []


class StorageError(RuntimeError):
    """The storage cannot be opened (bad URL, server down, wrong password); masked message."""


def is_rdb(spec: str) -> bool:
    return "://" in spec and spec.split("://", 1)[0].split("+", 1)[0] in RDB_SCHEMES


def with_installed_driver(url: str) -> str:
    """SQLAlchemy 2.1 maps plain `postgresql://` to psycopg 3; use psycopg2 when only it is there."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return f"postgresql://{rest}" if scheme == "postgres" else url


def process_token(pid: int) -> str | None:
    """What tells two lives of one pid apart: the process's start time (clock ticks since
    boot, field 22 of /proc/<pid>/stat), or None where /proc cannot say."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return "start-" + stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


_OWN_TOKENS: dict[int, str] = {}


def own_process_token() -> str:
    """This process's token, recorded with host and pid on every trial: a container restarted
    with the same host name runs its program as the same pid (often 1) again, so the pid alone
    cannot say "gone". Keyed by pid, so a forked child never inherits its parent's."""
    pid = os.getpid()
    if pid not in _OWN_TOKENS:
        _OWN_TOKENS[pid] = process_token(pid) or f"random-{uuid.uuid4().hex}"
    return _OWN_TOKENS[pid]


class JournalDamaged(StorageError):
    """A complete journal line that is not a record: exit 2, the file left as it is."""


def _unwritable(path: Path) -> str | None:
    """Why the journal, or the folder it is (to be) created in, cannot be written; else None.

    Optuna writes its lock file beside the journal, so the folder must be writable too.
    """
    folder = path.parent
    while not folder.exists():  # mkdir would create the missing ones inside the first that exists
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    if path.exists() and not (path.is_file() and os.access(path, os.R_OK | os.W_OK)):
        return "not a readable and writable file"
    return None


def open_journal(spec: str) -> JournalStorage:
    """A journal file, created if missing, with a last record cut mid-line repaired first."""
    path = Path(spec)
    problem = _unwritable(path)
    if problem:
        raise StorageError(f"--storage {spec}: {problem}")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = JournalFileSymlinkLock(spec)  # the lock Optuna's own writers take
    backend = JournalFileBackend(spec, lock_obj=lock)
    repair_cut_tail(path, lock)
    try:
        return JournalStorage(backend)
    except Exception:  # Optuna's replay stops at a bad line in the middle: name it
        check_every_line(path)
        raise


def _record_problem(line: bytes) -> str | None:
    """Why one newline-terminated journal line is not an Optuna record, or None."""
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError, or UnicodeDecodeError for binary bytes
        return "not JSON"
    return None if isinstance(record, dict) and "op_code" in record else "not an Optuna journal record"


def _damaged(path: Path, number: int, problem: str) -> JournalDamaged:
    return JournalDamaged(f"--storage {path}: line {number} is {problem}; the file was left as it is "
                          "(only a last record cut mid-line is repaired)")


def check_every_line(path: Path) -> None:
    """Raise JournalDamaged naming the first complete line that is not a record (a full scan).

    A last line without its newline is a write in progress (or one repair_cut_tail will cut).
    """
    with open(path, "rb") as journal:
        for number, line in enumerate(journal, start=1):
            problem = _record_problem(line) if line.endswith(b"\n") else None
            if problem:
                raise _damaged(path, number, problem)


def _tail(path: Path) -> tuple[int, bytes, bytes]:
    """(number of complete lines, the last complete line, the bytes after it): read from the end."""
    with open(path, "rb") as journal:
        size = journal.seek(0, os.SEEK_END)
        tail = b""
        while len(tail) < size and tail.count(b"\n") < 2:
            start = max(0, size - len(tail) - 65536)
            journal.seek(start)
            tail = journal.read(size - len(tail) - start) + tail
        journal.seek(0)
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: journal.read(1 << 20), b""))
    complete, _, partial = tail.rpartition(b"\n")
    last = complete.rsplit(b"\n", 1)[-1] + b"\n" if lines else b""
    return lines, last, partial


def repair_cut_tail(path: Path, lock: JournalFileSymlinkLock) -> None:
    """Cut a last record left without its newline (a crash mid-write, a full disk).

    Optuna's reader skips such a line, but its writer appends the next record right after
    it, and from then on every read fails. A partial line may be a live worker's write in
    progress, so the cut happens under Optuna's own journal lock, after a re-check. A last
    complete line that is not a record would be buried the same way: refused, not cut.
    """
    lines, last, partial = _tail(path)
    problem = _record_problem(last) if lines else None
    if problem:
        raise _damaged(path, lines, problem)
    if not partial:
        return
    lock.acquire()  # blocks while a writer holds it (Optuna frees a lock left by a crash after 30 s)
    try:
        lines, last, partial = _tail(path)
        if not partial:
            return  # a live writer finished its record while we waited for the lock
        keep = path.stat().st_size - len(partial)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        backup = path.with_name(f"{path.name}.bak-{stamp}")
        shutil.copyfile(path, backup)  # byte-exact, before anything is cut
        with open(path, "r+b") as journal:
            journal.truncate(keep)
            os.fsync(journal.fileno())
    finally:
        lock.release()
    print(f"study: warning: {path}: cut an incomplete last record ({len(partial)} bytes after line {lines}, "
          f"left by a crash mid-write); every complete record is kept, the original is {backup}", flush=True)


def open_storage(spec: str, heartbeat_interval: int = 30, grace_period: int = 90, max_retry: int = 1,
                 on_stale: "callable | None" = None) -> optuna.storages.BaseStorage:
    """A `*.journal` path -> JournalStorage; an RDB URL -> RDBStorage with heartbeats."""
    if "://" in spec and not is_rdb(spec):
        raise StorageError(f"--storage {mask_secrets(spec)}: unsupported scheme; use a *.journal path, "
                           "sqlite:///, postgresql:// or mysql://")
    if not is_rdb(spec):
        if not spec.endswith(".journal"):
            raise StorageError(f"--storage {spec}: a journal storage file must end in .journal")
        return open_journal(spec)
    given, spec = spec, with_installed_driver(spec)
    with warnings.catch_warnings():  # "experimental" since Optuna 2.8; the supported way in 5
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        # Optuna fails a stale trial before this callback and then refuses attributes on it, so
        # `failure_reason` lives in the FrozenTrial handed on and in MLflow (the retry's
        # system attrs name the failed trial).
        trial.set_user_attr(FAILURE_REASON, trial.user_attrs.get(FAILURE_REASON, "worker_lost"))
        for hook in ([on_stale] if on_stale is not None else []) + LOST_TRIAL_HOOKS:
            try:
                hook(study, trial)
            except Exception as exc:  # MLflow down: reconcile repairs it later; the retry must happen
                print(f"study: warning: could not mark trial {trial.number}'s MLflow run "
                      f"({mask_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})", flush=True)
        # The retry inherits params; not the dead process's identity, run id or failure.
        fresh = copy.deepcopy(trial)
        fresh.user_attrs = {k: v for k, v in trial.user_attrs.items() if k not in PROCESS_ATTRS}
        retry(study, fresh)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(spec, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                              heartbeat_stale_trial_callback=stale,
                              engine_kwargs={"pool_pre_ping": True} if not spec.startswith("sqlite") else None)
    except Exception as exc:  # sqlalchemy raises many types; all mean "cannot open"
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"--storage {mask_secrets(given)}: cannot open ({mask_secrets(detail)})") from None


def study_names(spec: str) -> set[str]:
    """The studies a storage holds; a journal or SQLite file that does not exist yet holds
    none (and is not created here)."""
    file = sqlite_file(spec) if is_rdb(spec) else Path(spec)
    if file is not None and not file.exists():
        return set()
    return {summary.study_name for summary in open_storage(spec).get_all_studies()}


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is as dead as it gets.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def heartbeat_enabled(study: optuna.Study) -> bool:
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(study._storage)


def owner_gone(pid: int, token: str | None) -> bool:
    """Whether the process on this host that recorded (pid, token) no longer exists.

    A pid can be reused: by this very process (a restarted container whose program is pid 1
    again, the journal on a volume) or by an unrelated one; the token tells the lives apart.
    Trials recorded before tokens existed have none and are judged by the pid alone.
    """
    if pid == os.getpid():
        return token is not None and token != own_process_token()
    if not process_alive(pid):
        return True
    current = process_token(pid)
    return token is not None and current is not None and token.startswith("start-") and token != current


def lost_trials(study: optuna.Study, pid: int | None = None) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials recorded by a process on this host that no longer exists (or by `pid`).

    Trials of other hosts are left to their own host, or to the RDB heartbeat. Without a
    heartbeat, a RUNNING trial that never recorded its host/pid after ORPHAN_SECONDS is lost too.
    """
    lost = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, owner = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
        if pid is not None:
            if host == HOST and owner is not None and int(owner) == pid:
                lost.append(trial)
        elif host == HOST and owner is not None:
            if owner_gone(int(owner), trial.user_attrs.get("process_token")):
                lost.append(trial)
        elif owner is None and trial.datetime_start is not None and not heartbeat_enabled(study):
            if now - trial.datetime_start.timestamp() > ORPHAN_SECONDS:
                lost.append(trial)
    return lost


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> bool:
    """Mark a RUNNING trial FAIL from outside its process; False if it finished meanwhile.

    On a heartbeat storage a lost trial (`worker_lost`) goes through the same callback as a
    stale one: MLflow hooks, then RetryHeartbeatStaleTrialCallback re-enqueues it (bounded).
    """
    storage = study._storage
    try:  # the reason first: Optuna refuses attributes on finished trials
        storage.set_trial_user_attr(trial._trial_id, FAILURE_REASON, reason)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except RuntimeError:  # already finished (UpdateFinishedTrialError): another process got there first
        return False
    callback = storage.get_heartbeat_stale_trial_callback() if heartbeat_enabled(study) else None
    if reason == "worker_lost" and callback is not None:
        callback(study, storage.get_trial(trial._trial_id))
    return True
