"""Load trials into tidy tables, from MLflow (the search contract) or from a CSV/Parquet file.

Everything downstream sees the same `Dataset`: canonical metric names (`val_loss`,
`val_accuracy`, `test_accuracy`, ...), one `study` key per study and an `order` column
that carries the tie rule (trial number in MLflow, file order in CSV mode).
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd

from analysis import checks
from analysis.axes import blank_inactive
from analysis.errors import AnalysisInputError
from study.secrets import mask_secrets

if TYPE_CHECKING:
    from mlflow import MlflowClient

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_crossentropy", "val_ece",
                 "val_confidence", "test_loss", "test_accuracy", "test_crossentropy", "lr")
KEY = ["study", "trial"]
# Kept columns that are not hyperparameters, so `hyperparams` never picks them up.
META_COLUMNS = {"experiment", "study", "trial", "order", "state", "budget", "class_imbalance",
                "run_id"}

# Undotted params every trial run carries besides its knobs: the search's config
# (`SearchConfig.flat()`) and a worker's index. Written out rather than imported, so a
# setting the config drops later still counts as one in older stores; a test keeps the
# list a superset of today's config.
RUN_SETTINGS = frozenset({
    "space_file", "trials", "timeout", "experiment", "study_name", "seed", "replicates",
    "sampler", "pruner", "objective", "storage", "tracking_uri", "workers",
    "max_consecutive_failures", "heartbeat_interval", "grace_period", "max_retry", "space_name",
    "worker_index", "trial_artifacts"})

Predictions = Callable[[str, str], "dict[str, np.ndarray] | None"]


@dataclass
class Dataset:
    """The tidy input of every analysis.

    `trials`: one row per usable trial (experiment, study, trial, order, state, budget,
    class_imbalance, hyperparameters, explanatory columns; in per-trial CSV mode also the
    metric columns). `epochs`: one row per epoch (study, trial, epoch, metrics), or None
    when the input has no epoch level.
    """

    trials: pd.DataFrame
    epochs: pd.DataFrame | None
    studies: pd.DataFrame
    loss_metric: str
    experiments: list[str]
    hyperparams: list[str] = field(default_factory=list)
    explanatory: list[str] = field(default_factory=list)
    exclusions: list[dict] = field(default_factory=list)
    source: dict = field(default_factory=dict)
    predictions: Predictions | None = None
    # Per study key: the searched space's `params` (from the study run's
    # `space/effective_space.json`); empty in CSV mode or when the artifact is missing.
    spaces: dict[str, dict] = field(default_factory=dict)

    def exclude(self, what: str, why: str, count: int) -> None:
        if count:
            self.exclusions.append({"what": what, "why": why, "count": int(count)})


def _numeric(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    out = frame.copy()
    for col in columns:
        if col in out:
            out[col] = pd.to_numeric(out[col], errors="coerce")
    return out


def _maybe_numeric(values: pd.Series) -> pd.Series:
    """Params arrive as strings; numbers become floats, anything else stays categorical."""
    converted = pd.to_numeric(values, errors="coerce")
    if converted[values.notna()].notna().all():
        return converted
    return values.astype("string")


# --------------------------------------------------------------------------- CSV / Parquet

def load_table(path: Path, *, study_col: str, trial_col: str, loss_col: str, accuracy_col: str,
               test_accuracy_col: str | None = None, epoch_col: str | None = None,
               explain_cols: Sequence[str] = (), include_pruned: bool = False,
               state_col: str | None = None, epochs: int | None = None,
               crossentropy_col: str | None = None) -> Dataset:
    """Read a generic table of trials (or of epochs, with `epoch_col`).

    `epochs` is the epoch budget of every trial; without it a study's budget is its
    largest epoch count. Rows with a blank id, an impossible value or a fractional epoch
    are left out and listed in `exclusions`; an accuracy column in percent is bad input.
    """
    path = Path(path)
    raw = _read_table(path)
    named = {"--study-col": study_col, "--trial-col": trial_col, "--loss-col": loss_col,
             "--accuracy-col": accuracy_col, "--test-accuracy-col": test_accuracy_col,
             "--epoch-col": epoch_col, "--state-col": state_col, "--crossentropy-col": crossentropy_col}
    named.update({f"--explain-col {c}": c for c in explain_cols})
    missing = [f"{flag}={col}" for flag, col in named.items() if col and col not in raw.columns]
    if missing:
        raise AnalysisInputError(f"{path}: missing column(s) {', '.join(missing)}; "
                                 f"columns are {', '.join(map(str, raw.columns))}")
    if raw.empty:
        raise AnalysisInputError(f"{path}: the table has no rows")
    if epochs is not None and epochs < 1:
        raise AnalysisInputError(f"--epochs {epochs}: the epoch budget must be >= 1")
    for flag in ("--accuracy-col", "--test-accuracy-col"):
        column = named[flag]
        if column and checks.looks_like_percent(pd.to_numeric(raw[column], errors="coerce")):
            raise AnalysisInputError(
                f"{path}: {flag}={column} looks like percent (values up to "
                f"{pd.to_numeric(raw[column], errors='coerce').max():g}); give accuracies as "
                "fractions in [0, 1]")

    experiment = path.stem
    ds = Dataset(trials=pd.DataFrame(), epochs=None, studies=pd.DataFrame(), loss_metric=loss_col,
                 experiments=[experiment], explanatory=[f"x.{c}" for c in explain_cols],
                 source={"kind": "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv",
                         "name": path.name, "sha256": _sha256(path), "rows": int(len(raw)),
                         "columns": {k.lstrip("-"): v for k, v in named.items() if v}})
    raw = _without_blank_ids(ds, raw, study_col, trial_col)
    table = _tidy(raw, experiment, study_col, trial_col, state_col,
                  {loss_col: "val_loss", accuracy_col: "val_accuracy",
                   test_accuracy_col: "test_accuracy", epoch_col: "epoch",
                   crossentropy_col: "val_crossentropy"}, explain_cols)
    table = _filter_states(ds, table, include_pruned, unit="rows")
    table = _usable_values(ds, table, named)
    if table.empty:
        raise AnalysisInputError(f"{path}: no usable rows (every row is excluded)")

    studies = pd.DataFrame({"experiment": experiment, "study": table["study"].unique()})
    for tag in ("sampler", "pruner", "objective"):
        studies[tag] = "unknown"
    ds.studies = studies
    if epoch_col:
        _epoch_level(ds, table, epochs, path)
    else:
        dup = table.duplicated(KEY)
        ds.exclude("rows", "duplicate (study, trial); the first is kept", int(dup.sum()))
        ds.trials = table[~dup].reset_index(drop=True)
    ds.trials["class_imbalance"] = np.nan
    return ds


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise AnalysisInputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise AnalysisInputError(f"{path}: cannot read table ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''})") from None


def _sha256(path: Path) -> str:
    """What identifies the input, unlike its absolute path (which says where it was)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _without_blank_ids(ds: Dataset, raw: pd.DataFrame, study_col: str,
                       trial_col: str) -> pd.DataFrame:
    """A row without a study or trial id belongs to no unit: list it, never merge it."""
    blank_study = checks.blank_ids(raw[study_col])
    blank_trial = checks.blank_ids(raw[trial_col]) & ~blank_study
    ds.exclude("rows", f"blank study id (--study-col {study_col})", int(blank_study.sum()))
    ds.exclude("rows", f"blank trial id (--trial-col {trial_col})", int(blank_trial.sum()))
    return raw[~(blank_study | blank_trial)]


