"""Per-epoch and per-trial metric definitions: pure numpy/pandas, shared by the trial
runner, the tests and anyone checking our numbers."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Keras clips probabilities at this epsilon in its cross-entropy; we match it so that
# val_crossentropy + L2 penalty reproduces Keras's val_loss.
KERAS_EPSILON = 1e-7
ECE_BINS = 15

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_crossentropy", "val_ece",
                 "val_confidence", "test_loss", "test_accuracy", "test_crossentropy", "lr")
# metric -> "min" or "max": the direction in which it is better.
SELECTION_METRICS = {"val_loss": "min", "val_crossentropy": "min", "val_accuracy": "max"}


def crossentropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    picked = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, KERAS_EPSILON, 1.0 - KERAS_EPSILON))))


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def mean_confidence(probabilities: np.ndarray) -> float:
    """Mean max-probability: above accuracy means the model is overconfident."""
    return float(np.mean(np.max(probabilities, axis=1)))


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Equal-width confidence bins; |accuracy - confidence| weighted by bin share."""
    confidence = np.max(probabilities, axis=1)
    correct = np.argmax(probabilities, axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def best_epoch(values: pd.Series, direction: str) -> int:
    """Position of the best value; the earliest epoch wins ties, NaN never wins."""
    clean = values.astype(float)
    if clean.isna().all():
        return -1
    return int(clean.idxmin() if direction == "min" else clean.idxmax())


def summarize_history(history: pd.DataFrame) -> dict[str, float]:
    """Per-trial summary metrics from a per-epoch table indexed 0..n-1."""
    table = history.reset_index(drop=True)
    summary: dict[str, float] = {"epochs_trained": float(len(table))}
    for metric, direction in SELECTION_METRICS.items():
        if metric not in table or table.empty:
            continue
        epoch = best_epoch(table[metric], direction)
        if epoch < 0:
            continue
        summary[f"best_{metric}"] = float(table[metric].iloc[epoch])
        summary[f"best_{metric}_epoch"] = float(epoch)
        if "test_accuracy" in table:
            summary[f"test_accuracy_at_best_{metric}"] = float(table["test_accuracy"].iloc[epoch])
    return summary
