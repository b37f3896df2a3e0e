"""Shared test helpers: real dependencies, and the CI rule that a missing one fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
IN_CI = os.environ.get("CI", "").lower() == "true"


def require(condition: bool, reason: str) -> None:
    """Skip outside CI, fail under CI=true: CI must never pass by skipping real work."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing real dependency under CI=true: {reason}")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_answers(url: str) -> bool:
    """True once an MLflow server at `url` answers its /health endpoint."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def run_cli(*args: str, env: dict | None = None, timeout: float = 900, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    """Run `python -m <args>` from the project venv, as a user would."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd or PROJECT_ROOT)


@pytest.fixture
def fashion_mnist_dir() -> Path:
    require((FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
            "Debian package dataset-fashion-mnist is not installed")
    return FASHION_DIR


@pytest.fixture
def stores(tmp_path: Path) -> dict[str, str]:
    """A fresh MLflow store and Optuna journal per test, never the user's mlruns/."""
    return {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "storage": str(tmp_path / "optuna.journal")}