def _tidy(raw: pd.DataFrame, experiment: str, study_col: str, trial_col: str,
          state_col: str | None, rename: dict, explain_cols: Sequence[str]) -> pd.DataFrame:
    """Canonical column names, the state, the file-order tie key and the experiment."""
    table = pd.DataFrame({"study": raw[study_col].astype(str), "trial": raw[trial_col].astype(str)})
    for src, dst in rename.items():
        if src:
            table[dst] = raw[src]
    for col in explain_cols:
        table[f"x.{col}"] = raw[col]
    table["state"] = raw[state_col].astype(str).str.upper() if state_col else "COMPLETE"
    # File order is the order trials are listed in (the representative loss pick of a tie).
    table["order"] = table.groupby(KEY, sort=False).ngroup()  # numbered in first-seen order
    table["experiment"] = experiment
    return table


def _usable_values(ds: Dataset, table: pd.DataFrame, named: dict) -> pd.DataFrame:
    """Numeric, possible values only; every row or value left out is listed with its reason."""
    metric_cols = [c for c in ("val_loss", "val_accuracy", "epoch") if c in table]
    table = _numeric(table, [*metric_cols, "test_accuracy", "val_crossentropy", *ds.explanatory])
    loss_col, accuracy_col, epoch_col = (named["--loss-col"], named["--accuracy-col"],
                                         named["--epoch-col"])
    bad = table[metric_cols].isna().any(axis=1)
    ds.exclude("rows", f"non-numeric or NaN {', '.join(c for c in (loss_col, accuracy_col, epoch_col) if c)}",
               int(bad.sum()))
    table = table[~bad]
    # Impossible values would decide picks silently (an accuracy of 1.5 always wins).
    checked = [(f"impossible value: {loss_col} negative or infinite", "val_loss", checks.impossible_loss),
               (f"impossible value: {accuracy_col} outside [0, 1]", "val_accuracy",
                checks.impossible_accuracy)]
    if epoch_col:
        checked.append((f"epoch ({epoch_col}) not a whole number >= 0", "epoch", checks.not_whole_epochs))
    for reason, column, is_bad in checked:
        # Checked one after another, so a row is listed under its first reason only.
        mask = is_bad(table[column])
        ds.exclude("rows", reason, int(mask.sum()))
        table = table[~mask]
    table = table.copy()
    if "test_accuracy" in table:
        outside = checks.impossible_accuracy(table["test_accuracy"])
        ds.exclude(f"values of {named['--test-accuracy-col']}", "outside [0, 1]: left out of the "
                   "statistics that use this column (the rows stay)", int(outside.sum()))
        table.loc[outside, "test_accuracy"] = np.nan
    # Kept, but said: a missing test accuracy or explanatory value shrinks the cost and
    # explanation statistics, never silently.
    flags = [("test_accuracy", named["--test-accuracy-col"]),
             *((c, c[2:]) for c in ds.explanatory)]
    for col, flag in flags:
        if flag and col in table:
            ds.exclude(f"values of {flag}", "non-numeric or NaN: left out of the statistics that use "
                       "this column (the rows stay)", int(table[col].isna().sum()))
    return table


