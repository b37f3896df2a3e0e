"""One worker of `python -m study search --workers N`: the same trials on the same study.

The supervisor (study/supervisor.py) creates the MLflow store, the experiment, the study run
and the study, then starts N of these as real processes (`python -m study worker ...`). A
worker can also be started by hand on another machine against a shared storage: it then
creates what is missing itself, like `search` does.
"""

from __future__ import annotations

import os

import optuna

from study.config import SearchConfig
from study.data import Splits
from study.inputs import PreparedStudy
from study.tracking import Tracker

THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def thread_split(workers: int, cores: int | None = None) -> tuple[int, int]:
    """(intra-op, inter-op) threads per worker so that N workers share the machine's cores."""
    cores = cores or available_cores()
    intra = max(1, cores // max(1, workers))
    return intra, (1 if workers > 1 else min(2, cores))


def worker_env(workers: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: TF reads these when it starts; OMP for oneDNN kernels."""
    intra, inter = thread_split(workers)
    env = dict(os.environ if base is None else base)
    env.update({"TF_NUM_INTRAOP_THREADS": str(intra), "TF_NUM_INTEROP_THREADS": str(inter),
                "OMP_NUM_THREADS": str(intra), "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2")})
    return env


def configure_threads() -> tuple[int, int] | None:
    """Apply the supervisor's split through tf.config too, before TensorFlow runs anything."""
    if not all(os.environ.get(var) for var in THREAD_VARS):
        return None
    intra, inter = (int(os.environ[var]) for var in THREAD_VARS)
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:  # already initialised: the environment variables have done it
        pass
    return intra, inter


def run_worker(config: SearchConfig, checked: tuple[Splits, Tracker, list[PreparedStudy]], index: int) -> int:
    """Optimise one study until it has --trials finished trials; the exit code (0, 3, 130)."""
    from study.objective import TrialContext
    from study.reconcile import reconcile_study, register_mlflow_repair
    from study.search import (EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_OK, create_study, fail_own_trials,
                              install_signal_handlers, open_study_run, optimize)

    splits, tracker, prepared = checked
    install_signal_handlers()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    item = prepared[0]
    study = create_study(config, item, worker_index=index)
    experiment_id = tracker.experiment_id(config.experiment)
    run_id = study.user_attrs.get("mlflow_study_run_id")
    if experiment_id is None or run_id is None:  # started by hand before any `search`
        experiment_id = tracker.ensure_experiment(config.experiment)
        run_id = open_study_run(config, item, splits, tracker, experiment_id, study)
    register_mlflow_repair(tracker)
    reconcile_study(study, tracker, experiment_id)
    context = TrialContext(config, splits, tracker, experiment_id, run_id, item.name, item.seed,
                           base_params={**config.flat(), **splits.sizes(), "data.source": splits.source,
                                        "worker_index": index})
    print(f"[{item.name}] worker {index} (pid {os.getpid()}) started, sampler seed {item.seed + index}, "
          f"threads {os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')}", flush=True)
    try:
        failures = optimize(config, study, context, config.timeout)
    except KeyboardInterrupt:
        fail_own_trials(study, tracker, experiment_id)
        print(f"[{item.name}] worker {index} interrupted", flush=True)
        return EXIT_INTERRUPTED
    if failures.tripped:
        print(f"[{item.name}] worker {index}: {failures.streak} consecutive failed trials "
              f"(last: {failures.last_reason}); check the ranges in {config.space_file}", flush=True)
        return EXIT_FAILURES
    return EXIT_OK
