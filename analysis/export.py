"""`python -m analysis export`: a campaign's raw data as one table, one row per trial and epoch.

Columns: `study`, `trial`, `epoch`, `val_loss`, `val_crossentropy`, `val_accuracy`,
`test_accuracy` first; then every other per-epoch metric of the trial's `history.csv`;
then `state`, every MLflow param of the trial run, the `experiment`, the MLflow `run_id`
and the study run's `git_commit`; last, for the trials of a paired sweep, its params under
their `SWEEP_COLUMNS` names (`factor`, `level`, `pair`, `arm`), which `analysis report`
recognises. Written from the store, never by hand, so that
`analysis report --csv` on it can be checked against the MLflow-mode report.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import store
from analysis.errors import AnalysisInputError
from study.contract import (HISTORY_CSV, PARENT_RUN_ID, ROLE_STUDY, ROLE_TRIAL, STUDY_NAME, SWEEP_COLUMNS,
                            TRIAL_NUMBER, TRIAL_STATE, VAL_IMAGES)

FIRST_COLUMNS = ["study", "trial", "epoch", "val_loss", "val_crossentropy", "val_accuracy", "test_accuracy"]
LAST_COLUMNS = ["experiment", "run_id", "git_commit"]
CSV_FLAGS = ("--epoch-col epoch --test-accuracy-col test_accuracy --state-col state "
             "--crossentropy-col val_crossentropy")


def csv_flags(table: pd.DataFrame) -> str:
    """The `analysis report --csv` flags that make the export's report the store's: the
    columns, and the validation size the within-noise rule needs (a table cannot say it)."""
    sizes = pd.to_numeric(table.get(VAL_IMAGES, pd.Series(dtype=float)), errors="coerce").dropna().unique()
    return CSV_FLAGS + (f" --val-size {int(sizes[0])}" if len(sizes) == 1 else "")


def trial_rows(runs: store.StoreRuns) -> pd.DataFrame:
    """One row per trial run: ids, state, params, and the commit of its study run."""
    by_id = {v: k for k, v in runs.experiments.items()}
    tags = {run_id: dict(zip(group["key"], group["value"])) for run_id, group in runs.tags.groupby("run_id")}
    params = {run_id: dict(zip(group["key"], group["value"]))
              for run_id, group in runs.params.groupby("run_id")}
    study_runs = runs.runs[runs.runs["role"] == ROLE_STUDY]["run_id"]
    commits = {run_id: tags.get(run_id, {}).get("git_commit", "unknown") for run_id in study_runs}
    rows = []
    for run in runs.runs[runs.runs["role"] == ROLE_TRIAL].itertuples(index=False):
        run_tags = tags.get(run.run_id, {})
        rows.append({"study": run_tags.get(STUDY_NAME, ""), "trial": run_tags.get(TRIAL_NUMBER, ""),
                     "state": run_tags.get(TRIAL_STATE), "params": params.get(run.run_id, {}),
                     "experiment": by_id[run.experiment_id], "run_id": run.run_id,
                     "artifact_uri": run.artifact_uri,
                     "git_commit": commits.get(run_tags.get(PARENT_RUN_ID, ""), "unknown")})
    return pd.DataFrame(rows)


def epoch_table(trials: pd.DataFrame, histories: Sequence[pd.DataFrame | None]) -> pd.DataFrame:
    """The long table: each trial's history rows, its state and params beside every epoch."""
    frames, history_cols, param_cols, sweep_cols = [], {}, {}, {}
    for trial, history in zip(trials.itertuples(index=False), histories):
        if history is None or history.empty or "epoch" not in history:
            continue  # a trial that never finished an epoch has no row to give
        history_cols.update(dict.fromkeys(history.columns))
        # A param named like a metric or a key column keeps both: the param gets a prefix.
        params = {(f"param.{k}" if k in history.columns or k in {*LAST_COLUMNS, "state"} else k): v
                  for k, v in trial.params.items() if k not in SWEEP_COLUMNS}
        param_cols.update(dict.fromkeys(params))
        sweep = {SWEEP_COLUMNS[k]: v for k, v in trial.params.items() if k in SWEEP_COLUMNS}
        sweep_cols.update(dict.fromkeys(sweep))
        frames.append(history.assign(study=trial.study, trial=int(trial.trial), state=trial.state, **params,
                                     experiment=trial.experiment, run_id=trial.run_id,
                                     git_commit=trial.git_commit, **sweep))
    if not frames:
        raise AnalysisInputError("no trial has a history.csv artifact: nothing to export")
    table = pd.concat(frames, ignore_index=True)
    table["epoch"] = table["epoch"].astype(int)
    first = [c for c in FIRST_COLUMNS if c in table]
    metrics = [c for c in history_cols if c not in first]
    # A campaign's table keeps its columns; a sweep's arms come last, in the contract's order.
    arms = [c for c in SWEEP_COLUMNS.values() if c in sweep_cols]
    ordered = table[[*first, *metrics, "state", *sorted(param_cols), *LAST_COLUMNS, *arms]]
    return ordered.sort_values(["study", "trial", "epoch"], kind="stable").reset_index(drop=True)


def export(experiments: Sequence[str], tracking_uri: str, out: Path) -> pd.DataFrame:
    """Read the store (never changing it) and write `out` (gzip when it ends in .gz)."""
    client = store.open_store(tracking_uri)
    runs = store.read_runs(client, experiments, tracking_uri)
    trials = trial_rows(runs)
    if trials.empty:
        raise AnalysisInputError(f"--experiment {', '.join(experiments)}: no trial runs to export")

    def history(row) -> pd.DataFrame | None:
        blob = store.read_artifact(client, row.run_id, row.artifact_uri, HISTORY_CSV)
        return None if blob is None else pd.read_csv(io.BytesIO(blob))

    table = epoch_table(trials, [history(row) for row in trials.itertuples(index=False)])
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)  # pandas infers gzip from the .gz suffix
    return table
