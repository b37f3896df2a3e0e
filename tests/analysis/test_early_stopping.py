"""The early-stopping replay against Keras's own callback, and on curves worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.early_stopping import replay, replay_curve
from tests.conftest import require


class EpochWeights:
    """A stand-in model for the callback: its "weights" are the index of the epoch they are
    from, so `set_weights` at the end of training says which epoch was restored."""

    def __init__(self) -> None:
        self.stop_training = False
        self.epoch = -1
        self.restored: int | None = None

    def get_weights(self) -> int:
        return self.epoch

    def set_weights(self, weights: int) -> None:
        self.restored = weights


def keras_replay(keras, curve: list[float], mode: str, patience: int, min_delta: float,
                 restore: bool) -> tuple[int, int]:
    """Drive the real callback as `model.fit` would: (stop epoch or −1, deployed epoch)."""
    callback = keras.callbacks.EarlyStopping(monitor="val_loss", mode=mode, patience=patience,
                                             min_delta=min_delta, restore_best_weights=restore)
    model = EpochWeights()
    callback.set_model(model)
    callback.on_train_begin()
    last = len(curve) - 1
    for epoch, value in enumerate(curve):
        model.epoch = epoch
        callback.on_epoch_end(epoch, {"val_loss": value})  # a Python float, as fit logs it
        if model.stop_training:
            last = epoch
            break
    callback.on_train_end()
    stop = last if model.stop_training else -1
    return stop, model.restored if model.restored is not None else last


def random_curve(rng: np.random.Generator) -> list[float]:
    """Plateaus, exact ties and near-ties (below float32 resolution) on purpose."""
    length = int(rng.integers(1, 16))
    kind = rng.integers(0, 3)
    if kind == 0:    # a coarse grid: many exact ties and plateaus
        values = rng.integers(0, 5, length) / 4
    elif kind == 1:  # a noisy decreasing then rising curve
        values = np.round(1 / (1 + np.arange(length)) + 0.02 * np.arange(length)
                          + rng.normal(0, 0.01, length), 3)
    else:            # steps of 1e-9: equal in float32, different in float64
        values = 0.5 + rng.integers(0, 3, length) * 1e-9
    return [float(v) for v in values]


def test_replay_matches_keras_early_stopping_on_1000_random_curves():
    keras = _keras()
    rng = np.random.default_rng(20260)
    cases = []
    for _ in range(1000):
        cases.append((random_curve(rng), str(rng.choice(["min", "max"])), int(rng.integers(0, 4)),
                      float(rng.choice([0.0, 0.0, 0.1, 0.25, 1e-10])), bool(rng.integers(0, 2))))
    mismatches, outcomes = [], []
    for curve, mode, patience, min_delta, restore in cases:
        expected = keras_replay(keras, curve, mode, patience, min_delta, restore)
        outcomes.append(expected)
        got = replay_curve(curve, mode=mode, patience=patience, min_delta=min_delta,
                           restore_best_weights=restore)
        if got != expected:
            mismatches.append((curve, mode, patience, min_delta, restore, expected, got))
    assert not mismatches, mismatches[:3]
    # The cases exercised what they are for: stops, restores that differ from the stop.
    assert any(stop >= 0 for stop, _ in outcomes) and any(stop < 0 for stop, _ in outcomes)
    assert any(stop >= 0 and deployed != stop for stop, deployed in outcomes)


def _keras():
    try:
        import keras
    except ImportError:
        keras = None
    require(keras is not None, "keras is not installed")
    return keras


def test_replay_by_hand_min_mode_patience_two():
    # val_loss 1.0, 0.8, 0.9, 0.7, 0.75, 0.76, 0.77: improvements at 0, 1, 3 (epoch 2
    # waits 1 only); after 3, epochs 4 (wait 1) and 5 (wait 2 >= 2) do not: stop at 5.
    curve = [1.0, 0.8, 0.9, 0.7, 0.75, 0.76, 0.77]
    assert replay_curve(curve, mode="min", patience=2) == (5, 5)
    assert replay_curve(curve, mode="min", patience=2, restore_best_weights=True) == (5, 3)
    # Patience 0: the first epoch that does not improve stops (epoch 2), best is epoch 1.
    assert replay_curve(curve, mode="min", patience=0, restore_best_weights=True) == (2, 1)


def test_min_delta_and_ties_do_not_count_as_improvement():
    # max mode, min_delta 0.05: 0.84 is no improvement on 0.80 (0.84 - 0.05 < 0.80; wait 1),
    # 0.86 is (0.81 > 0.80, compared with the best, not the previous epoch); then 0.86 and
    # 0.86 wait 1 and 2: stop at 4, best epoch 2.
    curve = [0.80, 0.84, 0.86, 0.86, 0.86]
    assert replay_curve(curve, mode="max", patience=2, min_delta=0.05,
                        restore_best_weights=True) == (4, 2)
    # A plateau at the best value never improves: stop after `patience` tied epochs.
    assert replay_curve([0.5, 0.5, 0.5, 0.5], mode="min", patience=2) == (2, 2)


def test_never_stopping_deploys_the_last_epoch_or_the_restored_best():
    curve = [0.9, 0.7, 0.8, 0.6, 0.65]
    assert replay_curve(curve, mode="min", patience=5) == (-1, 4)
    # Keras 3 restores at the end of training even when it never stopped.
    assert replay_curve(curve, mode="min", patience=5, restore_best_weights=True) == (-1, 3)


def test_many_curves_at_once_with_padding_and_missing_values():
    values = np.array([[1.0, 0.5, 0.6, 0.7, np.nan],      # stops at 3 (patience 2)
                       [1.0, np.nan, 0.9, 0.95, 0.97],    # NaN epoch skipped, not counted
                       [0.3, np.nan, np.nan, np.nan, np.nan]])
    result = replay(values, np.array([4, 5, 1]), mode="min", patience=2,
                    restore_best_weights=True)
    assert result.stop.tolist() == [3, 4, -1]
    assert result.deployed.tolist() == [1, 2, 0]
    assert result.epochs_saved.tolist() == [0, 0, 0]
    result = replay(values, np.array([5, 5, 1]), mode="min", patience=1)
    assert result.stop.tolist() == [2, 3, -1]
    assert result.epochs_saved.tolist() == [2, 1, 0]
    with pytest.raises(ValueError):
        replay(values, np.array([4, 5, 1]), mode="auto", patience=1)
