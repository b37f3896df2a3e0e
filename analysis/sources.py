"""Load trials into tidy tables, from MLflow (the search contract) or from a CSV/Parquet file.

Everything downstream sees the same `Dataset`: canonical metric names (`val_loss`,
`val_accuracy`, `test_accuracy`, ...), one `study` key per study and an `order` column
that carries the tie rule (trial number in MLflow, file order in CSV mode).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import checks, store
from analysis.boundary import blank_inactive
from analysis.errors import AnalysisInputError
from study import contract
from study.contract import (CLASS_IMBALANCE, EPOCH_BUDGET, EPOCH_METRICS, HISTORY_CSV, MACHINE_PARAMS,
                            ROLE_STUDY, ROLE_TRIAL, RUN_ROLE, STUDY_NAME, STUDY_RUN_TAGS, TRIAL_NUMBER,
                            TRIAL_STATE, VAL_IMAGES, VAL_SIZE)
from study.secrets import mask_secrets

KEY = ["study", "trial"]
CSV_CHUNK_ROWS = 1_000_000
# Kept columns that are not hyperparameters, so `hyperparams` never picks them up.
META_COLUMNS = {"experiment", "study", "trial", "order", "state", "budget", "class_imbalance",
                "run_id", "n_val"}

# Undotted params every trial run carries besides its knobs: the search's config
# (`SearchConfig.flat()`) and a worker's index. Written out rather than imported, so a
# setting the config drops later still counts as one in older stores; a test keeps the
# list a superset of today's config.
RUN_SETTINGS = frozenset({
    "space_file", "trials", "timeout", "experiment", "study_name", "seed", "replicates",
    "sampler", "pruner", "objective", "storage", "tracking_uri", "workers",
    "max_consecutive_failures", "heartbeat_interval", "grace_period", "max_retry", "space_name",
    "worker_index", "trial_artifacts", "baseline", *MACHINE_PARAMS})

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
    # A shallow copy: under pandas' copy-on-write the converted columns are new and the rest
    # shared, where a deep copy of a 6 M-row table cost a gigabyte at its peak. A column
    # that is numeric already is kept: to_numeric would return the same values as a copy.
    out = frame.copy(deep=False)
    for col in columns:
        if col in out and not _numpy_numeric(out[col]):
            out[col] = pd.to_numeric(out[col], errors="coerce")
    return out


def _numpy_numeric(values: pd.Series) -> bool:
    return isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf"


def _maybe_numeric(values: pd.Series) -> pd.Series:
    """Params arrive as strings; numbers become floats, anything else stays categorical."""
    converted = pd.to_numeric(values, errors="coerce")
    if converted[values.notna()].notna().all():
        return converted
    return values.astype("string")


# --------------------------------------------------------------------------- CSV / Parquet

def _check_table(path: Path, raw: pd.DataFrame, named: dict[str, str | None], epochs: int | None) -> None:
    """Bad input of a table as a whole: named columns it lacks, no rows, an epoch budget
    under 1, accuracies in percent."""
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


def _as_one_pool(raw: pd.DataFrame, study_col: str, trial_col: str) -> pd.DataFrame:
    """The studies as one study, each trial named `study/trial`."""
    pooled = raw[study_col].astype(str)
    raw[trial_col] = pooled + "/" + _sortable_trial_ids(raw[trial_col])
    raw[study_col] = f"one pool of {pooled.nunique()} studies"
    return raw


def _sortable_trial_ids(trials: pd.Series) -> pd.Series:
    """Trial ids as text that sorts as they count: integer ids zero-padded to one width
    ("s/007" before "s/010"), so a pooled table lists each study's trials in their own order,
    the order a one-study table has (the bootstrap draws rows by position)."""
    text = trials.astype(str)
    if text.str.fullmatch(r"\d+").all():
        return text.str.zfill(int(text.str.len().max()))
    return text


def load_table(path: Path, *, study_col: str, trial_col: str, loss_col: str, accuracy_col: str,
               test_accuracy_col: str | None = None, epoch_col: str | None = None,
               explain_cols: Sequence[str] = (), include_pruned: bool = False,
               state_col: str | None = None, epochs: int | None = None,
               crossentropy_col: str | None = None, one_pool: bool = False) -> Dataset:
    """Read a generic table of trials (or of epochs, with `epoch_col`).

    `one_pool`: the table's studies are segments of one pool of i.i.d. trials (a campaign
    continued on several stores, `analysis.publish`), read as one study whose trials are
    named `study/trial`.

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
    _check_table(path, raw, named, epochs)

    # Metric columns the selection rules read, carried under their contract names.
    from analysis.rules import TABLE_METRICS
    # --crossentropy-col names the val_crossentropy column; a column of that name is then not
    # a second source for it.
    extras = [c for c in TABLE_METRICS if c in raw.columns and c not in named.values()
              and not (crossentropy_col and c == "val_crossentropy")]
    experiment = path.stem
    ds = Dataset(trials=pd.DataFrame(), epochs=None, studies=pd.DataFrame(), loss_metric=loss_col,
                 experiments=[experiment], explanatory=[f"x.{c}" for c in explain_cols],
                 source={"kind": "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv",
                         "name": path.name, "sha256": _sha256(path), "rows": int(len(raw)),
                         "columns": {k.lstrip("-"): v for k, v in named.items() if v}})
    raw = _without_blank_ids(ds, raw, study_col, trial_col)
    if one_pool:
        raw = _as_one_pool(raw, study_col, trial_col)
    table = _tidy(raw, experiment, study_col, trial_col, state_col,
                  {loss_col: "val_loss", accuracy_col: "val_accuracy",
                   test_accuracy_col: "test_accuracy", epoch_col: "epoch",
                   **{c: c for c in extras}, crossentropy_col: "val_crossentropy"}, explain_cols)
    # The table holds what it needs; without the raw frame alive, blanking a value writes in
    # place instead of copying its column (copy-on-write copies only shared buffers).
    del raw
    table = _filter_states(ds, table, include_pruned, unit="rows")
    table = _usable_values(ds, table, named)
    table = _usable_extras(ds, table, [*extras, *(["val_crossentropy"] if crossentropy_col else [])])
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


