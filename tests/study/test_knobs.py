"""The training knobs of issue 11 (label smoothing, focal loss, class weights, gradient
clipping, L1, AdamW's decay): each changes training as it should, val_loss is the training
objective on the validation images, bad values are exit 2, and cnn.yaml, where all are pinned
off, keeps its hash and its draws. Real Keras on scikit-learn's digits; expected values are
worked out by hand in each test."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import keras
import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from sklearn.utils.class_weight import compute_class_weight

from study import metrics
from study.data import Splits, load_dataset
from study.model import SparseFocalCrossentropy, build_model, compile_model
from study.sampling import baseline_params, suggest_params
from study.space import KNOB_OFF, SearchSpace, SpaceError, load_space
from study.training import EpochEvaluator, class_weights, regularization_penalty, train_trial
from tests.conftest import PROJECT_ROOT, run_cli

CNN = PROJECT_ROOT / "search_spaces" / "cnn.yaml"
DIGITS = PROJECT_ROOT / "search_spaces" / "digits.yaml"
# cnn.yaml's space hash as it is without the knobs (since its cost cap of 2026-11-26; before
# it, 0d1fe7e1a8024bd8, computed at acd6ac6): a study stores it, and a resume with another
# hash is refused, so knobs pinned off must leave it unchanged.
CNN_SHA_BEFORE_KNOBS = "12cabe4c2a32bf13"
EPSILON = 1e-7  # Keras clips probabilities to [1e-7, 1 - 1e-7] in every cross-entropy
# A small net: each trial below trains in about a second.
TINY_NET = {"n_conv_blocks": 1, "filters": 8, "filter_growth": 1.0, "convs_per_block": 1, "kernel_size": 3,
            "dense_units": 16, "use_l2": False, "l2": 0.0, "dropout": 0.0, "batch_norm": False, "augment": False,
            "optimizer": "adam", "learning_rate": 3e-3, "lr_schedule": "constant", "batch_size": 64}
OFF_KNOBS = ("label_smoothing", "loss", "focal_gamma", "class_weight", "clipnorm", "weight_decay", "l1")


@pytest.fixture(scope="module")
def digits() -> tuple[Splits, object]:
    space = load_space(DIGITS, ["train.epochs=2"])
    return load_dataset(space.data), space.train


def kernels(model: keras.Model) -> list[np.ndarray]:
    return [keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers
            if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]


def tiny_model(hp: dict, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return compile_model(build_model(hp, (8, 8, 1), 10), hp, steps_per_epoch=1, epochs=1)


def random_probabilities(seed: int, n: int = 200, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.0, (n, classes))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return rng.integers(0, classes, n), probabilities.astype(np.float32)


# --- cnn.yaml: every knob pinned off, nothing changed ------------------------------------

def space_without_knobs() -> SearchSpace:
    raw = yaml.safe_load(CNN.read_text())
    for name in OFF_KNOBS:
        del raw["params"][name]
    return SearchSpace.model_validate(raw)


def draws(space: SearchSpace, sampler: optuna.samplers.BaseSampler, count: int) -> list[tuple[dict, dict]]:
    """(Optuna's params, the trial's full hp) of `count` asked trials, told a value by index."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler, direction="maximize")
    drawn = []
    for number in range(count):
        trial = study.ask()
        hp = suggest_params(trial, space)
        study.tell(trial, float(number % 7))
        drawn.append((trial.params, hp))
    return drawn


def test_cnn_space_keeps_its_hash_and_draws_with_the_knobs_pinned_off() -> None:
    with_knobs, without = load_space(CNN), space_without_knobs()
    assert set(OFF_KNOBS) <= set(with_knobs.params) and not set(OFF_KNOBS) & set(without.params)
    assert {name: with_knobs.params[name].value for name in OFF_KNOBS} == {name: KNOB_OFF[name] for name in OFF_KNOBS}
    assert with_knobs.sha() == without.sha() == CNN_SHA_BEFORE_KNOBS
    assert load_space(CNN, ["params.label_smoothing=0.1"]).sha() != CNN_SHA_BEFORE_KNOBS  # a knob on is a new space
    for make_sampler, count in ((optuna.samplers.RandomSampler, 20), (optuna.samplers.TPESampler, 12)):
        for (params, hp), (old_params, old_hp) in zip(draws(with_knobs, make_sampler(seed=3), count),
                                                      draws(without, make_sampler(seed=3), count)):
            assert params == old_params
            assert hp == {**old_hp, **{name: KNOB_OFF[name] for name in OFF_KNOBS}}
    assert baseline_params(with_knobs) == baseline_params(without)


