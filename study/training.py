"""Trains one CNN: the tf.data input pipeline, per-epoch evaluation, and failure signals.

Knows nothing of Optuna or MLflow: callers pass extra Keras callbacks (pruning) and an
`on_epoch` hook (logging), so the same runner serves the study and the benchmarks.
"""

from __future__ import annotations

import gc
import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from study import metrics
from study.data import Splits
from study.model import build_model, compile_model, compiled_objective, plateau_callbacks
from study.pairing import seed_kernels
from study.signals import raise_if_signalled
from study.space import KNOB_OFF, TrainConfig

# Our datasets are shuffled in tf.data; Keras warns about its own shuffle flag regardless.
warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")

EpochHook = Callable[[int, dict[str, float]], None]
# The arrays of the outcomes artifact (study.contract.OUTCOMES_NPZ) that grow by one row per
# epoch, in the artifact's order.
EPOCH_OUTCOMES = ("val_predicted", "test_predicted", "val_true_logprob", "test_true_logprob", "penalty")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite: the trial cannot recover."""


class TrialTimeout(RuntimeError):
    """The trial ran past `train.max_trial_seconds`."""


def augmentation(hp: Mapping[str, Any], seed: int) -> keras.Sequential | None:
    """Random transforms, applied in tf.data: inside the model they doubled epoch time here."""
    if not hp.get("augment"):
        return None
    layers: list[keras.layers.Layer] = []
    if hp.get("flip"):
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if hp.get("rotation", 0) > 0:
        layers.append(keras.layers.RandomRotation(float(hp["rotation"]), fill_mode="constant", seed=seed))
    if hp.get("shift", 0) > 0:
        layers.append(keras.layers.RandomTranslation(float(hp["shift"]), float(hp["shift"]),
                                                     fill_mode="constant", seed=seed))
    if hp.get("zoom", 0) > 0:
        layers.append(keras.layers.RandomZoom(float(hp["zoom"]), fill_mode="constant", seed=seed))
    if hp.get("contrast", 0) > 0:
        layers.append(keras.layers.RandomContrast(float(hp["contrast"]), seed=seed))
    return keras.Sequential(layers) if layers else None


def train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                  augmenter: keras.Sequential | None = None) -> tf.data.Dataset:
    dataset = (tf.data.Dataset.from_tensor_slices((x, y)).cache()
               .shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
               .batch(batch_size))
    if augmenter is not None:
        # Whole batches through the layers, in parallel with training.
        dataset = dataset.map(lambda images, labels: (augmenter(images, training=True), labels),
                              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(x: np.ndarray, batch_size: int) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(x).batch(batch_size).cache().prefetch(tf.data.AUTOTUNE)


def regularization_penalty(model: keras.Model) -> float:
    """What Keras adds to the objective to form `loss`, and we to form `val_loss`: the L1/L2
    terms. AdamW's decoupled decay is no term of it."""
    return float(sum(float(term) for term in model.losses)) if model.losses else 0.0


