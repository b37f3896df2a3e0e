"""The one config object of a search: everything that decides what runs, dumped whole
into MLflow (secrets masked) so a study can be reproduced from its run page."""

from __future__ import annotations

import importlib.util
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from study.space import SearchSpace

# objective.py seeds a trial's training with seed * TRIAL_SEED_STRIDE + trial number; numpy
# (and Keras through it) takes seeds in [0, 2**32).
TRIAL_SEED_STRIDE = 10007
SEED_LIMIT = 2 ** 32
# Trial numbers a study may reach beyond --trials: workers' overshoot, retried stale trials,
# FAIL trials; and re-runs with a larger --trials are checked again then.
TRIAL_NUMBER_MARGIN = 10000
# The experiment names a folder (artifacts/<experiment>/) and both name MLflow runs and
# Optuna rows (512 characters in Optuna's RDB schema); 255 bytes is a file name's limit.
MAX_NAME_BYTES = 200
GP_INSTALL = "make setup EXTRAS=gp (or: .venv/bin/pip install -r requirements-gp.txt)"


class ConfigError(ValueError):
    """A flag that passes its type but cannot run: one line naming the flag; exit 2."""


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space_file: str = Field(description="YAML the space came from; logged as an artifact")
    space: SearchSpace = Field(description="the space after --set overrides")
    trials: int | None = Field(40, ge=1, description="finished trials to reach, across runs and workers")
    timeout: float | None = Field(None, gt=0, description="wall-clock cap for this invocation")
    experiment: str = Field(description="MLflow experiment: one per question asked")
    study_name: str | None = Field(None, description="None = <experiment>-seed<seed>, so re-runs resume")
    seed: int = Field(0, ge=0, description="sampler and weight-init seed of the first replicate")
    replicates: int = Field(1, ge=1, description="independent studies: a rate needs several")
    sampler: Literal["tpe", "qmc", "random", "gp", "cmaes"] = Field("tpe", description="tpe adapts; qmc/random stay unbiased")
    pruner: Literal["hyperband", "median", "none"] = Field("hyperband", description="cuts bad trials early")
    objective: Literal["val_accuracy", "val_loss", "both"] = Field("val_accuracy", description="what the sampler optimises")
    storage: str = Field(description="Optuna storage: journal file or RDB URL; the source of truth")
    tracking_uri: str = Field(description="MLflow store the runs are mirrored to")
    workers: int = Field(1, ge=1, description="processes on this machine sharing the study")
    max_consecutive_failures: int = Field(5, ge=1, description="a broken space stops instead of burning hours")
    heartbeat_interval: int = Field(30, ge=1, description="RDB storages only: liveness ping, seconds")
    grace_period: int = Field(90, ge=1, description="RDB storages only: silence before a trial is stale")
    max_retry: int = Field(1, ge=0, description="RDB storages only: re-runs of a stale trial")
    baseline: bool = Field(True, description="enqueue the space's baseline first; a campaign's pool is i.i.d.")
    trial_artifacts: Literal["full", "lean"] = Field(
        "full", description="lean: no learning-curve PNG, no best-model upload (campaign throughput)")

    def study_name_for(self, seed: int) -> str:
        if self.study_name and self.replicates == 1:
            return self.study_name
        base = self.study_name or self.experiment
        return f"{base}-seed{seed}"

    def replicate_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.replicates))

    def flat(self) -> dict[str, Any]:
        """Dotted keys for MLflow params; the space's knob specs go in an artifact instead."""
        dumped = self.model_dump(mode="json", exclude={"space"})
        for section in ("data", "train"):
            for key, value in getattr(self.space, section).model_dump(mode="json").items():
                dumped[f"{section}.{key}"] = value
        dumped["space_name"] = self.space.name
        return dumped


def _check_name(flag: str, name: str) -> None:
    if not name.strip():
        raise ConfigError(f"{flag}: must not be empty")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ConfigError(f"{flag}: {size} bytes long; at most {MAX_NAME_BYTES} (it names a folder and MLflow runs)")


def largest_seed(config: SearchConfig) -> int:
    """The largest --seed whose replicates' training seeds all stay below 2**32."""
    top_trial = (config.trials or 0) + TRIAL_NUMBER_MARGIN
    return (SEED_LIMIT - 1 - top_trial) // TRIAL_SEED_STRIDE - (config.replicates - 1)


def module_missing(name: str) -> bool:
    """Without importing it (torch takes seconds)."""
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):  # ValueError: a None left in sys.modules by a failed import
        return True


def check_config(config: SearchConfig, worker_index: int) -> None:
    """Checks that need no data, store or heavy library: run before any of them loads.

    `worker_index` offsets the sampler seed (the supervisor hands each worker
    index * workers + i, plus `workers` per restart), so it is bounded with the seed.
    """
    _check_name("--experiment", config.experiment)
    _check_name("--study-name", config.study_name_for(config.seed + config.replicates - 1))
    limit = largest_seed(config)
    if limit < 0:
        raise ConfigError(f"--trials {config.trials}: too many for training seeds (seed x {TRIAL_SEED_STRIDE} + "
                          "trial number) to stay below 2**32")
    if config.seed > limit:
        raise ConfigError(
            f"--seed {config.seed}: training seeds are seed x {TRIAL_SEED_STRIDE} + trial number and must stay "
            f"below 2**32; with --replicates {config.replicates} and --trials {config.trials} use --seed <= {limit}")
    if worker_index < 0:
        raise ConfigError(f"--worker-index {worker_index}: must be >= 0")
    top_offset = (worker_index + 1) * config.workers + config.workers ** 2
    if config.seed + config.replicates - 1 + top_offset >= SEED_LIMIT:
        raise ConfigError(f"--worker-index {worker_index}: sampler seeds are seed + worker offset and must stay "
                          "below 2**32; use a smaller index")
    if config.sampler == "gp" and module_missing("torch"):
        raise ConfigError(f"--sampler gp needs PyTorch, an optional extra: {GP_INSTALL}")