@pytest.mark.slow
def test_absent_knobs_train_bit_for_bit_as_knobs_pinned_off(digits) -> None:
    """val_loss with every knob off is the val_loss of old: cross-entropy + penalty, exactly."""
    splits, train = digits
    hp = {**TINY_NET, "use_l2": True, "l2": 1e-3}
    histories = []
    for knobs in ({}, {name: KNOB_OFF[name] for name in OFF_KNOBS}):
        evaluator = EpochEvaluator(splits, train)
        model = train_trial({**hp, **knobs}, splits, train, 7, evaluator)
        histories.append(evaluator.history)
    pd.testing.assert_frame_equal(histories[0], histories[1], check_exact=True)
    assert evaluator.objective == metrics.TrainingObjective()  # read from the compiled model
    # The last epoch by hand: mean -ln p_y over the validation images + l2 sum w^2.
    probabilities = model.predict(splits.x_val, batch_size=1024, verbose=0)
    p_true = np.clip(probabilities[np.arange(len(splits.y_val)), splits.y_val].astype(np.float64), EPSILON, 1 - EPSILON)
    l2_penalty = 1e-3 * sum(np.square(kernel.astype(np.float64)).sum() for kernel in kernels(model))
    assert histories[0]["val_loss"].iloc[-1] == pytest.approx(-np.log(p_true).mean() + l2_penalty, abs=1e-6)
    penalty = evaluator.outcomes()["penalty"].astype(np.float64)  # stored as float32
    np.testing.assert_allclose(histories[0]["val_loss"] - histories[0]["val_crossentropy"], penalty, rtol=1e-6)


# --- the objective: label smoothing and focal loss ---------------------------------------

def smoothed_crossentropy_by_hand(labels: np.ndarray, probabilities: np.ndarray, smoothing: float) -> np.ndarray:
    """Targets (1 - s) on the true class plus s/K on every class: -(1 - s) ln p_y - s/K sum_k ln p_k."""
    logp = np.log(np.clip(probabilities.astype(np.float64), EPSILON, 1 - EPSILON))
    classes = probabilities.shape[1]
    return -(1 - smoothing) * logp[np.arange(len(labels)), labels] - smoothing / classes * logp.sum(axis=1)


def test_label_smoothing_is_the_compiled_loss_and_caps_confidence(digits) -> None:
    splits, _ = digits
    images, labels = splits.x_train[:64], splits.y_train[:64]
    model = tiny_model({**TINY_NET, "label_smoothing": 0.2})
    probabilities = model.predict(images, verbose=0)
    expected = smoothed_crossentropy_by_hand(labels, probabilities, 0.2).mean()
    assert model.evaluate(images, labels, batch_size=64, verbose=0, return_dict=True)["loss"] == pytest.approx(
        expected, abs=1e-5)
    assert metrics.objective_per_image(labels, probabilities, metrics.TrainingObjective(0.2)).mean() == pytest.approx(
        expected, abs=1e-9)
    # Trained to its optimum on one batch, the smoothed loss asks for p_y = 1 - s + s/K = 0.82,
    # plain cross-entropy for p_y -> 1.
    confidence = {}
    for smoothing in (0.0, 0.2):
        model = tiny_model({**TINY_NET, "learning_rate": 1e-2, "label_smoothing": smoothing})
        model.fit(np.tile(images, (150, 1, 1, 1)), np.tile(labels, 150), batch_size=64, shuffle=False, verbose=0)
        confidence[smoothing] = model.predict(images, verbose=0).max(axis=1).mean()
    assert confidence[0.0] > 0.97 and 0.78 < confidence[0.2] < 0.83, confidence


