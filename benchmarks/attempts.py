"""Optimisation attempts (issue 5, "then make it fast"): candidate variants of the training
path, measured side by side on the baseline design, interleaved, repeated; median ratio of
training images/s against the variant `current` (what study/training.py does now).

    .venv/bin/python -m benchmarks.attempts [--repeats 3] [--images 12800] [--threads]

Writes benchmarks/results/attempts.json and .md. Every attempt, kept or dropped, is recorded
in benchmarks/README.md with its figure.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from typing import Any

from benchmarks.common import ROOT, baseline_hp, environment, load_space, load_splits, markdown_table, quiet, stats, write_results


def _datasets():
    import tensorflow as tf

    def element_shuffle(x, y, batch_size, seed):  # the original study/training.py pipeline
        return (tf.data.Dataset.from_tensor_slices((x, y)).cache()
                .shuffle(len(y), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
                .prefetch(tf.data.AUTOTUNE))

    def index_gather(x, y, batch_size, seed):  # shuffle indices, gather whole batches
        xs, ys = tf.constant(x), tf.constant(y)
        return (tf.data.Dataset.range(len(y)).shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
                .batch(batch_size).map(lambda i: (tf.gather(xs, i), tf.gather(ys, i)),
                                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .prefetch(tf.data.AUTOTUNE))

    def numpy_arrays(x, y, batch_size, seed):  # Keras' own array adapter (raw fit)
        return None

    return {"element_shuffle": element_shuffle, "index_gather": index_gather, "numpy": numpy_arrays}


def prepared_fit(hp, x, y, dataset: str, steps_per_execution: int = 1):
    """A compiled model and its input, ready for one-epoch `fit` calls."""
    import keras

    from study.model import build_model, compile_model
    from study.training import train_dataset

    keras.utils.set_random_seed(0)
    batch_size = int(hp["batch_size"])
    model = build_model(hp, tuple(x.shape[1:]), 10)
    compile_model(model, hp, math.ceil(len(y) / batch_size), 100)
    if steps_per_execution != 1:
        model.compile(optimizer=model.optimizer, loss=model.loss, metrics=["accuracy"], jit_compile=False,
                      steps_per_execution=steps_per_execution)
    if dataset == "current":
        data = train_dataset(x, y, batch_size, 0)
        return lambda: model.fit(data, epochs=1, verbose=0)
    if dataset == "numpy":
        return lambda: model.fit(x, y, batch_size=batch_size, shuffle=True, epochs=1, verbose=0)
    data = _datasets()[dataset](x, y, batch_size, 0)
    return lambda: model.fit(data, epochs=1, verbose=0)


def images_per_second(hp, x, y, dataset: str, steps_per_execution: int = 1, timed_epochs: int = 3) -> float:
    """Fastest of a few epochs (used by the thread-settings child processes)."""
    fit = prepared_fit(hp, x, y, dataset, steps_per_execution)
    fit()  # tracing
    best = float("inf")
    for _ in range(timed_epochs):
        started = time.perf_counter()
        fit()
        best = min(best, time.perf_counter() - started)
    return len(y) / best


VARIANTS = {
    "current": ("current", 1),
    "element_shuffle (original)": ("element_shuffle", 1),
    "index_gather": ("index_gather", 1),
    "numpy (raw Keras)": ("numpy", 1),
    "current + steps_per_execution=8": ("current", 8),
    "current + steps_per_execution=32": ("current", 32),
}


def run(rounds: int = 8, images: int = 6400, variants: dict | None = None, results_dir=None) -> dict[str, Any]:
    """All variants live at once; each round runs one epoch of each, in rotated order, so a
    variant and its reference are measured seconds apart. Wall and process-CPU time per epoch."""
    quiet()
    variants = variants or VARIANTS
    space = load_space(["data.val_size=1000"])
    splits = load_splits(space)
    hp = baseline_hp(space)
    x, y = splits.x_train[:images], splits.y_train[:images]
    fits = {name: prepared_fit(hp, x, y, *spec) for name, spec in variants.items()}
    for fit in fits.values():
        fit()  # tracing, first-epoch costs
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            w0, c0 = time.perf_counter(), time.process_time()
            fits[name]()
            wall[name].append(time.perf_counter() - w0)
            cpu[name].append(time.process_time() - c0)
    speed = {name: [images / t for t in values] for name, values in wall.items()}
    wall_ratio = {name: stats([r / v for v, r in zip(values, wall["current"])]) for name, values in wall.items()}
    cpu_ratio = {name: stats([r / v for v, r in zip(values, cpu["current"])]) for name, values in cpu.items()}
    payload = {"name": "attempts", "mode": "quick", "rounds": rounds, "images_per_epoch": images,
               "images_per_s": {k: stats(v) for k, v in speed.items()},
               "speedup_vs_current_wall": wall_ratio, "speedup_vs_current_cpu": cpu_ratio,
               "environment": environment()}
    table = markdown_table(["variant", "images/s (median)", "speed-up, wall (median)", "wall spread",
                            "speed-up, CPU time (median)", "CPU spread"],
                           [[k, payload["images_per_s"][k]["median"], wall_ratio[k]["median"],
                             f'{wall_ratio[k]["min"]:.2f}-{wall_ratio[k]["max"]:.2f}', cpu_ratio[k]["median"],
                             f'{cpu_ratio[k]["min"]:.2f}-{cpu_ratio[k]["max"]:.2f}'] for k in variants])
    return write_results("attempts", payload, table, results_dir)


def evaluation(repeats: int = 5, val_size: int = 6000, test_size: int = 10000) -> dict[str, Any]:
    """Per-epoch evaluation: validation and test as two `predict` calls (before) or one call on
    both (now). First call per model (includes tracing) and a steady-state call, seconds."""
    import keras
    import numpy as np

    from study.model import build_model, compile_model
    from study.training import eval_dataset

    quiet()
    space = load_space([f"data.val_size={val_size}", f"data.test_size={test_size}"])
    splits = load_splits(space)
    hp = baseline_hp(space)
    both = eval_dataset(np.concatenate([splits.x_val, splits.x_test]), 1024)
    val, test = eval_dataset(splits.x_val, 1024), eval_dataset(splits.x_test, 1024)
    calls = {"two predict calls (before)": lambda m: (m.predict(val, verbose=0), m.predict(test, verbose=0)),
             "one predict call (now)": lambda m: m.predict(both, verbose=0)}
    first: dict[str, list[float]] = {k: [] for k in calls}
    steady: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            keras.backend.clear_session()
            model = compile_model(build_model(hp, splits.input_shape, 10), hp, 100, 1)
            for bucket in (first, steady, steady):
                started = time.perf_counter()
                call(model)
                bucket[name].append(time.perf_counter() - started)
    payload = {"name": "attempts_evaluation", "mode": "quick", "repeats": repeats, "val": val_size, "test": test_size,
               "first_call_s": {k: stats(v) for k, v in first.items()},
               "steady_call_s": {k: stats(v) for k, v in steady.items()}, "environment": environment()}
    table = markdown_table(["evaluation", "first epoch s (median)", "later epochs s (median)"],
                           [[k, payload["first_call_s"][k]["median"], payload["steady_call_s"][k]["median"]] for k in calls])
    return write_results("attempts_evaluation", payload, table)


def thread_settings(repeats: int = 3, images: int = 6400) -> dict[str, Any]:
    """Thread settings must be set before TF starts: one child process per setting, interleaved."""
    settings = {"default": {}, "interop=1": {"TF_NUM_INTEROP_THREADS": "1"},
                "interop=1,intraop=2": {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "2"},
                "onednn off": {"TF_ENABLE_ONEDNN_OPTS": "0"}}
    speeds: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(repeats):
        for name, env in settings.items():
            out = subprocess.run([sys.executable, "-m", "benchmarks.attempts", "--child", str(images)],
                                 env={**os.environ, **env}, cwd=ROOT, capture_output=True, text=True, check=True)
            speeds[name].append(float(out.stdout.strip().splitlines()[-1]))
    ratios = {k: stats([v / r for v, r in zip(values, speeds["default"])]) for k, values in speeds.items()}
    payload = {"name": "attempts_threads", "mode": "quick", "repeats": repeats, "images": images,
               "images_per_s": {k: stats(v) for k, v in speeds.items()}, "ratio_vs_default": ratios,
               "environment": environment()}
    table = markdown_table(["setting", "images/s (median)", "÷ default (median)", "spread"],
                           [[k, payload["images_per_s"][k]["median"], r["median"], f'{r["min"]:.3f}-{r["max"]:.3f}']
                            for k, r in ratios.items()])
    return write_results("attempts_threads", payload, table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3, help="thread settings: child runs per setting")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--images", type=int, default=6400)
    parser.add_argument("--threads", action="store_true")
    parser.add_argument("--child", type=int)
    parser.add_argument("--evaluation", action="store_true")
    args = parser.parse_args()
    if args.child:
        quiet()
        space = load_space(["data.val_size=1000"])
        splits = load_splits(space)
        print(images_per_second(baseline_hp(space), splits.x_train[:args.child], splits.y_train[:args.child], "current"))
    elif args.evaluation:
        print(json.dumps(evaluation(args.repeats)["steady_call_s"]))
    elif args.threads:
        print(json.dumps(thread_settings(args.repeats, args.images)["ratio_vs_default"]))
    else:
        print(json.dumps(run(args.rounds, args.images)["speedup_vs_current_cpu"]))
