"""Keras's `EarlyStopping`, replayed on logged curves (pure NumPy, many trials at once).

A search trains every trial to its budget and logs each epoch, so what early stopping
*would* have done is a replay of the callback on the logged values. This is Keras 3's
`keras.callbacks.EarlyStopping` with `baseline=None` and `start_from_epoch=0`:

- the first monitored epoch is always an improvement (`best` starts as None);
- an epoch improves when `current - min_delta` beats `best` (`min` mode: `current +
  |min_delta| < best`; `max` mode: `current - |min_delta| > best`), compared as float32,
  because Keras compares Python floats with `keras.ops.less`/`greater`, which cast them;
- `wait` counts epochs since the last improvement, and training stops at the first epoch
  that is not an improvement with `wait >= patience` and epoch > 0;
- with `restore_best_weights` the fit ends with the weights of the last improving epoch
  (Keras 3 restores them at the end of training, whether it stopped early or not);
  without it, with the weights of the stop epoch (or the last epoch, if it never stopped).

A missing (NaN) value is an epoch without the monitor, which Keras skips without counting
it (`current is None`). Curves are rows of a matrix padded with NaN past their length.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MODES = ("min", "max")


class Replay(NamedTuple):
    """Per curve, positions (0-based epoch indices into the curve), −1 where none."""
    stop: np.ndarray      # the epoch at which the callback stops training; −1: never stopped
    best: np.ndarray      # Keras's `best_epoch`: the last improving epoch; −1: nothing monitored
    deployed: np.ndarray  # the epoch whose weights the fit ends with
    length: np.ndarray    # epochs logged
    epochs_saved: np.ndarray  # epochs after the stop epoch that would not have been trained


def replay(values: np.ndarray, lengths: np.ndarray, *, mode: str, patience: int,
           min_delta: float = 0.0, restore_best_weights: bool = False) -> Replay:
    """Replay the callback on each row of `values` (curves × epochs, epoch i in column i,
    NaN-padded beyond each curve's `lengths`). One pass over the epoch axis, vectorised
    over curves: a study table of 300,000 curves takes well under a second."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError("values must be a curves × epochs matrix")
    lengths = np.asarray(lengths, dtype=np.int64)
    n_curves, width = values.shape
    # Keras negates min_delta in min mode, then tests `current - min_delta` against best.
    shift = abs(min_delta) if mode == "min" else -abs(min_delta)
    beats = np.less if mode == "min" else np.greater
    # Epoch-major, so each epoch's column is contiguous (free when `values` is a transposed
    # epoch-major matrix); float32, as Keras compares.
    by_epoch = np.ascontiguousarray(values.T)
    present = ~np.isnan(by_epoch) & (np.arange(width)[:, None] < lengths[None, :])
    shifted = (by_epoch + shift).astype(np.float32)
    current32 = by_epoch.astype(np.float32)
    best_value = np.zeros(n_curves, dtype=np.float32)
    has_best = np.zeros(n_curves, dtype=bool)
    best = np.full(n_curves, -1, dtype=np.int64)
    stop = np.full(n_curves, -1, dtype=np.int64)
    wait = np.zeros(n_curves, dtype=np.int64)
    running = np.ones(n_curves, dtype=bool)
    for epoch in range(width):
        monitored = running & present[epoch]
        wait += monitored
        improves = monitored & (~has_best | beats(shifted[epoch], best_value))
        np.copyto(best_value, current32[epoch], where=improves)
        has_best |= improves
        best[improves] = epoch
        wait[improves] = 0
        stops = monitored & ~improves & (wait >= patience) & (epoch > 0)
        stop[stops] = epoch
        running &= ~stops
    last = lengths - 1
    ended = np.where(stop >= 0, stop, last)
    saved = np.where(stop >= 0, last - stop, 0)
    result = Replay(stop=stop, best=best, deployed=ended, length=lengths, epochs_saved=saved)
    return with_restore(result) if restore_best_weights else result


def with_restore(result: Replay) -> Replay:
    """The same replay with `restore_best_weights`: the fit ends with the best epoch's
    weights whenever one was monitored (only the deployed epoch changes)."""
    ended = np.where(result.stop >= 0, result.stop, result.length - 1)
    return result._replace(deployed=np.where(result.best >= 0, result.best, ended))


def replay_curve(curve, *, mode: str, patience: int, min_delta: float = 0.0,
                 restore_best_weights: bool = False) -> tuple[int, int]:
    """One curve (epochs 0, 1, …): (stop epoch or −1, deployed epoch)."""
    row = np.asarray(curve, dtype=float)[None, :]
    result = replay(row, np.array([row.shape[1]]), mode=mode, patience=patience,
                    min_delta=min_delta, restore_best_weights=restore_best_weights)
    return int(result.stop[0]), int(result.deployed[0])
