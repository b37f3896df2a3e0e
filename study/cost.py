"""What a sampled CNN costs to train, from its hyperparameters alone (no Keras).

A space may cap the cost of the nets it trains (`train.max_cost`; `cnn.yaml` and every
campaign use 6): the costliest fifth of `cnn.yaml`'s draws took 69% of the compute (issue 10). The unit is the baseline net's cost,
so a cap reads the same on every data set; conclusions are then conditional on the cap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The knobs a net's cost depends on (`convs_per_block` defaults to 1).
COST_KNOBS = ("n_conv_blocks", "filters", "filter_growth", "kernel_size", "dense_units")
# The failure reason of a skipped draw: PRUNED before any training and with no MLflow run, and
# not counted towards --trials (a campaign's target is nets trained inside the cap).
OVER_COST_CAP = "over_cost_cap"
# The failure reason of a trial that a sweep worker asked for just after another worker took the
# last waiting arm (study/sweep_runner.py): PRUNED untrained, with no MLflow run, and no draw.
NO_ARM_WAITING = "no_arm_waiting"


def block_filters(hp: Mapping[str, Any]) -> list[int]:
    """Each conv block's width: the first block's `filters`, grown by `filter_growth` per block."""
    return [int(round(hp["filters"] * hp["filter_growth"] ** b)) for b in range(hp["n_conv_blocks"])]


def training_flops(hp: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> int:
    """Training FLOPs per image: 2 x the multiply-adds of the conv and dense layers' forward
    pass, x 3 for forward + backward; the same count as `study.model.training_flops_per_image`
    on the built model ('same' padding keeps each block's resolution until its 2x2 pooling)."""
    height, width, channels = input_shape
    kernel = int(hp["kernel_size"])
    macs = 0
    for filters in block_filters(hp):
        for _ in range(int(hp.get("convs_per_block", 1))):
            macs += height * width * filters * kernel * kernel * channels
            channels = filters
        height, width = height // 2, width // 2
    dense_units = int(hp["dense_units"])
    macs += height * width * channels * dense_units + dense_units * num_classes
    return 3 * 2 * macs


def relative_cost(hp: Mapping[str, Any], baseline: Mapping[str, Any], input_shape: tuple[int, ...],
                  num_classes: int) -> float:
    """Training cost per image in units of the baseline net's."""
    return training_flops(hp, input_shape, num_classes) / training_flops(baseline, input_shape, num_classes)


def untrained(user_attrs: Mapping[str, Any]) -> bool:
    """Whether a finished Optuna trial (by its user attrs) never trained: a draw the cap
    skipped, or a sweep worker's ask that found no arm left. Counts and wall times leave it out."""
    from study.contract import FAILURE_REASON

    return user_attrs.get(FAILURE_REASON) in (OVER_COST_CAP, NO_ARM_WAITING)


def skipped_over_cap(user_attrs: Mapping[str, Any]) -> bool:
    """Whether a finished Optuna trial (by its user attrs) is a draw the cap skipped: not a
    trial that trained, so counts and wall times leave it out."""
    from study.contract import FAILURE_REASON

    return user_attrs.get(FAILURE_REASON) == OVER_COST_CAP
