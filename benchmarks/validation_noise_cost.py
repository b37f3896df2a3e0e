"""Benchmark (issue 9 section 3): the cost of the validation-noise bootstrap at scale.

One study of 30 trials x 12 epochs x 10,000 validation images (10 classes), 200
replicates, every rule the outcomes can feed (min val_loss, max val_accuracy, max
val_balanced_accuracy, max val_macro_f1): seconds of `validation_noise` and its peak
traced memory (numpy allocations, tracemalloc, in a second run so tracing does not slow
the timed one), plus the seconds to parse the 30 trials' `outcomes.npz` blobs. The outcomes
are synthetic (the cost depends on the shapes, and on the share of wrong predictions,
which is ~12% here). Quick mode: 10 trials x 12 epochs x 2,000 images, 50 replicates.

    .venv/bin/python -m benchmarks.validation_noise_cost [--quick]
"""

from __future__ import annotations

import argparse
import io
import resource
import time
import tracemalloc
from pathlib import Path
from typing import Any, NamedTuple

from benchmarks.common import ROOT, Options, Row, environment, markdown_table, verdict, write_results

NAME = "validation_noise_cost"
GOAL = ("validation noise of 30 trials x 12 epochs x 10,000 validation images, 200 replicates: "
        "reported (seconds and peak memory, stated in docs/analysis.md)")
FULL = {"trials": 30, "epochs": 12, "images": 10_000, "replicates": 200, "classes": 10}
QUICK = {"trials": 10, "epochs": 12, "images": 2_000, "replicates": 50, "classes": 10}


class _Rule(NamedTuple):
    """The `analysis.rules.Rule` interface, for the stand-in rules below."""

    name: str
    description: str
    needs: tuple[str, ...]
    pick: Any


def _best(metric: str, sign: int):
    def pick(table):
        ordered = table.sort_values(["study", "order", "epoch"], kind="stable")
        first = (sign * ordered[metric]).groupby(ordered["study"]).idxmin().to_numpy()
        return ordered.loc[first, ["study", "trial", "epoch"]].reset_index(drop=True)
    return pick


def rules() -> tuple:
    """Stand-ins with the cost profile of the real rules: one argmin/argmax per metric the
    outcomes recompute (the per-class metrics are the expensive ones)."""
    return tuple(_Rule(f"{'min' if sign > 0 else 'max'} {metric}", "", (metric,), _best(metric, sign))
                 for metric, sign in (("val_loss", 1), ("val_accuracy", -1),
                                      ("val_balanced_accuracy", -1), ("val_macro_f1", -1)))


def synthetic_blobs(size: dict, seed: int = 0) -> list[bytes]:
    """`outcomes.npz` blobs in the contract's format: accuracies 0.85-0.91, 10 classes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n, epochs = size["images"], size["epochs"]
    labels = rng.integers(0, size["classes"], n).astype(np.int16)
    blobs = []
    for _ in range(size["trials"]):
        hit = rng.random((epochs, n)) < rng.uniform(0.85, 0.91, (epochs, 1))
        predicted = np.where(hit, labels, (labels + rng.integers(1, size["classes"], (epochs, n)))
                             % size["classes"]).astype(np.uint8)
        logprob = np.where(hit, np.log(rng.uniform(0.5, 1, (epochs, n))),
                           np.log(rng.uniform(1e-7, 0.5, (epochs, n)))).astype(np.float16)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, val_labels=labels, test_labels=labels, val_predicted=predicted,
                            test_predicted=predicted, val_true_logprob=logprob,
                            test_true_logprob=logprob,
                            penalty=np.full(epochs, 0.01, np.float32))
        blobs.append(buffer.getvalue())
    return blobs


def measure(size: dict) -> dict[str, Any]:
    from analysis.outcomes import StudyOutcomes, parse_outcomes
    from analysis.validation_noise import validation_noise

    blobs = synthetic_blobs(size)
    started = time.perf_counter()
    study = StudyOutcomes("bench", {str(i): parse_outcomes(b) for i, b in enumerate(blobs)}, {})
    parse_seconds = time.perf_counter() - started

    def run() -> None:
        validation_noise([study], rules(), loss_rule="min val_loss",
                         accuracy_rule="max val_accuracy", replicates=size["replicates"])

    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {**size, "seconds": round(seconds, 3), "peak_traced_mb": round(peak / 2**20, 3),
            "parse_seconds": round(parse_seconds, 3),
            "artifact_kb_per_trial": round(sum(map(len, blobs)) / len(blobs) / 1024, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def table(result: dict) -> str:
    row = result["measured"]
    return markdown_table(
        ["trials x epochs x images", "replicates", "seconds", "peak traced MB", "process peak RSS MB",
         "parse outcomes.npz (s, all trials)", "outcomes.npz KB per trial"],
        [[f"{row['trials']} x {row['epochs']} x {row['images']:,}", row["replicates"], row["seconds"],
          row["peak_traced_mb"], row["peak_rss_mb"], row["parse_seconds"], row["artifact_kb_per_trial"]]])


def run(options: Options) -> dict:
    size = QUICK if options.quick else FULL
    measured = measure(size)  # first: environment() imports TensorFlow, which would be in the RSS
    result = {"name": NAME, "mode": options.mode, "goal": GOAL, "environment": environment(),
              "measured": measured}
    return write_results(NAME, result, table(result), options.results_dir)


def summary_rows(result: dict) -> list[Row]:
    row = result["measured"]
    shape = f"{row['trials']}x{row['epochs']}x{row['images']:,}, {row['replicates']} replicates"
    return [Row(f"validation noise seconds ({shape})", row["seconds"], "reported", verdict(None)),
            Row(f"validation noise peak traced MB ({shape})", row["peak_traced_mb"], "reported",
                verdict(None))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 trials x 2,000 images, 50 replicates")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    print(table(run(Options(quick=args.quick, results_dir=args.results))))
