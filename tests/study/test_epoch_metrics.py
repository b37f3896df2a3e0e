"""The per-epoch metrics beyond Keras's: class-balanced scores, Brier, ECE, temperature-scaled
NLL, and the per-image outcomes artifact. Definitions are checked against sklearn, scipy and
values worked out by hand; one real digits trial checks what a run records."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from study import metrics
from study.contract import EPOCH_METRICS, HISTORY_CSV, OUTCOMES_NPZ
from tests.conftest import run_cli

NEW_METRICS = ("val_calibrated_nll", "val_temperature", "val_balanced_accuracy", "val_macro_f1", "val_brier",
               "test_balanced_accuracy", "test_macro_f1", "test_ece", "test_brier")


def imbalanced_predictions(seed: int = 0, n: int = 3000, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Labels skewed towards class 0, class 9 absent, and a model that never predicts class 8
    but sometimes predicts the absent class 9: the cases where macro averages differ."""
    rng = np.random.default_rng(seed)
    shares = np.array([0.4, 0.2, 0.1, 0.1, 0.05, 0.05, 0.04, 0.03, 0.03, 0.0])
    labels = rng.choice(classes, size=n, p=shares)
    logits = rng.normal(0.0, 1.0, (n, classes))
    logits[np.arange(n), labels] += 1.5
    logits[:, 8] -= 20.0
    probabilities = softmax(logits, axis=1).astype(np.float32)
    return labels, probabilities


# --- class-balanced scores, Brier, ECE ------------------------------------------------

ABSENT_CLASS_WARNING = "ignore:y_pred contains classes not in y_true"  # sklearn's, on purpose here


@pytest.mark.filterwarnings(ABSENT_CLASS_WARNING)
def test_balanced_accuracy_and_macro_f1_match_sklearn_on_imbalanced_labels() -> None:
    labels, probabilities = imbalanced_predictions()
    predicted = probabilities.argmax(axis=1)
    assert 9 in predicted and 9 not in labels and 8 in labels and 8 not in predicted  # the cases are there
    assert metrics.balanced_accuracy(labels, predicted, 10) == pytest.approx(
        balanced_accuracy_score(labels, predicted), abs=1e-15)
    expected_f1 = f1_score(labels, predicted, average="macro", zero_division=0)
    assert metrics.macro_f1(labels, predicted, 10) == pytest.approx(expected_f1, abs=1e-15)


def test_balanced_accuracy_and_macro_f1_by_hand() -> None:
    # class 0: 3 images, 2 right; class 1: 1 image, right; one class-1 prediction is wrong.
    labels = np.array([0, 0, 0, 1])
    predicted = np.array([0, 0, 1, 1])
    assert metrics.balanced_accuracy(labels, predicted, 3) == pytest.approx((2 / 3 + 1) / 2)
    # F1(0) = 2*2/(3+2) = 0.8, F1(1) = 2*1/(1+2) = 2/3; class 2 neither present nor predicted
    assert metrics.macro_f1(labels, predicted, 3) == pytest.approx((0.8 + 2 / 3) / 2)


def test_brier_score_by_hand() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]])
    labels = np.array([0, 2])
    # (0.3^2 + 0.2^2 + 0.1^2) = 0.14 and (0.5^2 + 0.5^2 + 1^2) = 1.5
    assert metrics.brier_score(labels, probabilities) == pytest.approx((0.14 + 1.5) / 2, abs=1e-12)


@pytest.mark.filterwarnings(ABSENT_CLASS_WARNING)
def test_score_split_agrees_with_sklearn_keras_and_direct_formulas() -> None:
    labels, probabilities = imbalanced_predictions(seed=1)
    scores = metrics.score_split(labels, probabilities)
    predicted = probabilities.argmax(axis=1)
    assert np.array_equal(scores.predicted, predicted)
    assert scores.accuracy == accuracy_score(labels, predicted)
    assert scores.balanced_accuracy == pytest.approx(balanced_accuracy_score(labels, predicted), abs=1e-15)
    assert scores.macro_f1 == pytest.approx(f1_score(labels, predicted, average="macro", zero_division=0),
                                            abs=1e-15)
    keras_nll = float(keras.ops.mean(keras.losses.sparse_categorical_crossentropy(labels, probabilities)))
    assert scores.crossentropy == pytest.approx(keras_nll, abs=1e-5)
    assert scores.crossentropy == pytest.approx(-scores.true_logprob.mean(), abs=1e-12)
    onehot = np.eye(10)[labels]
    assert scores.brier == pytest.approx(((probabilities - onehot) ** 2).sum(axis=1).mean(), abs=1e-6)
    confidence = probabilities.max(axis=1)
    assert scores.confidence == pytest.approx(confidence.mean(), abs=1e-6)
    assert scores.ece == pytest.approx(ece_by_loop(labels, probabilities), abs=1e-12)


