"""Passwords never reach the terminal, at the level a user meets them: `python -m study`,
`python -m analysis` and `make`, against a real MLflow server, a real store, real digits."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, free_port, run_cli, http_answers

PASSWORD = "Pw-9f3kQ"  # an unusual string: any occurrence in the output is a leak


@pytest.fixture
def tracking_server(tmp_path: Path):
    """`mlflow server` from the venv on a free port, SQLite backend, in its own process group."""
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as out:
        server = subprocess.Popen([str(PROJECT_ROOT / ".venv" / "bin" / "mlflow"), "server",
                                   "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                                   "--artifacts-destination", str(tmp_path / "artifacts"), "--serve-artifacts",
                                   "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not http_answers(f"http://127.0.0.1:{port}"):
            assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
        yield port
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


@pytest.mark.slow
def test_no_password_printed_by_search_workers_or_report(tracking_server: int, tmp_path: Path) -> None:
    """MLflow prints "View run <name> at: <tracking URI>/#/..." with sys.stdout.write at every
    run end: study runs, trial runs (in the workers) and the report run."""
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"}
    uri = f"http://user:{PASSWORD}@127.0.0.1:{tracking_server}"
    search = run_cli("study", "search", "--space", "search_spaces/digits.yaml", "--trials", "2",
                     "--workers", "2", "--experiment", "leak", "--storage", str(tmp_path / "optuna.journal"),
                     "--tracking-uri", uri, "--set", "train.epochs=1", env=env, timeout=900)
    assert search.returncode == 0, search.stderr[-3000:]
    assert PASSWORD not in search.stdout + search.stderr
    assert "COMPLETE" in search.stdout  # the trial ran and its run ended
    # A user who turns MLflow's line back on gets it, masked.
    report = run_cli("analysis", "report", "--experiment", "leak", "--tracking-uri", uri,
                     "--out", str(tmp_path / "report"), "--bootstrap", "50",
                     env={**env, "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "false"}, timeout=900)
    assert report.returncode == 0, report.stderr[-3000:]
    assert PASSWORD not in report.stdout + report.stderr
    assert f"View run report at: http://user:***@127.0.0.1:{tracking_server}/" in report.stdout


def test_ftp_tracking_uri_never_shows_its_password(tmp_path: Path) -> None:
    """An unsupported scheme fails (exit 2 where the input check knows it, else the masked
    traceback of exit 1), never with the password in clear."""
    uri = f"ftp://user:{PASSWORD}@127.0.0.1/mlflow"
    report = run_cli("analysis", "report", "--experiment", "x", "--tracking-uri", uri,
                     "--out", str(tmp_path / "report"), timeout=300)
    assert report.returncode != 0
    assert PASSWORD not in report.stdout + report.stderr
    assert "ftp://user:***@127.0.0.1/mlflow" in report.stderr
    assert not (tmp_path / "report").exists()
    search = run_cli("study", "search", "--space", "search_spaces/digits.yaml", "--trials", "1",
                     "--storage", str(tmp_path / "optuna.journal"), "--tracking-uri", uri, timeout=300)
    assert search.returncode != 0
    assert PASSWORD not in search.stdout + search.stderr
    assert "ftp://user:***@127.0.0.1/mlflow" in search.stderr


def test_make_passes_a_password_with_quotes_and_at_signs_without_a_shell_error(tmp_path: Path) -> None:
    """The Makefile quoted STORAGE in '...': a password holding ' broke the shell line, and
    bash printed the command, password and all. Now the URL travels in the environment."""
    bad_space = tmp_path / "bad.yaml"
    bad_space.write_text("params: [unclosed\n")
    storage = f"postgresql://study:it's@{PASSWORD}@127.0.0.1:1/optuna"
    tracking = f"http://{PASSWORD}@127.0.0.1:1"  # a token in the user-name position
    result = subprocess.run(["make", "--no-print-directory", "search", f"STORAGE={storage}",
                             f"TRACKING={tracking}", f"SPACE={bad_space}"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    printed = result.stdout + result.stderr
    assert PASSWORD not in printed and "it's" not in printed
    assert "unexpected EOF" not in printed and "syntax error" not in printed
    assert "storage postgresql://study:***@127.0.0.1:1/optuna  tracking http://***@127.0.0.1:1" in result.stdout
    assert f"study: error: {bad_space}" in result.stderr  # the program ran and named the bad file
    assert result.returncode == 2


def test_a_huge_csv_header_is_answered_not_hung(tmp_path: Path) -> None:
    """A 2 MB column name went through the quadratic masking regex for an hour; now seconds."""
    table = tmp_path / "trials.csv"
    table.write_text(f"study,trial,{'x' * 2_000_000}\n0,0,1\n")
    started = time.monotonic()
    result = run_cli("analysis", "report", "--csv", str(table), "--out", str(tmp_path / "report"), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert time.monotonic() - started < 120
