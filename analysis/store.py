"""Reading an MLflow store: runs, tags and params as long tables, artifacts as bytes or frames.

Nothing here cleans or decides; `analysis.sources` turns what is read into a `Dataset`.
A local SQLite store is read in bulk (three SQL queries, artifact files in place): MLflow's
`search_runs` builds an ORM object per tag and param, seconds for a thousand runs. Any
other store goes through `MlflowClient`; both give the same tables (a test holds them equal).
"""

from __future__ import annotations

import io
import json
import sqlite3
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from study.contract import EFFECTIVE_SPACE_JSON, HISTORY_CSV, ROLE_STUDY, ROLE_TRIAL, RUN_ROLE, TEST_PREDICTIONS

if TYPE_CHECKING:
    from mlflow import MlflowClient

RUN_COLUMNS = ["run_id", "experiment_id", "run_name", "artifact_uri", "role"]
KEY_VALUE_COLUMNS = ["run_id", "key", "value"]


class StoreRuns(NamedTuple):
    """The study and trial runs of some experiments, as stored (strings, nothing cleaned)."""

    experiments: dict[str, str]   # name -> experiment id, in the order asked for
    runs: pd.DataFrame            # RUN_COLUMNS; role is the run_role tag (study or trial)
    tags: pd.DataFrame            # run_id, key, value: every tag of those runs
    params: pd.DataFrame          # run_id, key, value: every param of those runs


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:limit] if text else ''}"


def _sqlite_store_problem(path: Path) -> str | None:
    """Why a SQLite file is no MLflow store to read, or None. Checked read-only, because
    MLflow itself would create a missing file (and migrate an empty one) on first use, and
    fails on a corrupt one deep inside SQLAlchemy."""
    if not path.is_file():
        return "no such file; nothing was created (run a search first, or fix the path)"
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                               "AND name = 'experiments'").fetchone()
    except sqlite3.Error as exc:
        return f"not a readable MLflow store (sqlite: {exc})"
    return None if found else "not an MLflow store (the file has no experiments table)"


