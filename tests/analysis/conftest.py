"""Fixtures for the analysis tests: a synthetic MLflow store per the contract, and one
report built from it that the end-to-end and browser tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"


def require_dependency(condition: bool, reason: str) -> None:
    """Skip outside CI, fail under CI=true: CI must never pass by skipping real work."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"missing real dependency under CI=true: {reason}")
    pytest.skip(reason)


def run_analysis(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m analysis ...` from the project venv, as a user would run it."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    return subprocess.run([sys.executable, "-m", "analysis", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=PROJECT_ROOT)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> dict:
    """Two experiments written per the search contract: pruned, failed and complete trials."""
    from analysis.synthetic_store import write_synthetic_store

    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    write_synthetic_store(uri, "balanced", studies=3, trials=6, epochs=8, seed=0, sampler="tpe",
                          pruner="median", prune_fraction=0.2, fail_fraction=0.15)
    write_synthetic_store(uri, "imbalanced", studies=3, trials=5, epochs=8, seed=10,
                          class_imbalance=10.0)
    return {"uri": uri, "experiments": ["balanced", "imbalanced"], "root": root}


@pytest.fixture(scope="session")
def mlflow_report(synthetic_store, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("report")
    proc = run_analysis("report", "--experiment", "balanced", "--experiment", "imbalanced",
                        "--tracking-uri", synthetic_store["uri"], "--out", str(out),
                        "--bootstrap", "500")
    assert proc.returncode == 0, proc.stderr
    return {**synthetic_store, "out": out, "proc": proc}
