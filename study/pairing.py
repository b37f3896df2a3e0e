"""The Keras side of a paired sweep (study/sweep.py): seeded initial kernels, and the hashes
that prove two arms of a pair started from the same weights and saw the same first batch.

Keras seeds its default initializers from one global generator, drawn in the order the
layers are made, so a Dropout or BatchNormalization layer (which takes seeds of its own)
shifts every later layer's weights. Here each Conv2D/Dense kernel gets its own seed, from
(the pair's seed, its index among the Conv2D/Dense layers), with the distribution Keras uses
by default (Glorot uniform kernels, zero biases): layers the arms share start equal.
Only sweeps use this; a campaign's trials keep Keras's own initialisation (their committed
results must still reproduce).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from study.contract import SWEEP_BATCH_HASH, SWEEP_INIT_HASH

SEED_BOUND = 2 ** 31  # Keras and TensorFlow take seeds that fit a signed 32-bit integer


def weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The Conv2D and Dense layers, in the model's layer order: the layers every arm shares."""
    return [layer for layer in model.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def layer_seed(init_seed: int, index: int) -> int:
    """A seed of its own for the index-th Conv2D/Dense layer, whatever other layers exist."""
    return int(np.random.SeedSequence([init_seed, index]).generate_state(1)[0]) % SEED_BOUND


def seed_kernels(model: keras.Model, init_seed: int) -> None:
    """Replace each Conv2D/Dense layer's initial weights: Glorot uniform kernel from its own
    seed (the fans Keras computes for the kernel's shape), zero bias."""
    for index, layer in enumerate(weighted_layers(model)):
        initializer = keras.initializers.GlorotUniform(seed=layer_seed(init_seed, index))
        layer.kernel.assign(initializer(tuple(layer.kernel.shape), dtype=layer.kernel.dtype))
        if layer.bias is not None:
            layer.bias.assign(keras.ops.zeros_like(layer.bias))


def kernel_hash(model: keras.Model) -> str:
    """sha256 of the Conv2D/Dense kernels (shape and float32 bytes), in layer order."""
    digest = hashlib.sha256()
    for layer in weighted_layers(model):
        kernel = np.ascontiguousarray(keras.ops.convert_to_numpy(layer.kernel), dtype=np.float32)
        digest.update(str(kernel.shape).encode())
        digest.update(kernel.tobytes())
    return digest.hexdigest()


def first_batch_hash(batches: tf.data.Dataset) -> str:
    """sha256 of the first (images, labels) batch of a fresh, unaugmented training pipeline."""
    images, labels = next(iter(batches))
    digest = hashlib.sha256()
    for array, dtype in ((images, np.float32), (labels, np.int64)):
        values = np.ascontiguousarray(array.numpy(), dtype=dtype)
        digest.update(str(values.shape).encode())
        digest.update(values.tobytes())
    return digest.hexdigest()


class PairingProbe(keras.callbacks.Callback):
    """At the start of training (the weights are still the initial ones, and the trial's
    global seed is set), hash the kernels and the first batch and hand both to `on_hashes`.

    `unaugmented_batches` builds the trial's training pipeline again without augmentation:
    the same shuffle seeds give the same order as the pipeline `fit` reads, which cannot be
    read itself without starting a second (reshuffled) pass over it.
    """

    def __init__(self, unaugmented_batches: Callable[[], tf.data.Dataset],
                 on_hashes: Callable[[dict[str, str]], None]) -> None:
        super().__init__()
        self.unaugmented_batches = unaugmented_batches
        self.on_hashes = on_hashes

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.on_hashes({SWEEP_INIT_HASH: kernel_hash(self.model),
                        SWEEP_BATCH_HASH: first_batch_hash(self.unaugmented_batches())})