def test_focal_loss_at_gamma_0_is_crossentropy_and_at_gamma_2_the_hand_formula() -> None:
    labels, probabilities = random_probabilities(seed=1)
    p_true = np.clip(probabilities[np.arange(len(labels)), labels].astype(np.float64), EPSILON, 1 - EPSILON)
    crossentropy, focal = -np.log(p_true), -(1 - p_true) ** 2 * np.log(p_true)
    for gamma, expected in ((0.0, crossentropy), (2.0, focal)):
        loss = SparseFocalCrossentropy(10, gamma=gamma, reduction=None)
        keras_value = keras.ops.convert_to_numpy(loss(labels, probabilities))
        assert np.abs(keras_value - expected).max() < 1e-6, gamma
        ours = metrics.objective_per_image(labels, probabilities, metrics.TrainingObjective(focal_gamma=gamma))
        assert np.abs(ours - expected).max() < 1e-9, gamma
    keras_plain = keras.ops.convert_to_numpy(keras.losses.sparse_categorical_crossentropy(labels, probabilities))
    keras_focal_0 = keras.ops.convert_to_numpy(SparseFocalCrossentropy(10, reduction=None)(labels, probabilities))
    assert np.abs(keras_focal_0 - keras_plain).max() < 1e-6
    assert np.abs(focal - crossentropy).max() > 0.1  # gamma = 2 is another loss


def test_focal_knob_compiles_the_focal_loss_with_alpha_1(digits) -> None:
    splits, _ = digits
    images, labels = splits.x_val[:128], splits.y_val[:128]
    model = tiny_model({**TINY_NET, "loss": "focal", "focal_gamma": 2.0})
    probabilities = model.predict(images, verbose=0).astype(np.float64)
    p_true = np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1 - EPSILON)
    expected = np.mean(-(1 - p_true) ** 2 * np.log(p_true))  # alpha 0.25 would give a quarter of it
    logged = model.evaluate(images, labels, batch_size=128, verbose=0, return_dict=True)["loss"]
    assert logged == pytest.approx(expected, rel=1e-5)
    unfocused = tiny_model({**TINY_NET, "loss": "crossentropy", "focal_gamma": 2.0})  # gamma needs loss: focal
    assert unfocused.loss == "sparse_categorical_crossentropy"


@pytest.mark.slow
def test_val_loss_is_the_training_objective_plus_the_l1_penalty(digits) -> None:
    """A trial with label smoothing and L1: val_loss and test_loss are the smoothed cross-entropy
    plus l1 sum|w|; val_crossentropy stays the plain one."""
    splits, train = digits
    hp = {**TINY_NET, "label_smoothing": 0.1, "l1": 1e-4}
    evaluator = EpochEvaluator(splits, train)
    model = train_trial(hp, splits, train, 3, evaluator)
    last = evaluator.history.iloc[-1]
    penalty = 1e-4 * sum(np.abs(kernel).sum() for kernel in kernels(model))
    for split, images, labels in (("val", splits.x_val, splits.y_val), ("test", splits.x_test, splits.y_test)):
        probabilities = model.predict(images, batch_size=1024, verbose=0)
        smoothed = smoothed_crossentropy_by_hand(labels, probabilities, 0.1).mean()
        plain = -np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], EPSILON, 1 - EPSILON)))
        assert last[f"{split}_loss"] == pytest.approx(smoothed + penalty, abs=1e-5), split
        assert last[f"{split}_crossentropy"] == pytest.approx(plain, abs=1e-5), split
        assert last[f"{split}_loss"] - last[f"{split}_crossentropy"] > penalty + 0.01  # smoothing costs more


# --- the penalty and the optimiser: L1, AdamW, clipnorm -----------------------------------

def test_l1_adds_l1_times_sum_of_absolute_kernels_to_the_penalty() -> None:
    for l1, l2 in ((1e-3, 0.0), (1e-3, 1e-4)):
        model = build_model({**TINY_NET, "l1": l1, "l2": l2}, (8, 8, 1), 10)
        weights = kernels(model)
        expected = sum(l1 * np.abs(w).sum() + l2 * np.square(w).sum() for w in weights)
        assert len(model.losses) == len(weights) == 3  # the conv and both dense kernels
        assert regularization_penalty(model) == pytest.approx(expected, rel=1e-5)
    assert regularization_penalty(build_model(TINY_NET, (8, 8, 1), 10)) == 0.0


