"""`python -m study sweep --factor NAME=v1,v2[,...]`: paired single-factor experiments.

A sweep asks what one knob does, everything else equal. It draws base configurations from
the space as a campaign draws its trials (random, i.i.d., the campaign's floors and cost
cap), and trains each base (a pair) at every level of the factor: the first level is the
reference, every other level a treatment, and the reference once more with the same seed
(the replicate: an A/A control that measures what the same run gives twice). All arms of a
pair share the base, the seed, the data order and the initial weights of every layer they
share (study/pairing.py), and log hashes that prove it.

This module checks the factors and builds the `search` each factor is (one Optuna study per
factor, so a re-run resumes it); study/sweep_runner.py runs it through study/driver.py.
It imports nothing heavy: a typo is answered before TensorFlow loads.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import yaml

from study.campaign import CAPPED, COST_CAP, FLOORS, SIZES, SPACES
from study.contract import (ARM_REFERENCE, ARM_REPLICATE, ARM_TREATMENT, DECAY_FACTOR, DECAY_KNOBS, SWEEP_ARM,
                            SWEEP_FACTOR, SWEEP_LEVEL, SWEEP_PAIR)

if TYPE_CHECKING:  # pydantic loads only once the arguments parse (study/cli.py)
    from study.config import SearchConfig
    from study.space import SearchSpace

# Settings that change the data, not the net: their arms share base and seed, not the data.
DATA_FACTORS = ("data.label_noise", "data.class_imbalance")

# The decay control (`--factor decay=l2,adamw[,none]`, DECAY_FACTOR): the L2 penalty, which is
# inside the loss and so inside val_loss, against AdamW's decoupled decay, which is not. Adam
# bases only: AdamW is Adam plus the decay, so the pair differs in where the shrinkage sits.
# The l2 sweep's treatment level, so that the control reads beside that sweep's effect.
DECAY_L2 = 1e-3
# AdamW's weight_decay = 2 x l2: under plain SGD the L2 penalty's gradient is d(l2 |w|^2)/dw =
# 2 l2 w and Keras's AdamW subtracts lr * weight_decay * w, so the two steps are equal; under
# Adam they are not (the penalty's gradient is rescaled, the decay is not), which is the question.
DECAY_WEIGHT_DECAY = 2 * DECAY_L2
# What each level enqueues. `adamw` is no choice of cnn.yaml's optimizer (Optuna would drop an
# enqueued value outside the choices), so its arm enqueues Adam without L2 and `pinned_level`
# makes it AdamW; `none` is Adam with no shrinkage. Every level sets DECAY_KNOBS (study/contract.py).
DECAY_LEVELS: dict[str, dict[str, Any]] = {"l2": {"optimizer": "adam", "use_l2": True, "l2": DECAY_L2},
                                           "adamw": {"optimizer": "adam", "use_l2": False},
                                           "none": {"optimizer": "adam", "use_l2": False}}
DECAY_PINNED: dict[str, dict[str, Any]] = {"adamw": {"optimizer": "adamw", "weight_decay": DECAY_WEIGHT_DECAY},
                                           # logged by every arm, also where the space lacks the knob
                                           "l2": {"weight_decay": 0.0}, "none": {"weight_decay": 0.0}}
# Knobs a --set may not turn on under the control: l1 would put a penalty into every arm's loss
# (adamw's val_loss would no longer be its cross-entropy), and clipnorm clips the L2 penalty's
# gradient but not AdamW's decay, so the arms would differ in more than where the shrinkage sits.
DECAY_FORBIDDEN = ("l1", "clipnorm")

DEFAULT_PAIRS = 100
SEED_BOUND = 2 ** 31  # Keras and TensorFlow seeds fit a signed 32-bit integer


class SweepError(ValueError):
    """One line naming the flag; exit 2."""


class Factor(NamedTuple):
    """One knob and its levels: `levels` as given on the command line, `values` parsed."""

    name: str
    levels: tuple[str, ...]
    values: tuple[Any, ...]

    @property
    def changes_data(self) -> bool:
        return self.name in DATA_FACTORS

    @property
    def text(self) -> str:
        return f"{self.name}={','.join(self.levels)}"


class SweepArm(NamedTuple):
    """One trial of a sweep: the factor's level it trains, in which pair, as which arm."""

    factor: str
    level: str
    pair: int
    arm: str

    def user_attrs(self) -> dict[str, Any]:
        """The Optuna user attrs (and MLflow params) of this arm's trial."""
        return {SWEEP_FACTOR: self.factor, SWEEP_LEVEL: self.level, SWEEP_PAIR: self.pair, SWEEP_ARM: self.arm}


