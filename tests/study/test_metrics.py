"""Metric definitions against Keras and hand-computed values."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from study import metrics


def test_crossentropy_matches_keras() -> None:
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(10), size=200).astype(np.float32)
    labels = rng.integers(0, 10, size=200)
    expected = float(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities)))
    assert abs(metrics.crossentropy(labels, probabilities) - expected) < 1e-5


def test_ece_of_a_perfectly_calibrated_and_an_overconfident_model() -> None:
    # 10 predictions at confidence 0.8, 8 of them right: calibrated.
    probabilities = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert metrics.expected_calibration_error(labels, probabilities) < 1e-12
    # Same confidence, only half right: ECE = |0.5 - 0.8|.
    assert abs(metrics.expected_calibration_error(np.array([0] * 5 + [1] * 5), probabilities) - 0.3) < 1e-12
    assert abs(metrics.mean_confidence(probabilities) - 0.8) < 1e-12


def test_summary_takes_the_earliest_epoch_on_ties_and_skips_nan() -> None:
    history = pd.DataFrame({
        "epoch": [0, 1, 2, 3],
        "val_loss": [0.9, 0.5, 0.5, np.nan],
        "val_crossentropy": [0.8, 0.45, 0.40, 0.41],
        "val_accuracy": [0.70, 0.80, 0.85, 0.85],
        "test_accuracy": [0.69, 0.79, 0.84, 0.83],
    })
    summary = metrics.summarize_history(history)
    assert summary["best_val_loss_epoch"] == 1 and summary["best_val_loss"] == 0.5
    assert summary["best_val_crossentropy_epoch"] == 2
    assert summary["best_val_accuracy_epoch"] == 2 and summary["test_accuracy_at_best_val_accuracy"] == 0.84
    assert summary["test_accuracy_at_best_val_loss"] == 0.79
    assert summary["epochs_trained"] == 4
