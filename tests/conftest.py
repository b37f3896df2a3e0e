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


def shared_fixture_groups(items: list[pytest.Item]) -> dict[str, str]:
    """nodeid -> group: tests joined (transitively) by a module- or session-scoped fixture of
    this test tree (a search, a report, a server, PostgreSQL), named after one such fixture."""
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    used_by: dict[str, list[str]] = {}
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        shared = sorted(name for name, defs in (info.name2fixturedefs.items() if info else ())
                        if defs and defs[-1].scope != "function" and defs[-1].baseid.startswith("tests"))
        for name in shared:
            parent[root(name)] = root(shared[0])
        if shared:
            used_by[item.nodeid] = shared
    return {nodeid: root(shared[0]) for nodeid, shared in used_by.items()}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under `pytest -n N --dist loadgroup` (make test) the tests that share an expensive
    fixture run in one xdist process, so the search or server behind it is made once."""
    groups = shared_fixture_groups(items)
    for item in items:
        if item.nodeid in groups and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(groups[item.nodeid]))


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
