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


def allowed_values(allowed: object) -> list:
    return allowed if isinstance(allowed, list) else [allowed]


def mid_value(name: str) -> object:
    hp = SPACE.params[name]
    if hp.type == "float":
        return (hp.low + hp.high) / 2
    return int((hp.low + hp.high) // 2) if hp.type == "int" else hp.candidates()[0]


def covering_designs() -> list[dict]:
    """A few designs in which every choice (or range end) of every knob is active at least once.

    One design per choice built some 50 models, each traced and trained a step: the longest
    unit test of the suite. Placing each choice in the first design where it is free (its
    parent set to a value that activates it) covers them all in about 6 builds.
    """
    designs: list[dict] = []
    for name, value in variants():
        needs = {parent: allowed_values(allowed) for parent, allowed in (SPACE.params[name].condition or {}).items()}

        def fits(design: dict) -> bool:
            return name not in design and all(design.get(parent, ok[0]) in ok for parent, ok in needs.items())

        design = next((d for d in designs if fits(d)), None)
        if design is None:
            design = {}
            designs.append(design)
        design.update({parent: design.get(parent, ok[0]) for parent, ok in needs.items()}, **{name: value})
    for design in designs:  # the children an activated parent brings, at mid-range
        for child, hp in SPACE.searched().items():
            if child not in design and hp.condition and hp.is_active(design):
                design[child] = mid_value(child)
    return designs


DESIGNS = covering_designs()


def test_the_designs_activate_every_choice_of_every_knob() -> None:
    for name, value in variants():
        assert any(d.get(name) == value and SPACE.params[name].is_active({**defaults(), **d}) for d in DESIGNS), name
    assert len(DESIGNS) < len(variants()) / 4


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_every_choice_builds_and_takes_a_training_step(design: dict) -> None:
    hp = {**defaults(), **design}
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
