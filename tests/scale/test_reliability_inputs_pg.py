"""Issue 8, inputs: a plain postgresql:// tracking URI works like a plain postgresql:// --storage
(SQLAlchemy maps it to psycopg 3; the venv has psycopg2, so the driver is chosen as for Optuna)."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from study.contract import RUN_ROLE
from tests.conftest import PROJECT_ROOT, run_cli

pytestmark = pytest.mark.slow


def test_plain_postgresql_tracking_uri_records_the_study(pg_url: str, tmp_path: Path) -> None:
    assert pg_url.startswith("postgresql://")
    result = run_cli("study", "search", "--space", str(PROJECT_ROOT / "search_spaces" / "digits.yaml"),
                     "--set", "train.epochs=1", "--sampler", "random", "--pruner", "none", "--trials", "1",
                     "--experiment", "pg-tracking", "--storage", str(tmp_path / "optuna.journal"),
                     "--tracking-uri", pg_url, env={"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(pg_url.replace("postgresql://", "postgresql+psycopg2://", 1))
    experiment = client.get_experiment_by_name("pg-tracking")
    roles = sorted(r.data.tags[RUN_ROLE] for r in client.search_runs([experiment.experiment_id]))
    assert roles == ["study", "trial"]
    assert all(r.info.status == "FINISHED" for r in client.search_runs([experiment.experiment_id]))
