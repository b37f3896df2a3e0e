"""Experiment (issue 11): why the `batch_norm` sweep's arms collapse at the campaign floors.

In the paired sweep, nets with batch norm fit their training batches better than without it
but score far worse on validation (results/sweeps/, README). Batch norm normalises a
training batch by its own statistics and a validation image by the moving averages Keras
keeps (momentum 0.99); 5 epochs of 3,000 images give 60-235 steps, too few for those
averages to catch up with weights that are still moving. If that is the cause, replacing
the moving averages by the statistics of the training images under the final weights must
restore validation accuracy, with the weights untouched.

Per net (fixed configurations spanning depth and optimiser, at the floors: 3,000 / 2,000
images, 5 epochs, batch 128, no augmentation, dropout or L2), trained with batch norm on and
off from one seed: the last epoch's training-mode accuracy, val accuracy with Keras's moving
statistics, and val accuracy after re-estimating them (`reestimate`: layer by layer, the mean
and variance of the layer's input over the training images). Medians and ranges over seeds.

    .venv/bin/python -m benchmarks.bn_statistics [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import Options, Row, environment, markdown_table, quiet, verdict, write_results  # noqa: E402

NAME = "bn_statistics"
GOAL = ("batch norm at the floors: val accuracy with Keras's moving statistics against statistics "
        "re-estimated on the training images (same weights): reported")
FLOOR_SETS = ["data.train_size=3000", "data.val_size=2000", "data.test_size=2000"]
EPOCHS = 5  # the campaign floor
BATCH = 128  # a middle choice of cnn.yaml's batch sizes: 24 steps per epoch, 120 in all
# (conv blocks, optimizer, learning rate): shallow and deep, each optimizer cnn.yaml offers,
# at learning rates inside its ranges
NETS = ((1, "adam", 1e-3), (3, "adam", 1e-3), (2, "rmsprop", 1e-3), (3, "sgd", 3e-2))


def net(blocks: int, optimizer: str, rate: float, batch_norm: bool) -> dict[str, Any]:
    return {"n_conv_blocks": blocks, "filters": 32, "filter_growth": 2.0, "convs_per_block": 1, "kernel_size": 3,
            "dense_units": 128, "use_l2": False, "l2": 0.0, "dropout": 0.0, "batch_norm": batch_norm,
            "augment": False, "optimizer": optimizer, "momentum": 0.9, "learning_rate": rate,
            "lr_schedule": "constant", "batch_size": BATCH}


def reestimate(model: Any, images: Any) -> int:
    """Set every BatchNormalization layer's moving mean and variance to the mean and variance
    of its input over `images` (earlier layers first, so each sees re-estimated inputs); how
    many layers. The weights are not touched."""
    import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        inputs = keras.ops.convert_to_numpy(keras.Model(model.input, layer.input)(images, training=False))
        axes = tuple(range(inputs.ndim - 1))
        layer.moving_mean.assign(inputs.mean(axis=axes))
        layer.moving_variance.assign(inputs.var(axis=axes))
    return len(layers)


def one_net(splits: Any, hp: dict[str, Any], seed: int) -> dict[str, float]:
    import keras

    from study.model import build_model, compile_model

    keras.utils.set_random_seed(seed)
    steps = -(-len(splits.y_train) // BATCH)
    model = compile_model(build_model(hp, splits.input_shape, splits.num_classes), hp, steps, EPOCHS)
    history = model.fit(splits.x_train, splits.y_train, batch_size=BATCH, epochs=EPOCHS, verbose=0, shuffle=True)
    row = {"train_accuracy": history.history["accuracy"][-1],
           "val_accuracy": model.evaluate(splits.x_val, splits.y_val, verbose=0)[1]}
    if reestimate(model, splits.x_train):
        row["val_accuracy_reestimated"] = model.evaluate(splits.x_val, splits.y_val, verbose=0)[1]
    return row


def measure(seeds: int, mode: str) -> dict[str, Any]:
    from benchmarks.common import load_space, load_splits

    quiet()
    splits = load_splits(load_space(FLOOR_SETS))
    nets = []
    for blocks, optimizer, rate in NETS:
        runs = {flag: [one_net(splits, net(blocks, optimizer, rate, flag), seed) for seed in range(seeds)]
                for flag in (False, True)}
        nets.append({"n_conv_blocks": blocks, "optimizer": optimizer, "learning_rate": rate,
                     "off": runs[False], "on": runs[True]})
    return {"mode": mode, "seeds": seeds, "epochs": EPOCHS, "batch_size": BATCH,
            "steps": EPOCHS * -(-len(splits.y_train) // BATCH), "nets": nets, "environment": environment()}


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}, {max(values):.3f}]"


def table(record: dict[str, Any]) -> str:
    rows = []
    for entry in record["nets"]:
        on, off = entry["on"], entry["off"]
        rows.append([f"{entry['n_conv_blocks']} blocks, {entry['optimizer']} {entry['learning_rate']:g}",
                     _spread([r["val_accuracy"] for r in off]), _spread([r["train_accuracy"] for r in on]),
                     _spread([r["val_accuracy"] for r in on]), _spread([r["val_accuracy_reestimated"] for r in on])])
    headers = ["net", "val acc, BN off", "BN on: train acc (training mode)", "BN on: val acc, Keras's moving stats",
               "BN on: val acc, re-estimated stats"]
    return (markdown_table(headers, rows) + f"\nMedian [min, max] over {record['seeds']} seeds; "
            f"{record['steps']} steps of batch {record['batch_size']} in {record['epochs']} epochs.\n")


def run(options: Options) -> dict:
    record = measure(1 if options.quick else 3, options.mode)
    return write_results(NAME, record, table(record), options.results_dir)


def summary_rows(result: dict) -> list[Row]:
    if not result:
        return []
    moving = statistics.median(r["val_accuracy"] for entry in result["nets"] for r in entry["on"])
    fixed = statistics.median(r["val_accuracy_reestimated"] for entry in result["nets"] for r in entry["on"])
    return [Row("BN at the floors: median val acc, moving stats -> re-estimated", f"{moving:.3f} -> {fixed:.3f}",
                "reported", verdict(None))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    print(table(run(Options(quick=arguments.quick))))
