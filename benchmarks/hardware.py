"""Benchmark (issue 5, item 2): training throughput as a fraction of the CPU's float32 GEMM peak.

Method. FLOPs per training image = 3 x 2 x multiply-adds of the Conv2D and Dense layers'
forward pass, counted from the built model (`study.model.training_flops_per_image`):
a conv contributes out_h*out_w*out_c*k_h*k_w*in_c MACs, a dense layer in*out; x2 for
multiply + add, x3 for forward + backward (input and weight gradients). Pooling, ReLU, BN,
dropout, the loss and the optimizer update are not counted. Training GFLOP/s = FLOPs per image
x images/s of `model.fit` steps (first epoch dropped: tracing; the fastest of the timed
epochs is kept, since other users of this shared machine only ever slow an epoch down), through the pipeline's own
input path (`study.training.train_dataset`) and `study.model.compile_model`. The peak is TF's
float32 2048x2048 matmul, measured in the same run before every design of every repeat; the
fastest of these is the peak. fraction = GFLOP/s / peak;
reported as the median over repeats, with the spread. The raw-Keras figure (numpy arrays
into `model.fit`, batch 128) is measured alongside for the baseline.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from benchmarks.common import (Options, Row, Stopwatch, baseline_hp, environment, load_space, load_splits,
                               markdown_table, quiet, stats, verdict, write_results)

NAME = "hardware"
GOAL_FRACTION = 0.40
GOAL = f"baseline training GFLOP/s >= {GOAL_FRACTION} x the CPU's float32 GEMM peak"
# Two larger designs from the default space (every value is a choice of cnn.yaml).
LARGER = {
    "3x2conv-64-k3": {"n_conv_blocks": 3, "filters": 64, "filter_growth": 2.0, "convs_per_block": 2,
                       "kernel_size": 3, "dense_units": 256, "batch_norm": True, "dropout": 0.3},
    "2x2conv-48-k5": {"n_conv_blocks": 2, "filters": 48, "filter_growth": 2.0, "convs_per_block": 2,
                       "kernel_size": 5, "dense_units": 256, "batch_norm": False, "dropout": 0.3},
}


def gemm_peak_gflops(n: int = 2048, iterations: int = 10) -> float:
    import tensorflow as tf

    a = tf.random.normal([n, n], seed=1)
    b = tf.random.normal([n, n], seed=2)

    @tf.function
    def chain(x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        total = tf.zeros([], tf.float32)
        for _ in tf.range(iterations):
            total += tf.reduce_sum(tf.matmul(x, y)[:1, :1])
        return total

    chain(a, b).numpy()  # trace + warm caches
    fastest = float("inf")
    for _ in range(3):  # fastest of 3, like the training epochs
        with Stopwatch() as watch:
            chain(a, b).numpy()
        fastest = min(fastest, watch.seconds)
    return 2.0 * n ** 3 * iterations / fastest / 1e9


class EpochClock:
    """Wall time of each epoch; the first (tracing) is dropped by the caller."""

    def __init__(self) -> None:
        import keras

        class _Clock(keras.callbacks.Callback):
            def on_epoch_begin(inner, epoch: int, logs: dict | None = None) -> None:
                inner.started = time.perf_counter()

            def on_epoch_end(inner, epoch: int, logs: dict | None = None) -> None:
                self.seconds.append(time.perf_counter() - inner.started)

        self.seconds: list[float] = []
        self.callback = _Clock()


def training_images_per_second(hp: dict[str, Any], x, y, timed_epochs: int, raw: bool = False) -> tuple[float, int]:
    """Images/s of training steps (no evaluation), and the model's FLOPs per image."""
    import keras

    from study.model import build_model, compile_model, training_flops_per_image
    from study.training import train_dataset

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    batch_size = int(hp["batch_size"])
    model = build_model(hp, tuple(x.shape[1:]), 10)
    epochs = timed_epochs + 1
    clock = EpochClock()
    if raw:  # what a Keras user writes first
        model.compile(optimizer=keras.optimizers.Adam(float(hp["learning_rate"])),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, callbacks=[clock.callback])
    else:
        compile_model(model, hp, math.ceil(len(y) / batch_size), epochs)
        model.fit(train_dataset(x, y, batch_size, 0), epochs=epochs, verbose=0, callbacks=[clock.callback])
    per_epoch = min(clock.seconds[1:])  # fastest epoch: the shared machine's load only slows epochs down
    return len(y) / per_epoch, training_flops_per_image(model)


