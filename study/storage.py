"""Optuna storages (the source of truth) and the repair of trials whose process is gone."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import optuna
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from study.secrets import mask_secrets

HOST = socket.gethostname()
RDB_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql")


class StorageError(RuntimeError):
    """The storage cannot be opened (bad URL, server down, wrong password); masked message."""


def is_rdb(spec: str) -> bool:
    return "://" in spec and spec.split("://", 1)[0].split("+", 1)[0] in RDB_SCHEMES


def open_storage(spec: str, heartbeat_interval: int = 30, grace_period: int = 90, max_retry: int = 1,
                 on_stale: "callable | None" = None) -> optuna.storages.BaseStorage:
    """A `*.journal` path -> JournalStorage; an RDB URL -> RDBStorage with heartbeats."""
    if "://" in spec and not is_rdb(spec):
        raise StorageError(f"--storage {mask_secrets(spec)}: unsupported scheme; use a *.journal path, "
                           "sqlite:///, postgresql:// or mysql://")
    if not is_rdb(spec):
        if not spec.endswith(".journal"):
            raise StorageError(f"--storage {spec}: a journal storage file must end in .journal")
        Path(spec).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(spec))
    retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        study._storage.set_trial_user_attr(trial._trial_id, "failure_reason", "worker_lost")
        if on_stale is not None:
            on_stale(study, trial)
        retry(study, trial)

    try:
        return RDBStorage(spec, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                          heartbeat_stale_trial_callback=stale,
                          engine_kwargs={"pool_pre_ping": True} if not spec.startswith("sqlite") else None)
    except Exception as exc:  # sqlalchemy raises many types; all mean "cannot open"
        detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(f"--storage {mask_secrets(spec)}: cannot open ({mask_secrets(detail)})") from None


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


def lost_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """RUNNING trials recorded by a process on this host that no longer exists.

    Trials of other hosts are left to their own host, or to the RDB heartbeat.
    """
    lost = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, pid = trial.user_attrs.get("host"), trial.user_attrs.get("pid")
        if host == HOST and pid is not None and int(pid) != os.getpid() and not process_alive(int(pid)):
            lost.append(trial)
    return lost


def fail_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial, reason: str) -> bool:
    """Mark a RUNNING trial FAIL from outside its process; False if it finished meanwhile."""
    storage = study._storage
    storage.set_trial_user_attr(trial._trial_id, "failure_reason", reason)
    try:
        return storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except RuntimeError:  # already finished: another process got there first
        return False