def arrow_allocates_with_malloc() -> None:
    """Arrow (which holds pandas' string columns) allocates with the C library's malloc from
    now on, which hands large freed blocks back to the system, instead of its bundled
    allocator, which keeps them for Arrow's own next allocations: NumPy cannot reuse them,
    and at 6 M rows they added 100-130 MB to the report's peak. Process-wide, so the
    command calls it, not the library."""
    try:
        import pyarrow
    except ImportError:  # pandas then keeps strings as Python objects, not in Arrow
        return
    pyarrow.set_memory_pool(pyarrow.system_memory_pool())


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise AnalysisInputError(f"{path}: no such file")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            # Each Arrow column is freed once converted, so the Arrow table and the frame
            # are not both held whole (the same frame; its columns are just not consolidated).
            return pd.read_parquet(path, to_pandas_kwargs={"self_destruct": True,
                                                           "split_blocks": True})
        # Read in chunks and joined: the parser's own buffers for one 6 M-row read peaked at
        # 2.3x the table they build (1.7 GB for 0.7 GB), the chunks at 1.8x.
        return pd.concat(pd.read_csv(path, chunksize=CSV_CHUNK_ROWS), ignore_index=True)
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
    blank = blank_study | blank_trial
    return raw[~blank] if blank.any() else raw  # a boolean selection copies every column


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
    keep = ~bad
    # Impossible values would decide picks silently (an accuracy of 1.5 always wins).
    checked = [(f"impossible value: {loss_col} negative or infinite", "val_loss", checks.impossible_loss),
               (f"impossible value: {accuracy_col} outside [0, 1]", "val_accuracy",
                checks.impossible_accuracy)]
    if epoch_col:
        checked.append((f"epoch ({epoch_col}) not a whole number >= 0", "epoch", checks.not_whole_epochs))
    for reason, column, is_bad in checked:
        # Checked one after another, so a row is listed under its first reason only; the
        # rows are dropped once, at the end (each boolean selection copies every column).
        mask = is_bad(table[column]) & keep
        ds.exclude("rows", reason, int(mask.sum()))
        keep &= ~mask
    if not keep.all():  # a boolean selection copies every column, even one that keeps all
        table = table[keep]
    if "test_accuracy" in table:
        outside = checks.impossible_accuracy(table["test_accuracy"])
        ds.exclude(f"values of {named['--test-accuracy-col']}", "outside [0, 1]: left out of the "
                   "statistics that use this column (the rows stay)", int(outside.sum()))
        _blank(table, outside, "test_accuracy")
    # Kept, but said: a missing test accuracy or explanatory value shrinks the cost and
    # explanation statistics, never silently.
    flags = [("test_accuracy", named["--test-accuracy-col"]),
             *((c, c[2:]) for c in ds.explanatory)]
    for col, flag in flags:
        if flag and col in table:
            ds.exclude(f"values of {flag}", "non-numeric or NaN: left out of the statistics that use "
                       "this column (the rows stay)", int(table[col].isna().sum()))
    return table


