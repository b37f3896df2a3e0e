"""Benchmark (issue 9, section 3): what the per-epoch metrics and `outcomes.npz` cost a trial.

At the default Fashion-MNIST sizes (10,000 validation + 10,000 test images, 10 classes,
12 epochs) on synthetic predictions (no training: the cost depends on the array sizes, and
on how well the arrays compress, so the predictions imitate a model that improves from
~75% to ~92% accuracy). Measured, as medians of repeats:
- per epoch, the metric computation `EpochEvaluator.on_epoch_end` does after its `predict`
  (both splits' `score_split`, the temperature fit and the outcome casts), beside the four
  metrics it computed before (cross-entropy, accuracy, ECE, confidence): the difference is
  what the new metrics add (process CPU time, single-threaded numpy);
- the temperature fit and score alone (5,000 + 5,000 validation images);
- the outcomes artifact: bytes on disk (np.savez_compressed) and seconds to write it.

    .venv/bin/python -m benchmarks.epoch_metrics [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import Options, Row, markdown_table, verdict, write_results  # noqa: E402
from study import metrics  # noqa: E402
from study.contract import OUTCOMES_NPZ  # noqa: E402

NAME = "epoch_metrics"
GOAL = "per-epoch metric cost and outcomes.npz size at 10k val + 10k test, 12 epochs: reported"
N_VAL = N_TEST = 10_000
CLASSES = 10
EPOCHS = 12


def synthetic_predictions(n: int, epochs: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels, and per epoch the float32 softmax of a model whose true-class margin grows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    base = rng.normal(0.0, 1.0, (n, CLASSES))
    per_epoch = []
    for epoch in range(epochs):
        logits = 1.5 * base + 0.3 * rng.normal(0.0, 1.0, (n, CLASSES))
        logits[np.arange(n), labels] += 3.5 + 1.5 * epoch / max(epochs - 1, 1)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        per_epoch.append((exp / exp.sum(axis=1, keepdims=True)).astype(np.float32))
    return labels, per_epoch


def evaluator_now(val_labels: np.ndarray, val: np.ndarray, test_labels: np.ndarray, test: np.ndarray,
                  halves: tuple[np.ndarray, np.ndarray]) -> None:
    """The numpy work of one epoch in EpochEvaluator.on_epoch_end after `predict`."""
    for labels, probabilities in ((val_labels, val), (test_labels, test)):
        scores = metrics.score_split(labels, probabilities)
        scores.predicted.astype(np.uint8), scores.true_logprob.astype(np.float16)
    metrics.calibrated_nll(val_labels, val, *halves)


def evaluator_before(val_labels: np.ndarray, val: np.ndarray, test_labels: np.ndarray, test: np.ndarray,
                     halves: tuple[np.ndarray, np.ndarray]) -> None:
    """The four metrics the evaluator computed before this change (test: two of them)."""
    for labels, probabilities in ((val_labels, val), (test_labels, test)):
        metrics.crossentropy(labels, probabilities), metrics.accuracy(labels, probabilities)
    metrics.expected_calibration_error(val_labels, val), metrics.mean_confidence(val)


def median_ms(work: Callable[[], None], repeats: int) -> float:
    """Median process CPU time: on the shared machine, wall time mostly measures the others."""
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        work()
        samples.append(time.process_time() - started)
    return round(1e3 * statistics.median(samples), 3)


def outcomes_arrays(val_labels: np.ndarray, val: list[np.ndarray], test_labels: np.ndarray,
                    test: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The artifact as EpochEvaluator.outcomes() builds it."""
    arrays = {"val_labels": val_labels.astype(np.int16), "test_labels": test_labels.astype(np.int16)}
    for split, labels, per_epoch in (("val", val_labels, val), ("test", test_labels, test)):
        arrays[f"{split}_predicted"] = np.stack([p.argmax(axis=1).astype(np.uint8) for p in per_epoch])
        arrays[f"{split}_true_logprob"] = np.stack(
            [metrics.true_class_logprob(labels, p).astype(np.float16) for p in per_epoch])
    arrays["penalty"] = np.full(len(val), 0.01, dtype=np.float32)
    return arrays


def measure(repeats: int, mode: str) -> dict:
    val_labels, val = synthetic_predictions(N_VAL, EPOCHS, seed=0)
    test_labels, test = synthetic_predictions(N_TEST, EPOCHS, seed=1)
    halves = metrics.calibration_halves(N_VAL)
    epoch = EPOCHS // 2
    now = median_ms(lambda: evaluator_now(val_labels, val[epoch], test_labels, test[epoch], halves), repeats)
    before = median_ms(lambda: evaluator_before(val_labels, val[epoch], test_labels, test[epoch], halves), repeats)
    calibration = median_ms(lambda: metrics.calibrated_nll(val_labels, val[epoch], *halves), repeats)
    arrays = outcomes_arrays(val_labels, val, test_labels, test)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / OUTCOMES_NPZ
        write_ms = median_ms(lambda: np.savez_compressed(path, **arrays), max(3, repeats // 4))
        size = path.stat().st_size
    accuracy = [round(float(np.mean(p.argmax(axis=1) == val_labels)), 3) for p in (val[0], val[-1])]
    return {"mode": mode, "repeats": repeats, "n_val": N_VAL, "n_test": N_TEST, "epochs": EPOCHS,
            "synthetic_val_accuracy_first_last": accuracy,
            "epoch_metrics_ms": now, "epoch_metrics_before_ms": before, "added_ms_per_epoch": round(now - before, 3),
            "calibration_ms": calibration, "outcomes_bytes": size,
            "outcomes_raw_bytes": int(sum(a.nbytes for a in arrays.values())),
            "outcomes_bytes_per_epoch": round(size / EPOCHS), "outcomes_write_ms": write_ms,
            "added_seconds_per_trial": round((EPOCHS * (now - before) + write_ms) / 1e3, 4)}


def table(record: dict) -> str:
    rows = [["metrics per epoch, now (ms)", record["epoch_metrics_ms"]],
            ["metrics per epoch, before (ms)", record["epoch_metrics_before_ms"]],
            ["added per epoch (ms)", record["added_ms_per_epoch"]],
            ["of which the temperature fit + score (ms)", record["calibration_ms"]],
            ["outcomes.npz (bytes)", record["outcomes_bytes"]],
            ["outcomes.npz per epoch (bytes)", record["outcomes_bytes_per_epoch"]],
            ["outcomes.npz uncompressed (bytes)", record["outcomes_raw_bytes"]],
            ["outcomes.npz write (ms)", record["outcomes_write_ms"]],
            ["added per trial (s)", record["added_seconds_per_trial"]]]
    return (markdown_table(["figure", "value"], rows)
            + f"\n{record['n_val']:,} validation + {record['n_test']:,} test images, {record['epochs']} epochs, "
              f"synthetic predictions (validation accuracy {record['synthetic_val_accuracy_first_last'][0]} "
              f"-> {record['synthetic_val_accuracy_first_last'][1]}); process CPU time, medians of "
              f"{record['repeats']} repeats.\n")


def run(options: Options) -> dict:
    record = measure(10 if options.quick else 40, options.mode)
    return write_results(NAME, record, table(record), options.results_dir)


def summary_rows(result: dict) -> list[Row]:
    if not result:
        return []
    return [Row("epoch metrics: added ms per epoch (10k + 10k)", result["added_ms_per_epoch"], "reported",
                verdict(None)),
            Row("outcomes.npz bytes per trial (12 epochs)", result["outcomes_bytes"], "reported", verdict(None))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    print(table(run(Options(quick=arguments.quick))))
