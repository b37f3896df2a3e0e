"""The Keras builder: every choice of the default space builds and trains a step."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from study.model import InfeasibleArchitecture, build_model, compile_model, training_flops_per_image
from study.sampling import baseline_params
from study.space import load_space
from study.training import augmentation
from tests.conftest import PROJECT_ROOT

SPACE = load_space(PROJECT_ROOT / "search_spaces" / "cnn.yaml")


def defaults() -> dict:
    values = {name: (hp.value if hp.role == "fixed" else hp.default) for name, hp in SPACE.params.items()}
    return {**values, **baseline_params(SPACE)}


def variants() -> list[tuple[str, object]]:
    """One design per choice (or range end) of every knob, the others at the baseline."""
    cases = []
    for name, hp in SPACE.searched().items():
        options = hp.candidates() or [hp.low, hp.high]
        cases += [(name, int(v) if hp.type == "int" else v) for v in options]
    return cases


def condition_defaults(name: str, value: object) -> dict:
    """Give a conditional knob's children a mid-range value when the choice activates them."""
    extra = {}
    for child, hp in SPACE.params.items():
        if hp.condition and hp.condition.get(name) == value:
            extra[child] = (hp.low + hp.high) / 2 if hp.type == "float" else (
                int((hp.low + hp.high) // 2) if hp.type == "int" else True)
    return extra


@pytest.mark.parametrize(("name", "value"), variants(), ids=lambda v: str(v))
def test_every_choice_builds_and_takes_a_training_step(name: str, value: object) -> None:
    hp = {**defaults(), name: value, **condition_defaults(name, value)}
    model = compile_model(build_model(hp, (28, 28, 1), 10), hp, steps_per_epoch=2, epochs=3)
    images = np.random.default_rng(0).random((8, 28, 28, 1), dtype=np.float32)
    augmenter = augmentation(hp, seed=0)
    if augmenter is not None:
        images = keras.ops.convert_to_numpy(augmenter(images, training=True))
    logs = model.train_on_batch(images, np.arange(8) % 10, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert model.output_shape == (None, 10)


def test_l2_adds_a_penalty_only_when_positive() -> None:
    without = build_model({**defaults(), "l2": 0.0}, (28, 28, 1), 10)
    with_l2 = build_model({**defaults(), "l2": 1e-3}, (28, 28, 1), 10)
    assert not without.losses and len(with_l2.losses) == 4  # 2 convs + 2 dense kernels


def test_more_pooling_than_pixels_is_infeasible() -> None:
    with pytest.raises(InfeasibleArchitecture, match="4 conv blocks"):
        build_model({**defaults(), "n_conv_blocks": 4}, (8, 8, 1), 10)
    build_model({**defaults(), "n_conv_blocks": 3}, (8, 8, 1), 10)  # 8 -> 4 -> 2 -> 1 still fits


def test_flops_of_the_baseline_match_a_hand_count() -> None:
    model = build_model(defaults(), (28, 28, 1), 10)
    # conv 28x28x32 (3x3x1), conv 14x14x64 (3x3x32), dense 3136->128, dense 128->10
    macs = 28 * 28 * 32 * 9 * 1 + 14 * 14 * 64 * 9 * 32 + 3136 * 128 + 128 * 10
    assert training_flops_per_image(model) == 6 * macs