def _usable_extras(ds: Dataset, table: pd.DataFrame, extras: Sequence[str]) -> pd.DataFrame:
    """The rules' extra metric columns: numeric, impossible values blanked (rows kept) and
    listed, as for the test accuracy."""
    from analysis.rules import TABLE_METRICS

    table = _numeric(table, extras)
    for column in extras:
        impossible = (checks.impossible_accuracy if TABLE_METRICS[column] == "fraction"
                      else checks.impossible_loss)(table[column])
        ds.exclude(f"values of {column}", "impossible (outside [0, 1], or a negative or infinite "
                   "loss): left out of the rules that use this column (the rows stay)",
                   int(impossible.sum()))
        _blank(table, impossible, column)
    return table


def _blank(table: pd.DataFrame, rows: pd.Series, column: str) -> None:
    """NaN in `column` at `rows`, in place. Only where a row is to be blanked: the caller's
    frame still shares the column, so copy-on-write copies it on any write, even one that
    changes nothing (7 rule columns of 6 M rows: 340 MB at the load's peak)."""
    if rows.any():
        table.loc[rows, column] = np.nan


def _epoch_level(ds: Dataset, table: pd.DataFrame, epochs: int | None, path: Path) -> None:
    """Epochs counted from 0 and each trial's budget: `--epochs`, else its study's largest
    epoch count. A table whose epochs start at 1 is shifted, so positions in the budget
    and the budget itself mean the same for 0- and 1-based logs."""
    table = table.copy(deep=False)  # copy-on-write: only the epoch column is rewritten
    base = int(table["epoch"].min())
    table["epoch"] = table["epoch"].astype(int) - (1 if base == 1 else 0)
    ds.source["epoch_base"] = 1 if base == 1 else 0
    dup = table.duplicated([*KEY, "epoch"])
    ds.exclude("rows", "duplicate (study, trial, epoch); the first is kept", int(dup.sum()))
    if dup.any():  # a boolean selection copies every column; most tables have no duplicate
        table = table[~dup]
    if epochs is not None and table["epoch"].max() >= epochs:
        beyond = table.loc[table["epoch"].idxmax()]
        raise AnalysisInputError(
            f"{path}: --epochs {epochs}, but study {beyond['study']!r} trial {beyond['trial']!r} "
            f"has epoch {int(beyond['epoch']) + ds.source['epoch_base']}")
    from analysis.rules import TABLE_METRICS
    ds.epochs = table[[*KEY, "epoch", "val_loss", "val_accuracy"]
                      + [c for c in ("test_accuracy", *TABLE_METRICS) if c in table]
                      ].reset_index(drop=True)
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
    each trial's `history.csv`. Reads (`analysis.store`), then cleans (pure, below)."""
    client = store.open_store(tracking_uri)
    runs = store.read_runs(client, experiments, tracking_uri)
    ds = Dataset(trials=pd.DataFrame(), epochs=None, studies=pd.DataFrame(), loss_metric="val_loss",
                 experiments=list(experiments),
                 # summary.json is written to disk and logged as an artifact: no password.
                 source={"kind": "mlflow", "tracking_uri": mask_secrets(tracking_uri),
                         "experiments": dict(runs.experiments),
                         "trial_runs": int((runs.runs["role"] == ROLE_TRIAL).sum()),
                         "study_runs": int((runs.runs["role"] == ROLE_STUDY).sum())})
    trials = trial_table(ds, runs, include_pruned, tracking_uri)
    histories = store.read_histories(client, trials[["run_id", "artifact_uri"]])
    add_epochs(ds, trials, histories)
    study_runs = runs.runs[runs.runs["role"] == ROLE_STUDY]
    add_studies(ds, runs, store.read_spaces(client, study_runs))
    ds.predictions = store.predictions_reader(client, ds.trials)
    return ds


