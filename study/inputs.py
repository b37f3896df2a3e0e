"""Every check a search makes before it creates anything, without loading TensorFlow.

Bad input must leave no study, no experiment and no traceback, and be answered fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna

from study.config import SearchConfig
from study.data import DataError, Splits, load_dataset
from study.paths import tracking_uri_problem
from study.secrets import mask_secrets
from study.storage import is_rdb, open_storage, with_installed_driver
from study.tracking import Tracker

DATABASE_SCHEMES = ("postgresql", "postgres", "mysql", "mssql")
CONNECT_TIMEOUT_SECONDS = 10


class BadInput(ValueError):
    """One line for the user; exit 2."""


@dataclass
class PreparedStudy:
    name: str
    seed: int
    storage: optuna.storages.BaseStorage


def first_line(exc: BaseException) -> str:
    return mask_secrets(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


def database_problem(url: str) -> str | None:
    """Why a tracking database server does not answer, or None (one try, bounded).

    MLflow would retry a refused connection for about 100 s before raising.
    """
    import sqlalchemy

    url = with_installed_driver(url)
    connect_args = {"connect_timeout": CONNECT_TIMEOUT_SECONDS} if url.startswith(("postgresql", "mysql")) else {}
    try:
        engine = sqlalchemy.create_engine(url, connect_args=connect_args)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # sqlalchemy and its drivers raise many types; all mean "cannot open"
        return f"cannot connect ({first_line(getattr(exc, 'orig', None) or exc)})"
    return None


def check_tracking_uri(tracking_uri: str) -> None:
    """The scheme, the SQLite file, the server: checked before any store is created."""
    problem = tracking_uri_problem(tracking_uri)
    if problem is None and tracking_uri.split("://", 1)[0].split("+", 1)[0] in DATABASE_SCHEMES:
        problem = database_problem(tracking_uri)
    if problem:
        raise BadInput(f"--tracking-uri {mask_secrets(tracking_uri)}: {mask_secrets(problem)}")


def new_journal_paths(storage: str) -> list[Path]:
    """The journal file and folders that opening this storage would create (to undo it)."""
    if is_rdb(storage) or "://" in storage:
        return []
    journal = Path(storage)
    return [path for path in (journal, *journal.parents) if not path.exists()]


def remove_created(paths: list[Path]) -> None:
    """Undo `open_storage` of a journal when a later check refuses: only what is still empty."""
    for path in paths:  # the file first, then its folders from the innermost
        try:
            if path.is_file() and path.stat().st_size == 0:
                path.unlink()
            elif path.is_dir():
                path.rmdir()  # fails, rightly, if something else appeared in it
        except OSError:
            pass


def open_tracker(tracking_uri: str) -> Tracker:
    try:
        tracker = Tracker(tracking_uri)
        tracker.client.search_experiments(max_results=1)
    except Exception as exc:
        raise BadInput(f"--tracking-uri {mask_secrets(tracking_uri)}: cannot open ({first_line(exc)})") from None
    return tracker


def check_inputs(config: SearchConfig) -> tuple[Splits, Tracker, list[PreparedStudy]]:
    """Load data, check both stores and resumability, creating nothing.

    The tracking URI is checked without creating anything, then the Optuna storage is
    opened, then MLflow: a bad --storage leaves no new MLflow store, and if MLflow still
    refuses, the journal just created is removed again.
    """
    try:
        splits = load_dataset(config.space.data)
    except DataError as exc:  # the key is set in the space file or by --set: name both
        raise BadInput(f"{config.space_file} (or --set): {exc}") from None
    check_tracking_uri(config.tracking_uri)
    created = new_journal_paths(config.storage)
    prepared = []
    for seed in config.replicate_seeds():
        name = config.study_name_for(seed)
        storage = open_storage(config.storage, config.heartbeat_interval, config.grace_period, config.max_retry)
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:
            stored = existing.user_attrs.get("space_sha")
            if stored and stored != config.space.sha():
                raise BadInput(f"{config.space_file}: study '{name}' was created with another space "
                               f"(space_sha {stored}, now {config.space.sha()}); use a new --study-name")
        prepared.append(PreparedStudy(name, seed, storage))
    try:
        tracker = open_tracker(config.tracking_uri)
    except BadInput:
        remove_created(created)
        raise
    return splits, tracker, prepared