def _epoch_level(ds: Dataset, table: pd.DataFrame, epochs: int | None, path: Path) -> None:
    """Epochs counted from 0 and each trial's budget: `--epochs`, else its study's largest
    epoch count. A table whose epochs start at 1 is shifted, so positions in the budget
    and the budget itself mean the same for 0- and 1-based logs."""
    table = table.copy()
    base = int(table["epoch"].min())
    table["epoch"] = table["epoch"].astype(int) - (1 if base == 1 else 0)
    ds.source["epoch_base"] = 1 if base == 1 else 0
    dup = table.duplicated([*KEY, "epoch"])
    ds.exclude("rows", "duplicate (study, trial, epoch); the first is kept", int(dup.sum()))
    table = table[~dup]
    if epochs is not None and table["epoch"].max() >= epochs:
        beyond = table.loc[table["epoch"].idxmax()]
        raise AnalysisInputError(
            f"{path}: --epochs {epochs}, but study {beyond['study']!r} trial {beyond['trial']!r} "
            f"has epoch {int(beyond['epoch']) + ds.source['epoch_base']}")
    ds.epochs = table[[*KEY, "epoch", "val_loss", "val_accuracy"]
                      + [c for c in ("test_accuracy", "val_crossentropy") if c in table]].reset_index(drop=True)
    trials = table.groupby(KEY, sort=False).agg(
        experiment=("experiment", "first"), order=("order", "first"), state=("state", "first"),
        budget=("epoch", "max"), **{c: (c, "mean") for c in ds.explanatory}).reset_index()
    trials["budget"] = (epochs if epochs is not None
                        else trials.groupby("study")["budget"].transform("max") + 1)
    ds.source["epoch_budget"] = (f"--epochs {epochs}" if epochs is not None
                                 else "largest epoch count of the study")
    ds.trials = trials


