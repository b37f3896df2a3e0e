"""Selection rules: each picks one (trial, epoch) per study from the long epoch table.

Every rule takes the table of epochs (`study`, `trial`, `epoch`, metric columns; several
studies) and returns one row per study with the `trial` and `epoch` it would deploy.
Unless a rule says otherwise it selects over every epoch of every trial of the study.

Ties: a rule that ranks rows or trials takes the first in order: the trial that comes
first (column `order` when the table has it, the trial number or file order; else the
order trials first appear in the table), then the earliest epoch. That is Optuna's
`best_trial` (the first of equal values) and Keras's checkpointing (a later epoch must be
strictly better).

All rules run on one sorted layout of the table (segment reductions over NumPy arrays,
never a Python loop per study): at 6 M epoch rows, sorting once and reducing per rule is
what keeps the report within its time budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd

from analysis.early_stopping import Replay, replay, with_restore

# Per-epoch metric names from the search contract (study/contract.py lists the ones study/
# logs; the newer ones are written by the metrics of issue 9, older stores lack them).
VAL_LOSS, VAL_ACCURACY, VAL_CROSSENTROPY = "val_loss", "val_accuracy", "val_crossentropy"
VAL_CALIBRATED_NLL = "val_calibrated_nll"
VAL_BALANCED_ACCURACY, VAL_MACRO_F1 = "val_balanced_accuracy", "val_macro_f1"
TEST_ACCURACY, TEST_CROSSENTROPY = "test_accuracy", "test_crossentropy"
TEST_ECE, TEST_BRIER = "test_ece", "test_brier"
N_VAL = "n_val"  # validation images of the trial (MLflow: param data.n_val; CSV: --val-size)

# Per-epoch columns a CSV/Parquet table may carry under these exact names for the rules
# and their held-out cost (the loss, accuracy and test-accuracy columns have their flags).
TABLE_METRICS = {VAL_CROSSENTROPY: "loss", VAL_CALIBRATED_NLL: "loss",
                 VAL_BALANCED_ACCURACY: "fraction", VAL_MACRO_F1: "fraction",
                 TEST_CROSSENTROPY: "loss", TEST_ECE: "fraction", TEST_BRIER: "loss"}

LAST_K = 5                 # Ray Tune's `last-5-avg` scope
EARLY_STOPPING_PATIENCE = 5
EARLY_STOPPING_MIN_DELTA = 0.0
REFERENCE = "min_val_loss"  # the loss rule: every other rule is compared with it


class Rule(NamedTuple):
    name: str
    description: str
    needs: tuple[str, ...]
    pick: Callable[[pd.DataFrame], pd.DataFrame]


class Layout:
    """The epoch table sorted by (study, order, trial, epoch), with segment boundaries:
    `study_starts` over rows, `trial_starts` over rows and `trial_study` (the study of
    each trial segment). Columns are read in sorted order on demand and cached."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        study_codes, self.study_keys = pd.factorize(frame["study"])  # first-appearance order
        trial_codes = pd.factorize(study_codes.astype(np.int64) * (len(frame) + 1)
                                   + pd.factorize(frame["trial"])[0])[0]
        order = (pd.to_numeric(frame["order"], errors="coerce").to_numpy(float)
                 if "order" in frame else trial_codes.astype(float))
        epoch = frame["epoch"].to_numpy()
        keys = (epoch, trial_codes, order, study_codes)
        self.rows = None if is_sorted(keys) else np.lexsort(keys)
        self.study_codes = self._sorted(study_codes)
        trial_sorted = self._sorted(trial_codes)
        self.study_starts = _starts(self.study_codes)
        self.trial_starts = _starts(trial_sorted)
        self.trial_lengths = np.diff(np.r_[self.trial_starts, len(trial_sorted)])
        self.trial_study = self.study_codes[self.trial_starts]
        self.trial_study_starts = _starts(self.trial_study)
        self._columns: dict[str, np.ndarray] = {}
        self._curves: dict[str, np.ndarray] = {}
        self.replays: dict[tuple, Replay] = {}
        self._cells: tuple[np.ndarray, np.ndarray] | None = None
        self.row_study = self.study_codes  # the study of each sorted row

    def _sorted(self, values: np.ndarray) -> np.ndarray:
        return values if self.rows is None else values[self.rows]

    @property
    def n_studies(self) -> int:
        return len(self.study_keys)

    def column(self, name: str) -> np.ndarray:
        """A numeric column in sorted row order (NaN where missing or not a number)."""
        if name not in self._columns:
            self._columns[name] = self._sorted(_numbers(self.frame[name]))
        return self._columns[name]

    def labels(self, name: str) -> np.ndarray:
        return self._sorted(self.frame[name].to_numpy())

    def curves(self, name: str) -> np.ndarray:
        """trials × epochs matrix of a column, each trial's epochs left-aligned, NaN-padded.
        Stored epoch-major (a transposed view), so the replay reads each epoch contiguously."""
        if name not in self._curves:
            if self._cells is None:
                # int32 where the rows fit: the same positions at half the size, cached for
                # every curve while the rules run at the report's peak memory.
                index = np.int32 if len(self.study_codes) < 2**31 else np.int64
                trial = np.repeat(np.arange(len(self.trial_starts), dtype=index), self.trial_lengths)
                position = (np.arange(len(trial), dtype=index)
                            - np.repeat(self.trial_starts.astype(index), self.trial_lengths))
                self._cells = (position, trial)
            by_epoch = np.full((int(self.trial_lengths.max(initial=0)), len(self.trial_starts)), np.nan)
            by_epoch[self._cells] = self.column(name)
            self._curves[name] = by_epoch.T
        return self._curves[name]

    def trial_last_row(self) -> np.ndarray:
        return self.trial_starts + self.trial_lengths - 1