def arm_of(user_attrs: dict[str, Any]) -> SweepArm | None:
    """The sweep arm a trial is (from its user attrs), or None outside sweeps."""
    if SWEEP_PAIR not in user_attrs:
        return None
    return SweepArm(str(user_attrs[SWEEP_FACTOR]), str(user_attrs[SWEEP_LEVEL]), int(user_attrs[SWEEP_PAIR]),
                    str(user_attrs[SWEEP_ARM]))


def arms_of_pair(factor: Factor, pair: int) -> list[SweepArm]:
    """Reference, the treatments in the order given, then the replicate of the reference."""
    reference = factor.levels[0]
    return ([SweepArm(factor.name, reference, pair, ARM_REFERENCE)]
            + [SweepArm(factor.name, level, pair, ARM_TREATMENT) for level in factor.levels[1:]]
            + [SweepArm(factor.name, reference, pair, ARM_REPLICATE)])


def study_seed(study: str, *more: int) -> int:
    """A seed from a sweep study's name (factor, levels and --seed) and more: two sweeps,
    even of one knob at other levels, draw independent bases and pairs."""
    entropy = [int.from_bytes(hashlib.sha256(study.encode()).digest()[:8], "big"), *more]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0]) % SEED_BOUND


def pair_seed(study: str, pair: int) -> int:
    """The training seed (data order, dropout, augmentation) and initial-weight seed of a pair."""
    return study_seed(study, pair)


# --- parsing and checking the factors --------------------------------------------------------


def parse_factor(text: str) -> tuple[str, tuple[str, ...]]:
    """`NAME=v1,v2,...` as (name, levels as given); the syntax only."""
    name, equals, levels_text = text.partition("=")
    name = name.strip()
    levels = tuple(level.strip() for level in levels_text.split(",")) if equals else ()
    if not name or not equals or any(not level for level in levels):
        raise SweepError(f"--factor {text}: expected NAME=v1,v2[,...] (e.g. dropout=0,0.3)")
    if len(levels) < 2:
        raise SweepError(f"--factor {text}: needs at least 2 levels (the first is the reference)")
    return name, levels


def _level_value(text: str) -> Any:
    """YAML's reading of a level, with numbers YAML 1.1 leaves as text (`1e-3`) read as numbers."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def check_data_factor(name: str, levels: tuple[str, ...]) -> Factor:
    """A data setting's levels, each checked as DataConfig checks it."""
    from pydantic import ValidationError

    from study.space import DataConfig

    field = name.removeprefix("data.")
    values = []
    for level in levels:
        try:
            values.append(getattr(DataConfig.model_validate({field: _level_value(level)}), field))
        except ValidationError as exc:
            message = exc.errors()[0]["msg"].removeprefix("Value error, ")
            raise SweepError(f"--factor {name}={','.join(levels)}: level {level}: {message}") from None
    return _distinct(Factor(name, levels, tuple(values)))


def _distinct(factor: Factor) -> Factor:
    if len(set(map(repr, factor.values))) < len(factor.values):
        raise SweepError(f"--factor {factor.text}: the levels must differ")
    return factor


