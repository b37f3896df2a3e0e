"""Read the per-image outcomes of trial runs (`outcomes.npz`) from an MLflow store.

Each trial run of a search logs, for every epoch, each validation and test image's
predicted class and the log-probability of its true class (format in `study/contract.py`).
What resamples images (the validation-noise bootstrap) reads them here: one artifact read
per run, in place for a local store and in parallel threads for a remote one, as
`analysis.sources` reads `history.csv`. An artifact that is missing or malformed leaves its
trial out with the reason; it never stops the read.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd

from analysis.store import read_artifact as _read_artifact
from study.contract import OUTCOMES_NPZ

if TYPE_CHECKING:
    from mlflow import MlflowClient

# Array name -> the dtype kinds it may have ("iu": integer, "f": floating) and its rank.
# Widths are not enforced (the writer's int16/uint8/float16 are a size choice, not meaning).
ARRAYS = {"val_labels": ("iu", 1), "val_predicted": ("iu", 2), "val_true_logprob": ("f", 2),
          "test_labels": ("iu", 1), "test_predicted": ("iu", 2), "test_true_logprob": ("f", 2),
          "penalty": ("f", 1)}
# float16 rounds ln p of a near-certain image to a hair above 0; anything larger is no log p.
LOGPROB_SLACK = 1e-3
RUN_COLUMNS = ("study", "trial", "run_id", "artifact_uri")


class Outcomes(NamedTuple):
    """One trial's per-image outcomes, as logged (compact dtypes kept)."""

    val_labels: np.ndarray         # (n_val,)
    val_predicted: np.ndarray      # (epochs, n_val)
    val_true_logprob: np.ndarray   # (epochs, n_val), natural log
    test_labels: np.ndarray        # (n_test,)
    test_predicted: np.ndarray     # (epochs, n_test)
    test_true_logprob: np.ndarray  # (epochs, n_test)
    penalty: np.ndarray            # (epochs,) val_loss - val_crossentropy

    @property
    def epochs(self) -> int:
        return int(self.penalty.shape[0])


class StudyOutcomes(NamedTuple):
    """The outcomes of one study's trials; `missing` maps a trial to why it has none."""

    study: str
    trials: dict[str, Outcomes]
    missing: dict[str, str]


class OutcomesProblem(ValueError):
    """An `outcomes.npz` that cannot be used; the message is the reason, one line."""


def parse_outcomes(blob: bytes) -> Outcomes:
    """The arrays of one `outcomes.npz`, checked for names, dtypes, shapes and values."""
    if not zipfile.is_zipfile(io.BytesIO(blob)):
        raise OutcomesProblem("not an .npz archive (no zip structure)")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            absent = [name for name in ARRAYS if name not in npz.files]
            if absent:
                raise OutcomesProblem(f"missing array(s) {', '.join(absent)}")
            arrays = {name: npz[name] for name in ARRAYS}
    except OutcomesProblem:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        # an object array needs pickle, refused: reading an artifact must not run code
        raise OutcomesProblem(f"not a readable .npz ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    for name, (kinds, rank) in ARRAYS.items():
        array = arrays[name]
        if array.dtype.kind not in kinds or array.ndim != rank:
            raise OutcomesProblem(f"{name} is {array.dtype} with shape {array.shape}; expected "
                                  f"{'integer' if kinds == 'iu' else 'float'} of rank {rank}")
    epochs = arrays["penalty"].shape[0]
    if epochs < 1:
        raise OutcomesProblem("no epochs (penalty is empty)")
    for split in ("val", "test"):
        _check_split(arrays, split, epochs)
    if not np.isfinite(arrays["penalty"]).all():
        raise OutcomesProblem("penalty has a non-finite value")
    return Outcomes(**arrays)


def _check_split(arrays: dict[str, np.ndarray], split: str, epochs: int) -> None:
    labels = arrays[f"{split}_labels"]
    expected = (epochs, labels.shape[0])
    for name in (f"{split}_predicted", f"{split}_true_logprob"):
        if arrays[name].shape != expected:
            raise OutcomesProblem(f"{name} has shape {arrays[name].shape}; expected {expected} "
                                  f"(epochs from penalty, images from {split}_labels)")
    if labels.shape[0] < 1:
        raise OutcomesProblem(f"{split}_labels is empty")
    if labels.min() < 0 or arrays[f"{split}_predicted"].min() < 0:
        raise OutcomesProblem(f"{split} has a negative class index")
    logprob = arrays[f"{split}_true_logprob"]
    if not np.isfinite(logprob).all() or logprob.max() > LOGPROB_SLACK:
        raise OutcomesProblem(f"{split}_true_logprob is not a finite log-probability (<= 0)")


def _check_runs(runs: pd.DataFrame) -> None:
    absent = [c for c in RUN_COLUMNS if c not in runs]
    if absent:
        raise ValueError(f"runs table lacks column(s) {', '.join(absent)}")


def _fetch(client: MlflowClient, run_id: str, artifact_uri: str) -> Outcomes | str:
    """A run's outcomes, or the reason it has none."""
    blob = _read_artifact(client, run_id, artifact_uri, OUTCOMES_NPZ)
    if blob is None:
        return f"no {OUTCOMES_NPZ} artifact"
    try:
        return parse_outcomes(blob)
    except OutcomesProblem as problem:
        return f"{OUTCOMES_NPZ}: {problem}"


def iter_study_outcomes(client: MlflowClient, runs: pd.DataFrame, *,
                        workers: int = 8) -> Iterator[StudyOutcomes]:
    """One `StudyOutcomes` per study of `runs` (columns study, trial, run_id, artifact_uri,
    e.g. `Dataset.trials` of an MLflow load), in order of first appearance.

    A study's artifacts are read together and yielded before the next study's are read,
    so memory holds one study's outcomes at a time (50 epochs of 10,000 + 10,000 images
    are 3 MB per trial). Threads only help remote stores; a local one is read in place.
    """
    _check_runs(runs)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for study, rows in runs.groupby("study", sort=False):
            fetched = pool.map(lambda row: _fetch(client, row.run_id, row.artifact_uri),
                               rows.itertuples(index=False))
            found: dict[str, Outcomes] = {}
            missing: dict[str, str] = {}
            for row, result in zip(rows.itertuples(index=False), fetched):
                if isinstance(result, str):
                    missing[str(row.trial)] = result
                else:
                    found[str(row.trial)] = result
            yield StudyOutcomes(str(study), found, missing)


def read_outcomes(client: MlflowClient, runs: pd.DataFrame, *,
                  workers: int = 8) -> list[StudyOutcomes]:
    """Every study's outcomes at once (`iter_study_outcomes`, collected)."""
    return list(iter_study_outcomes(client, runs, workers=workers))


def missing_table(studies: list[StudyOutcomes]) -> pd.DataFrame:
    """One row per trial without usable outcomes: study, trial, reason."""
    rows = [{"study": s.study, "trial": trial, "reason": reason}
            for s in studies for trial, reason in s.missing.items()]
    return pd.DataFrame(rows, columns=["study", "trial", "reason"])
