"""`analysis report` on the store of a real digits search that was resumed with other run
settings, read directly and through a real MLflow server whose URL carries a password."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from study.contract import ROLE_REPORT, ROLE_TRIAL, RUN_ROLE, SUMMARY_JSON, TRIAL_STATE
from tests.conftest import free_port, run_cli, http_answers

pytestmark = pytest.mark.slow

PASSWORD = "s3cr3t-report-pw"


@pytest.fixture
def resumed_search(resumed_digits_search: dict) -> dict:
    """The shared digits study (tests/conftest.py): 2 trials, resumed to 4 with a timeout,
    then to 5, so the logged run settings `trials` and `timeout` differ between its trials."""
    return resumed_digits_search


def test_run_settings_are_never_axes(resumed_search: dict, tmp_path: Path) -> None:
    client = MlflowClient(resumed_search["uri"])
    experiment = client.get_experiment_by_name(resumed_search["experiment"]).experiment_id
    runs = client.search_runs([experiment], f"tags.{RUN_ROLE} = '{ROLE_TRIAL}'")
    assert {r.data.params["trials"] for r in runs} == {"2", "4", "5"}  # the settings did vary
    assert {r.data.params["timeout"] for r in runs} == {"None", "900.0"}

    out = tmp_path / "report"
    proc = run_cli("analysis", "report", "--experiment", resumed_search["experiment"], "--tracking-uri",
                   resumed_search["uri"], "--out", str(out), "--bootstrap", "50", "--no-log")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / SUMMARY_JSON).read_text())
    features = set(summary["explanations"]["features"])
    settings = {"hp.trials", "hp.timeout", "hp.seed", "hp.experiment", "hp.study_name", "hp.worker_index"}
    assert not features & settings, features
    assert {"hp.dropout", "hp.learning_rate"} <= features  # the searched knobs still are
    assert {b["param"] for b in summary["boundary_checks"]} <= {
        "n_conv_blocks", "filters", "filter_growth", "kernel_size", "dense_units", "l2", "dropout",
        "learning_rate", "batch_size"}
    markdown = (out / "report.md").read_text()
    assert "Playbook axis plot: trials" not in markdown and "Playbook axis plot: timeout" not in markdown
    assert "Playbook axis plot: dropout" in markdown


@pytest.fixture
def server(resumed_search: dict, tmp_path: Path):
    """A real `mlflow server` in front of the search's store."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                                 resumed_search["uri"], "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1"], stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not http_answers(url):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def test_summary_and_logged_artifact_carry_the_masked_tracking_uri(server: str, resumed_search: dict,
                                                                    tmp_path: Path) -> None:
    with_password = server.replace("http://", f"http://alice:{PASSWORD}@")
    out = tmp_path / "report"
    proc = run_cli("analysis", "report", "--experiment", resumed_search["experiment"], "--tracking-uri",
                   with_password, "--out", str(out), "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr

    text = (out / SUMMARY_JSON).read_text()
    assert PASSWORD not in text
    assert json.loads(text)["source"]["tracking_uri"] == server.replace("http://", "http://alice:***@")

    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(resumed_search["experiment"]).experiment_id
    (report_run,) = client.search_runs([experiment], f"tags.{RUN_ROLE} = '{ROLE_REPORT}'")
    with tempfile.TemporaryDirectory() as folder:
        logged = Path(client.download_artifacts(report_run.info.run_id, SUMMARY_JSON, folder)).read_text()
    assert PASSWORD not in logged and "alice:***@" in logged
    for artifact in ("report.md", "index.html"):
        assert PASSWORD not in (out / artifact).read_text()
