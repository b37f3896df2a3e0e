"""`python -m study search --workers N`: one supervisor, N worker processes, one study.

The supervisor does everything that must happen once (MLflow store and experiment, the
study run, the study, the start-up reconcile: concurrent first use of a SQLite store
crashes with schema errors, measured in docs/cluster.md), then starts N real processes
(`python -m study worker`), each seeding its sampler with seed + index and using its share of
the cores. It watches them: a worker that dies has its running trial marked FAIL
(`worker_lost`) in Optuna and its MLflow run FAILED at once, and is replaced (at most N
times). SIGINT/SIGTERM are forwarded; the workers end their trials as `interrupted`.
Coordination itself is Optuna's: the shared storage and MaxTrialsCallback.
"""

from __future__ import annotations

import argparse
import ctypes
import signal
import subprocess
import sys
import time

import optuna

from study.config import SearchConfig
from study.inputs import PreparedStudy, check_inputs
from study.paths import PROJECT_ROOT
from study.reconcile import fail_process_trials, reconcile_study, register_mlflow_repair
from study.secrets import mask_secrets
from study.tracking import Tracker
from study.workers import thread_split, worker_env

POLL_SECONDS = 0.2
KILL_AFTER_SECONDS = 60.0  # a worker gets this long to record its interrupted trial
EXIT_OK, EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_WORKERS_LOST = 0, 3, 130, 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM it if the supervisor itself is killed (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit {code}"


def worker_command(config: SearchConfig, args: argparse.Namespace, item: PreparedStudy, index: int,
                   timeout: float | None) -> list[str]:
    """The worker's flags: the user's, narrowed to one study. Storage and tracking URIs go
    through the environment so that a password never shows in `ps`."""
    command = [sys.executable, "-m", "study", "worker", "--worker-index", str(index),
               "--space", config.space_file, "--experiment", config.experiment, "--study-name", item.name,
               "--seed", str(item.seed), "--sampler", config.sampler, "--pruner", config.pruner,
               "--objective", config.objective, "--max-consecutive-failures", str(config.max_consecutive_failures),
               "--heartbeat-interval", str(config.heartbeat_interval), "--grace-period", str(config.grace_period),
               "--max-retry", str(config.max_retry)]
    if config.trials is not None:
        command += ["--trials", str(config.trials)]
    if timeout is not None:
        command += ["--timeout", f"{max(1.0, timeout):.1f}"]
    if args.data_dir:
        command += ["--data-dir", args.data_dir]
    for override in args.overrides:
        command += ["--set", override]
    return command


class Supervisor:
    def __init__(self, config: SearchConfig, args: argparse.Namespace) -> None:
        self.config, self.args = config, args
        self.stop_signal: int | None = None
        self.base_index = args.worker_index * config.workers  # machines x workers never share a seed

    def on_signal(self, signum: int, frame: object) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum
            print(f"supervisor: {signal.Signals(signum).name}: stopping the workers; their running trials "
                  "end as FAIL (interrupted)", flush=True)

    def install(self) -> None:
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def spawn(self, item: PreparedStudy, seed_offset: int, timeout: float | None) -> subprocess.Popen:
        env = worker_env(self.config.workers)
        env["STUDY_STORAGE"], env["MLFLOW_TRACKING_URI"] = self.config.storage, self.config.tracking_uri
        return subprocess.Popen(worker_command(self.config, self.args, item, seed_offset, timeout),
                                cwd=PROJECT_ROOT, env=env, preexec_fn=_die_with_parent)

    def run_study(self, item: PreparedStudy, study: optuna.Study, tracker: Tracker, experiment_id: str,
                  deadline: float | None) -> int:
        """Start N workers on one study and watch them until all have exited; the exit code."""
        from study.search import finished_count

        workers = self.config.workers

        def remaining() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        def target_reached() -> bool:
            return self.config.trials is not None and finished_count(study) >= self.config.trials

        children: dict[int, subprocess.Popen] = {i: self.spawn(item, self.base_index + i, remaining())
                                                 for i in range(workers)}
        generation = dict.fromkeys(children, 0)
        restarts_left, lost, tripped = workers, 0, False
        stop_sent: float | None = None
        while children:
            if (self.stop_signal is not None or tripped) and stop_sent is None:
                stop_sent = time.monotonic()
                for proc in children.values():
                    proc.send_signal(signal.SIGTERM)
            if stop_sent is not None and time.monotonic() - stop_sent > KILL_AFTER_SECONDS:
                for proc in children.values():
                    proc.kill()
            for index, proc in list(children.items()):
                code = proc.poll()
                if code is None:
                    continue
                del children[index]
                stopping = self.stop_signal is not None or tripped
                reason = "interrupted" if code == EXIT_INTERRUPTED else "worker_lost"
                failed = fail_process_trials(study, tracker, proc.pid, reason)  # normally none left
                if code == EXIT_FAILURES:
                    tripped = True
                elif code not in (EXIT_OK, EXIT_INTERRUPTED):
                    lost += 1
                    print(f"supervisor: worker {index} (pid {proc.pid}) {describe_exit(code)}; "
                          f"{failed} running trial(s) marked FAIL (worker_lost)", flush=True)
                    reconcile_study(study, tracker, experiment_id)  # e.g. a run created just before the kill
                    left = remaining()
                    if not stopping and restarts_left > 0 and not target_reached() and (left is None or left > 1):
                        restarts_left -= 1
                        generation[index] += 1  # a fresh seed: the dead worker's sequence is spent
                        offset = self.base_index + index + workers * generation[index]
                        children[index] = self.spawn(item, offset, left)
                        print(f"supervisor: worker {index} restarted (pid {children[index].pid}, "
                              f"sampler seed {item.seed + offset})", flush=True)
            time.sleep(POLL_SECONDS)
        reconcile_study(study, tracker, experiment_id)  # nothing of ours is left RUNNING
        if self.stop_signal is not None:
            return EXIT_INTERRUPTED
        if tripped:
            return EXIT_FAILURES
        if lost and not target_reached() and (deadline is None or time.monotonic() < deadline):
            return EXIT_WORKERS_LOST
        return EXIT_OK


def run_supervised(config: SearchConfig, args: argparse.Namespace) -> int:
    """`search --workers N`: check, create once, then supervise N workers per study."""
    from study.search import create_study, finished_count, open_study_run, study_result

    splits, tracker, prepared = check_inputs(config)  # bad input: exit 2 before anything exists
    supervisor = Supervisor(config, args)
    supervisor.install()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    experiment_id = tracker.ensure_experiment(config.experiment)  # creates the store: once, here
    register_mlflow_repair(tracker)
    intra, inter = thread_split(config.workers)
    deadline = time.monotonic() + config.timeout if config.timeout else None
    print(f"search: {config.workers} workers on {len(prepared)} stud{'y' if len(prepared) == 1 else 'ies'} of "
          f"{config.space.name} on {splits.source} ({splits.sizes()}), storage {mask_secrets(config.storage)}, "
          f"tracking {mask_secrets(config.tracking_uri)}, TF threads {intra} intra-op / {inter} inter-op "
          "per worker", flush=True)
    for item in prepared:
        study = create_study(config, item)
        run_id = open_study_run(config, item, splits, tracker, experiment_id, study)
        reconcile_study(study, tracker, experiment_id)
        if config.trials is not None and finished_count(study) >= config.trials:
            code = EXIT_OK  # already there (a re-run): no need to start N TensorFlow processes
            print(f"[{item.name}] already has {finished_count(study)}/{config.trials} finished trials", flush=True)
        else:
            code = supervisor.run_study(item, study, tracker, experiment_id, deadline)
        metrics, tags = study_result(study)
        status = {EXIT_OK: "FINISHED", EXIT_INTERRUPTED: "KILLED"}.get(code, "FAILED")
        tracker.end_study_run(run_id, status, metrics, tags)
        if code == EXIT_INTERRUPTED:
            print(f"[{item.name}] interrupted; re-run the same command to continue the study", flush=True)
            return code
        if code == EXIT_FAILURES:
            print(f"search: stopped after --max-consecutive-failures {config.max_consecutive_failures} "
                  f"consecutive failed trials in a worker; check the ranges in {config.space_file}", flush=True)
            return code
        if code != EXIT_OK:
            print(f"search: workers kept dying before the study reached {config.trials} trials; "
                  "re-run the same command to continue", flush=True)
            return code
        if deadline is not None and time.monotonic() >= deadline:
            print(f"search: --timeout reached after study {item.name}", flush=True)
            break
    return EXIT_OK
