"""`make ui` serves the store: the REST API and a real browser both see the study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study.cost import skipped_over_cap
from study.storage import open_storage

from tests.browser import chromium
from tests.conftest import PROJECT_ROOT, free_port

pytestmark = pytest.mark.slow


def wait_for(url: str, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {seconds}s")


@pytest.fixture(scope="module")
def ui(searched: dict):
    """One `make ui` for the module: both tests only read from it (it used to start twice)."""
    port = free_port()
    server = subprocess.Popen(["make", "--no-print-directory", "ui", f"PORT={port}",
                               f"TRACKING={searched['tracking_uri']}"], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_rest_api_lists_the_study_runs(ui: str, searched: dict) -> None:
    experiment_id = MlflowClient(searched["tracking_uri"]).get_experiment_by_name("e2e").experiment_id
    request = urllib.request.Request(f"{ui}/api/2.0/mlflow/runs/search", method="POST",
                                     data=json.dumps({"experiment_ids": [experiment_id]}).encode(),
                                     headers={"Content-Type": "application/json"})
    runs = json.load(urllib.request.urlopen(request, timeout=30))["runs"]
    names = sorted(r["info"]["run_name"] for r in runs)
    # cnn.yaml's cost cap skips some draws before training, with no run: those numbers are absent
    stored = optuna.load_study(study_name=searched["study_name"], storage=open_storage(searched["storage"]))
    trained = [t.number for t in stored.trials if not skipped_over_cap(t.user_attrs)]
    assert len(trained) == 3  # --trials 3 counts trained trials only
    assert names == ["e2e-seed0", *(f"trial-{number:04d}" for number in trained)]


def test_browser_shows_the_study_run_on_the_experiment_page(ui: str, searched: dict, tmp_path: Path) -> None:
    experiment_id = MlflowClient(searched["tracking_uri"]).get_experiment_by_name("e2e").experiment_id
    browser = chromium(tmp_path / "profile")
    try:
        # The UI's global GenAI/Model-training switch defaults to GenAI; the README gives this link.
        browser.get(f"{ui}/#/experiments/{experiment_id}?workflowType=machine_learning")
        deadline = time.monotonic() + 60
        while "e2e-seed0" not in browser.page_source and time.monotonic() < deadline:
            time.sleep(1)
        browser.save_screenshot(str(tmp_path / "experiment.png"))
        assert "e2e-seed0" in browser.page_source
        assert "trial-0000" not in browser.page_source  # nested: trials fold under their study
        assert (tmp_path / "experiment.png").stat().st_size > 10_000
    finally:
        browser.quit()