def condition_switch(space: SearchSpace, name: str) -> tuple[str, bool] | None:
    """(parent, the value that turns the knob on) when the knob exists only under one bool
    knob's single value, e.g. l2 under use_l2=true; None otherwise."""
    condition = space.params[name].condition or {}
    if len(condition) != 1:
        return None
    parent, allowed = next(iter(condition.items()))
    allowed = allowed if isinstance(allowed, list) else [allowed]
    if space.params[parent].type != "bool" or len(allowed) != 1:
        return None
    return parent, bool(allowed[0])


def _knob_level_problem(space: SearchSpace, name: str, value: Any) -> str | None:
    """Why `value` is not a value this knob can take in a sweep, or None. A conditional knob's
    inactive default (l2 = 0) counts: the sweep turns its switch (use_l2) off for it."""
    hp = space.params[name]
    if hp.type == "bool":
        return None if isinstance(value, bool) else f"{value!r} is not true or false"
    if hp.type == "categorical":
        same = [c for c in hp.choices or [] if c == value and isinstance(c, bool) == isinstance(value, bool)]
        return None if same else f"{value!r} is not one of {hp.choices}"
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return f"{value!r} is not a number"
    if hp.type == "int" and value != int(value):
        return f"{value!r} is not a whole number"
    if hp.low <= value <= hp.high:
        return None
    if condition_switch(space, name) and value == hp.default:
        return None
    switch = condition_switch(space, name)
    off = f", or {hp.default} ({switch[0]} off)" if switch else ""
    return f"{value!r} is outside [{hp.low:g}, {hp.high:g}]{off}"


def _knob_problem(space: SearchSpace, space_file: str, name: str) -> str | None:
    """Why the space cannot sweep this knob, or None: the sweep must be what sets it."""
    from study.space import KNOB_OFF

    if name not in space.params:
        return (f"unknown factor; one of the space's knobs ({', '.join(space.searched())}), "
                f"{', '.join(DATA_FACTORS)} or {DECAY_FACTOR} (l2, adamw, none)")
    hp = space.params[name]
    if hp.role == "fixed" and name in KNOB_OFF:
        return None  # a remedy pinned off in the space (cnn.yaml): the sweep turns it, arm by arm
    if hp.role == "fixed":
        return f"{space_file} (or --set) fixes {name}={hp.value!r}; a sweep varies a knob the space samples"
    if hp.ranges:
        return f"its range depends on {next(iter(hp.ranges))}; sweep a knob with one range"
    children = [child for child, spec in space.params.items() if spec.ranges and name in spec.ranges]
    if children:
        return f"{children[0]}'s range depends on it; a sweep would change {children[0]} too"
    switch = condition_switch(space, name)
    if hp.condition and switch is None:
        return f"it exists only under {hp.condition}; sweep a knob whose condition is one bool switch"
    if switch and space.params[switch[0]].role == "fixed":
        return f"{switch[0]} is fixed, and the sweep must set it with {name}"
    return None


def check_decay_factor(levels: tuple[str, ...], space: SearchSpace, space_file: str) -> Factor:
    """The decay control's levels (l2, adamw, none) on a space that can train them: Adam among its
    optimizers, and an l2 switch and range that hold DECAY_L2."""
    text = f"{DECAY_FACTOR}={','.join(levels)}"
    unknown = [level for level in levels if level not in DECAY_LEVELS]
    if unknown:
        raise SweepError(f"--factor {text}: level {unknown[0]}: one of {', '.join(DECAY_LEVELS)}")
    optimizer = space.params.get("optimizer")
    has_adam = optimizer is not None and ("adam" in (optimizer.choices or []) if optimizer.role != "fixed"
                                          else optimizer.value == "adam")
    if not has_adam:
        raise SweepError(f"--factor {text}: {space_file} offers no adam optimizer; the control runs on Adam bases")
    problem = _knob_problem(space, space_file, "l2") or _knob_level_problem(space, "l2", DECAY_L2)
    if problem:
        raise SweepError(f"--factor {text}: its l2 arm sets l2={DECAY_L2:g}, and l2: {problem}")
    return _distinct(Factor(DECAY_FACTOR, levels, levels))


