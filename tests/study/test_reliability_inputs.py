"""Issue 8, inputs: hostile names, spaces and seeds that cannot run, broken files and stores.

Bad input is exit 2 and one `study: error:` line naming the flag, file or key, with nothing
created: no MLflow store, no Optuna journal.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from study.tracking import Tracker
from study.contract import PARENT_RUN_ID, ROLE_STUDY, RUN_ROLE, STUDY_NAME
from tests.conftest import PROJECT_ROOT, free_port, run_cli

DIGITS = PROJECT_ROOT / "search_spaces" / "digits.yaml"
QUICK = ["--space", str(DIGITS), "--set", "train.epochs=1", "--sampler", "random", "--pruner", "none"]
QUIET = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1"}
HEAVY_MODULES = ("sklearn", "optuna", "mlflow", "tensorflow", "keras", "torch", "sqlalchemy")


def store_flags(folder: Path) -> list[str]:
    return ["--storage", str(folder / "optuna.journal"), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, exactly one stderr line, naming `words`; the line."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(lines) == 1 and "error: " in lines[0], result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def assert_nothing_created(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir() if p.name not in KEPT) == [], list(folder.iterdir())


KEPT = {"space.yaml", "data", "given.db"}


def write_space(folder: Path, edit) -> Path:
    """digits.yaml with `edit(raw)` applied, as a user's own space file."""
    raw = yaml.safe_load(DIGITS.read_text())
    edit(raw)
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def search(folder: Path, *flags: str, space: Path | None = None, timeout: float = 600
           ) -> subprocess.CompletedProcess:
    space_flags = ["--space", str(space)] if space else []
    return run_cli("study", "search", *QUICK, *space_flags, "--trials", "1", *store_flags(folder), *flags,
                   env=QUIET, timeout=timeout)


# --- item 4: the study name is never pasted into an MLflow filter ----------------------

ODD_NAMES = ["victim", "victim' AND tags.run_role != 'x", 'a"b', "a\\b", "50%", "a_b", "aXb", "x -- y",
             "line\nbreak", "Ünïcode", "VICTIM", "a'b\"c\\d%e"]


