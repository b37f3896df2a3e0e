"""Fixtures for the analysis tests: a synthetic MLflow store per the contract, and one
report built from it that the end-to-end and browser tests share."""

from __future__ import annotations

import subprocess

import pytest

from tests.conftest import run_cli


def run_analysis(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m analysis ...` from the project venv, as a user would run it."""
    return run_cli("analysis", *args, timeout=timeout)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory) -> dict:
    """Two experiments written per the search contract: pruned, failed and complete trials."""
    from benchmarks.synthetic_store import write_synthetic_store

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
