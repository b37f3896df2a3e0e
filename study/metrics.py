"""Per-epoch and per-trial metric definitions: pure numpy/pandas, shared by the trial
runner, the tests and anyone checking our numbers."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

# Re-exported: `from study.metrics import EPOCH_METRICS` predates the contract module.
from study.contract import EPOCH_METRICS, SELECTION_METRICS  # noqa: F401

# Keras clips probabilities at this epsilon in its cross-entropy; we match it so that
# val_crossentropy + L2 penalty reproduces Keras's val_loss.
KERAS_EPSILON = 1e-7
ECE_BINS = 15
# Temperature scaling searches T in [1/100, 100]; a fit at a bound means the optimum lies
# beyond it (e.g. a validation half the model separates perfectly wants T -> 0).
TEMPERATURE_BOUNDS = (1e-2, 1e2)
# One split of the validation images for every epoch and every trial: the calibrated NLL
# of two trials (or epochs) is then scored on the same images.
CALIBRATION_SPLIT_SEED = 0


def true_class_logprob(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """ln p(true class) per image, clipped as Keras clips it in its cross-entropy."""
    picked = probabilities[np.arange(len(labels)), labels].astype(np.float64)
    return np.log(np.clip(picked, KERAS_EPSILON, 1.0 - KERAS_EPSILON))


def crossentropy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(-np.mean(true_class_logprob(labels, probabilities)))


class TrainingObjective(NamedTuple):
    """The per-image loss training minimises, before the weight penalty is added (val_loss is
    its mean on the validation images plus the penalty):

        -sum_k t_k (1 - p_k)^gamma ln p_k,   t = (1 - s) onehot + s / K,

    label smoothing s and Lin et al.'s focal exponent gamma with alpha = 1 (Keras's default
    0.25 would scale the loss). s = 0 and gamma = 0 is the cross-entropy."""

    label_smoothing: float = 0.0
    focal_gamma: float = 0.0

    @property
    def is_crossentropy(self) -> bool:
        return self.label_smoothing == 0 and self.focal_gamma == 0


def objective_per_image(labels: np.ndarray, probabilities: np.ndarray, objective: TrainingObjective) -> np.ndarray:
    """The training objective of each image, probabilities clipped as Keras clips them."""
    num_classes = probabilities.shape[1]
    clipped = np.clip(probabilities.astype(np.float64), KERAS_EPSILON, 1.0 - KERAS_EPSILON)
    targets = np.full(clipped.shape, objective.label_smoothing / num_classes)
    targets[np.arange(len(labels)), labels] += 1.0 - objective.label_smoothing
    return -np.sum(targets * (1.0 - clipped) ** objective.focal_gamma * np.log(clipped), axis=1)


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def mean_confidence(probabilities: np.ndarray) -> float:
    """Mean max-probability: above accuracy means the model is overconfident."""
    return float(np.mean(np.max(probabilities, axis=1)))


def expected_calibration_error(labels: np.ndarray, probabilities: np.ndarray, bins: int = ECE_BINS) -> float:
    """Equal-width confidence bins; |accuracy - confidence| weighted by bin share."""
    return _binned_calibration_error(np.max(probabilities, axis=1), np.argmax(probabilities, axis=1) == labels,
                                     bins)


def _binned_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int) -> float:
    # Sums per bin by bincount: one pass, not one boolean mask per bin.
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    confidence_sum = np.bincount(which, weights=confidence, minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    # sum over bins of share * |acc - conf| = sum of |correct_sum - confidence_sum| / n
    return float(np.abs(correct_sum - confidence_sum).sum() / len(confidence))


def balanced_accuracy(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Mean recall over the classes present in `labels` (sklearn's balanced_accuracy_score)."""
    support = np.bincount(labels, minlength=num_classes)
    hits = np.bincount(labels[predicted == labels], minlength=num_classes)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def macro_f1(labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> float:
    """Unweighted mean F1 over the classes in `labels` or `predicted` (sklearn's macro F1).

    F1 = 2 TP / (2 TP + FP + FN) = 2 TP / (true count + predicted count), so a class that
    is predicted but absent, or present but never predicted, scores 0.
    """
    support = np.bincount(labels, minlength=num_classes)
    predicted_count = np.bincount(predicted, minlength=num_classes)
    hits = np.bincount(labels[predicted == labels], minlength=num_classes)
    seen = (support + predicted_count) > 0
    return float(np.mean(2.0 * hits[seen] / (support[seen] + predicted_count[seen])))


def brier_score(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Multi-class Brier: mean over images of sum over classes (p - onehot)^2, in [0, 2]."""
    probabilities = probabilities.astype(np.float64, copy=False)
    squares = np.einsum("ij,ij->i", probabilities, probabilities)
    # sum_k (p_k - onehot_k)^2 = sum_k p_k^2 - 2 p_true + 1
    return float(np.mean(squares - 2.0 * probabilities[np.arange(len(labels)), labels] + 1.0))


class SplitScores(NamedTuple):
    """One split's per-image outcomes at one epoch, and the metrics computed from them."""

    predicted: np.ndarray      # predicted class per image
    true_logprob: np.ndarray   # ln p(true class) per image, clipped like Keras
    crossentropy: float
    accuracy: float
    balanced_accuracy: float
    macro_f1: float
    brier: float
    ece: float
    confidence: float


def score_split(labels: np.ndarray, probabilities: np.ndarray) -> SplitScores:
    """Every per-epoch metric of one split from one argmax and one max (the epoch's hot path)."""
    num_classes = probabilities.shape[1]
    predicted = np.argmax(probabilities, axis=1)
    confidence = probabilities[np.arange(len(labels)), predicted].astype(np.float64)
    correct = predicted == labels
    logprob = true_class_logprob(labels, probabilities)
    return SplitScores(
        predicted=predicted, true_logprob=logprob, crossentropy=float(-np.mean(logprob)),
        accuracy=float(np.mean(correct)), balanced_accuracy=balanced_accuracy(labels, predicted, num_classes),
        macro_f1=macro_f1(labels, predicted, num_classes), brier=brier_score(labels, probabilities),
        ece=_binned_calibration_error(confidence, correct, ECE_BINS), confidence=float(np.mean(confidence)))


# --- Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks") ---

class Calibration(NamedTuple):
    temperature: float   # fitted on one half of the validation set
    nll: float           # NLL of softmax(logits / temperature) on the other half


def calibration_halves(n: int, seed: int = CALIBRATION_SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of range(n): (fit indices, score indices), sorted; the score
    half takes the odd image out."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


def _centred_logits(probabilities: np.ndarray) -> np.ndarray:
    """ln p clipped like Keras, each row shifted so its maximum is 0, in float32.

    softmax(ln p / T) is exact temperature scaling of the model's logits (the softmax
    removes the per-row constant); the shift changes no softmax and makes every scaled row's
    maximum 0, so no per-iteration max is needed to keep exp() from overflowing. float32:
    exp() is the fit's cost and ~4x faster in it; means are taken in float64.
    """
    clipped = np.minimum(np.maximum(probabilities, np.float32(KERAS_EPSILON), dtype=np.float32),
                         np.float32(1.0 - KERAS_EPSILON))
    logits = np.log(clipped)
    return logits - logits.max(axis=1, keepdims=True)


def _scaled_logprob(logits: np.ndarray, inverse_temperature: float) -> np.ndarray:
    """ln softmax(b z) per image and class, for centred logits z (row max 0)."""
    scaled = inverse_temperature * logits
    # Row sums as a matrix-vector product: numpy's sum along a 10-wide axis is ~5x slower.
    return scaled - np.log(np.exp(scaled) @ np.ones(logits.shape[1], dtype=logits.dtype))[:, None]


def temperature_scaled_logprob(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """ln softmax(ln p / T): the model's predictions after temperature scaling."""
    return _scaled_logprob(_centred_logits(probabilities), 1.0 / temperature)


def _slope_and_curvature(inverse_temperature: float, logits: np.ndarray, squared: np.ndarray,
                         true_logit: np.ndarray) -> tuple[float, float]:
    """First and second derivative of the NLL in b = 1/T: mean(E_q z - z_true) and
    mean(Var_q z), q = softmax(b z). The second is >= 0: the NLL is convex in b."""
    weights = np.exp(inverse_temperature * logits)
    total = weights @ np.ones(logits.shape[1], dtype=logits.dtype)
    first = np.einsum("ij,ij->i", weights, logits) / total
    second = np.einsum("ij,ij->i", weights, squared) / total
    return (float(np.mean(first - true_logit, dtype=np.float64)),
            float(np.mean(second - first * first, dtype=np.float64)))


def fit_inverse_temperature(logits: np.ndarray, labels: np.ndarray, tolerance: float = 1e-7,
                            max_iterations: int = 60) -> float:
    """The b = 1/T minimising the NLL of softmax(b z) on centred logits z.

    Safeguarded Newton on the slope, which is increasing in b (convex NLL): each step keeps
    a bracket [low, high] of the root and falls back to a bisection in log b when Newton
    would leave it, and tries an untried search bound before bisecting towards it (the
    optimum of a perfectly separated half lies beyond the upper bound). ~5 iterations.
    """
    low, high = 1.0 / TEMPERATURE_BOUNDS[1], 1.0 / TEMPERATURE_BOUNDS[0]
    untried = {low, high}
    true_logit = logits[np.arange(len(labels)), labels]
    squared = logits * logits
    current = 1.0
    for _ in range(max_iterations):
        slope, curvature = _slope_and_curvature(current, logits, squared, true_logit)
        if slope < 0:
            low = current
        else:
            high = current
        untried.discard(current)
        if slope == 0 or high <= low * (1.0 + tolerance):
            return current
        step = current - slope / curvature if curvature > 0 else (high if slope < 0 else low)
        if not low < step < high:
            bound = high if step >= high else low
            step = bound if bound in untried else float(np.sqrt(low * high))
        if abs(step - current) <= tolerance * current:
            return step
        current = step
    return current


def calibrated_nll(labels: np.ndarray, probabilities: np.ndarray, fit_indices: np.ndarray,
                   score_indices: np.ndarray) -> Calibration:
    """Temperature fitted on `fit_indices`, NLL of the rescaled softmax on `score_indices`.

    The scored NLL is the exact log-softmax of the rescaled logits (no clipping: it is
    finite for any temperature). NaN for both when a half is empty (under 2 images)."""
    if len(fit_indices) == 0 or len(score_indices) == 0:
        return Calibration(float("nan"), float("nan"))
    logits = _centred_logits(probabilities)
    inverse_temperature = fit_inverse_temperature(logits[fit_indices], labels[fit_indices])
    scored = _scaled_logprob(logits[score_indices], inverse_temperature)
    nll = -np.mean(scored[np.arange(len(score_indices)), labels[score_indices]], dtype=np.float64)
    return Calibration(1.0 / inverse_temperature, float(nll))


def best_epoch(values: pd.Series, direction: str) -> int:
    """Position of the best value; the earliest epoch wins ties, NaN never wins."""
    clean = values.astype(float)
    if clean.isna().all():
        return -1
    return int(clean.idxmin() if direction == "min" else clean.idxmax())


def summarize_history(history: pd.DataFrame) -> dict[str, float]:
    """Per-trial summary metrics from a per-epoch table indexed 0..n-1."""
    table = history.reset_index(drop=True)
    summary: dict[str, float] = {"epochs_trained": float(len(table))}
    for metric, direction in SELECTION_METRICS.items():
        if metric not in table or table.empty:
            continue
        epoch = best_epoch(table[metric], direction)
        if epoch < 0:
            continue
        summary[f"best_{metric}"] = float(table[metric].iloc[epoch])
        summary[f"best_{metric}_epoch"] = float(epoch)
        if "test_accuracy" in table:
            summary[f"test_accuracy_at_best_{metric}"] = float(table["test_accuracy"].iloc[epoch])
    return summary
