"""The README's "Running on a cluster", as written, on one machine: PostgreSQL for Optuna and
for `make server`'s MLflow backend, then `make search STORAGE=… TRACKING=http://… WORKERS=2`."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from study.contract import HISTORY_CSV
from tests.conftest import PROJECT_ROOT, free_port, http_answers
from tests.scale.conftest import PG_PASSWORD, TINY, assert_consistent, trial_runs, wait_for

pytestmark = pytest.mark.slow


def test_make_server_and_make_search_as_in_the_readme(postgres, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    if isinstance(postgres, str):
        pytest.skip("needs the temporary cluster (two databases), not $SCALE_POSTGRES_URL")
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)  # this process reads the study back, too
    env = {**os.environ, "PGPASSWORD": PG_PASSWORD, "TF_CPP_MIN_LOG_LEVEL": "2", "STUDY_WORKER_INDEX": "0"}
    env.pop("MLFLOW_TRACKING_URI", None)
    for database in ("cluster_optuna", "cluster_mlflow"):
        subprocess.run([str(postgres.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U",
                        "study", database], check=True, env=env, capture_output=True)
    # As in the README: the URLs carry no password, libpq reads PGPASSWORD.
    backend = f"postgresql://study@127.0.0.1:{postgres.port}/cluster_mlflow"
    storage = f"postgresql://study@127.0.0.1:{postgres.port}/cluster_optuna"
    port = free_port()
    tracking = f"http://127.0.0.1:{port}"
    server_log = tmp_path / "server.log"
    with open(server_log, "w") as out:
        server = subprocess.Popen(["make", "--no-print-directory", "server", f"PORT={port}", f"BACKEND={backend}",
                                   f"ARTIFACTS={tmp_path / 'artifacts'}"], cwd=PROJECT_ROOT, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: http_answers(tracking), 180, "make server to answer /health", server, server_log)
        settings = " ".join(TINY[1::2])
        search = subprocess.run(["make", "--no-print-directory", "search", f"STORAGE={storage}",
                                 f"TRACKING={tracking}", "WORKERS=2", "TRIALS=4", "STUDY=cluster-study",
                                 f"SET={settings}"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                                timeout=900)
        log = search.stdout + search.stderr
        assert search.returncode == 0, log[-4000:]
        assert PG_PASSWORD not in log + server_log.read_text()

        study = assert_consistent(storage, tracking, "fashion-cnn", "cluster-study")
        finished = [t for t in study.trials if t.state.is_finished()]
        assert 4 <= len(finished) <= 5 and len({t.user_attrs["pid"] for t in finished}) == 2
        runs = trial_runs(tracking, "fashion-cnn")
        assert sorted(runs) == sorted(t.number for t in study.trials)
        # Artifacts travel through the server (--serve-artifacts): no shared file system needed.
        client = MlflowClient(tracking)
        first = runs[min(runs)][0]
        with tempfile.TemporaryDirectory() as folder:
            history = pd.read_csv(client.download_artifacts(first.info.run_id, HISTORY_CSV, folder))
        assert len(history) == 1 and {"val_loss", "val_accuracy"} <= set(history.columns)
        assert any((tmp_path / "artifacts").rglob(HISTORY_CSV))
    finally:
        if server.poll() is None:
            os.killpg(server.pid, 15)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