def ece_by_loop(labels: np.ndarray, probabilities: np.ndarray, bins: int = 15) -> float:
    """Guo et al.'s ECE written out bin by bin (the textbook form, independent of bincount)."""
    confidence = probabilities.max(axis=1).astype(np.float64)
    correct = probabilities.argmax(axis=1) == labels
    total = 0.0
    for low, high in zip(np.linspace(0, 1, bins + 1)[:-1], np.linspace(0, 1, bins + 1)[1:]):
        members = (confidence > low) & (confidence <= high)
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return total


def test_true_class_logprob_is_clipped_like_keras() -> None:
    probabilities = np.array([[1.0, 0.0], [0.25, 0.75]])
    logprob = metrics.true_class_logprob(np.array([1, 1]), probabilities)
    assert logprob == pytest.approx([np.log(1e-7), np.log(0.75)])
    assert metrics.true_class_logprob(np.array([0]), probabilities[:1]) == pytest.approx([np.log1p(-1e-7)])


# --- temperature scaling ----------------------------------------------------------------

def overconfident_model(temperature: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Logits z; labels drawn from softmax(z / temperature); the model reports softmax(z)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 3.0, (n, 10))
    truth = softmax(logits / temperature, axis=1)
    labels = (truth.cumsum(axis=1) > rng.random((n, 1))).argmax(axis=1)
    return labels, softmax(logits, axis=1).astype(np.float32)