def _filter_states(ds: Dataset, frame: pd.DataFrame, include_pruned: bool, unit: str) -> pd.DataFrame:
    state = frame["state"]
    ds.exclude(unit, "trial state FAIL", int((state == "FAIL").sum()))
    if not include_pruned:
        ds.exclude(unit, "trial state PRUNED (use --include-pruned to count them)",
                   int((state == "PRUNED").sum()))
    keep = {"COMPLETE", "PRUNED"} if include_pruned else {"COMPLETE"}
    other = ~state.isin({"COMPLETE", "PRUNED", "FAIL"})
    for name, count in Counter(state[other].fillna("missing")).items():
        ds.exclude(unit, f"trial state {name} (unfinished or unknown)", count)
    return frame[state.isin(keep)]


# --------------------------------------------------------------------------- MLflow

def _all_runs(client, experiment_ids: list[str], role: str) -> list:
    runs, token = [], None
    while True:
        try:
            page = client.search_runs(experiment_ids, filter_string=f"tags.run_role = '{role}'",
                                      max_results=1000, page_token=token)
        except Exception as exc:  # noqa: BLE001 - a store that breaks mid-read (a damaged page)
            raise AnalysisInputError(f"cannot read the {role} runs of the tracking store "
                                     f"({_first_line(exc)})") from None
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _local_path(artifact_uri: str, name: str) -> Path | None:
    """Artifacts in a local store are read in place: one file read per run, no copy."""
    parsed = urlparse(artifact_uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path)) / name
    return None


def _read_artifact(client, run_id: str, artifact_uri: str, name: str) -> bytes | None:
    local = _local_path(artifact_uri, name)
    if local is not None:
        return local.read_bytes() if local.is_file() else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            return Path(client.download_artifacts(run_id, name, tmp)).read_bytes()
    except Exception:  # noqa: BLE001 - a missing artifact on a remote store is an exclusion
        return None


def _searched_spaces(client, study_runs: list, studies: pd.DataFrame) -> dict[str, dict]:
    """The searched space of each analysed study: one `space/effective_space.json` read per
    study run (in parallel, for remote stores). A missing or unreadable artifact leaves the
    study out, and the boundary check falls back to the explored range for it."""
    uris = {run.info.run_id: run.info.artifact_uri for run in study_runs}
    wanted = [(r.study, r.study_run_id) for r in studies.itertuples(index=False)
              if r.study_run_id in uris]

    def fetch(item) -> dict | None:
        blob = _read_artifact(client, item[1], uris[item[1]], "space/effective_space.json")
        try:
            params = json.loads(blob)["params"] if blob else None
        except (ValueError, KeyError, TypeError):
            return None
        return params if isinstance(params, dict) else None

    with ThreadPoolExecutor(max_workers=8) as pool:
        found = list(pool.map(fetch, wanted))
    return {study: params for (study, _), params in zip(wanted, found) if params}


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


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:limit] if text else ''}"


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
                                 f"store ({_first_line(exc)})") from None
    return client


