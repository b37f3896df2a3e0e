"""`python -m analysis export`: a campaign's raw data as one table, one row per trial and epoch.

Columns: `study`, `trial`, `epoch`, `val_loss`, `val_crossentropy`, `val_accuracy`,
`test_accuracy` first; then every other per-epoch metric of the trial's `history.csv`;
then `state`, every MLflow param of the trial run, the `experiment`, the MLflow `run_id`
and the study run's `git_commit`. Written from the store, never by hand, so that
`analysis report --csv` on it can be checked against the MLflow-mode report.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import sources
from analysis.errors import AnalysisInputError

FIRST_COLUMNS = ["study", "trial", "epoch", "val_loss", "val_crossentropy", "val_accuracy", "test_accuracy"]
LAST_COLUMNS = ["experiment", "run_id", "git_commit"]
CSV_FLAGS = ("--epoch-col epoch --test-accuracy-col test_accuracy --state-col state "
             "--crossentropy-col val_crossentropy")


def trial_rows(client, experiment_ids: dict[str, str]) -> pd.DataFrame:
    """One row per trial run: ids, state, params, and the commit of its study run."""
    by_id = {v: k for k, v in experiment_ids.items()}
    commits = {run.info.run_id: run.data.tags.get("git_commit", "unknown")
               for run in sources._all_runs(client, list(experiment_ids.values()), "study")}
    rows = []
    for run in sources._all_runs(client, list(experiment_ids.values()), "trial"):
        tags = run.data.tags
        rows.append({"study": tags.get("optuna.study_name", ""), "trial": tags.get("optuna.trial_number", ""),
                     "state": tags.get("optuna.trial_state"), "params": dict(run.data.params),
                     "experiment": by_id[run.info.experiment_id], "run_id": run.info.run_id,
                     "artifact_uri": run.info.artifact_uri,
                     "git_commit": commits.get(tags.get("mlflow.parentRunId", ""), "unknown")})
    return pd.DataFrame(rows)


def epoch_table(trials: pd.DataFrame, histories: Sequence[pd.DataFrame | None]) -> pd.DataFrame:
    """The long table: each trial's history rows, its state and params beside every epoch."""
    frames, history_cols, param_cols = [], {}, {}
    for trial, history in zip(trials.itertuples(index=False), histories):
        if history is None or history.empty or "epoch" not in history:
            continue  # a trial that never finished an epoch has no row to give
        history_cols.update(dict.fromkeys(history.columns))
        # A param named like a metric or a key column keeps both: the param gets a prefix.
        params = {(f"param.{k}" if k in history.columns or k in {*LAST_COLUMNS, "state"} else k): v
                  for k, v in trial.params.items()}
        param_cols.update(dict.fromkeys(params))
        frames.append(history.assign(study=trial.study, trial=int(trial.trial), state=trial.state, **params,
                                     experiment=trial.experiment, run_id=trial.run_id,
                                     git_commit=trial.git_commit))
    if not frames:
        raise AnalysisInputError("no trial has a history.csv artifact: nothing to export")
    table = pd.concat(frames, ignore_index=True)
    table["epoch"] = table["epoch"].astype(int)
    first = [c for c in FIRST_COLUMNS if c in table]
    metrics = [c for c in history_cols if c not in first]
    ordered = table[[*first, *metrics, "state", *sorted(param_cols), *LAST_COLUMNS]]
    return ordered.sort_values(["study", "trial", "epoch"], kind="stable").reset_index(drop=True)


def export(experiments: Sequence[str], tracking_uri: str, out: Path) -> pd.DataFrame:
    """Read the store (never changing it) and write `out` (gzip when it ends in .gz)."""
    client = sources.open_store(tracking_uri)
    experiment_ids = {}
    for name in experiments:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise AnalysisInputError(f"--experiment {name}: no such experiment in {tracking_uri}")
        experiment_ids[name] = found.experiment_id
    trials = trial_rows(client, experiment_ids)
    if trials.empty:
        raise AnalysisInputError(f"--experiment {', '.join(experiments)}: no trial runs to export")

    def history(row) -> pd.DataFrame | None:
        blob = sources._read_artifact(client, row.run_id, row.artifact_uri, "history.csv")
        return None if blob is None else pd.read_csv(io.BytesIO(blob))

    table = epoch_table(trials, [history(row) for row in trials.itertuples(index=False)])
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)  # pandas infers gzip from the .gz suffix
    return table