def check_knob_factor(name: str, levels: tuple[str, ...], space: SearchSpace, space_file: str) -> Factor:
    problem = _knob_problem(space, space_file, name)
    if problem:
        raise SweepError(f"--factor {name}={','.join(levels)}: {problem}")
    hp = space.params[name]
    if hp.role == "fixed":
        return _distinct(Factor(name, levels, tuple(_pinned_value(name, level, space_file) for level in levels)))
    values = []
    for level in levels:
        value = _level_value(level)
        if hp.type == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        problem = _knob_level_problem(space, name, value)
        if problem:
            raise SweepError(f"--factor {name}={','.join(levels)}: level {level}: {problem}")
        values.append(value)
    return _distinct(Factor(name, levels, tuple(values)))


def _pinned_value(name: str, level: str, space_file: str) -> Any:
    """A pinned-off knob's level, checked as the space checks a `--set params.NAME=level`."""
    from study.space import SpaceError, load_space

    try:
        return load_space(space_file, [f"params.{name}={level}"]).params[name].value
    except SpaceError as exc:
        raise SweepError(f"--factor {name}: level {level}: {str(exc).splitlines()[0]}") from None


def pinned_level(space: SearchSpace, arm: SweepArm | None) -> dict[str, Any]:
    """The arm's value of a knob the space pins (Optuna samples only what the space searches, so
    the level reaches the net here, not through the enqueued params); {} otherwise."""
    if arm is not None and arm.factor == DECAY_FACTOR:
        return dict(DECAY_PINNED[arm.level])
    hp = space.params.get(arm.factor) if arm else None
    if hp is None or hp.role != "fixed":
        return {}
    value = _level_value(arm.level)
    return {arm.factor: float(value) if hp.type == "float" and isinstance(value, (int, float)) else value}


def check_overrides(name: str, user_overrides: list[str], switch: str | None) -> None:
    """A --set of the factor (or of its switch, or of a knob the decay control sets) would fix what
    the sweep must vary."""
    knobs = DECAY_KNOBS if name == DECAY_FACTOR else (name, *([switch] if switch else []))
    keys = {name} if name.startswith("data.") else {f"params.{knob}" for knob in knobs}
    forbidden = {f"params.{knob}" for knob in DECAY_FORBIDDEN} if name == DECAY_FACTOR else set()
    for override in user_overrides:
        key = override.split("=", 1)[0].strip()
        if key in keys:
            raise SweepError(f"--set {override}: the sweep of {name} sets {key} in each arm; drop the --set")
        if key in forbidden:
            raise SweepError(f"--set {override}: the decay control compares L2 in the loss with AdamW's decay "
                             "outside it; an L1 penalty or gradient clipping would make the arms differ in more")


def level_params(space: SearchSpace, factor: Factor, value: Any) -> dict[str, Any]:
    """The knob values one level enqueues (a data factor's live in the data instead)."""
    if factor.name == DECAY_FACTOR:
        return dict(DECAY_LEVELS[value])
    if factor.changes_data or space.params[factor.name].role == "fixed":
        return {}  # a data factor lives in the data, a pinned knob in `pinned_level`
    switch = condition_switch(space, factor.name)
    if switch is None:
        return {factor.name: value}
    parent, on = switch
    hp = space.params[factor.name]
    if hp.low <= value <= hp.high:
        return {parent: on, factor.name: value}
    return {parent: not on}  # the inactive default, e.g. l2 = 0 is use_l2 = false


# --- the search each factor is -----------------------------------------------------------------


def experiment_name(data: str) -> str:
    return "sweep" if data == "fashion_mnist" else f"sweep-{data}-smoke"


def study_prefix(factor: Factor) -> str:
    return f"sweep-{factor.text}"


def study_name(factor: Factor, seed: int) -> str:
    """One study per factor and levels: a re-run of the same sweep resumes it."""
    return f"{study_prefix(factor)}-seed{seed}"