def open_store(tracking_uri: str) -> MlflowClient:
    """An `MlflowClient` on an existing store; reading a report never creates or changes one.

    A missing, corrupt or foreign SQLite file, or a store MLflow cannot open (a database
    URL without its driver, an outdated schema), is bad input: one line, exit 2."""
    from mlflow import MlflowClient

    from study.tracking import sqlite_path

    path = sqlite_path(tracking_uri)
    problem = _sqlite_store_problem(path) if path is not None else None
    if problem:
        raise AnalysisInputError(f"--tracking-uri {tracking_uri}: {problem}")
    try:
        client = MlflowClient(tracking_uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - whatever MLflow raises, the store is unusable
        raise AnalysisInputError(f"--tracking-uri {tracking_uri}: cannot open the tracking "
                                 f"store ({first_line(exc)})") from None
    return client


def experiment_ids(client: MlflowClient, experiments: Sequence[str], tracking_uri: str) -> dict[str, str]:
    found = {}
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise AnalysisInputError(f"unknown experiment {name!r} in {tracking_uri}")
        found[name] = exp.experiment_id
    return found


def read_runs(client: MlflowClient, experiments: Sequence[str], tracking_uri: str) -> StoreRuns:
    """The active study and trial runs of `experiments`, newest first (as `search_runs`)."""
    from study.tracking import sqlite_path

    ids = experiment_ids(client, experiments, tracking_uri)
    path = sqlite_path(tracking_uri)
    try:
        if path is not None:
            runs, tags, params = _sqlite_runs(path, list(ids.values()))
        else:
            runs, tags, params = _client_runs(client, list(ids.values()))
    except Exception as exc:  # noqa: BLE001 - a store that breaks mid-read (a damaged page)
        raise AnalysisInputError(f"cannot read the runs of the tracking store ({first_line(exc)})") from None
    return StoreRuns(ids, runs, tags, params)


_ROLE_RUNS = f"""SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid
    WHERE r.experiment_id IN ({{ids}}) AND r.lifecycle_stage = 'active'
    AND t.key = '{RUN_ROLE}' AND t.value IN ('{ROLE_STUDY}', '{ROLE_TRIAL}')"""


def _sqlite_runs(path: Path, ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Three queries on the store opened read-only; the order is `search_runs`' own."""
    wanted = _ROLE_RUNS.format(ids=", ".join("?" * len(ids)))
    numbers = [int(i) for i in ids]
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
        runs = pd.read_sql_query(
            f"""SELECT r.run_uuid AS run_id, CAST(r.experiment_id AS TEXT) AS experiment_id,
                       r.name AS run_name, r.artifact_uri, t.value AS role
                FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = '{RUN_ROLE}'
                WHERE r.run_uuid IN ({wanted}) ORDER BY r.start_time DESC, r.run_uuid""", db, params=numbers)
        tags, params = (pd.read_sql_query(f"SELECT run_uuid AS run_id, key, value FROM {table} "
                                          f"WHERE run_uuid IN ({wanted}) ORDER BY rowid", db, params=numbers)
                        for table in ("tags", "params"))
    return runs, tags, params


def _client_runs(client: MlflowClient, ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    runs, tags, params = [], [], []
    for role in (ROLE_STUDY, ROLE_TRIAL):
        token = None
        while True:
            page = client.search_runs(ids, filter_string=f"tags.{RUN_ROLE} = '{role}'",
                                      max_results=1000, page_token=token)
            for run in page:
                info = run.info
                runs.append((info.run_id, info.experiment_id, info.run_name, info.artifact_uri, role,
                             info.start_time))
                tags.extend((info.run_id, k, v) for k, v in run.data.tags.items())
                params.extend((info.run_id, k, v) for k, v in run.data.params.items())
            token = page.token
            if not token:
                break
    frame = pd.DataFrame(runs, columns=[*RUN_COLUMNS, "start_time"])
    frame = frame.sort_values(["start_time", "run_id"], ascending=[False, True], kind="stable")
    return (frame.drop(columns="start_time").reset_index(drop=True),
            pd.DataFrame(tags, columns=KEY_VALUE_COLUMNS), pd.DataFrame(params, columns=KEY_VALUE_COLUMNS))


# --------------------------------------------------------------------------- artifacts

def _local_path(artifact_uri: str, name: str) -> Path | None:
    """Artifacts in a local store are read in place: one file read per run, no copy."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path)) / name
    return None


def read_artifact(client: MlflowClient, run_id: str, artifact_uri: str, name: str) -> bytes | None:
    local = _local_path(artifact_uri, name)
    if local is not None:
        return local.read_bytes() if local.is_file() else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, name, tmp)).read_bytes()
    except Exception:  # noqa: BLE001 - a missing artifact on a remote store is an exclusion
        return None


def _read_many(client: MlflowClient, runs: pd.DataFrame, name: str) -> list[bytes | None]:
    """One artifact of each run (`run_id`, `artifact_uri`); threads only for remote stores,
    where each read is a round trip."""
    pairs = list(zip(runs["run_id"], runs["artifact_uri"]))
    if all(_local_path(uri, name) is not None for _, uri in pairs):
        return [read_artifact(client, run_id, uri, name) for run_id, uri in pairs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda pair: read_artifact(client, *pair, name), pairs))


def read_histories(client: MlflowClient, runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's `history.csv` as one long table with a `run_id` column, values as parsed.
    A run whose file is missing, empty, unreadable or without an `epoch` column has no rows."""
    blobs = _read_many(client, runs, HISTORY_CSV)
    return parse_histories(dict(zip(runs["run_id"], blobs)))


def parse_histories(blobs: dict[str, bytes | None]) -> pd.DataFrame:
    """CSV files sharing a header are parsed as one (a thousand small parses cost a second);
    a group whose joined parse fails or miscounts rows is parsed file by file."""
    groups: dict[bytes, list[tuple[str, bytes]]] = {}
    for run_id, blob in blobs.items():
        header, _, body = (blob or b"").partition(b"\n")
        if body.strip() and "epoch" in _columns(header):
            groups.setdefault(header.strip(), []).append((run_id, body if body.endswith(b"\n") else body + b"\n"))
    frames = [_parse_group(header, members) for header, members in groups.items()]
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["run_id", "epoch"])


def _columns(header: bytes) -> list[str]:
    return [c.strip().strip('"') for c in header.decode(errors="replace").split(",")]


def _parse_group(header: bytes, members: list[tuple[str, bytes]]) -> pd.DataFrame:
    rows = [sum(1 for line in body.splitlines() if line.strip()) for _, body in members]
    try:
        joined = pd.read_csv(io.BytesIO(header + b"\n" + b"".join(body for _, body in members)))
        if len(joined) == sum(rows):
            joined.insert(0, "run_id", np.repeat([run_id for run_id, _ in members], rows))
            return joined
    except (ValueError, pd.errors.ParserError):
        pass
    frames = []
    for run_id, body in members:
        try:
            frames.append(pd.read_csv(io.BytesIO(header + b"\n" + body)).assign(run_id=run_id))
        except (ValueError, pd.errors.ParserError):
            continue  # unreadable: the run has no usable history
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_spaces(client: MlflowClient, study_runs: pd.DataFrame) -> dict[str, dict]:
    """Each study run's searched space (`params` of `space/effective_space.json`), by run id;
    a run whose artifact is missing or unreadable is left out."""
    spaces = {}
    for run_id, blob in zip(study_runs["run_id"], _read_many(client, study_runs, EFFECTIVE_SPACE_JSON)):
        try:
            params = json.loads(blob)["params"] if blob else None
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(params, dict):
            spaces[run_id] = params
    return spaces


def predictions_reader(client: MlflowClient, trials: pd.DataFrame):
    """`(study, trial) -> {name: array}` of a trial's `test_predictions.npz`, or None."""
    locations = {(r.study, r.trial): (r.run_id, r.artifact_uri) for r in trials.itertuples(index=False)}

    def predictions(study: str, trial: str) -> dict[str, np.ndarray] | None:
        if (study, trial) not in locations:
            return None
        blob = read_artifact(client, *locations[(study, trial)], TEST_PREDICTIONS)
        if blob is None:
            return None
        with np.load(io.BytesIO(blob)) as npz:
            return {k: npz[k] for k in npz.files}

    return predictions
