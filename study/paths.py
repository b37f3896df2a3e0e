"""Where the embedded default stores live.

Kept free of heavy imports so that the CLI can answer bad input before TensorFlow or
MLflow load.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def default_storage() -> str:
    """Optuna's JournalStorage file: one default for one worker or many."""
    return str(DEFAULT_JOURNAL)