def test_adamw_decays_the_kernels_outside_the_loss_and_nothing_else(digits) -> None:
    """One step from the same weights: AdamW's kernels minus Adam's are -lr * wd * w, exactly
    the decoupled decay, and the loss holds no term for it. Biases and batch norm's gamma and
    beta (set away from 0 so a decay would show) step as Adam's do: L2 covers only kernels,
    and the sweeps' decay control sets weight_decay = 2 x l2 on the same weights."""
    splits, _ = digits
    images, labels = splits.x_train[:64], splits.y_train[:64]
    rate, decay = 1e-2, 0.5
    net = {**TINY_NET, "batch_norm": True, "learning_rate": rate}
    decayed = tiny_model({**net, "optimizer": "adamw", "weight_decay": decay})
    plain = tiny_model({**net, "optimizer": "adam"})
    rng = np.random.default_rng(0)
    start = [w + rng.normal(0.0, 1.0, w.shape).astype(w.dtype) if w.ndim == 1 else w
             for w in decayed.get_weights()]  # biases, gamma, beta, BN statistics away from 0
    decayed.set_weights(start)
    plain.set_weights(start)
    # Keras's loss is the compiled loss plus model.losses: the decay adds no term.
    assert decayed.loss == "sparse_categorical_crossentropy" and not decayed.losses
    assert regularization_penalty(decayed) == 0.0
    decayed.train_on_batch(images, labels)
    plain.train_on_batch(images, labels)
    names = [variable.path for variable in decayed.weights]
    kernels_seen = 0
    for name, after_decayed, after_plain, before in zip(names, decayed.get_weights(), plain.get_weights(), start):
        is_kernel = name.endswith("/kernel")
        kernels_seen += is_kernel
        expected = -rate * decay * before if is_kernel else np.zeros_like(before)
        np.testing.assert_allclose(after_decayed - after_plain, expected, atol=2e-6, err_msg=name)
    assert kernels_seen == 3  # the conv and both dense kernels
    assert any(name.endswith("/gamma") for name in names) and any(name.endswith("/bias") for name in names)
    assert max(np.abs(w).max() for w in start) * rate * decay > 1e-3  # the decay is far above the tolerance


def test_clipnorm_bounds_each_weights_update(digits) -> None:
    """Plain SGD at lr 1: the step of each weight tensor is its gradient, clipped to norm c."""
    splits, _ = digits
    images, labels = splits.x_train[:64], splits.y_train[:64]
    hp = {**TINY_NET, "optimizer": "sgd", "momentum": 0.0, "learning_rate": 1.0}
    limit = 1e-3
    steps = {}
    for clipnorm in (0.0, limit):
        model = tiny_model({**hp, "clipnorm": clipnorm})
        before = model.get_weights()
        model.train_on_batch(images, labels)
        steps[clipnorm] = [np.linalg.norm(after - start) for after, start in zip(model.get_weights(), before)]
    assert max(steps[0.0]) > 10 * limit  # unclipped, the gradients are far larger
    assert max(steps[limit]) <= limit * (1 + 1e-4)
    assert sum(step > limit * 0.999 for step in steps[limit]) >= 3  # the large ones clipped to the limit


# --- class weights ----------------------------------------------------------------------

def test_balanced_class_weights_are_sklearns() -> None:
    labels = np.array([0] * 50 + [1] * 10 + [3] * 5)  # class 2 absent
    weights = class_weights({"class_weight": "balanced"}, labels)
    expected = compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=labels)
    assert list(weights) == [0, 1, 3]
    np.testing.assert_allclose([weights[c] for c in (0, 1, 3)], expected, rtol=1e-12)
    assert class_weights({"class_weight": "none"}, labels) is None and class_weights({}, labels) is None


