"""The one config object of a search: everything that decides what runs, dumped whole
into MLflow (secrets masked) so a study can be reproduced from its run page."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from study.space import SearchSpace


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    space_file: str = Field(description="YAML the space came from; logged as an artifact")
    space: SearchSpace = Field(description="the space after --set overrides")
    trials: int | None = Field(40, ge=1, description="finished trials to reach, across runs and workers")
    timeout: float | None = Field(None, gt=0, description="wall-clock cap for this invocation")
    experiment: str = Field(description="MLflow experiment: one per question asked")
    study_name: str | None = Field(None, description="None = <experiment>-seed<seed>, so re-runs resume")
    seed: int = Field(0, description="sampler and weight-init seed of the first replicate")
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
