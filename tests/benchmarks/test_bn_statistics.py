"""benchmarks/bn_statistics.py: re-estimated batch-norm statistics are the training images'."""

from __future__ import annotations

import numpy as np

from benchmarks.bn_statistics import net, reestimate


def test_reestimated_statistics_make_inference_equal_training_mode_on_those_images() -> None:
    """A whole-batch training-mode pass normalises each BN layer by that batch's own mean and
    (biased) variance; after `reestimate` on the same images, inference mode uses exactly
    those, so the two outputs agree. Before, Keras's moving averages (mean 0, variance 1 at
    the start) give other outputs."""
    import keras

    from study.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model(net(2, "adam", 1e-3, True), (8, 8, 1), 10)
    images = np.random.default_rng(0).uniform(0.0, 1.0, (256, 8, 8, 1)).astype("float32")
    training = keras.ops.convert_to_numpy(model(images, training=True))
    before = keras.ops.convert_to_numpy(model(images, training=False))
    assert np.abs(before - training).max() > 1e-2  # the moving statistics are not these images'
    assert reestimate(model, images) == 2  # one BN layer per conv block
    after = keras.ops.convert_to_numpy(model(images, training=False))
    np.testing.assert_allclose(after, training, atol=2e-3)  # BN's epsilon (1e-3) sits in both


def test_a_net_without_batch_norm_has_nothing_to_reestimate() -> None:
    import keras

    from study.model import build_model

    model = build_model(net(2, "adam", 1e-3, False), (8, 8, 1), 10)
    weights = [w.copy() for w in model.get_weights()]
    assert reestimate(model, np.zeros((4, 8, 8, 1), "float32")) == 0
    assert all(np.array_equal(a, b) for a, b in zip(weights, model.get_weights()))
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