@pytest.mark.slow
def test_class_weights_weigh_the_training_loss_but_not_val_loss(digits) -> None:
    """One batch of an imbalanced training set at learning rate 0: Keras's training loss is
    mean_i w(y_i) * (-ln p_y_i), with w = n / (K n_c); val_loss stays the unweighted mean."""
    splits, train = digits
    keep = np.concatenate([np.flatnonzero(splits.y_train == 0)[:90],
                           *[np.flatnonzero(splits.y_train == c)[:10] for c in range(1, 10)]])
    imbalanced = dataclasses.replace(splits, x_train=splits.x_train[keep], y_train=splits.y_train[keep])
    hp = {**TINY_NET, "class_weight": "balanced", "learning_rate": 0.0, "batch_size": len(keep)}
    one_epoch = train.model_copy(update={"epochs": 1})
    evaluator = EpochEvaluator(imbalanced, one_epoch)
    model = train_trial(hp, imbalanced, one_epoch, 5, evaluator)
    probabilities = model.predict(imbalanced.x_train, verbose=0)
    y = imbalanced.y_train
    per_image = -np.log(np.clip(probabilities[np.arange(len(y)), y].astype(np.float64), EPSILON, 1 - EPSILON))
    weight = np.where(y == 0, 180 / (10 * 90), 180 / (10 * 10))
    row = evaluator.history.iloc[0]
    assert row["loss"] == pytest.approx(np.mean(weight * per_image), rel=1e-5)
    assert abs(np.mean(weight * per_image) - per_image.mean()) > 1e-3  # the weights matter here
    assert row["val_loss"] == row["val_crossentropy"]  # unweighted, and no penalty


# --- bad values: exit 2, one line, nothing created ----------------------------------------

BAD_KNOBS = {
    "params.label_smoothing=1.0": "outside [0, 1)",
    "params.label_smoothing=-0.1": "outside [0, 1)",
    "params.clipnorm=-1": "outside [0, inf)",
    "params.l1=-0.001": "outside [0, inf)",
    "params.focal_gamma=-2": "outside [0, inf)",
    "params.weight_decay=0.01": "acts only under optimizer: adamw",
    "params.class_weight=inverse": "not one of ['none', 'balanced']",
    "params.loss=hinge": "not one of ['crossentropy', 'focal']",
}


@pytest.mark.parametrize("override", sorted(BAD_KNOBS))
def test_bad_knob_value_is_exit_2_with_one_line_and_nothing_created(tmp_path: Path, override: str) -> None:
    journal, database = tmp_path / "o.journal", tmp_path / "m.db"
    result = run_cli("study", "search", "--space", str(CNN), "--storage", str(journal),
                     "--tracking-uri", f"sqlite:///{database}", "--set", override, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and override.split("=")[0] in lines[0] and BAD_KNOBS[override] in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def write_space(tmp_path: Path, **params: dict) -> Path:
    raw = yaml.safe_load(DIGITS.read_text())
    raw["params"].update(params)
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(("params", "fragment"), [
    ({"label_smoothing": {"type": "float", "low": 0.0, "high": 1.0, "role": "scientific"}},
     "params.label_smoothing: 1.0 is outside [0, 1)"),
    ({"optimizer": {"type": "categorical", "choices": ["adam", "nadam"], "role": "nuisance"}},
     "params.optimizer: 'nadam' is not one of"),
    ({"focal_gamma": {"type": "float", "low": 0.0, "high": 3.0, "role": "scientific"}},
     "params.focal_gamma: acts only under loss: focal"),
    ({"clipnorm": {"type": "bool", "role": "scientific"}}, "params.clipnorm: False is not a finite number"),
])
def test_bad_knob_in_a_space_file_names_file_and_key(tmp_path: Path, params: dict, fragment: str) -> None:
    with pytest.raises(SpaceError) as error:
        load_space(write_space(tmp_path, **params))
    assert fragment in str(error.value) and str(tmp_path) in str(error.value)


def test_searched_knobs_that_can_act_are_accepted(tmp_path: Path) -> None:
    space = load_space(write_space(
        tmp_path,
        optimizer={"type": "categorical", "choices": ["adam", "adamw"], "role": "nuisance"},
        weight_decay={"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "role": "scientific",
                      "condition": {"optimizer": "adamw"}, "default": 0.0},
        loss={"type": "categorical", "choices": ["crossentropy", "focal"], "role": "scientific"},
        focal_gamma={"type": "float", "low": 0.5, "high": 3.0, "role": "scientific",
                     "condition": {"loss": "focal"}, "default": 0.0},
        clipnorm={"type": "categorical", "choices": [None, 1.0], "role": "nuisance"}))
    assert {"weight_decay", "focal_gamma", "clipnorm"} <= set(space.searched())
    pinned_null = load_space(CNN, ["params.clipnorm=null"])
    assert pinned_null.params["clipnorm"].value == 0.0 and pinned_null.sha() == CNN_SHA_BEFORE_KNOBS