def searched_knobs(hp_cols: Sequence[str], spaces: dict[str, dict], studies: set[str]) -> list[str]:
    """The `hp.*` columns that are axes: knobs some study searched (role scientific or
    nuisance in its logged space). A pinned (fixed) knob is a setting, even when two studies
    pinned it differently. Without a logged space for every study, any knob may be searched."""
    if not studies <= set(spaces):
        return list(hp_cols)
    searched = {f"hp.{name}" for params in spaces.values() for name, spec in params.items()
                if isinstance(spec, dict) and spec.get("role") != "fixed"}
    return [c for c in hp_cols if c in searched]


def load_mlflow(experiments: Sequence[str], tracking_uri: str, *,
                include_pruned: bool = False) -> Dataset:
    """Studies are `run_role=study` runs, trials `run_role=trial` runs; epochs come from
    each trial's `history.csv`, one artifact read per run."""
    client = open_store(tracking_uri)
    exp_ids: dict[str, str] = {}
    for name in experiments:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise AnalysisInputError(f"unknown experiment {name!r} in {tracking_uri}")
        exp_ids[name] = exp.experiment_id
    by_id = {v: k for k, v in exp_ids.items()}

    trial_runs = _all_runs(client, list(exp_ids.values()), "trial")
    empty = set(exp_ids) - {by_id[r.info.experiment_id] for r in trial_runs}
    if empty:
        raise AnalysisInputError(f"experiment {sorted(empty)[0]!r} has no trial runs "
                                 f"(tag run_role=trial) in {tracking_uri}")
    study_runs = _all_runs(client, list(exp_ids.values()), "study")

    rows = []
    for run in trial_runs:
        tags, params = run.data.tags, run.data.params
        row = {"experiment": by_id[run.info.experiment_id],
               "study": tags.get("optuna.study_name") or tags.get("mlflow.parentRunId", "?"),
               "trial": tags.get("optuna.trial_number", ""),
               "state": tags.get("optuna.trial_state"),
               "run_id": run.info.run_id, "artifact_uri": run.info.artifact_uri,
               "budget": params.get("train.epochs"),
               "class_imbalance": params.get("data.class_imbalance")}
        # Sampled hyperparameters are the undotted params; dotted ones are fixed config, and
        # the search's own settings (trials, timeout, seed, ...) say how it ran, not what.
        row.update({f"hp.{k}": v for k, v in params.items()
                    if "." not in k and k not in RUN_SETTINGS})
        rows.append(row)
    trials = pd.DataFrame(rows)
    # A study name reused in two experiments would merge two studies; keep them apart.
    per_name = trials.groupby("study")["experiment"].nunique()
    clash = trials["study"].isin(per_name[per_name > 1].index)
    trials.loc[clash, "study"] = trials.loc[clash, "experiment"] + "/" + trials.loc[clash, "study"]
    trials["order"] = pd.to_numeric(trials["trial"], errors="coerce")
    trials["budget"] = pd.to_numeric(trials["budget"], errors="coerce")
    trials["class_imbalance"] = pd.to_numeric(trials["class_imbalance"], errors="coerce")

    ds = Dataset(trials=pd.DataFrame(), epochs=None, studies=pd.DataFrame(), loss_metric="val_loss",
                 experiments=list(experiments),
                 # summary.json is written to disk and logged as an artifact: no password.
                 source={"kind": "mlflow", "tracking_uri": mask_secrets(tracking_uri),
                         "experiments": {n: exp_ids[n] for n in experiments},
                         "trial_runs": len(trial_runs), "study_runs": len(study_runs)})
    trials = _filter_states(ds, trials, include_pruned, unit="trials")
    bad_number = trials["order"].isna()
    ds.exclude("trials", "tag optuna.trial_number missing or not an integer", int(bad_number.sum()))
    trials = trials[~bad_number].copy()
    trials["order"] = trials["order"].astype(int)
    trials["trial"] = trials["order"].astype(str)

    def fetch(row) -> pd.DataFrame | None:
        blob = _read_artifact(client, row.run_id, row.artifact_uri, "history.csv")
        return None if blob is None else pd.read_csv(io.BytesIO(blob))

    # Threads only help remote stores; a local store reads each file in place.
    with ThreadPoolExecutor(max_workers=8) as pool:
        histories = list(pool.map(fetch, trials.itertuples(index=False)))
    frames, missing = [], []
    for row, hist in zip(trials.itertuples(index=False), histories):
        if hist is None or hist.empty or "epoch" not in hist:
            missing.append(row.run_id)
            continue
        hist = hist.assign(study=row.study, trial=row.trial)
        frames.append(hist)
    ds.exclude("trials", "no usable history.csv artifact", len(missing))
    trials = trials[~trials["run_id"].isin(missing)]
    if not frames:
        raise AnalysisInputError(f"no usable trials in {', '.join(experiments)} "
                                 f"(see exclusions: {ds.exclusions})")
    epochs = pd.concat(frames, ignore_index=True)
    metric_cols = [c for c in EPOCH_METRICS if c in epochs]
    epochs = _numeric(epochs, ["epoch", *metric_cols])
    bad = epochs[["epoch", "val_loss", "val_accuracy"]].isna().any(axis=1)
    ds.exclude("epochs", "non-numeric or NaN epoch, val_loss or val_accuracy", int(bad.sum()))
    epochs = epochs[~bad]
    epochs["epoch"] = epochs["epoch"].astype(int)
    trials = trials[trials.set_index(KEY).index.isin(epochs.set_index(KEY).index.unique())]
    # A trial without its epoch budget (a CSV-less run) falls back to the epochs it trained.
    trained = epochs.groupby(KEY)["epoch"].max().rename("trained") + 1
    trials = trials.join(trained, on=KEY)
    trials["budget"] = trials["budget"].fillna(trials["trained"])
    trials = trials.drop(columns=["trained"])

    hp_cols = [c for c in trials.columns if c.startswith("hp.")]
    for col in hp_cols:
        trials[col] = _maybe_numeric(trials[col])
    ds.trials = trials.reset_index(drop=True)
    ds.epochs = epochs[[*KEY, "epoch", *metric_cols]].reset_index(drop=True)

    srows = []
    for run in study_runs:
        tags = run.data.tags
        srows.append({"experiment": by_id[run.info.experiment_id],
                      "study_name": tags.get("optuna.study_name", run.info.run_name),
                      "study_run_id": run.info.run_id,
                      **{t: tags.get(t, "unknown") for t in
                         ("sampler", "pruner", "objective", "seed", "dataset", "space_sha")}})
    studies = pd.DataFrame(srows, columns=["experiment", "study_name", "study_run_id", "sampler",
                                           "pruner", "objective", "seed", "dataset", "space_sha"])
    keys = ds.trials[["experiment", "study"]].drop_duplicates()
    keys["study_name"] = keys["study"].str.split("/").str[-1]
    studies = keys.merge(studies.drop_duplicates(["experiment", "study_name"]),
                         on=["experiment", "study_name"], how="left").fillna("unknown")
    ds.spaces = _searched_spaces(client, study_runs, studies)
    ds.source["searched_spaces"] = len(ds.spaces)
    # Inactive conditional knobs carry their default, not a sample: blank them before any
    # hyperparameter is analysed, then count as varied only what still varies.
    ds.trials = blank_inactive(ds.trials, ds.spaces)
    ds.hyperparams = [c for c in searched_knobs(hp_cols, ds.spaces, set(ds.trials["study"]))
                      if ds.trials[c].nunique(dropna=True) > 1]
    ds.studies = studies.drop(columns=["study_name", "study_run_id"])

    locations = {(r.study, r.trial): (r.run_id, r.artifact_uri)
                 for r in ds.trials.itertuples(index=False)}

    def predictions(study: str, trial: str) -> dict[str, np.ndarray] | None:
        if (study, trial) not in locations:
            return None
        blob = _read_artifact(client, *locations[(study, trial)], "test_predictions.npz")
        if blob is None:
            return None
        with np.load(io.BytesIO(blob)) as npz:
            return {k: npz[k] for k in npz.files}

    ds.predictions = predictions
    return ds
