"""Every check a search makes before it creates anything, without loading TensorFlow.

Bad input must leave no study, no experiment and no traceback, and be answered fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from study.config import SearchConfig
from study.data import DataError, Splits, load_dataset
from study.paths import tracking_server_problem
from study.secrets import mask_secrets
from study.storage import open_storage
from study.tracking import Tracker


class BadInput(ValueError):
    """One line for the user; exit 2."""


@dataclass
class PreparedStudy:
    name: str
    seed: int
    storage: optuna.storages.BaseStorage


def check_inputs(config: SearchConfig) -> tuple[Splits, Tracker, list[PreparedStudy]]:
    """Load data, open both stores and check resumability, creating nothing.

    The Optuna storage is checked before MLflow is touched, so a bad --storage leaves no
    new MLflow store behind either.
    """
    try:
        splits = load_dataset(config.space.data)
    except DataError as exc:  # the key is set in the space file or by --set: name both
        raise BadInput(f"{config.space_file} (or --set): {exc}") from None
    prepared = []
    for seed in config.replicate_seeds():
        name = config.study_name_for(seed)
        storage = open_storage(config.storage, config.heartbeat_interval, config.grace_period, config.max_retry)
        try:
            existing = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            existing = None
        if existing is not None:
            stored = existing.user_attrs.get("space_sha")
            if stored and stored != config.space.sha():
                raise BadInput(f"{config.space_file}: study '{name}' was created with another space "
                               f"(space_sha {stored}, now {config.space.sha()}); use a new --study-name")
        prepared.append(PreparedStudy(name, seed, storage))
    problem = tracking_server_problem(config.tracking_uri)
    if problem:
        raise BadInput(f"--tracking-uri {mask_secrets(config.tracking_uri)}: {mask_secrets(problem)}")
    tracker = Tracker(config.tracking_uri)
    try:
        tracker.client.search_experiments(max_results=1)
    except Exception as exc:
        raise BadInput(f"--tracking-uri {mask_secrets(config.tracking_uri)}: cannot open "
                       f"({mask_secrets(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)})") from None
    return splits, tracker, prepared
