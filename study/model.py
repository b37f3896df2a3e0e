"""Builds and compiles a Keras CNN from a plain dict of hyperparameters.

Never imports optuna (KerasTuner's split): the same builder serves the study, the raw-Keras
baseline in the benchmarks and a KerasTuner HyperModel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras

from study.cost import block_filters
from study.metrics import TrainingObjective
from study.space import KNOB_OFF, LOSSES


class InfeasibleArchitecture(ValueError):
    """The sampled design cannot be built for this input, e.g. more pooling than pixels."""


def feature_map_sizes(input_shape: tuple[int, ...], n_conv_blocks: int) -> list[tuple[int, int]]:
    """Spatial size after each block's 2x2 pooling; raise when it would vanish."""
    height, width = input_shape[0], input_shape[1]
    sizes = []
    for block in range(n_conv_blocks):
        height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise InfeasibleArchitecture(
                f"{n_conv_blocks} conv blocks pool a {input_shape[0]}x{input_shape[1]} input "
                f"to nothing after block {block + 1}")
        sizes.append((height, width))
    return sizes


def build_model(hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Conv blocks (conv [+BN] + ReLU, then max-pool), a dense head, softmax output."""
    feature_map_sizes(input_shape, hp["n_conv_blocks"])
    regularizer = weight_regularizer(hp)
    batch_norm = bool(hp.get("batch_norm", False))

    inputs = keras.Input(shape=input_shape)
    x = inputs
    for filters in block_filters(hp):
        for _ in range(int(hp.get("convs_per_block", 1))):
            # BN makes a conv bias redundant.
            x = keras.layers.Conv2D(filters, int(hp["kernel_size"]), padding="same",
                                    use_bias=not batch_norm, kernel_regularizer=regularizer)(x)
            if batch_norm:
                x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    dropout = float(hp.get("dropout", 0.0))
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(int(hp["dense_units"]), activation="relu", kernel_regularizer=regularizer)(x)
    if dropout > 0:
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, outputs, name="cnn")


def weight_regularizer(hp: Mapping[str, Any]) -> keras.regularizers.Regularizer | None:
    """l1 * sum|w| + l2 * sum w^2 on every kernel; part of the loss (unlike AdamW's decay)."""
    l1_strength = float(hp.get("l1", KNOB_OFF["l1"]) or 0.0)
    l2_strength = float(hp.get("l2", 0.0) or 0.0)
    if l1_strength > 0:
        return keras.regularizers.L1L2(l1=l1_strength, l2=l2_strength)
    # Without L1, the L2 object of old: the same graph, so the same numbers bit for bit.
    return keras.regularizers.L2(l2_strength) if l2_strength > 0 else None


def learning_rate_schedule(hp: Mapping[str, Any], steps_per_epoch: int, epochs: int
                           ) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Per-step schedules; `reduce_on_plateau` is a callback instead (see plateau_callbacks)."""
    rate = float(hp["learning_rate"])
    kind = hp.get("lr_schedule", "constant")
    if kind == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(rate, steps_per_epoch, float(hp["decay_rate"]))
    if kind == "step":
        every = int(hp["step_every"])
        boundaries = [steps_per_epoch * every * k for k in range(1, math.ceil(epochs / every) + 1)]
        values = [rate * float(hp["step_factor"]) ** k for k in range(len(boundaries) + 1)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
    if kind == "cosine_warmup":
        warmup_steps = int(hp.get("warmup_epochs", 0)) * steps_per_epoch
        decay_steps = max(1, epochs * steps_per_epoch - warmup_steps)
        if warmup_steps == 0:
            return keras.optimizers.schedules.CosineDecay(rate, decay_steps)
        return keras.optimizers.schedules.CosineDecay(
            rate / 10.0, decay_steps, warmup_target=rate, warmup_steps=warmup_steps)
    return rate


def plateau_callbacks(hp: Mapping[str, Any]) -> list[keras.callbacks.Callback]:
    if hp.get("lr_schedule") != "reduce_on_plateau":
        return []
    return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=float(hp["plateau_factor"]),
                                              patience=int(hp["plateau_patience"]), verbose=0)]


def make_optimizer(hp: Mapping[str, Any], steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    rate = learning_rate_schedule(hp, steps_per_epoch, epochs)
    name = hp.get("optimizer", "adam")
    # Keras's clipnorm clips each weight tensor's gradient to this norm (not the global norm);
    # 0 and null are off, and None is the optimizers' own default.
    clipnorm = float(hp.get("clipnorm", KNOB_OFF["clipnorm"]) or 0.0) or None
    if name == "sgd":
        return keras.optimizers.SGD(rate, momentum=float(hp.get("momentum", 0.0)), nesterov=True, clipnorm=clipnorm)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(rate, clipnorm=clipnorm)
    if name == "adam":
        return keras.optimizers.Adam(rate, clipnorm=clipnorm)
    if name == "adamw":
        # Decoupled decay: w -= lr * weight_decay * w each step, outside the loss (unlike L2).
        weight_decay = float(hp.get("weight_decay", KNOB_OFF["weight_decay"]))
        optimizer = keras.optimizers.AdamW(rate, weight_decay=weight_decay, clipnorm=clipnorm)
        # Only the kernels, the weights the L2 penalty covers (kernel_regularizer): Keras would
        # also shrink biases and batch norm's gamma and beta, and weight_decay = 2 x l2 (the
        # decay control of the sweeps) would not then shrink what L2 shrinks.
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer
    raise ValueError(f"unknown optimizer '{name}'")


def training_objective(hp: Mapping[str, Any]) -> TrainingObjective:
    """Label smoothing and the focal exponent (0 unless `loss: focal`), absent knobs off."""
    loss = hp.get("loss", KNOB_OFF["loss"])
    if loss not in LOSSES:
        raise ValueError(f"unknown loss '{loss}'")
    focal = loss == "focal"
    return TrainingObjective(label_smoothing=float(hp.get("label_smoothing", KNOB_OFF["label_smoothing"])),
                             focal_gamma=float(hp.get("focal_gamma", KNOB_OFF["focal_gamma"])) if focal else 0.0)


@keras.saving.register_keras_serializable(package="study")
class SparseFocalCrossentropy(keras.losses.Loss):
    """Keras's categorical focal cross-entropy at alpha = 1, on integer labels one-hot encoded
    here: Keras 3's sparse cross-entropy has no label smoothing. gamma = 0 is (smoothed)
    cross-entropy: (1 - p)^0 = 1. The same per-image loss as metrics.objective_per_image."""

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, gamma: float = 0.0,
                 name: str = "sparse_focal_crossentropy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.num_classes, self.label_smoothing, self.gamma = int(num_classes), float(label_smoothing), float(gamma)

    @property
    def objective(self) -> TrainingObjective:
        return TrainingObjective(label_smoothing=self.label_smoothing, focal_gamma=self.gamma)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        targets = keras.ops.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_focal_crossentropy(targets, y_pred, alpha=1.0, gamma=self.gamma,
                                                           label_smoothing=self.label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_classes": self.num_classes,
                "label_smoothing": self.label_smoothing, "gamma": self.gamma}


def training_loss(objective: TrainingObjective, num_classes: int) -> str | keras.losses.Loss:
    if objective.is_crossentropy:
        return "sparse_categorical_crossentropy"  # the loss of old: the same numbers bit for bit
    return SparseFocalCrossentropy(num_classes, objective.label_smoothing, objective.focal_gamma)


def compiled_objective(model: keras.Model) -> TrainingObjective:
    """The objective `compile_model` gave the model: what val_loss evaluates."""
    if isinstance(model.loss, SparseFocalCrossentropy):
        return model.loss.objective
    if model.loss == "sparse_categorical_crossentropy":
        return TrainingObjective()
    raise ValueError(f"val_loss is defined for compile_model's losses, not {model.loss!r}")


# Training steps per call into TF: fewer Python round trips per epoch. +6% training images
# per CPU-second on the baseline (benchmarks/README.md); the same steps in the same order, so
# the same numbers. Batch-level callbacks then run every 32 steps (the trial timeout check too).
STEPS_PER_EXECUTION = 32


def compile_model(model: keras.Model, hp: Mapping[str, Any], steps_per_epoch: int, epochs: int) -> keras.Model:
    # jit_compile off: XLA was 2.4x slower on this CPU.
    loss = training_loss(training_objective(hp), int(model.output_shape[-1]))
    model.compile(optimizer=make_optimizer(hp, steps_per_epoch, epochs),
                  loss=loss, metrics=["accuracy"], jit_compile=False,
                  steps_per_execution=STEPS_PER_EXECUTION)
    return model


def training_flops_per_image(model: keras.Model) -> int:
    """2 x multiply-adds of conv and dense forward passes, x 3 for forward + backward."""
    macs = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, out_h, out_w, out_c = layer.output.shape
            kernel_h, kernel_w = layer.kernel_size
            macs += out_h * out_w * out_c * kernel_h * kernel_w * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            macs += layer.input.shape[-1] * layer.units
    return 3 * 2 * int(macs)
