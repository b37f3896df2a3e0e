"""All of the study's MLflow code: experiment, study run, trial runs, metrics and artifacts.

Uses MlflowClient with explicit run ids rather than the fluent API's global active run, so
a study run and its trial runs can be open at once and workers never share state.
"""

from __future__ import annotations

import functools
import json
import random
import re
import sqlite3
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.tracking import MlflowClient

from study.contract import (BEST_MODEL_LOGGED, EFFECTIVE_SPACE_JSON, EXPERIMENT_KIND, EXPERIMENT_KIND_VALUE,
                            FAILURE_MESSAGE, FAILURE_REASON, HISTORY_CSV, OUTCOMES_NPZ, PARENT_RUN_ID, ROLE_STUDY,
                            ROLE_TRIAL, RUN_ROLE, SPACE_FOLDER, STUDY_NAME, TEST_PREDICTIONS, TRIAL_NUMBER,
                            TRIAL_STATE)
from study.paths import sqlite_file
from study.secrets import mask_secrets
from study.storage import with_installed_driver

# Without this tag the MLflow 3.17 UI opens an experiment on its GenAI traces overview.
EXPERIMENT_TAGS = {EXPERIMENT_KIND: EXPERIMENT_KIND_VALUE}
STATUS_FOR_STATE = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}
MAX_PARAMS_PER_CALL = 100  # MLflow's log_batch limit


def trial_run_name(number: int) -> str:
    return f"trial-{number:04d}"


def _tags(mapping: Mapping[str, Any]) -> list[RunTag]:
    return [RunTag(key, mask_secrets(str(value))) for key, value in mapping.items() if value is not None]


def _params(mapping: Mapping[str, Any]) -> list[Param]:
    return [Param(key, mask_secrets(str(value))[:6000]) for key, value in mapping.items()]


def _now_ms() -> int:
    return int(time.time() * 1000)


LOCK_ERRORS = ("database is locked", "database table is locked", "database schema is locked")
RETRIES = 6