def measure_hardware(quick: bool = True, repeats: int | None = None, baseline_images: int | None = None,
        larger_images: int | None = None, timed_epochs: int = 3, gemm_n: int = 2048,
        results_dir=None, architectures: dict[str, dict] | None = None) -> dict[str, Any]:
    quiet()
    repeats = repeats or (3 if quick else 5)
    baseline_images = baseline_images or (6400 if quick else 12800)
    larger_images = larger_images or (640 if quick else 1920)
    space = load_space(["data.val_size=1000"])
    splits = load_splits(space)
    base = baseline_hp(space)
    designs = {"baseline": base, **{k: {**base, **v} for k, v in (LARGER if architectures is None else architectures).items()}}
    rows: dict[str, dict[str, list[float]]] = {name: {"images_per_s": [], "gflops": [], "fraction": []} for name in designs}
    rows["baseline (raw Keras fit)"] = {"images_per_s": [], "gflops": [], "fraction": []}
    peaks: list[float] = []
    flops: dict[str, int] = {}
    for _ in range(repeats):
        for name, hp in designs.items():
            peaks.append(gemm_peak_gflops(gemm_n))  # before every design: the peak is sampled all along
            n = baseline_images if name == "baseline" else larger_images
            ips, flops[name] = training_images_per_second(hp, splits.x_train[:n], splits.y_train[:n], timed_epochs)
            rows[name]["images_per_s"].append(ips)
            rows[name]["gflops"].append(ips * flops[name] / 1e9)
            if name == "baseline":
                ips, _ = training_images_per_second(hp, splits.x_train[:n], splits.y_train[:n], timed_epochs, raw=True)
                raw = rows["baseline (raw Keras fit)"]
                raw["images_per_s"].append(ips)
                raw["gflops"].append(ips * flops[name] / 1e9)
    flops["baseline (raw Keras fit)"] = flops["baseline"]
    # The peak is what the hardware can do: the fastest GEMM seen in the run. Other users'
    # load hits a 2-thread GEMM harder than a training epoch (a descheduled thread stalls
    # the whole product), so a per-repeat peak gave fractions above 1 at load average 8.
    peak = max(peaks)
    for figures in rows.values():
        figures["fraction"] = [g / peak for g in figures["gflops"]]
    results = {name: {"training_mflop_per_image": round(flops[name] / 1e6, 3),
                      **{key: stats(values) for key, values in figures.items()}}
               for name, figures in rows.items()}
    payload = {
        "name": NAME, "mode": "quick" if quick else "full", "repeats": repeats,
        "flops_method": "3 x 2 x MACs of Conv2D and Dense forward passes, from the built model",
        "peak_method": f"TF float32 {gemm_n}x{gemm_n} matmul, 10 chained, fastest of 3, measured before every design "
                       "in every repeat; peak = the fastest of all of them",
        "gemm_peak_used_gflops": round(peak, 1),
        "gemm_peak_gflops": stats(peaks),
        "baseline_images": baseline_images, "larger_images": larger_images, "timed_epochs": timed_epochs,
        "architectures": {name: {k: hp[k] for k in ("n_conv_blocks", "filters", "filter_growth", "convs_per_block",
                                                   "kernel_size", "dense_units", "batch_norm", "batch_size")}
                          for name, hp in designs.items()},
        "results": results,
        "baseline_peak_fraction": results["baseline"]["fraction"]["median"],
        "raw_keras_peak_fraction": results["baseline (raw Keras fit)"]["fraction"]["median"],
        "goal": GOAL_FRACTION,
        "meets_goal": (results["baseline"]["fraction"]["median"] or 0) >= GOAL_FRACTION,
        "environment": environment(),
    }
    table = markdown_table(
        ["design", "MFLOP/img (train)", "images/s (median)", "GFLOP/s (median)", "peak fraction (median)", "spread (min-max)"],
        [[name, r["training_mflop_per_image"], r["images_per_s"]["median"], r["gflops"]["median"], r["fraction"]["median"],
          f'{r["fraction"]["min"]:.3f}-{r["fraction"]["max"]:.3f}'] for name, r in results.items()])
    table += (f"\nGEMM peak used: {peak:.0f} GFLOP/s (fastest of {len(peaks)}; median {payload['gemm_peak_gflops']['median']:.0f}, "
              f"range {payload['gemm_peak_gflops']['min']:.0f}-{payload['gemm_peak_gflops']['max']:.0f}); "
              f"`baseline_peak_fraction` = {payload['baseline_peak_fraction']:.3f}, goal >= {GOAL_FRACTION}.\n")
    return write_results(NAME, payload, table, results_dir)


def run(options: Options) -> dict[str, Any]:
    return measure_hardware(options.quick, results_dir=options.results_dir)


def summary_rows(result: dict[str, Any]) -> list[Row]:
    rows = [Row("baseline_peak_fraction", result["baseline_peak_fraction"], f">= {GOAL_FRACTION}",
                verdict(result["meets_goal"]))]
    rows += [Row(f"peak fraction: {name}", figures["fraction"]["median"], "reported", "reported")
             for name, figures in result["results"].items() if name != "baseline"]
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    args = parser.parse_args()
    print(measure_hardware(quick=args.quick, repeats=args.repeats)["results"])