def _wide(long: pd.DataFrame, run_ids: pd.Series, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """run_id x key table of a long (run_id, key, value) one, one row per run in `run_ids`;
    without `keys`, every key, in the order the runs (in `run_ids` order) logged them."""
    if keys is None:
        position = pd.Series(np.arange(len(run_ids)), index=run_ids.to_numpy())
        logged = long.assign(_run=long["run_id"].map(position)).dropna(subset="_run")
        keys = pd.unique(logged.sort_values("_run", kind="stable")["key"])
    long = long[long["key"].isin(keys)]
    wide = long.pivot(index="run_id", columns="key", values="value")
    return wide.reindex(index=run_ids.to_numpy(), columns=list(keys)).reset_index(drop=True)


def _trial_rows(runs: store.StoreRuns) -> pd.DataFrame:
    """One row per trial run: what identifies it, its budget, and its sampled hyperparameters
    (the undotted params; dotted ones are fixed config, and the search's own settings say
    how it ran, not what)."""
    trial_runs = runs.runs[runs.runs["role"] == ROLE_TRIAL].reset_index(drop=True)
    by_id = {v: k for k, v in runs.experiments.items()}
    tags = _wide(runs.tags, trial_runs["run_id"], [STUDY_NAME, contract.PARENT_RUN_ID, TRIAL_NUMBER, TRIAL_STATE])
    params = runs.params[runs.params["run_id"].isin(trial_runs["run_id"])]
    knobs = params[~params["key"].str.contains(".", regex=False) & ~params["key"].isin(RUN_SETTINGS)]
    hp = _wide(knobs.assign(key="hp." + knobs["key"]), trial_runs["run_id"])
    fixed = _wide(params, trial_runs["run_id"], [EPOCH_BUDGET, CLASS_IMBALANCE, VAL_IMAGES, VAL_SIZE])
    rows = pd.DataFrame({
        "experiment": trial_runs["experiment_id"].map(by_id),
        "study": tags[STUDY_NAME].where(tags[STUDY_NAME].fillna("") != "",
                                        tags[contract.PARENT_RUN_ID].fillna("?")),
        "trial": tags[TRIAL_NUMBER].fillna(""), "state": tags[TRIAL_STATE],
        "run_id": trial_runs["run_id"], "artifact_uri": trial_runs["artifact_uri"],
        "budget": fixed[EPOCH_BUDGET], "class_imbalance": fixed[CLASS_IMBALANCE],
        # validation images, for the rule "accuracy within noise" (older stores: the
        # configured data.val_size, which the split always honours)
        "n_val": fixed[VAL_IMAGES].fillna(fixed[VAL_SIZE])})
    return pd.concat([rows, hp], axis=1)


def trial_table(ds: Dataset, runs: store.StoreRuns, include_pruned: bool, tracking_uri: str) -> pd.DataFrame:
    """The analysable trial runs: finished in a counted state, with an integer trial number;
    the rest listed in `ds.exclusions`. A study name reused in two experiments would merge
    two studies, so such names are kept apart by their experiment."""
    trials = _trial_rows(runs)
    empty = set(runs.experiments) - set(trials["experiment"])
    if empty:
        raise AnalysisInputError(f"experiment {sorted(empty)[0]!r} has no trial runs "
                                 f"(tag {RUN_ROLE}={ROLE_TRIAL}) in {tracking_uri}")
    per_name = trials.groupby("study")["experiment"].nunique()
    clash = trials["study"].isin(per_name[per_name > 1].index)
    trials.loc[clash, "study"] = trials.loc[clash, "experiment"] + "/" + trials.loc[clash, "study"]
    trials = _numeric(trials, ["budget", "class_imbalance", "n_val"])
    trials["order"] = pd.to_numeric(trials["trial"], errors="coerce")
    trials = _filter_states(ds, trials, include_pruned, unit="trials")
    bad_number = trials["order"].isna()
    ds.exclude("trials", f"tag {TRIAL_NUMBER} missing or not an integer", int(bad_number.sum()))
    trials = trials[~bad_number].copy()
    trials["order"] = trials["order"].astype(int)
    trials["trial"] = trials["order"].astype(str)
    return trials


def add_epochs(ds: Dataset, trials: pd.DataFrame, histories: pd.DataFrame) -> None:
    """`ds.epochs` from the trials' histories (long, with `run_id`) and `ds.trials` from the
    trials that have usable epochs; a trial without its budget param falls back to the
    epochs it trained."""
    has_history = trials["run_id"].isin(histories["run_id"].unique())
    ds.exclude("trials", f"no usable {HISTORY_CSV} artifact", int((~has_history).sum()))
    trials = trials[has_history]
    if trials.empty:
        raise AnalysisInputError(f"no usable trials in {', '.join(ds.experiments)} "
                                 f"(see exclusions: {ds.exclusions})")
    keys = trials.set_index("run_id")[KEY]
    epochs = histories[histories["run_id"].isin(keys.index)]
    epochs = pd.concat([keys.loc[epochs["run_id"]].reset_index(drop=True),
                        epochs.drop(columns="run_id").reset_index(drop=True)], axis=1)
    metric_cols = [c for c in EPOCH_METRICS if c in epochs]
    epochs = _numeric(epochs, ["epoch", *metric_cols])
    bad = epochs[["epoch", "val_loss", "val_accuracy"]].isna().any(axis=1)
    ds.exclude("epochs", "non-numeric or NaN epoch, val_loss or val_accuracy", int(bad.sum()))
    epochs = epochs[~bad]
    epochs["epoch"] = epochs["epoch"].astype(int)
    trials = trials[trials.set_index(KEY).index.isin(epochs.set_index(KEY).index.unique())]
    trained = epochs.groupby(KEY)["epoch"].max().rename("trained") + 1
    trials = trials.join(trained, on=KEY)
    trials["budget"] = trials["budget"].fillna(trials["trained"])
    trials = trials.drop(columns=["trained"])
    for col in (c for c in trials.columns if c.startswith("hp.")):
        trials[col] = _maybe_numeric(trials[col])
    ds.trials = trials.reset_index(drop=True)
    ds.epochs = epochs[[*KEY, "epoch", *metric_cols]].reset_index(drop=True)


def add_studies(ds: Dataset, runs: store.StoreRuns, spaces: dict[str, dict]) -> None:
    """`ds.studies` (each analysed study's tags from its study run), `ds.spaces` (searched
    spaces by study, from `spaces` by study run id) and the hyperparameters that are axes."""
    study_runs = runs.runs[runs.runs["role"] == ROLE_STUDY].reset_index(drop=True)
    tags = _wide(runs.tags, study_runs["run_id"], [STUDY_NAME, *STUDY_RUN_TAGS])
    by_id = {v: k for k, v in runs.experiments.items()}
    studies = pd.DataFrame({"experiment": study_runs["experiment_id"].map(by_id),
                            "study_name": tags[STUDY_NAME].fillna(study_runs["run_name"]),
                            "study_run_id": study_runs["run_id"],
                            **{t: tags[t].fillna("unknown") for t in STUDY_RUN_TAGS}})
    keys = ds.trials[["experiment", "study"]].drop_duplicates()
    keys["study_name"] = keys["study"].str.split("/").str[-1]
    studies = keys.merge(studies.drop_duplicates(["experiment", "study_name"]),
                         on=["experiment", "study_name"], how="left").fillna("unknown")
    ds.spaces = {r.study: spaces[r.study_run_id] for r in studies.itertuples(index=False)
                 if r.study_run_id in spaces}
    ds.source["searched_spaces"] = len(ds.spaces)
    # Inactive conditional knobs carry their default, not a sample: blank them before any
    # hyperparameter is analysed, then count as varied only what still varies.
    ds.trials = blank_inactive(ds.trials, ds.spaces)
    hp_cols = [c for c in ds.trials.columns if c.startswith("hp.")]
    ds.hyperparams = [c for c in searched_knobs(hp_cols, ds.spaces, set(ds.trials["study"]))
                      if ds.trials[c].nunique(dropna=True) > 1]
    ds.studies = studies.drop(columns=["study_name", "study_run_id"])