class EpochEvaluator(keras.callbacks.Callback):
    """Evaluates validation and test once per epoch and writes the results into `logs`.

    Placed first among the callbacks, so that the pruning and plateau callbacks after it
    read our val_* values, and the epoch at which a trial is pruned is already recorded.
    """

    def __init__(self, splits: Splits, train_config: TrainConfig, best_weights_metric: str | None = None,
                 on_epoch: EpochHook | None = None, evaluate_test: bool = True) -> None:
        super().__init__()
        self.splits = splits
        self.evaluate_test = evaluate_test
        # Validation and test images in one dataset: one `predict` call (and one traced
        # function) per epoch instead of two; the split is by position.
        images = np.concatenate([splits.x_val, splits.x_test]) if evaluate_test else splits.x_val
        self.eval_data = eval_dataset(images, train_config.eval_batch_size)
        self.deadline = time.monotonic() + train_config.max_trial_seconds
        self.max_seconds = train_config.max_trial_seconds
        self.best_weights_metric = best_weights_metric
        self.on_epoch = on_epoch
        self.calibration_halves = metrics.calibration_halves(len(splits.y_val))
        # uint8 for up to 256 classes (the contract's dtype); wider only if a dataset needs it.
        self.class_dtype = np.min_scalar_type(max(splits.num_classes - 1, 0))
        # What val_loss evaluates; the model's own, read when training begins.
        self.objective = metrics.TrainingObjective()
        self.rows: list[dict[str, float]] = []
        self.test_predictions: list[np.ndarray] = []
        self.epoch_outcomes: dict[str, list[np.ndarray]] = {key: [] for key in EPOCH_OUTCOMES}
        self.best_weights: list[np.ndarray] | None = None
        self.started = time.monotonic()

    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["epoch", *metrics.EPOCH_METRICS])

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.objective = compiled_objective(self.model)

    def objective_loss(self, labels: np.ndarray, probabilities: np.ndarray, scores: metrics.SplitScores) -> float:
        """The training objective's mean over a split's images, unweighted, without the penalty;
        for plain cross-entropy the one already computed (the val_loss of old, bit for bit)."""
        if self.objective.is_crossentropy:
            return scores.crossentropy
        return float(np.mean(metrics.objective_per_image(labels, probabilities, self.objective)))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        raise_if_signalled()
        if time.monotonic() > self.deadline:
            raise TrialTimeout(f"trial exceeded train.max_trial_seconds={self.max_seconds:g}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        if not math.isfinite(float(logs.get("loss", float("nan")))):
            raise NonFiniteLoss(f"training loss is {logs.get('loss')} at epoch {epoch}")
        penalty = regularization_penalty(self.model)
        probabilities = self.model.predict(self.eval_data, verbose=0)
        n_val = len(self.splits.y_val)
        val_probabilities = probabilities[:n_val]
        if not np.isfinite(val_probabilities).all():
            raise NonFiniteLoss(f"validation predictions are not finite at epoch {epoch}")
        val = metrics.score_split(self.splits.y_val, val_probabilities)
        calibration = metrics.calibrated_nll(self.splits.y_val, val_probabilities, *self.calibration_halves)
        row = {"epoch": float(epoch), "loss": float(logs["loss"]), "accuracy": float(logs.get("accuracy", np.nan)),
               "val_loss": self.objective_loss(self.splits.y_val, val_probabilities, val) + penalty,
               "val_accuracy": val.accuracy,
               "val_crossentropy": val.crossentropy, "val_ece": val.ece, "val_confidence": val.confidence,
               "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
               "val_calibrated_nll": calibration.nll, "val_temperature": calibration.temperature,
               "val_balanced_accuracy": val.balanced_accuracy, "val_macro_f1": val.macro_f1, "val_brier": val.brier}
        test = metrics.score_split(self.splits.y_test, probabilities[n_val:]) if self.evaluate_test else None
        if test is not None:
            test_objective = self.objective_loss(self.splits.y_test, probabilities[n_val:], test)
            row.update(test_loss=test_objective + penalty, test_accuracy=test.accuracy,
                       test_crossentropy=test.crossentropy, test_balanced_accuracy=test.balanced_accuracy,
                       test_macro_f1=test.macro_f1, test_ece=test.ece, test_brier=test.brier)
        logs.update({key: row[key] for key in ("val_loss", "val_accuracy", "val_crossentropy")})
        self._keep_best_weights(row)
        # Everything kept per epoch is appended together: the artifacts agree on the epochs.
        self._keep_outcomes(val, test, penalty)
        self.rows.append(row)
        if self.on_epoch is not None:
            self.on_epoch(epoch, row)
        raise_if_signalled()  # one swallowed in the evaluation: the last epoch has no batch after it

    def _keep_outcomes(self, val: metrics.SplitScores, test: metrics.SplitScores | None, penalty: float) -> None:
        for split, scores in (("val", val), ("test", test)):
            if scores is not None:
                self.epoch_outcomes[f"{split}_predicted"].append(scores.predicted.astype(self.class_dtype))
                self.epoch_outcomes[f"{split}_true_logprob"].append(scores.true_logprob.astype(np.float16))
        if test is not None:
            self.test_predictions.append(test.predicted.astype(np.int16))
        self.epoch_outcomes["penalty"].append(np.float32(penalty))

    def outcomes(self) -> dict[str, np.ndarray]:
        """Per-image outcomes of every epoch (the contract's OUTCOMES_NPZ arrays); {} before
        the first epoch. Test arrays only when the test set is evaluated."""
        if not self.rows:
            return {}
        arrays = {"val_labels": self.splits.y_val.astype(np.int16)}
        if self.evaluate_test:
            arrays["test_labels"] = self.splits.y_test.astype(np.int16)
        for key, values in self.epoch_outcomes.items():
            if values:
                arrays[key] = np.stack(values) if key != "penalty" else np.asarray(values, dtype=np.float32)
        return arrays

    def _keep_best_weights(self, row: dict[str, float]) -> None:
        metric = self.best_weights_metric
        if metric is None:
            return
        direction = metrics.SELECTION_METRICS[metric]
        previous = [r[metric] for r in self.rows]
        improved = not previous or (row[metric] < min(previous) if direction == "min" else row[metric] > max(previous))
        if improved:
            self.best_weights = self.model.get_weights()

    def predictions_at_best(self) -> dict[str, np.ndarray]:
        """Predicted test labels at each best_* epoch, plus every epoch, for paired tests."""
        if not self.test_predictions:
            return {}
        history = self.history
        arrays = {"y_true": self.splits.y_test.astype(np.int16), "per_epoch": np.stack(self.test_predictions)}
        for metric, direction in metrics.SELECTION_METRICS.items():
            arrays[f"best_{metric}"] = self.test_predictions[metrics.best_epoch(history[metric], direction)]
        return arrays


def class_weights(hp: Mapping[str, Any], labels: np.ndarray) -> dict[int, float] | None:
    """`class_weight: balanced`: n / (K n_c) for each class c of the n training labels, K the
    classes present (scikit-learn's "balanced"); every image then weighs as if classes were
    equal in number. None (unweighted) when off."""
    choice = hp.get("class_weight", KNOB_OFF["class_weight"])
    if choice == "none":
        return None
    if choice != "balanced":
        raise ValueError(f"unknown class_weight '{choice}'")
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    return {int(c): len(labels) / (len(present) * float(counts[c])) for c in present}


def free_previous_trial() -> None:
    """Free the previous trial's graph and memory. The first call also moves the ~470k objects
    of the imports and loaded data into gc's permanent generation (gc.freeze), so that this
    and every later collection walks only what trials create: a full walk cost ~0.4 s a trial."""
    keras.backend.clear_session()  # its gc.collect() is the only per-trial collection (gc_after_trial=False)
    if not gc.get_freeze_count():
        gc.freeze()


def train_trial(hp: Mapping[str, Any], splits: Splits, train_config: TrainConfig, seed: int,
                evaluator: EpochEvaluator, callbacks: list[keras.callbacks.Callback] = (),
                init_seed: int | None = None) -> keras.Model:
    """Build, compile and fit; the evaluator keeps the record even if fitting raises.
    `init_seed` (sweeps only): each Conv2D/Dense layer's initial weights from a seed of its own."""
    free_previous_trial()
    keras.utils.set_random_seed(seed)
    model = build_model(hp, splits.input_shape, splits.num_classes)
    if init_seed is not None:
        seed_kernels(model, init_seed)
    batch_size = int(hp["batch_size"])
    steps_per_epoch = math.ceil(len(splits.y_train) / batch_size)
    compile_model(model, hp, steps_per_epoch, train_config.epochs)
    data = train_dataset(splits.x_train, splits.y_train, batch_size, seed, augmentation(hp, seed))
    model.fit(data, epochs=train_config.epochs, verbose=0, class_weight=class_weights(hp, splits.y_train),
              callbacks=[evaluator, *plateau_callbacks(hp), *callbacks])
    return model