def test_runs_of_study_match_exact_names_only(tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = tracker.ensure_experiment("o'brien \"lab\"")
    for name in ODD_NAMES:
        study_run = tracker.client.create_run(experiment_id, tags={RUN_ROLE: ROLE_STUDY, STUDY_NAME: name})
        tracker.start_trial_run(experiment_id, study_run.info.run_id, name, 0, {}, {})
    for name in ODD_NAMES:
        study_run = tracker.client.get_run(tracker.find_study_run(experiment_id, name))
        assert study_run.data.tags[STUDY_NAME] == name
        trials = tracker.trial_runs(experiment_id, name)
        assert [run.data.tags[STUDY_NAME] for run in trials] == [name]
        assert trials[0].data.tags[PARENT_RUN_ID] == study_run.info.run_id


def runs_by_study(tracking_uri: str, experiment: str) -> dict[str, dict[str, list]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    found: dict[str, dict[str, list]] = {}
    for run in client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000):
        name = run.data.tags[STUDY_NAME]
        found.setdefault(name, {"study": [], "trial": []})[run.data.tags[RUN_ROLE]].append(run)
    return found


@pytest.mark.slow
def test_hostile_quoted_study_name_runs_resumes_and_cannot_take_over_another_study(tmp_path: Path) -> None:
    """One experiment and one study name holding both quote kinds: the hostile study runs beside
    its victim without touching it, and its re-run finds its own study run again. (Two tests
    in four searches before; these three check the same.)"""
    experiment = "o'brien \"lab\""
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    victim = search(tmp_path, "--experiment", experiment, "--study-name", "victim")
    assert victim.returncode == 0, victim.stderr
    before = runs_by_study(tracking_uri, experiment)["victim"]

    hostile_name = "victim' AND tags.run_role != 'x\""  # pasted into a filter, it matched the victim
    for trials in ("1", "2"):  # the second run resumes the hostile study
        hostile = search(tmp_path, "--experiment", experiment, "--study-name", hostile_name, "--trials", trials)
        assert hostile.returncode == 0, hostile.stderr
    after = runs_by_study(tracking_uri, experiment)
    victim_run, = after["victim"]["study"]
    assert victim_run.info.run_id == before["study"][0].info.run_id
    assert victim_run.data.tags == before["study"][0].data.tags  # not re-tagged
    assert [r.info.run_id for r in after["victim"]["trial"]] == [r.info.run_id for r in before["trial"]]
    hostile_run, = after[hostile_name]["study"]  # the re-run found its study run again
    assert hostile_run.info.run_id != victim_run.info.run_id and hostile_run.info.status == "FINISHED"
    assert len(after[hostile_name]["trial"]) == 2
    assert {r.data.tags[PARENT_RUN_ID] for r in after[hostile_name]["trial"]} == {hostile_run.info.run_id}


# --- item 5: spaces, seeds and names that cannot run are refused before anything exists --

def _set_param(name: str, **fields):
    def edit(raw: dict) -> None:
        raw["params"][name].update(fields)
    return edit


def _set_baseline(name: str, value):
    def edit(raw: dict) -> None:
        raw["baseline"][name] = value
    return edit


BAD_SPACES = {
    "step_with_log": (_set_param("learning_rate", step=0.001), ("params.learning_rate", "step", "log")),
    "step_zero": (_set_param("dropout", step=0), ("params.dropout", "step")),
    "step_negative": (_set_param("n_conv_blocks", step=-1), ("params.n_conv_blocks", "step")),
    "nan_low": (_set_param("dropout", low=float("nan")), ("params.dropout", "finite")),
    "inf_high": (_set_param("dropout", high=float("inf")), ("params.dropout", "finite")),
    "baseline_out_of_range": (_set_baseline("dropout", 0.9), ("baseline.dropout", "outside")),
    "baseline_not_a_choice": (_set_baseline("filters", 12), ("baseline.filters", "not one of")),
    "baseline_not_a_bool": (_set_baseline("batch_norm", "yes"), ("baseline.batch_norm", "not one of")),
    "baseline_int_fraction": (_set_baseline("n_conv_blocks", 1.5), ("baseline.n_conv_blocks", "whole")),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_space_that_cannot_run_is_refused_before_anything_exists(tmp_path: Path, case: str) -> None:
    edit, words = BAD_SPACES[case]
    space = write_space(tmp_path, edit)
    assert_refused(search(tmp_path, space=space), str(space), *words)
    assert_nothing_created(tmp_path)


BAD_FLAGS = {
    "negative_seed": (["--seed", "-1"], ("--seed",)),
    "negative_worker_index": (["--worker-index", "-1"], ("--worker-index",)),
    "seed_overflows_training_seed": (["--seed", "429197"], ("--seed 429197", "2**32")),
    "replicates_overflow_training_seed": (["--seed", "429180", "--replicates", "20"], ("--seed 429180",)),
    "huge_worker_index": (["--worker-index", str(2 ** 32)], ("--worker-index",)),
    "experiment_too_long": (["--experiment", "e" * 500], ("--experiment", "500 bytes")),
    "study_name_too_long": (["--study-name", "s" * 300], ("--study-name", "300 bytes")),
    "blank_experiment": (["--experiment", "  "], ("--experiment", "empty")),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_flag_that_cannot_run_is_refused_before_anything_exists(tmp_path: Path, case: str) -> None:
    flags, words = BAD_FLAGS[case]
    assert_refused(search(tmp_path, *flags), *words)
    assert_nothing_created(tmp_path)


def test_largest_allowed_seed_gives_numpy_valid_training_seeds() -> None:
    from study.cli import build_parser, search_config
    from study.config import SEED_LIMIT, TRIAL_NUMBER_MARGIN, TRIAL_SEED_STRIDE, largest_seed

    args = build_parser().parse_args(["search", "--space", str(DIGITS), "--trials", "40", "--replicates", "3"])
    config = search_config(args)
    top = largest_seed(config)
    highest_training_seed = (top + 2) * TRIAL_SEED_STRIDE + 40 + TRIAL_NUMBER_MARGIN
    np.random.seed(highest_training_seed)  # raises ValueError at 2**32 and above
    assert (top + 3) * TRIAL_SEED_STRIDE + 40 + TRIAL_NUMBER_MARGIN >= SEED_LIMIT  # the bound is tight


# --- item 10: broken files and stores: exit 2, one line, nothing created ---------------

@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "name: caf\xe9\n".encode("latin-1")],
                         ids=["binary", "latin1"])
def test_binary_or_non_utf8_space_is_one_line(tmp_path: Path, content: bytes) -> None:
    space = tmp_path / "space.yaml"
    space.write_bytes(content)
    assert_refused(search(tmp_path, space=space), str(space), "UTF-8")
    assert_nothing_created(tmp_path)


def _idx(dims: tuple[int, ...], payload_bytes: int | None = None) -> bytes:
    """An IDX file of random bytes (incompressible, so a cut .gz really is cut)."""
    size = int(np.prod(dims)) if payload_bytes is None else payload_bytes
    header = bytes([0, 0, 8, len(dims)]) + np.array(dims, dtype=">i4").tobytes()
    return header + os.urandom(size)


IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
BROKEN_IDX = {
    "not_gzip": b"<html>404 Not Found</html>",
    "truncated_gzip": gzip.compress(_idx((10, 28, 28)))[:3000],
    "images_without_labels": gzip.compress(_idx((7, 28, 28))),
    "bad_magic": gzip.compress(b"\x1f\x8b garbage that is not IDX at all"),
    "short_payload": gzip.compress(_idx((60, 28, 28), payload_bytes=1000)),
}


@pytest.mark.parametrize("case", sorted(BROKEN_IDX))
def test_corrupt_idx_file_in_data_dir_is_one_line(tmp_path: Path, case: str) -> None:
    data = tmp_path / "data"
    data.mkdir()
    good = {IDX_FILES[0]: _idx((60, 28, 28)), IDX_FILES[1]: _idx((60,)),
            IDX_FILES[2]: _idx((10, 28, 28)), IDX_FILES[3]: _idx((10,))}
    for name, payload in good.items():
        (data / name).write_bytes(gzip.compress(payload))
    (data / IDX_FILES[2]).write_bytes(BROKEN_IDX[case])
    result = run_cli("study", "search", "--space", str(PROJECT_ROOT / "search_spaces" / "cnn.yaml"),
                     "--data-dir", str(data), *store_flags(tmp_path), env=QUIET, timeout=600)
    assert_refused(result, "data.data_dir", IDX_FILES[2])
    assert_nothing_created(tmp_path)


def _random_bytes_db(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _damaged_sqlite_db(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    raw = bytearray(path.read_bytes())
    raw[100:4096 * 3] = os.urandom(4096 * 3 - 100)  # the schema pages, header intact
    path.write_bytes(bytes(raw))


def _future_mlflow_db(path: Path) -> None:
    """An MLflow store of a schema this MLflow does not know (a newer release's)."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT)")
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version VALUES ('not_an_mlflow_revision')")


def _optuna_db(path: Path) -> None:
    """Another program's database: the Optuna storage given as --tracking-uri by mistake."""
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE studies (study_id INTEGER PRIMARY KEY, study_name TEXT)")
        connection.execute("INSERT INTO studies VALUES (1, 'precious')")


@pytest.mark.parametrize("make_db", [_random_bytes_db, _damaged_sqlite_db, _future_mlflow_db, _optuna_db],
                         ids=["random_bytes", "damaged_pages", "future_schema", "optuna_db"])
def test_corrupt_mlflow_db_is_one_line_and_leaves_no_journal(tmp_path: Path, make_db) -> None:
    given = tmp_path / "given.db"
    make_db(given)
    kept = given.read_bytes()
    result = search(tmp_path, "--tracking-uri", f"sqlite:///{given}", timeout=90)  # MLflow alone retries ~100 s
    assert_refused(result, "--tracking-uri", str(given))
    assert_nothing_created(tmp_path)
    if make_db is not _future_mlflow_db:  # an MLflow store is MLflow's to migrate; the others are kept
        assert given.read_bytes() == kept


@pytest.mark.parametrize("uri", ["ftp://example.invalid/mlflow", "file:///tmp/mlruns", "s3://bucket/x",
                                 "relative/mlruns"])
def test_unsupported_tracking_uri_is_one_line(tmp_path: Path, uri: str) -> None:
    assert_refused(search(tmp_path, "--tracking-uri", uri), "--tracking-uri", uri)
    assert_nothing_created(tmp_path)


def test_unreachable_postgresql_tracking_uri_is_one_line(tmp_path: Path) -> None:
    uri = f"postgresql://study:pw-in-url@127.0.0.1:{free_port()}/mlflow"
    line = assert_refused(search(tmp_path, "--tracking-uri", uri, timeout=120), "--tracking-uri", "cannot connect")
    assert "pw-in-url" not in line
    assert_nothing_created(tmp_path)


def test_tracking_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file, not a folder")
    uri = f"sqlite:///{tmp_path / 'data' / 'mlflow.db'}"
    assert_refused(search(tmp_path, "--tracking-uri", uri), "--tracking-uri", "not a folder")
    assert_nothing_created(tmp_path)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder another user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="inputs-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def as_unprivileged(command: list[str]) -> list[str]:
    """Root writes anything: run as `nobody` to meet a read-only file as a user does."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]


@pytest.mark.parametrize("locked", ["file", "folder"])
def test_unwritable_mlflow_db_is_one_line(shared_tmp: Path, locked: str) -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to drop root")  # util-linux: on every Debian
    stores = shared_tmp / "stores"
    stores.mkdir()
    stores.chmod(0o777)
    held = shared_tmp / "held"
    held.mkdir()
    db = held / "mlflow.db"
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
    db.chmod(0o444 if locked == "file" else 0o666)
    held.chmod(0o755 if locked == "folder" else 0o777)
    command = as_unprivileged([sys.executable, "-m", "study", "search", *QUICK, "--storage",
                               str(stores / "optuna.journal"), "--tracking-uri", f"sqlite:///{db}"])
    result = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
                            env={**os.environ, **QUIET, "HOME": str(shared_tmp)})
    assert_refused(result, "--tracking-uri", "not writable")
    assert list(stores.iterdir()) == []


# --- item 10: reconcile repairs what exists, and never waits minutes for a server -------

def test_reconcile_does_not_create_stores_on_mistyped_paths(tmp_path: Path) -> None:
    journal, db = tmp_path / "typo.journal", tmp_path / "typo.db"
    result = run_cli("study", "reconcile", "--storage", str(journal), "--tracking-uri", f"sqlite:///{db}")
    assert_refused(result, "--storage", str(journal), "no such file")
    journal.write_bytes(b"")
    result = run_cli("study", "reconcile", "--storage", str(journal), "--tracking-uri", f"sqlite:///{db}")
    assert_refused(result, "--tracking-uri", str(db), "no such file")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["typo.journal"]


def test_reconcile_probes_an_unreachable_tracking_server(tmp_path: Path) -> None:
    journal = tmp_path / "optuna.journal"
    journal.write_bytes(b"")
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("study", "reconcile", "--storage", str(journal), "--tracking-uri", url, timeout=60)
    assert_refused(result, "--tracking-uri", "cannot reach")


# --- item 15: bad flags and bad YAML are answered before the heavy libraries load -------

def imported_modules(importtime_stderr: str) -> set[str]:
    return {m.group(1).strip() for m in re.finditer(r"^import time:\s*\d+ \|\s*\d+ \|(.*)$",
                                                    importtime_stderr, re.MULTILINE)}


@pytest.mark.parametrize("case", ["bad_yaml", "bad_set_key", "bad_seed", "bad_baseline"])
def test_bad_input_is_answered_before_heavy_imports(tmp_path: Path, case: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text("name: x\nparams: [\n" if case == "bad_yaml" else DIGITS.read_text())
    flags = {"bad_set_key": ["--set", "train.epoch=3"], "bad_seed": ["--seed", "900000"]}.get(case, [])
    if case == "bad_baseline":
        write_space(tmp_path, _set_baseline("filters", 12))
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "study", "search", "--space", str(space),
                             *store_flags(tmp_path), *flags], capture_output=True, text=True, cwd=PROJECT_ROOT,
                            timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    loaded = {name.split(".")[0] for name in imported_modules(result.stderr)}
    assert loaded, "no -X importtime output to inspect"
    assert not loaded & set(HEAVY_MODULES), sorted(loaded & set(HEAVY_MODULES))
    assert_nothing_created(tmp_path)


# --- item 16: PyTorch is an optional extra for --sampler gp ------------------------------

HIDE_TORCH = '''
import importlib.abc, sys

class _NoTorch(importlib.abc.MetaPathFinder):
    """This interpreter as it is without the gp extra: `torch` is not installed."""
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _NoTorch())
'''


def test_gp_sampler_without_torch_says_how_to_install(tmp_path: Path) -> None:
    hider = tmp_path / "site"
    hider.mkdir()
    (hider / "sitecustomize.py").write_text(HIDE_TORCH)
    result = run_cli("study", "search", *QUICK, "--sampler", "gp", *store_flags(tmp_path),
                     env={**QUIET, "PYTHONPATH": str(hider)})
    assert_refused(result, "--sampler gp", "make setup EXTRAS=gp", "requirements-gp.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_make_n_data_without_the_dataset_runs_nothing(tmp_path: Path) -> None:
    """`make -n` prints the plan: where the Debian files are missing, the plan holds an apt-get
    and the venv for the Keras fallback, and neither may run (a recipe line naming $(MAKE)
    runs even under -n)."""
    ran = tmp_path / "ran"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "sudo"):  # first on PATH: record any call, change nothing
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> "{ran}"\nexit 1\n')
        (bin_dir / tool).chmod(0o755)
    venv = tmp_path / "venv"
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    plan = subprocess.run(["make", "--no-print-directory", "-n", "data", f"VENV={venv}",
                           f"FASHION_IDX={tmp_path / 'missing.gz'}"], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    assert f"python3 -m venv {venv}" in plan.stdout  # the Keras fallback needs the venv: planned only
    assert "apt-get install" in plan.stdout and "keras.datasets.fashion_mnist.load_data()" in plan.stdout
    assert not ran.exists(), ran.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]


def test_torch_is_an_extra_pinned_to_a_registry_version_and_make_test_installs_it(tmp_path: Path) -> None:
    lock = (PROJECT_ROOT / "requirements.lock").read_text().splitlines()
    assert not [line for line in lock if line.lower().startswith("torch")], "torch must not be in the lock"
    extra = [line for line in (PROJECT_ROOT / "requirements-gp.txt").read_text().splitlines()
             if line.lower().startswith("torch==")]
    assert len(extra) == 1 and "+" not in extra[0], extra  # no local-version build (+cpu): registries lack it
    venv = tmp_path / "venv"  # a venv that does not exist: make prints every install step
    plans = {target: subprocess.run(["make", "-n", *target.split(), f"VENV={venv}"], cwd=PROJECT_ROOT,
                                    capture_output=True, text=True, check=True).stdout
             for target in ("setup", "setup EXTRAS=gp", "test")}
    assert "requirements-gp.txt" not in plans["setup"]
    assert "pip install --quiet -r requirements-gp.txt" in plans["setup EXTRAS=gp"]
    assert "pip install --quiet -r requirements-gp.txt" in plans["test"]
