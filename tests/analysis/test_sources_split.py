"""Reading an MLflow store (analysis.store) and cleaning what was read (analysis.sources):
the two readers agree on a real store, and the cleaning is checked on hand-made tables."""

from __future__ import annotations

import pandas as pd
import pytest

from analysis import store
from analysis.errors import AnalysisInputError
from analysis.sources import Dataset, add_epochs, trial_table
from study.contract import (EPOCH_BUDGET, HISTORY_CSV, PARENT_RUN_ID, ROLE_STUDY, ROLE_TRIAL, STUDY_NAME,
                            TRIAL_NUMBER, TRIAL_STATE)


def test_sqlite_reader_matches_mlflow_search_runs(synthetic_store):
    """The bulk SQL read of a local store gives what MlflowClient.search_runs gives."""
    from mlflow import MlflowClient

    from study.tracking import sqlite_path

    client = MlflowClient(synthetic_store["uri"])
    ids = list(store.experiment_ids(client, synthetic_store["experiments"], synthetic_store["uri"]).values())
    fast = store._sqlite_runs(sqlite_path(synthetic_store["uri"]), ids)
    slow = store._client_runs(client, ids)
    pd.testing.assert_frame_equal(fast[0], slow[0])
    assert set(fast[0]["role"]) == {ROLE_STUDY, ROLE_TRIAL} and len(fast[0]) == 6 + 18 + 15
    for mine, theirs in zip(fast[1:], slow[1:]):  # tags, params: the same rows, in any order
        ordered = [df.sort_values(["run_id", "key"]).reset_index(drop=True) for df in (mine, theirs)]
        pd.testing.assert_frame_equal(*ordered)


def _runs(rows: list[dict]) -> store.StoreRuns:
    """A store of trial runs by hand: each row's tags and params as dicts."""
    runs = pd.DataFrame({"run_id": [f"r{i}" for i in range(len(rows))], "experiment_id": "1",
                         "run_name": "x", "artifact_uri": "file:///nowhere", "role": ROLE_TRIAL})
    long = {kind: pd.DataFrame([(f"r{i}", k, v) for i, row in enumerate(rows) for k, v in row[kind].items()],
                               columns=["run_id", "key", "value"]) for kind in ("tags", "params")}
    return store.StoreRuns({"exp": "1"}, runs, long["tags"], long["params"])


def _trial(number: str | None, state: str = "COMPLETE", **params: str) -> dict:
    tags = {STUDY_NAME: "S", PARENT_RUN_ID: "p", TRIAL_STATE: state}
    if number is not None:
        tags[TRIAL_NUMBER] = number
    return {"tags": tags, "params": {"lr": "0.1", "data.name": "x", "seed": "3", **params}}


def _dataset() -> Dataset:
    return Dataset(trials=pd.DataFrame(), epochs=None, studies=pd.DataFrame(), loss_metric="val_loss",
                   experiments=["exp"])


def test_trial_table_keeps_finished_numbered_trials_and_lists_the_rest():
    ds = _dataset()
    runs = _runs([_trial("0", **{EPOCH_BUDGET: "5"}), _trial("1", "PRUNED"), _trial("2", "FAIL"),
                  _trial("x"), _trial(None), _trial("5", "RUNNING")])
    trials = trial_table(ds, runs, include_pruned=False, tracking_uri="uri")
    assert trials["trial"].tolist() == ["0"] and trials["order"].tolist() == [0]
    assert trials["budget"].tolist() == [5.0]
    # Undotted params are knobs; dotted ones and the search's own settings (seed) are not.
    assert [c for c in trials if c.startswith("hp.")] == ["hp.lr"]
    listed = {e["why"]: e["count"] for e in ds.exclusions}
    assert listed == {"trial state FAIL": 1, "trial state PRUNED (use --include-pruned to count them)": 1,
                      "trial state RUNNING (unfinished or unknown)": 1,
                      f"tag {TRIAL_NUMBER} missing or not an integer": 2}


def test_a_missing_study_name_falls_back_to_the_parent_run():
    row = _trial("0")
    del row["tags"][STUDY_NAME]
    trials = trial_table(_dataset(), _runs([row]), include_pruned=False, tracking_uri="uri")
    assert trials["study"].tolist() == ["p"]


def test_add_epochs_cleans_histories_and_fills_a_missing_budget():
    ds = _dataset()
    runs = _runs([_trial("0", **{EPOCH_BUDGET: "10"}), _trial("1"), _trial("2")])
    trials = trial_table(ds, runs, include_pruned=False, tracking_uri="uri")
    histories = pd.DataFrame({"run_id": ["r0", "r0", "r1", "r1", "r1"], "epoch": [0, 1, 0, 1, 2],
                              "val_loss": [1.0, 0.5, 0.9, "oops", 0.7],
                              "val_accuracy": [0.5, 0.6, 0.5, 0.6, 0.7]})
    add_epochs(ds, trials, histories)
    # r2 has no history; r1's unparsable epoch 1 goes; r1 trained 3 epochs (its last is 2).
    assert ds.trials[["trial", "budget"]].values.tolist() == [["0", 10.0], ["1", 3.0]]
    assert ds.epochs[["trial", "epoch"]].values.tolist() == [["0", 0], ["0", 1], ["1", 0], ["1", 2]]
    listed = {e["why"]: e["count"] for e in ds.exclusions}
    assert listed == {f"no usable {HISTORY_CSV} artifact": 1,
                      "non-numeric or NaN epoch, val_loss or val_accuracy": 1}


def test_no_usable_history_is_bad_input():
    ds = _dataset()
    trials = trial_table(ds, _runs([_trial("0")]), include_pruned=False, tracking_uri="uri")
    with pytest.raises(AnalysisInputError, match="no usable trials in exp"):
        add_epochs(ds, trials, store.parse_histories({"r0": None}))


def test_histories_parse_as_one_and_file_by_file_alike():
    blobs = {"a": b"epoch,val_loss\n0,1.5\n1,1.25\n", "b": b"epoch,val_loss\n0,2.0",
             "c": b"val_loss,epoch\r\n3.0,0\r\n", "d": b"loss\n1\n", "e": b"epoch,val_loss\n", "f": None,
             "g": b'epoch,val_loss\n0,"1\n2"\n'}  # a quoted newline: the joined parse miscounts
    parsed = store.parse_histories(blobs)
    by_run = {run: frame.drop(columns="run_id").dropna(axis=1, how="all").to_dict("list")
              for run, frame in parsed.groupby("run_id")}
    assert by_run["a"] == {"epoch": [0, 1], "val_loss": [1.5, 1.25]}
    assert by_run["b"] == {"epoch": [0], "val_loss": [2.0]}
    assert by_run["c"] == {"epoch": [0], "val_loss": [3.0]}
    assert by_run["g"]["epoch"] == [0] and by_run["g"]["val_loss"] == ["1\n2"]
    assert set(by_run) == {"a", "b", "c", "g"}  # no epoch column, no rows, no file: no history


def test_the_contract_gives_mlflows_own_parent_tag_without_importing_mlflow_for_csv_input():
    import subprocess
    import sys

    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    assert PARENT_RUN_ID == MLFLOW_PARENT_RUN_ID
    # Importing mlflow takes seconds; a CSV report must not pay for it.
    probe = ("import sys, analysis.cli, analysis.sources, analysis.summary, analysis.figures, study.contract; "
             "print('mlflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
