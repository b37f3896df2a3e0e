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
# What a crash (or a full disk) leaves when it cuts Optuna's write of the next record.
CUT_RECORD = b'{"op_code":4,"worker_id":"9f1c-140","study_id":0,"datetime_st'


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


# Every CLI a test starts: TensorFlow's C++ log quiet, and a Python traceback on a native crash
# (a SIGABRT once ended a Ctrl-C'd search in CI, "free(): invalid pointer", and has not been
# reproduced since: if it comes back, the log says where).
CLI_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONFAULTHANDLER": "1"}


def run_cli(*args: str, env: dict | None = None, timeout: float = 900, cwd: Path | None = None
            ) -> subprocess.CompletedProcess:
    """Run `python -m <args>` from the project venv, as a user would."""
    full_env = {**os.environ, **CLI_ENV, **(env or {})}
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
    if config.getoption("loadgroup", False):
        items[:] = _slow_first(items, groups)
        for item in items:
            _suffix_the_xdist_group(item)


def _slow_first(items: list[pytest.Item], groups: dict[str, str]) -> list[pytest.Item]:
    """Under --dist loadgroup, xdist hands out the groups first, then the ungrouped tests in
    collection order, each to whichever process is free: a minutes-long test collected last
    (tests/study/ sorts last) left one process working alone at the end. Ungrouped tests marked
    slow go first, so the short ones fill in at the end (longest-first scheduling). Grouped
    tests keep their order, so a module- or session-scoped fixture is still made once."""
    def late(item: pytest.Item) -> bool:
        return item.nodeid not in groups and item.get_closest_marker("xdist_group") is None \
            and item.get_closest_marker("slow") is None

    return sorted(items, key=late)  # stable: collection order within each of the two parts


def _suffix_the_xdist_group(item: pytest.Item) -> None:
    """What pytest-xdist 3.8 does for `--dist loadgroup` (`<nodeid>@<group>`, which its
    scheduler splits on), through pytest 9's node id: xdist still sets `item._nodeid`,
    which pytest 9 no longer reads, so without this every group is split across processes."""
    from _pytest.nodeid import NodeId

    names = sorted({str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
                    for mark in item.iter_markers("xdist_group")})
    if names and "@" not in item.nodeid:
        item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


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


@pytest.fixture(scope="session")
def resumed_digits_search(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One digits study run three times as a user resumes one: `--trials 2`; a crash then
    cuts the journal's next record mid-line; `--trials 4 --timeout 900` (repairs the journal;
    its run settings differ); `--trials 5`. Shared by the resume, journal-repair, re-run
    sampling and report-on-a-resumed-store tests; each run's output and the trial states
    after it are kept, and `command` is the search without `--trials`."""
    import optuna

    from study.storage import open_storage

    root = tmp_path_factory.mktemp("resumed-digits")
    journal, uri = root / "optuna.journal", f"sqlite:///{root / 'mlflow.db'}"
    command = ["study", "search", "--space", "search_spaces/digits.yaml", "--sampler", "random", "--pruner", "none",
               "--set", "train.epochs=2", "--storage", str(journal), "--tracking-uri", uri]
    runs, states, damaged = [], [], b""
    for extra in (["--trials", "2"], ["--trials", "4", "--timeout", "900"], ["--trials", "5"]):
        if runs and not damaged:
            with open(journal, "ab") as handle:
                handle.write(CUT_RECORD)
            damaged = journal.read_bytes()
        runs.append(run_cli(*command, *extra, timeout=600))
        assert runs[-1].returncode == 0, runs[-1].stdout[-2000:] + runs[-1].stderr[-3000:]
        study = optuna.load_study(study_name="digits-cnn-seed0", storage=open_storage(str(journal)))
        states.append([trial.state.name for trial in study.trials])
    return {"root": root, "journal": journal, "uri": uri, "experiment": "digits-cnn", "study_name": "digits-cnn-seed0",
            "command": command, "runs": runs, "states": states, "damaged": damaged}
