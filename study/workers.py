"""One worker of `python -m study search --workers N`: the same trials on the same study.

The supervisor (study/supervisor.py) creates the MLflow store, the experiment, the study run
and the study, then starts N of these as real processes (`python -m study worker ...`). A
worker can also be started by hand on another machine against a shared storage: it then
creates what is missing itself, like `search` does.
"""

from __future__ import annotations

import os

from study.config import SearchConfig
from study.contract import TF_INTER_OP_THREADS, TF_INTRA_OP_THREADS
from study.data import Splits
from study.driver import ExitCode, StudySession, drive
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


def tf_thread_params() -> dict[str, int]:
    """The threads TensorFlow trains this process's trials with, as trial params.

    The environment variables win (TensorFlow reads them when it starts), then tf.config;
    TensorFlow's default for both pools is every core this process may use."""
    import tensorflow as tf

    cores = available_cores()
    configured = (tf.config.threading.get_intra_op_parallelism_threads(),
                  tf.config.threading.get_inter_op_parallelism_threads())
    return {name: int(os.environ.get(var) or from_config or cores)
            for name, var, from_config in zip((TF_INTRA_OP_THREADS, TF_INTER_OP_THREADS), THREAD_VARS, configured)}


def supervised_experiment(tracker: Tracker, name: str) -> str:
    """A worker's experiment: the supervisor made it, and N workers must not all migrate or
    retag the store at once; created only by a worker started by hand before any supervisor."""
    return tracker.experiment_id(name) or tracker.ensure_experiment(name)


class WorkerTrials:
    """One worker of a supervisor (or started by hand): trials in this process, on a study
    and study run the supervisor created; it only ends the study run if it opened it."""

    reuses_study_run = True

    def __init__(self, config: SearchConfig, worker_index: int) -> None:
        from study.search import TrialsHere

        self.worker_index = worker_index
        self.trials = TrialsHere(config, worker_index, extra_trial_params={"worker_index": worker_index})

    def install_signals(self) -> None:
        self.trials.install_signals()

    def experiment(self, tracker: Tracker, name: str) -> str:
        return supervised_experiment(tracker, name)

    def banner(self, prepared: list[PreparedStudy], splits: Splits) -> str | None:
        return None  # the supervisor printed it; run_trials says which worker started

    def run_trials(self, session: StudySession, timeout: float | None) -> ExitCode:
        print(f"[{session.item.name}] worker {self.worker_index} (pid {os.getpid()}) started, sampler seed "
              f"{session.sampler_seed}, threads {os.environ.get('TF_NUM_INTRAOP_THREADS', 'default')}", flush=True)
        return self.trials.run_trials(session, timeout)

    def exit_line(self, code: ExitCode, session: StudySession) -> str | None:
        name, failures = session.item.name, self.trials.failures
        if code == ExitCode.INTERRUPTED:
            return f"[{name}] worker {self.worker_index} interrupted"
        if code == ExitCode.FAILURES:
            return (f"[{name}] worker {self.worker_index}: {failures.streak} consecutive failed trials "
                    f"(last: {failures.last_reason}); check the ranges in {session.config.space_file}")
        return None


def run_worker(config: SearchConfig, checked: tuple[Splits, Tracker, list[PreparedStudy]], index: int) -> int:
    """Optimise one study until it has --trials finished trials; the exit code (0, 3, 130)."""
    splits, tracker, prepared = checked
    return drive(config, (splits, tracker, prepared[:1]), WorkerTrials(config, index))
