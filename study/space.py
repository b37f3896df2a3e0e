"""The search space: a declarative YAML file, validated, with `--set` overrides applied.

Knows nothing about Keras or Optuna: it only says which knobs exist, their ranges, and
their role (scientific, nuisance or fixed, after Google's Tuning Playbook).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from study.cost import COST_KNOBS

DATASETS = ("fashion_mnist", "digits", "mnist", "cifar10", "npz", "image_folder")

# Training knobs beyond the architecture (issue 11), each with the value that turns it off.
# A space without the knob trains as with it off (study/model.py reads these defaults), and
# a knob pinned at its off value is the same space as one without it: `sha()` leaves it out.
KNOB_OFF: dict[str, Any] = {"label_smoothing": 0.0, "clipnorm": 0.0, "l1": 0.0, "weight_decay": 0.0,
                            "class_weight": "none", "loss": "crossentropy", "focal_gamma": 0.0}
# `clipnorm: null` is off too (Keras's own spelling of "no clipping").
NULL_MEANS_OFF = ("clipnorm",)
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
CLASS_WEIGHTS = ("none", "balanced")
LOSSES = ("crossentropy", "focal")
# A knob that only acts under one value of another: non-zero, it needs that value reachable.
ACTS_ONLY_UNDER = {"weight_decay": ("optimizer", "adamw"), "focal_gamma": ("loss", "focal")}


class SpaceError(ValueError):
    """Bad input in a search space or an override; carries the file and the key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        super().__init__(f"{source}: {key}: {message}" if key else f"{source}: {message}")


class _Strict(BaseModel):
    # A typo in a YAML key must be an error, not a silently ignored knob.
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    name: str = Field("fashion_mnist", description="data set; one of DATASETS")
    path: str | None = Field(None, description="file (npz) or folder (image_folder) to read")
    data_dir: str | None = Field(None, description="where to look first for IDX files")
    val_size: int = Field(10000, ge=1, description="validation images carved from train")
    train_size: int | None = Field(None, ge=1, description="subsample train for quick runs")
    test_size: int | None = Field(None, ge=1, description="subsample test to cut eval time")
    class_imbalance: float = Field(1.0, ge=1.0, description="rho = n_max/n_min, long tail")
    label_noise: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of train relabelled")
    split_seed: int = Field(0, description="fixed so every trial sees the same split")

    @model_validator(mode="after")
    def _known_dataset(self) -> "DataConfig":
        if self.name not in DATASETS:
            raise ValueError(f"unknown dataset '{self.name}', expected one of {', '.join(DATASETS)}")
        if self.name in ("npz", "image_folder") and not self.path:
            raise ValueError(f"dataset '{self.name}' needs data.path")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(12, ge=1, description="fixed budget; pruning decides who gets it all")
    max_trial_seconds: float = Field(1800, gt=0, description="one runaway trial cannot eat the study")
    eval_batch_size: int = Field(1024, ge=1, description="large: evaluation has no gradients")
    max_cost: float | None = Field(
        None, gt=0, description="skip draws whose training FLOPs per image exceed this many baseline nets' "
        "(study/cost.py); null = no cap")


