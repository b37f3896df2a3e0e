"""Where the embedded default stores live.

Kept free of heavy imports so that the CLI can answer bad input before TensorFlow or
MLflow load.
"""

from __future__ import annotations

import os
import re
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNS_DIR = PROJECT_ROOT / "mlruns"
DEFAULT_SPACE = PROJECT_ROOT / "search_spaces" / "cnn.yaml"
DEFAULT_JOURNAL = RUNS_DIR / "optuna.journal"
# What MLflow 3.17 can track to. Its file store (`./mlruns`, file://) is refused by MLflow
# itself since 3.13; anything else (ftp://, s3://) is no tracking store at all.
TRACKING_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql", "http", "https", "databricks")
SQLITE_HEADER = b"SQLite format 3\x00"


def default_tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else an absolute SQLite path in `mlruns/`.

    Absolute so that running from another directory never creates a stray empty store;
    SQLite because MLflow >= 3.13 refuses the old `./mlruns` file store.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{RUNS_DIR / 'mlflow.db'}"


def tracking_server_problem(tracking_uri: str, timeout: float = 10.0) -> str | None:
    """Why an http(s) tracking server cannot be reached, or None (also for local stores).

    MLflow's client retries a refused connection with back-off for minutes before it gives
    up; one plain request to the server's health endpoint answers in milliseconds. Any HTTP
    answer, even an error status from an auth proxy, means the server is there. The URL's
    credentials are left out of the probe, so no message can carry them.
    """
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    health = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))
    try:
        urllib.request.urlopen(health, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except (urllib.error.URLError, OSError) as exc:
        return f"cannot reach the tracking server ({getattr(exc, 'reason', exc)})"
    return None


def default_storage() -> str:
    """Optuna's JournalStorage file: one default for one worker or many."""
    return str(DEFAULT_JOURNAL)


def sqlite_file(uri: str) -> Path | None:
    """The file of a `sqlite:///…` URL (tracking URI or Optuna storage), else None."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):].split("?", 1)[0]) if uri.startswith(prefix) else None


def local_store_path(spec: str) -> Path | None:
    """The file a storage spec or tracking URI names on this machine: a journal path or a
    SQLite URL; None for servers."""
    return sqlite_file(spec) if "://" in spec else Path(spec)


def absolute_sqlite(uri: str) -> str:
    """A `sqlite[+driver]:///relative/file` URL with its file made absolute; anything else
    (servers, `databricks`, in-memory, absolute files) as given."""
    scheme, separator, rest = uri.partition(":///")
    if not separator or not re.fullmatch(r"sqlite(\+\w+)?", scheme):
        return uri
    file, question, query = rest.partition("?")
    if not file or file == ":memory:" or os.path.isabs(file):
        return uri
    return f"{scheme}:///{os.path.abspath(file)}{question}{query}"


def absolute_storage(spec: str) -> str:
    """An Optuna storage named from any folder: a journal path or SQLite file made absolute (a
    supervisor's workers start in the project root); servers as given."""
    return absolute_sqlite(spec) if "://" in spec else os.path.abspath(spec)


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def sqlite_store_problem(path: Path) -> str | None:
    """Why MLflow could not use this SQLite file, or None; creates nothing.

    MLflow retries a failing SQLite engine for about 100 s before it raises, so the usual
    causes are looked at first: not a file, not an SQLite database (or a damaged one), no
    write access to it or to its folder (SQLite writes its journal beside the file).
    """
    if path.exists():
        if not path.is_file():
            return f"{path} is not a file"
        with open(path, "rb") as handle:
            header = handle.read(len(SQLITE_HEADER))
        if header and header != SQLITE_HEADER:
            return f"{path} is not an SQLite database"
        if not (os.access(path, os.R_OK | os.W_OK) and os.access(path.parent, os.W_OK | os.X_OK)):
            return f"{path} is not writable (or its folder is not)"
        return _sqlite_tables_problem(path)
    folder = _nearest_existing(path.parent)
    if not folder.is_dir():
        return f"cannot create {path}: {folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create {path}: {folder} is not writable"
    return None


def _sqlite_tables_problem(path: Path) -> str | None:
    """A damaged file, or another program's database (Optuna's, say), which MLflow would
    migrate into an MLflow store without asking."""
    try:
        # Read-only, so the check itself cannot create or change anything.
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):  # busy with another writer: in use, so not broken
            return None
        return f"{path} cannot be read as an SQLite database ({exc})"
    except sqlite3.DatabaseError as exc:
        return f"{path} is a damaged SQLite database ({exc})"
    if tables and "experiments" not in tables:
        return f"{path} is an SQLite database but not an MLflow store (tables: {', '.join(sorted(tables)[:5])})"
    return None


def tracking_uri_problem(tracking_uri: str) -> str | None:
    """Why MLflow cannot track to this URI, found without creating anything, or None.

    Database servers are probed later (study.inputs), with SQLAlchemy.
    """
    scheme = urlsplit(tracking_uri).scheme.split("+", 1)[0] if "://" in tracking_uri else ""
    if tracking_uri == "databricks":
        return None
    if scheme in ("", "file"):
        return ("MLflow's file store is refused since MLflow 3.13; use sqlite:///<folder>/mlflow.db "
                "or an http(s):// tracking server")
    if scheme not in TRACKING_SCHEMES:
        return (f"unsupported scheme '{scheme}'; use sqlite:///<folder>/mlflow.db, http(s)://host:port "
                "or postgresql://…")
    path = sqlite_file(tracking_uri)
    if path is not None:
        return sqlite_store_problem(path)
    return tracking_server_problem(tracking_uri)