def scipy_temperature(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Bounded Brent on log T over the same clipped log-probabilities, in float64."""
    logits = np.log(np.clip(probabilities.astype(np.float64), 1e-7, 1 - 1e-7))

    def nll(log_temperature: float) -> float:
        scaled = log_softmax(logits / np.exp(log_temperature), axis=1)
        return -scaled[np.arange(len(labels)), labels].mean()

    low, high = np.log(metrics.TEMPERATURE_BOUNDS)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded",
                                        options={"xatol": 1e-9}).x))


def test_a_known_temperature_of_two_is_recovered() -> None:
    labels, probabilities = overconfident_model(2.0, n=100_000, seed=0)
    fit, score = metrics.calibration_halves(len(labels))
    calibration = metrics.calibrated_nll(labels, probabilities, fit, score)
    assert calibration.temperature == pytest.approx(2.0, rel=0.05)
    assert calibration.temperature == pytest.approx(scipy_temperature(labels[fit], probabilities[fit]), rel=1e-4)
    # the scored NLL is the NLL of the rescaled softmax on the other half, by scipy
    rescaled = log_softmax(np.log(probabilities[score].astype(np.float64)) / calibration.temperature, axis=1)
    assert calibration.nll == pytest.approx(-rescaled[np.arange(len(score)), labels[score]].mean(), rel=1e-5)
    raw_nll = -np.log(probabilities[score][np.arange(len(score)), labels[score]]).mean()
    assert calibration.nll < raw_nll  # an overconfident model gains from T = 2


def test_the_fit_matches_scipy_on_an_underconfident_model() -> None:
    labels, probabilities = overconfident_model(0.5, n=4000, seed=3)
    fitted = 1.0 / metrics.fit_inverse_temperature(metrics._centred_logits(probabilities), labels)
    assert fitted == pytest.approx(scipy_temperature(labels, probabilities), rel=1e-4)
    assert fitted < 1.0


def test_scaling_never_changes_a_predicted_label() -> None:
    labels, probabilities = imbalanced_predictions(seed=2)
    fit, score = metrics.calibration_halves(len(labels))
    fitted = metrics.calibrated_nll(labels, probabilities, fit, score).temperature
    for temperature in (*metrics.TEMPERATURE_BOUNDS, 0.3, 1.0, 2.0, fitted):
        scaled = metrics.temperature_scaled_logprob(probabilities, temperature)
        assert np.array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1)), temperature
        assert np.allclose(np.exp(scaled).sum(axis=1), 1.0, atol=1e-5)


def test_the_fit_stops_at_the_bounds_when_the_optimum_lies_beyond() -> None:
    probabilities = np.tile(np.float32([0.6, 0.3, 0.1]), (50, 1))
    # Always right: sharper is always better, T -> 0; always the least likely class: T -> inf.
    right = metrics.calibrated_nll(np.zeros(50, int), probabilities, np.arange(25), np.arange(25, 50))
    wrong = metrics.calibrated_nll(np.full(50, 2), probabilities, np.arange(25), np.arange(25, 50))
    # (T -> 0 stops at the bound or where float32 sees the NLL as flat: ln 2 / T > 60)
    assert metrics.TEMPERATURE_BOUNDS[0] <= right.temperature < 0.012
    assert wrong.temperature == pytest.approx(metrics.TEMPERATURE_BOUNDS[1])
    # at T = 1/100 the scores are 100 ln(0.6/0.3) apart: the NLL is ~ e^-69, at T = 100 ~ ln 3
    assert 0 <= right.nll < 1e-20
    assert wrong.nll == pytest.approx(-log_softmax(np.log([0.6, 0.3, 0.1]) / 100)[2], rel=1e-5)


def test_calibration_halves_are_a_fixed_partition() -> None:
    fit, score = metrics.calibration_halves(301)
    assert len(fit) == 150 and len(score) == 151
    assert np.array_equal(np.sort(np.concatenate([fit, score])), np.arange(301))
    again = metrics.calibration_halves(301)
    assert np.array_equal(again[0], fit) and np.array_equal(again[1], score)
    assert not np.array_equal(fit, np.arange(150))  # shuffled, not the first half


def test_calibrated_nll_of_a_single_image_is_nan() -> None:
    fit, score = metrics.calibration_halves(1)
    result = metrics.calibrated_nll(np.array([0]), np.array([[0.9, 0.1]]), fit, score)
    assert np.isnan(result.temperature) and np.isnan(result.nll)


def test_contract_lists_the_new_metrics_after_the_old() -> None:
    assert EPOCH_METRICS[-len(NEW_METRICS):] == NEW_METRICS
    assert metrics.EPOCH_METRICS is EPOCH_METRICS


# --- one real digits trial ------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits_trial(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One digits trial of 2 epochs with an L2 penalty, read back from its MLflow store."""
    folder = tmp_path_factory.mktemp("epoch_metrics")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    result = run_cli("study", "search", "--space", "search_spaces/digits.yaml", "--trials", "1",
                     "--sampler", "random", "--pruner", "none", "--storage", str(folder / "optuna.journal"),
                     "--tracking-uri", uri, "--set", "train.epochs=2", "--set", "params.use_l2=true",
                     "--set", "params.l2=0.001")
    assert result.returncode == 0, result.stdout + result.stderr
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits-cnn")
    [run] = client.search_runs([experiment.experiment_id], "tags.run_role = 'trial'")
    run_id = run.info.run_id
    history = pd.read_csv(client.download_artifacts(run_id, HISTORY_CSV, str(folder)))
    with np.load(client.download_artifacts(run_id, OUTCOMES_NPZ, str(folder))) as stored:
        outcomes = dict(stored)
    logged = {name: client.get_metric_history(run_id, name) for name in EPOCH_METRICS}
    return {"history": history, "outcomes": outcomes, "logged": logged}


@pytest.mark.slow
def test_a_trial_logs_every_new_metric_each_epoch_in_range(digits_trial: dict) -> None:
    history, logged = digits_trial["history"], digits_trial["logged"]
    assert list(history.columns) == ["epoch", *EPOCH_METRICS]
    assert history["epoch"].tolist() == [0, 1]
    for name in NEW_METRICS:
        assert [point.step for point in logged[name]] == [0, 1], name
        values = np.array([point.value for point in logged[name]])
        assert np.array_equal(values, history[name].to_numpy()), name
        assert np.isfinite(values).all(), name
    for name in ("val_balanced_accuracy", "val_macro_f1", "test_balanced_accuracy", "test_macro_f1", "test_ece"):
        assert ((history[name] >= 0) & (history[name] <= 1)).all(), name
    for name in ("val_brier", "test_brier"):
        assert ((history[name] >= 0) & (history[name] <= 2)).all(), name
    low, high = metrics.TEMPERATURE_BOUNDS
    assert ((history["val_temperature"] >= low) & (history["val_temperature"] <= high)).all()
    assert (history["val_calibrated_nll"] > 0).all()


@pytest.mark.slow
def test_outcomes_reproduce_the_logged_metrics(digits_trial: dict) -> None:
    history, outcomes = digits_trial["history"], digits_trial["outcomes"]
    n_val, n_test = 300, 360  # search_spaces/digits.yaml: val_size 300, a stratified 20% test set
    expected = {"val_labels": ((n_val,), np.int16), "test_labels": ((n_test,), np.int16),
                "val_predicted": ((2, n_val), np.uint8), "test_predicted": ((2, n_test), np.uint8),
                "val_true_logprob": ((2, n_val), np.float16), "test_true_logprob": ((2, n_test), np.float16),
                "penalty": ((2,), np.float32)}
    assert {key: (array.shape, array.dtype) for key, array in outcomes.items()} == expected
    for epoch, row in history.iterrows():
        for split in ("val", "test"):
            labels, predicted = outcomes[f"{split}_labels"], outcomes[f"{split}_predicted"][epoch]
            assert np.mean(predicted == labels) == row[f"{split}_accuracy"]
            assert balanced_accuracy_score(labels, predicted) == pytest.approx(
                row[f"{split}_balanced_accuracy"], abs=1e-15)
            assert f1_score(labels, predicted, average="macro", zero_division=0) == pytest.approx(
                row[f"{split}_macro_f1"], abs=1e-15)
            logprob = outcomes[f"{split}_true_logprob"][epoch].astype(np.float64)
            assert -logprob.mean() == pytest.approx(row[f"{split}_crossentropy"], rel=2e-3, abs=1e-4)
        assert outcomes["penalty"][epoch] > 0  # L2 is on
        assert outcomes["penalty"][epoch] == pytest.approx(row["val_loss"] - row["val_crossentropy"], rel=1e-5)