class Hyperparameter(_Strict):
    type: Literal["int", "float", "categorical", "bool"]
    role: Literal["scientific", "nuisance", "fixed"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    value: Any = None
    default: Any = None
    condition: dict[str, Any] | None = None
    # Per-parent-value ranges of a numeric knob, e.g. {optimizer: {adam: [1e-4, 1e-2], sgd: [...]}}:
    # one knob (one column for the analysis) whose range depends on an earlier choice.
    # `low`/`high` stay the envelope every range lies in.
    ranges: dict[str, dict[str | int | float | bool, tuple[float, float]]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Hyperparameter":
        if self.role == "fixed":
            if self.value is None:
                raise ValueError("a fixed hyperparameter needs a value")
            return self
        if self.ranges is not None and self.type not in ("int", "float"):
            raise ValueError(f"ranges: a {self.type} knob has choices, not ranges")
        if self.type in ("int", "float"):
            self._check_range()
            self._check_ranges()
        elif self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical needs non-empty choices")
            # Optuna stores choices as JSON scalars; a list or mapping fails at the first trial.
            bad = [c for c in self.choices if c is not None and not isinstance(c, (bool, int, float, str))]
            if bad:
                raise ValueError(f"choice {bad[0]!r} is not a number, string, bool or null")
        return self

    def _check_range(self) -> None:
        """What Optuna would refuse at the first trial, refused while reading the YAML."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} needs low and high")
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"low ({self.low}) and high ({self.high}) must be finite numbers")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) > high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log scale needs low > 0")
        if self.step is None:
            return
        if self.log:
            raise ValueError("step cannot be combined with log: Optuna samples one or the other")
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"step ({self.step}) must be a number > 0")
        if self.type == "int" and self.step != int(self.step):
            raise ValueError(f"step ({self.step}) of an int must be a whole number")

    def _check_ranges(self) -> None:
        if self.ranges is None:
            return
        if len(self.ranges) != 1:
            raise ValueError(f"ranges: one parent knob, not {len(self.ranges)}")
        for choice, (low, high) in next(iter(self.ranges.values())).items():
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"ranges: {choice}: [{low}, {high}] is not a range of finite numbers")
            if not self.low <= low <= high <= self.high:
                raise ValueError(f"ranges: {choice}: [{low}, {high}] lies outside low..high "
                                 f"[{self.low}, {self.high}], which must hold every range")

    def bounds(self, chosen: dict[str, Any]) -> tuple[float, float]:
        """(low, high) for this trial: the range of the parent's chosen value, else low..high."""
        if self.ranges:
            parent, table = next(iter(self.ranges.items()))
            for choice, (low, high) in table.items():
                if _same_choice(choice, chosen.get(parent)):
                    return low, high
        return self.low, self.high

    def baseline_problem(self, value: Any) -> str | None:
        """Why `value` cannot be this knob's baseline (the first, enqueued trial), or None."""
        if self.role == "fixed":
            return None  # the pinned value wins; the baseline entry is dropped
        options = self.candidates()
        if options is not None:
            matches = [o for o in options if o == value and isinstance(o, bool) == isinstance(value, bool)]
            return None if matches else f"{value!r} is not one of {options}"
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not is_number or not math.isfinite(value):
            return f"{value!r} is not a number"
        if self.type == "int" and value != int(value):
            return f"{value!r} is not a whole number"
        if not self.low <= value <= self.high:
            return f"{value!r} is outside [{self.low}, {self.high}]"
        return None

    def candidates(self) -> list[Any] | None:
        """The finite values this knob can take, or None for a numeric range."""
        if self.role == "fixed":
            return [self.value]
        if self.type == "bool":
            return [False, True]
        return self.choices

    def is_active(self, chosen: dict[str, Any]) -> bool:
        """Conditional knobs (e.g. decay_rate) exist only when their parent allows."""
        for parent, allowed in (self.condition or {}).items():
            allowed_values = allowed if isinstance(allowed, list) else [allowed]
            if chosen.get(parent) not in allowed_values:
                return False
        return True


def _same_choice(a: Any, b: Any) -> bool:
    """Equal and of the same kind (True is not 1)."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


# Where a training knob means something; outside it Keras would fail mid-trial or do nonsense
# (label smoothing 1 makes every target uniform). The searched range is the YAML's business.
_KNOB_CHOICES = {"optimizer": OPTIMIZERS, "class_weight": CLASS_WEIGHTS, "loss": LOSSES}
_KNOB_INTERVALS = {"label_smoothing": (0.0, 1.0), "clipnorm": (0.0, math.inf), "l1": (0.0, math.inf),
                   "weight_decay": (0.0, math.inf), "focal_gamma": (0.0, math.inf)}  # [low, high)


def _knob_value_problem(name: str, value: Any) -> str | None:
    """Why `value` is no value of knob `name` (see _KNOB_INTERVALS), or None."""
    if name in _KNOB_CHOICES:
        allowed = _KNOB_CHOICES[name]
        return None if isinstance(value, str) and value in allowed else f"{value!r} is not one of {list(allowed)}"
    if name not in _KNOB_INTERVALS or (value is None and name in NULL_MEANS_OFF):
        return None
    low, high = _KNOB_INTERVALS[name]
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value)):
        return f"{value!r} is not a finite number"
    return None if low <= value < high else f"{value!r} is outside [{low:g}, {high:g})"


def _possible_values(hp: Hyperparameter) -> list[Any]:
    """Every value a knob can take, or the ends of its ranges (an interval is checked by its ends)."""
    values = hp.candidates()
    if values is None:
        ends = [end for table in (hp.ranges or {}).values() for pair in table.values() for end in pair]
        values = [hp.low, hp.high, *ends]
    return values if hp.default is None else [*values, hp.default]


class SearchSpace(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    params: dict[str, Hyperparameter]
    baseline: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _conditions_and_baseline(self) -> "SearchSpace":
        seen: list[str] = []
        for name, hp in self.params.items():
            for parent, allowed in (hp.condition or {}).items():
                if parent not in seen:
                    raise ValueError(f"params.{name}.condition: '{parent}' must be defined above it")
                parent_hp = self.params[parent]
                # A pinned parent (--set params.x=...) may make a child inactive; that is fine.
                options = None if parent_hp.role == "fixed" else parent_hp.candidates()
                for value in allowed if isinstance(allowed, list) else [allowed]:
                    if options is not None and value not in options:
                        raise ValueError(f"params.{name}.condition: {value!r} is not a choice of {parent}")
            if hp.ranges and hp.role != "fixed":
                self._check_range_parent(name, hp, seen)
            seen.append(name)
        for name, value in self.baseline.items():
            if name not in self.params:
                raise ValueError(f"baseline.{name}: not a hyperparameter of this space")
            problem = self.params[name].baseline_problem(value) or self._baseline_range_problem(name, value)
            if problem:
                raise ValueError(f"baseline.{name}: {problem}")
        if self.train.max_cost is not None:
            missing = [k for k in COST_KNOBS if k not in self.baseline_values()]
            if missing:
                raise ValueError(f"train.max_cost: the cap is in units of the baseline net, which needs "
                                 f"a baseline (or pinned) value of {missing[0]}")
        return self

    @model_validator(mode="after")
    def _training_knobs(self) -> "SearchSpace":
        for name, hp in self.params.items():
            for value in _possible_values(hp):
                problem = _knob_value_problem(name, value)
                if problem:
                    raise ValueError(f"params.{name}: {problem}")
        for name, (parent, needed) in ACTS_ONLY_UNDER.items():
            hp = self.params.get(name)
            if hp is None or all(_same_choice(v, KNOB_OFF[name]) for v in _possible_values(hp)):
                continue
            reachable = self.params[parent].candidates() if parent in self.params else []
            if needed not in (reachable or []):
                raise ValueError(f"params.{name}: acts only under {parent}: {needed}, which this space never "
                                 f"chooses; add it, or leave {name} at {KNOB_OFF[name]!r}")
        return self

    @model_validator(mode="before")
    @classmethod
    def _null_means_off(cls, raw: Any) -> Any:
        """A knob pinned at null (`clipnorm: null`) is pinned off: a fixed knob needs a value."""
        params = raw.get("params") if isinstance(raw, dict) else None
        for name in NULL_MEANS_OFF:
            spec = params.get(name) if isinstance(params, dict) else None
            if isinstance(spec, dict) and spec.get("role") == "fixed" and spec.get("value") is None:
                params = {**params, name: {**spec, "value": KNOB_OFF[name]}}
                raw = {**raw, "params": params}
        return raw

    def baseline_values(self) -> dict[str, Any]:
        """The baseline net's every knob: its baseline entry, else its pinned value, else its default."""
        values = {n: (hp.value if hp.role == "fixed" else hp.default) for n, hp in self.params.items()}
        values.update({n: v for n, v in self.baseline.items() if self.params[n].role != "fixed"})
        return {n: v for n, v in values.items() if v is not None}

    def _check_range_parent(self, name: str, hp: Hyperparameter, seen: list[str]) -> None:
        """The parent exists above, and each of its possible values has exactly one range."""
        parent, table = next(iter(hp.ranges.items()))
        if parent not in seen:
            raise ValueError(f"params.{name}.ranges: '{parent}' must be defined above it")
        options = self.params[parent].candidates()
        if options is None:
            raise ValueError(f"params.{name}.ranges: '{parent}' has no choices to give ranges to")
        missing = [o for o in options if not any(_same_choice(c, o) for c in table)]
        if missing:
            raise ValueError(f"params.{name}.ranges: no range for {parent}={missing[0]!r}")
        if self.params[parent].role != "fixed":
            unknown = [c for c in table if not any(_same_choice(c, o) for o in options)]
            if unknown:
                raise ValueError(f"params.{name}.ranges: {unknown[0]!r} is not a choice of {parent}")

    def _baseline_range_problem(self, name: str, value: Any) -> str | None:
        """A baseline value outside the range its own parent value gives it. A parent pinned
        by --set is not the file's mistake: `baseline_params` then leaves the value out."""
        hp = self.params[name]
        if not hp.ranges or hp.role == "fixed":
            return None
        parent = next(iter(hp.ranges))
        if self.params[parent].role == "fixed" or parent not in self.baseline:
            return None
        chosen = {parent: self.baseline[parent]}
        low, high = hp.bounds(chosen)
        if not low <= value <= high:
            return f"{value!r} is outside [{low}, {high}], the range for {parent}={chosen[parent]!r}"
        return None

    def searched(self) -> dict[str, Hyperparameter]:
        return {n: hp for n, hp in self.params.items() if hp.role != "fixed"}

    def sha(self) -> str:
        """Identity of the effective space, stored on the study so a resume cannot mix spaces.

        `data.data_dir` is left out: it says where the same Fashion-MNIST files are found
        (like $STUDY_DATA_DIR, which never entered the hash), not what is searched.
        """
        dumped = self.model_dump(mode="json", exclude={"data": {"data_dir"}})
        for spec in dumped["params"].values():  # a space without ranges keeps its earlier sha
            if spec.get("ranges") is None:
                spec.pop("ranges", None)
        if dumped["train"].get("max_cost") is None:  # and one without a cost cap too
            dumped["train"].pop("max_cost", None)
        for name, off in KNOB_OFF.items():  # and one with a training knob pinned off (cnn.yaml's)
            spec = dumped["params"].get(name)
            if spec and spec["role"] == "fixed" and spec["condition"] is None and _same_choice(spec["value"], off):
                del dumped["params"][name]
        canonical = json.dumps(dumped, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise SpaceError("--set", text, "expected key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _apply_override(raw: dict[str, Any], key: str, value: Any) -> None:
    section, _, field = key.partition(".")
    if section in ("data", "train") and field:
        model = DataConfig if section == "data" else TrainConfig
        if field not in model.model_fields:
            raise SpaceError("--set", key, f"unknown key; {section} has {', '.join(model.model_fields)}")
        raw.setdefault(section, {})[field] = value
    elif section == "params" and field:
        params = raw.get("params") or {}
        if field not in params:
            raise SpaceError("--set", key, f"unknown hyperparameter; the space has {', '.join(params)}")
        value = _pinned_value(key, params[field], value)
        pinned = {k: v for k, v in params[field].items() if k in ("type", "condition", "default")}
        params[field] = {**pinned, "role": "fixed", "value": value}
        raw.get("baseline", {}).pop(field, None)
    else:
        raise SpaceError("--set", key, "unknown key; use data.<field>, train.<field> or params.<name>")


def _pinned_value(key: str, spec: Any, value: Any) -> Any:
    """A pinned value of the knob's type (YAML reads `1e4` as a string: it becomes 10000.0),
    and one of its choices if it has them.

    The range is not enforced: pinning outside it (`params.learning_rate=3.0`) is how a user
    probes beyond the searched space, e.g. to provoke a NaN on purpose.
    """
    if not isinstance(spec, dict) or (value is None and key.removeprefix("params.") in NULL_MEANS_OFF):
        return value
    kind, choices = spec.get("type"), spec.get("choices")
    if kind == "float" and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise SpaceError("--set", key, f"{value!r} is not a number") from None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        raise SpaceError("--set", key, f"{value!r} is not an integer")
    if kind == "float" and not is_number:
        raise SpaceError("--set", key, f"{value!r} is not a number")
    if kind == "bool" and not isinstance(value, bool):
        raise SpaceError("--set", key, f"{value!r} is not true or false")
    if kind == "categorical" and choices and value not in choices:
        raise SpaceError("--set", key, f"{value!r} is not one of the choices {choices}")
    return value


def _first_error(error: ValidationError) -> tuple[str, str]:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    return key, first["msg"].removeprefix("Value error, ")


def load_space(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> SearchSpace:
    """Read, override and validate a space; every problem is one SpaceError line."""
    source = str(path)
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise SpaceError(source, "", f"cannot read search space ({exc.strerror})") from None
    except UnicodeDecodeError as exc:  # a binary file, or another encoding
        raise SpaceError(source, "", f"not UTF-8 text (byte {exc.start}); a search space is a YAML file") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:  # ReaderError (control characters) included
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise SpaceError(source, where, "not valid YAML") from None
    if not isinstance(raw, dict):
        raise SpaceError(source, "", "a search space is a YAML mapping")
    for text_override in overrides:
        key, value = parse_override(text_override)
        _apply_override(raw, key, value)
    try:
        return SearchSpace.model_validate(raw)
    except ValidationError as exc:
        key, message = _first_error(exc)
        raise SpaceError(source, key, message) from None