def _numbers(values: pd.Series) -> np.ndarray:
    """A column as floats (NaN where not a number), without a copy when it is numeric."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.to_numpy(dtype=float, na_value=np.nan)
    return pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def is_sorted(keys: tuple[np.ndarray, ...]) -> bool:
    """Whether rows are already in lexicographic order of `keys` (last key most significant):
    a table written study by study, trial by trial, needs no sort."""
    ahead = np.zeros(len(keys[0]) - 1 if len(keys[0]) else 0, dtype=bool)  # strictly ahead yet
    for key in reversed(keys):
        key = np.asarray(key)
        before, after = key[:-1], key[1:]
        if np.any(~ahead & (after < before)):
            return False
        ahead |= after > before
    return True


def _starts(codes: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.r_[len(codes) > 0, codes[1:] != codes[:-1]])


def first_best(values: np.ndarray, starts: np.ndarray, direction: str) -> np.ndarray:
    """Per segment (consecutive rows from each start), the position of the first row at the
    segment's minimum or maximum; −1 where every value is NaN."""
    n = np.diff(np.r_[starts, len(values)])
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    reduce = np.fmin if direction == "min" else np.fmax
    optimum = reduce.reduceat(values, starts)
    return first_true(values == np.repeat(optimum, n), starts)


def first_true(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per segment, the position of its first True; −1 where it has none. The True rows
    are few (the optima and their ties), so finding each segment's first among them is a
    binary search, not another pass over every row."""
    hits = np.flatnonzero(mask)
    ends = np.r_[starts[1:], len(mask)]
    at = np.searchsorted(hits, starts)
    first = hits[np.minimum(at, max(len(hits) - 1, 0))] if len(hits) else np.full(len(starts), -1)
    return np.where((at < len(hits)) & (first < ends), first, -1)


# ------------------------------------------------------------------ the rule kinds

class Picker:
    """A rule's `pick`: callable on a table (the Rule interface), or on a `Layout` shared by
    many rules (`positions`: one sorted-row position per study, −1 where it picks nothing)."""

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame:
        layout = Layout(frame)
        return picks_frame(layout, self.positions(layout))

    def positions(self, layout: Layout) -> np.ndarray:
        raise NotImplementedError


def picks_frame(layout: Layout, positions: np.ndarray) -> pd.DataFrame:
    """One row per study that has a pick: `study`, `trial`, `epoch`."""
    chosen = positions[positions >= 0]
    return pd.DataFrame({"study": layout.labels("study")[chosen],
                         "trial": layout.labels("trial")[chosen],
                         "epoch": layout.labels("epoch")[chosen]})


class BestEpoch(Picker):
    """The first epoch (of any trial) at the study's best `metric`."""

    def __init__(self, metric: str, direction: str) -> None:
        self.metric, self.direction = metric, direction

    def positions(self, layout: Layout) -> np.ndarray:
        return first_best(layout.column(self.metric), layout.study_starts, self.direction)


class AccuracyThenLoss(Picker):
    """Among the epochs whose validation accuracy is at the study's maximum, or within one
    binomial standard error sqrt(p(1 − p)/n_val) of it (`within_noise`), the first with the
    lowest validation loss."""

    def __init__(self, within_noise: bool) -> None:
        self.within_noise = within_noise

    def positions(self, layout: Layout) -> np.ndarray:
        accuracy, loss = layout.column(VAL_ACCURACY), layout.column(VAL_LOSS)
        starts = layout.study_starts
        n = np.diff(np.r_[starts, len(accuracy)])
        if not len(accuracy):
            return np.zeros(0, dtype=np.int64)
        best = np.fmax.reduceat(accuracy, starts)
        floor = best
        if self.within_noise:
            # n_val of the study's best epoch; a tiny tolerance keeps an epoch exactly one
            # SE below the best (k/n accuracies) inside despite rounding.
            n_val = layout.column(N_VAL)[np.maximum(first_best(accuracy, starts, "max"), 0)]
            floor = best - np.sqrt(best * (1 - best) / n_val) - 1e-12
        # The floor is per study, spread over its rows only for the comparison: at 6 M rows
        # each row-length temporary is 48 MB, and the rules run at the report's peak memory.
        candidate_loss = np.where(accuracy >= np.repeat(floor, n), loss, np.nan)
        return first_best(candidate_loss, starts, "min")


class LastKAverage(Picker):
    """Ray Tune's `last-k-avg` scope: a trial's score is the mean of `metric` over its last
    k epochs (the non-missing ones among them; all of them if it has fewer); the first trial
    with the best score deploys its last epoch."""

    def __init__(self, metric: str, direction: str, k: int = LAST_K) -> None:
        self.metric, self.direction, self.k = metric, direction, k

    def positions(self, layout: Layout) -> np.ndarray:
        curves, lengths = layout.curves(self.metric), layout.trial_lengths
        if not len(lengths):
            return np.zeros(0, dtype=np.int64)
        offsets = lengths[:, None] - self.k + np.arange(self.k)[None, :]
        window = np.take_along_axis(curves, np.maximum(offsets, 0), axis=1)
        present = (offsets >= 0) & ~np.isnan(window)
        counts = present.sum(axis=1)
        totals = np.where(present, window, 0.0).sum(axis=1)
        score = np.divide(totals, counts, out=np.full(len(counts), np.nan), where=counts > 0)
        return _trial_pick(layout, score, self.direction, layout.trial_last_row())


class EarlyStopping(Picker):
    """Keras's EarlyStopping replayed on each trial (analysis/early_stopping.py); the study
    deploys the first trial whose monitor is best at its deployed epoch."""

    def __init__(self, monitor: str, direction: str, patience: int, min_delta: float,
                 restore_best_weights: bool) -> None:
        self.monitor, self.direction, self.patience = monitor, direction, patience
        self.min_delta, self.restore_best_weights = min_delta, restore_best_weights

    def replayed(self, layout: Layout) -> Replay:
        """One replay per monitor and setting, shared by the rule with and without
        restore_best_weights (only the deployed epoch differs) and by its statistics."""
        key = (self.monitor, self.direction, self.patience, self.min_delta)
        if key not in layout.replays:
            layout.replays[key] = replay(layout.curves(self.monitor), layout.trial_lengths,
                                         mode=self.direction, patience=self.patience,
                                         min_delta=self.min_delta)
        result = layout.replays[key]
        return with_restore(result) if self.restore_best_weights else result

    def positions(self, layout: Layout) -> np.ndarray:
        if not len(layout.trial_starts):
            return np.zeros(0, dtype=np.int64)
        deployed_row = layout.trial_starts + self.replayed(layout).deployed
        return _trial_pick(layout, layout.column(self.monitor)[deployed_row], self.direction,
                           deployed_row)


def _trial_pick(layout: Layout, score: np.ndarray, direction: str,
                deployed_row: np.ndarray) -> np.ndarray:
    """Per study, the deployed row of the first trial (in order) with the best score."""
    best_trial = first_best(score, layout.trial_study_starts, direction)
    return np.where(best_trial >= 0, deployed_row[np.maximum(best_trial, 0)], -1)


# ------------------------------------------------------------------ the rules

def early_stopping_rule(monitor: str, direction: str, restore: bool,
                        patience: int = EARLY_STOPPING_PATIENCE,
                        min_delta: float = EARLY_STOPPING_MIN_DELTA) -> Rule:
    weights = "restore_best_weights" if restore else "keep the last weights"
    return Rule(
        name=f"early_stopping_{monitor}_p{patience}" + ("_restore" if restore else ""),
        description=(f"Keras EarlyStopping on {monitor} (patience {patience}, min_delta "
                     f"{min_delta:g}, {weights}) replayed per trial; the trial with the best "
                     f"{monitor} at its deployed epoch"),
        needs=(monitor, "epoch"),
        pick=EarlyStopping(monitor, direction, patience, min_delta, restore))


ALL_RULES: tuple[Rule, ...] = (
    Rule(REFERENCE, "minimal val_loss over every epoch of every trial (the loss rule)",
         (VAL_LOSS,), BestEpoch(VAL_LOSS, "min")),
    Rule("max_val_accuracy", "maximal val_accuracy over every epoch of every trial "
         "(the accuracy rule)", (VAL_ACCURACY,), BestEpoch(VAL_ACCURACY, "max")),
    Rule("min_val_crossentropy", "minimal val_crossentropy over every epoch of every trial",
         (VAL_CROSSENTROPY,), BestEpoch(VAL_CROSSENTROPY, "min")),
    Rule("min_val_calibrated_nll", "minimal temperature-scaled validation NLL "
         "(Guo et al. 2017)", (VAL_CALIBRATED_NLL,), BestEpoch(VAL_CALIBRATED_NLL, "min")),
    Rule("max_val_balanced_accuracy", "maximal validation balanced accuracy (mean recall "
         "over classes)", (VAL_BALANCED_ACCURACY,), BestEpoch(VAL_BALANCED_ACCURACY, "max")),
    Rule("max_val_macro_f1", "maximal validation macro-F1", (VAL_MACRO_F1,),
         BestEpoch(VAL_MACRO_F1, "max")),
    Rule(f"last{LAST_K}_avg_val_loss", f"the trial with the lowest mean val_loss over its "
         f"last {LAST_K} epochs (Ray Tune last-{LAST_K}-avg), deployed at its last epoch",
         (VAL_LOSS, "epoch"), LastKAverage(VAL_LOSS, "min")),
    Rule(f"last{LAST_K}_avg_val_accuracy", f"the trial with the highest mean val_accuracy "
         f"over its last {LAST_K} epochs (Ray Tune last-{LAST_K}-avg), deployed at its last "
         "epoch", (VAL_ACCURACY, "epoch"), LastKAverage(VAL_ACCURACY, "max")),
    Rule("accuracy_within_noise_then_loss", "among epochs whose val_accuracy is within one "
         "binomial SE sqrt(p(1-p)/n_val) of the best, the lowest val_loss",
         (VAL_ACCURACY, VAL_LOSS, N_VAL), AccuracyThenLoss(within_noise=True)),
    Rule("max_val_accuracy_then_min_val_loss", "maximal val_accuracy, ties broken by "
         "minimal val_loss", (VAL_ACCURACY, VAL_LOSS), AccuracyThenLoss(within_noise=False)),
    *(early_stopping_rule(monitor, direction, restore)
      for monitor, direction in ((VAL_LOSS, "min"), (VAL_ACCURACY, "max"),
                                 (VAL_CALIBRATED_NLL, "min"))
      for restore in (False, True)),
)


def usable_inputs(frame: pd.DataFrame, layout: Layout | None = None) -> frozenset[str]:
    """The inputs rules may need that `frame` has: each column with a value, `epoch` when
    some trial has two or more epochs (curves), `n_val` when some value is positive."""
    found = {c for c in frame.columns if c not in ("study", "trial", "epoch")
             and not np.isnan(_numbers(frame[c])).all()}
    if N_VAL in found and not (_numbers(frame[N_VAL]) > 0).any():
        found.discard(N_VAL)
    layout = layout if layout is not None else Layout(frame)
    if "epoch" in frame and layout.trial_lengths.max(initial=0) > 1:
        found.add("epoch")
    return frozenset(found)


def unavailable(rule: Rule, inputs: frozenset[str]) -> str | None:
    """Why `rule` cannot pick from a table with `inputs` (`usable_inputs`), or None."""
    for column in rule.needs:
        if column in inputs:
            continue
        if column == "epoch":
            return "needs curves: the input has one row per trial, no epochs"
        if column == N_VAL:
            return ("needs the number of validation images: param data.n_val (MLflow) or "
                    "--val-size (CSV)")
        return f"needs column {column}, which the input does not have"
    return None


def pick_all(frame: pd.DataFrame, rules: tuple[Rule, ...] = ALL_RULES
             ) -> tuple[Layout, dict[str, np.ndarray], dict[str, str]]:
    """Every available rule on one layout: (layout, rule name -> sorted-row position per
    study (−1: no pick), rule name -> why it is not available)."""
    layout = Layout(frame)
    inputs = usable_inputs(frame, layout)
    picked, missing = {}, {}
    for rule in rules:
        reason = unavailable(rule, inputs)
        if reason:
            missing[rule.name] = reason
        elif isinstance(rule.pick, Picker):
            picked[rule.name] = rule.pick.positions(layout)
        else:  # a rule from elsewhere: its own pick, mapped onto the layout's rows
            picked[rule.name] = _positions_of(layout, rule.pick(frame))
    return layout, picked, missing


def _positions_of(layout: Layout, chosen: pd.DataFrame) -> np.ndarray:
    keys = pd.MultiIndex.from_arrays([layout.labels("study"), layout.labels("trial"),
                                      layout.labels("epoch")])
    rows = keys.get_indexer(pd.MultiIndex.from_frame(chosen[["study", "trial", "epoch"]]))
    out = np.full(layout.n_studies, -1, dtype=np.int64)
    found = rows >= 0
    out[layout.study_codes[rows[found]]] = rows[found]
    return out