class SweepPlan(NamedTuple):
    """One factor's study as it runs: its config, the factor, and the pairs it runs to (the
    sweep's --pairs less those of the factor's published studies this store lacks)."""

    config: SearchConfig
    factor: Factor
    pairs: int


def published_pairs(folder: Path) -> dict[str, int]:
    """study -> its complete pairs in a published sweep export (results/sweeps/epochs.csv.gz):
    pairs with a COMPLETE trial of every arm, i.e. of each level and of the reference's
    replicate; a pair with a failed or missing arm is not done. {} where nothing is published."""
    import pandas as pd

    export = folder / "epochs.csv.gz"
    if not export.exists():
        return {}
    try:
        table = pd.read_csv(export, usecols=["study", "trial", "pair", "arm", "level", "state"],
                            dtype=str).drop_duplicates(["study", "trial"])
    except (ValueError, OSError, EOFError, zlib.error) as exc:  # a truncated gzip, a campaign's table
        raise SweepError(f"--published {folder}: {export.name} is not a sweep export ({exc})") from None
    arms_per_pair = table.groupby("study")["level"].nunique() + 1  # the replicate repeats the reference level
    done = table[table["state"] == "COMPLETE"]
    arms = (done["arm"] + "@" + done["level"]).groupby([done["study"], done["pair"]]).nunique()
    whole = arms[arms.to_numpy() == arms_per_pair.reindex(arms.index.get_level_values("study")).to_numpy()]
    return {study: int(count) for study, count in whole.groupby(level=0).size().items()}


def search_argv(factor: Factor, data: str, pairs: int, seed: int, user_overrides: list[str],
                passthrough: list[str]) -> list[str]:
    """The `search` command line whose config this factor's study runs with: the campaign's
    space, floors and cost cap, random sampling, no pruning, no baseline, lean artifacts. A
    data factor's study records its reference level as the data setting."""
    reference = [f"{factor.name}={factor.levels[0]}"] if factor.changes_data else []
    overrides = SIZES[data] + CAPPED + reference + list(user_overrides)
    trials = pairs * len(arms_of_pair(factor, 0))
    argv = ["search", "--space", str(SPACES[data]), "--experiment", experiment_name(data),
            "--study-name", study_name(factor, seed), "--seed", str(seed), "--trials", str(trials),
            "--sampler", "random", "--pruner", "none", "--trial-artifacts", "lean", "--no-baseline"]
    for override in overrides:
        argv += ["--set", override]
    return argv + passthrough


def banner(factor: Factor, data: str, pairs: int) -> str:
    arms = arms_of_pair(factor, 0)
    line = (f"sweep {factor.text}: {pairs} pairs x {len(arms)} arms (reference {factor.levels[0]}, "
            f"treatment {', '.join(factor.levels[1:])}, replicate {factor.levels[0]}); bases drawn i.i.d. "
            f"from the space, nets up to {COST_CAP:g} baseline nets' FLOPs")
    if factor.name == DECAY_FACTOR:
        meaning = {"l2": f"l2 is Adam with an L2 penalty of {DECAY_L2:g} on the kernels (in the loss, so in val_loss)",
                   "adamw": f"adamw is AdamW with weight_decay {DECAY_WEIGHT_DECAY:g} on the kernels (2 x l2, the "
                            "same step as L2 under plain SGD; outside the loss)",
                   "none": "none is Adam with neither"}
        line += "; Adam bases only: " + ", ".join(meaning[level] for level in factor.levels)
    if factor.changes_data:
        line += (f"; {factor.name} CHANGES THE DATA: the arms of a pair share base configuration and seed, "
                 "NOT the training data (nor its first-batch hash)")
    else:
        line += "; the arms of a pair share seed, data order and initial weights"
    if data == "fashion_mnist":
        return line + f"; floors {FLOORS.train}/{FLOORS.val}/{FLOORS.test} images x {FLOORS.epochs} epochs; re-run to resume"
    return line + f"; a SMOKE RUN on {data}, below the floors: its numbers are not a sweep's answer"