class RetryingClient:
    """MlflowClient whose calls retry with jittered backoff when SQLite reports a lock.

    MLflow already sets `busy_timeout=20000` on every SQLite session; this covers what slips
    through (a lock held longer, or a `BEGIN` upgraded to a write under contention).
    """

    def __init__(self, client: MlflowClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            for attempt in range(RETRIES):
                try:
                    return attr(*args, **kwargs)
                except Exception as exc:
                    if attempt == RETRIES - 1 or not any(e in str(exc) for e in LOCK_ERRORS):
                        raise
                    time.sleep(min(8.0, 0.25 * 2 ** attempt) * (0.5 + random.random()))
            raise AssertionError("unreachable")

        return call


def sqlite_path(tracking_uri: str) -> Path | None:
    return sqlite_file(tracking_uri)


def enable_wal(tracking_uri: str) -> bool:
    """Switch an existing SQLite MLflow store to WAL (persistent, in the file): concurrent
    readers no longer block the writer. Measured in docs/cluster.md. False if not SQLite."""
    path = sqlite_path(tracking_uri)
    if path is None or not path.exists():
        return False
    with sqlite3.connect(path, timeout=30) as connection:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    return str(mode).lower() == "wal"


class Tracker:
    """One MLflow store (SQLite file, server, ...) seen through its client."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        # As for --storage: plain postgresql:// means psycopg 3 to SQLAlchemy; the venv has psycopg2.
        client_uri = with_installed_driver(tracking_uri) if "://" in tracking_uri else tracking_uri
        self.client = RetryingClient(MlflowClient(tracking_uri=client_uri))

    # --- experiment and study run ---------------------------------------------------

    def ensure_experiment(self, name: str) -> str:
        """Called once per search before any worker starts: the store exists from here on."""
        self.client.search_experiments(max_results=1)  # creates and migrates a new SQLite store
        enable_wal(self.tracking_uri)
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            return self.client.create_experiment(name, artifact_location=self.artifact_location(name),
                                                 tags=EXPERIMENT_TAGS)
        for key, value in EXPERIMENT_TAGS.items():
            if experiment.tags.get(key) != value:
                self.client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id

    def artifact_location(self, experiment_name: str) -> str | None:
        """Beside a SQLite store: `<store dir>/artifacts/<experiment>/`.

        MLflow's own default for a SQLite store is `./mlruns/<id>` under whatever directory
        the command runs from, which scatters artifacts and stray `mlruns/` folders. Runs
        keep apart inside it by run id, so two names that slug alike can share it. A
        server (http://) decides for itself (`make server --artifacts-destination`).
        """
        path = sqlite_path(self.tracking_uri)
        if path is None:
            return None
        slug = re.sub(r"[^\w.-]", "_", experiment_name).strip(".") or "experiment"
        return (path.resolve().parent / "artifacts" / slug).as_uri()

    def find_study_run(self, experiment_id: str, study_name: str) -> str | None:
        runs = self.runs_of_study(experiment_id, ROLE_STUDY, study_name, order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def runs_of_study(self, experiment_id: str, role: str, study_name: str,
                      order_by: list[str] | None = None) -> list:
        """The runs of one role whose `optuna.study_name` tag is exactly `study_name`.

        MLflow's filter strings have no escape for a quote, so a name is never pasted into
        one: the server narrows with a LIKE pattern in which every character that could end
        the string or escape (quotes, backslash, %) became `_` (any one character), and the
        exact tag value is compared here. A hostile `--study-name "v' AND ..."` thus finds
        only its own runs.
        """
        pattern = re.sub(r"['\"\\%]", "_", study_name)
        found = self.client.search_runs(
            [experiment_id], f"tags.{RUN_ROLE} = '{role}' AND tags.`{STUDY_NAME}` LIKE '{pattern}'",
            max_results=50000, order_by=order_by)
        return [run for run in found if run.data.tags.get(STUDY_NAME) == study_name]

    def open_study_run(self, experiment_id: str, study_name: str, tags: Mapping[str, Any],
                       params: Mapping[str, Any], space_file: Path, effective_space: Mapping[str, Any]) -> str:
        """Create the study's parent run, or reopen it when the study resumes."""
        run_id = self.find_study_run(experiment_id, study_name)
        if run_id is None:
            run = self.client.create_run(experiment_id, run_name=study_name,
                                         tags={RUN_ROLE: ROLE_STUDY, STUDY_NAME: study_name})
            run_id = run.info.run_id
            param_list = _params(params)
            for start in range(0, len(param_list), MAX_PARAMS_PER_CALL):
                self.client.log_batch(run_id, params=param_list[start:start + MAX_PARAMS_PER_CALL])
            self.client.log_artifact(run_id, str(space_file), SPACE_FOLDER)
            self.log_dict(run_id, dict(effective_space), EFFECTIVE_SPACE_JSON)
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.client.log_batch(run_id, tags=_tags(tags))
        return run_id

    def end_study_run(self, run_id: str, status: str, metrics: Mapping[str, float], tags: Mapping[str, Any]) -> None:
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), _now_ms(), 0) for k, v in metrics.items()],
                              tags=_tags(tags))
        self.client.set_terminated(run_id, status)

    # --- trial runs -----------------------------------------------------------------

    def start_trial_run(self, experiment_id: str, parent_run_id: str, study_name: str, number: int,
                        params: Mapping[str, Any], tags: Mapping[str, Any]) -> str:
        run = self.client.create_run(experiment_id, run_name=trial_run_name(number), tags={
            PARENT_RUN_ID: parent_run_id, RUN_ROLE: ROLE_TRIAL, STUDY_NAME: study_name,
            TRIAL_NUMBER: str(number), **{k: str(v) for k, v in tags.items()}})
        self.client.log_batch(run.info.run_id, params=_params(params))
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        """Params known only once training starts (a sweep arm's pairing hashes)."""
        self.client.log_batch(run_id, params=_params(params))

    def log_epoch(self, run_id: str, epoch: int, row: Mapping[str, float]) -> None:
        """One request per epoch, every metric at step = epoch."""
        stamp = _now_ms()
        batch = [Metric(key, float(value), stamp, int(epoch)) for key, value in row.items()
                 if key != "epoch" and value is not None and np.isfinite(value)]
        self.client.log_batch(run_id, metrics=batch)

    def finish_trial_run(self, run_id: str, state: str, *, status: str | None = None,
                         failure_reason: str | None = None, failure_message: str | None = None,
                         summary: Mapping[str, float] | None = None, history: pd.DataFrame | None = None,
                         predictions: Mapping[str, np.ndarray] | None = None,
                         figure: Path | None = None, outcomes: Mapping[str, np.ndarray] | None = None) -> None:
        """Summary metrics and artifacts, then the state tags and the terminal status."""
        if history is not None and not history.empty:
            with tempfile.TemporaryDirectory() as folder:
                history.to_csv(Path(folder) / HISTORY_CSV, index=False)
                if predictions:
                    np.savez_compressed(Path(folder) / TEST_PREDICTIONS, **predictions)
                if outcomes:
                    np.savez_compressed(Path(folder) / OUTCOMES_NPZ, **outcomes)
                self.client.log_artifacts(run_id, folder)
        if figure is not None and figure.exists():
            self.client.log_artifact(run_id, str(figure))
        tags = {TRIAL_STATE: state, FAILURE_REASON: failure_reason,
                FAILURE_MESSAGE: failure_message[:4000] if failure_message else None}
        metric_list = [Metric(k, float(v), _now_ms(), 0) for k, v in (summary or {}).items() if np.isfinite(v)]
        self.client.log_batch(run_id, metrics=metric_list, tags=_tags(tags))
        self.client.set_terminated(run_id, status or STATUS_FOR_STATE[state])

    def log_keras_model(self, run_id: str, model: Any, name: str = "model") -> None:
        """The Keras flavour, so `mlflow.keras.load_model('runs:/<id>/model')` restores it."""
        import mlflow.keras

        with tempfile.TemporaryDirectory() as folder:
            target = Path(folder) / name
            # Explicit requirements: inferring them imports and scans the environment (seconds).
            mlflow.keras.save_model(model, str(target), pip_requirements=["tensorflow-cpu", "keras"])
            self.client.log_artifacts(run_id, str(target), name)
        self.client.set_tag(run_id, BEST_MODEL_LOGGED, "true")

    def log_dict(self, run_id: str, payload: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_text(run_id, mask_secrets(json.dumps(payload, indent=2, default=str)), artifact_file)

    # --- reading back (reconcile, workers) -------------------------------------------

    def trial_runs(self, experiment_id: str, study_name: str) -> list:
        return self.runs_of_study(experiment_id, ROLE_TRIAL, study_name)

    def mark_run(self, run_id: str, state: str, status: str, failure_reason: str | None = None) -> None:
        self.client.log_batch(run_id, tags=_tags({TRIAL_STATE: state, FAILURE_REASON: failure_reason}))
        self.client.set_terminated(run_id, status)

    def experiment_id(self, name: str) -> str | None:
        experiment = self.client.get_experiment_by_name(name)
        return experiment.experiment_id if experiment else None


def run_status_is_running(run: Any) -> bool:
    return run.info.status == RunStatus.to_string(RunStatus.RUNNING)
