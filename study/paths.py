"""Where the embedded default stores live.

Kept free of heavy imports so that the CLI can answer bad input before TensorFlow or
MLflow load.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RUNS_DIR = PROJECT_ROOT / "mlruns"
DEFAULT_SPACE = PROJECT_ROOT / "search_spaces" / "cnn.yaml"
DEFAULT_JOURNAL = RUNS_DIR / "optuna.journal"


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
