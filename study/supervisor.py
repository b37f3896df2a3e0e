"""`python -m study search --workers N`: one supervisor, N worker processes, one study.

The supervisor does everything that must happen once (MLflow store and experiment, the
study run, the study, the start-up reconcile: concurrent first use of a SQLite store
crashes with schema errors, measured in docs/cluster.md), then starts N real processes
(`python -m study worker`), each with its own worker index (its sampler seed) and its share
of the cores. It watches them: a worker that dies has its running trial marked FAIL
(`worker_lost`) in Optuna and its MLflow run FAILED at once, and is replaced (at most N
times), as is one stopped by a signal the supervisor did not send (its trial ends
`interrupted`). SIGINT/SIGTERM are forwarded; the workers end their trials as `interrupted`,
and a stop caught between two studies starts no workers for the next.
Relative store paths reach the workers absolute: they start in the project root.
Coordination itself is Optuna's: the shared storage and MaxTrialsCallback.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time

import optuna

from study.config import SearchConfig
from study.data import Splits
from study.driver import ExitCode, StudySession, drive, finished_count, interrupted_line, studies_text
from study.inputs import PreparedStudy, check_inputs
from study.paths import PROJECT_ROOT, absolute_sqlite, absolute_storage
from study.reconcile import fail_process_trials, reconcile_study
from study.secrets import mask_secrets
from study.tracking import Tracker
from study.workers import thread_split, worker_env

POLL_SECONDS = 0.2
KILL_AFTER_SECONDS = 60.0  # a worker gets this long to record its interrupted trial
# How a worker ends when the supervisor stops it: exit 130 from its own handler, or the signal
# itself if it came before the handler was in place (SIGINT: a terminal's Ctrl-C reaches the
# whole process group), or the kill after KILL_AFTER_SECONDS.
STOP_EXIT_CODES = (ExitCode.INTERRUPTED, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL)


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
               "--space", os.path.abspath(config.space_file), "--experiment", config.experiment, "--study-name", item.name,
               "--seed", str(item.seed), "--sampler", config.sampler, "--pruner", config.pruner,
               "--objective", config.objective, "--max-consecutive-failures", str(config.max_consecutive_failures),
               "--heartbeat-interval", str(config.heartbeat_interval), "--grace-period", str(config.grace_period),
               "--max-retry", str(config.max_retry), "--trial-artifacts", config.trial_artifacts]
    if not config.baseline:
        command.append("--no-baseline")
    if config.trials is not None:
        command += ["--trials", str(config.trials)]
    return command + shared_worker_flags(args, timeout)


def shared_worker_flags(args: argparse.Namespace, timeout: float | None) -> list[str]:
    """What every kind of worker takes from its supervisor's invocation: the time left, the
    data folder (absolute: workers start in the project root) and the user's overrides."""
    flags = [] if timeout is None else ["--timeout", f"{max(1.0, timeout):.1f}"]
    if args.data_dir:
        flags += ["--data-dir", os.path.abspath(args.data_dir)]
    for override in args.overrides:
        flags += ["--set", override]
    return flags


class StopRequest:
    """The first SIGINT/SIGTERM a supervisor caught. The supervisors of a sweep's factors share
    one, so that a signal between two factors (no worker running) still stops the sweep."""

    def __init__(self) -> None:
        self.signum: int | None = None


class Supervisor:
    """The supervisor as the driver's trial runner: N worker processes run each study."""

    reuses_study_run = False

    def __init__(self, config: SearchConfig, args: argparse.Namespace, worker_index: int = 0,
                 stop: StopRequest | None = None) -> None:
        self.config, self.args = config, args
        self.worker_index = worker_index
        self.stop = stop or StopRequest()
        self.base_index = worker_index * config.workers  # machines x workers never share an index

    def on_signal(self, signum: int, frame: object) -> None:
        if self.stop.signum is None:
            self.stop.signum = signum
            print(f"supervisor: {signal.Signals(signum).name}: stopping the workers; their running trials "
                  "end as FAIL (interrupted)", flush=True)

    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)

    def experiment(self, tracker: Tracker, name: str) -> str:
        return tracker.ensure_experiment(name)  # creates the store: once, here, before any worker

    def banner(self, prepared: list[PreparedStudy], splits: Splits) -> str | None:
        intra, inter = thread_split(self.config.workers)
        return (f"search: {self.config.workers} workers on {studies_text(prepared)} of {self.config.space.name} "
                f"on {splits.source} ({splits.sizes()}), storage {mask_secrets(self.config.storage)}, "
                f"tracking {mask_secrets(self.config.tracking_uri)}, TF threads {intra} intra-op / {inter} "
                "inter-op per worker")

    def spawn(self, item: PreparedStudy, worker_index: int, timeout: float | None) -> subprocess.Popen:
        env = worker_env(self.config.workers)
        # The workers start in the project root: relative paths must name the same files there.
        env["STUDY_STORAGE"] = absolute_storage(self.config.storage)
        env["MLFLOW_TRACKING_URI"] = absolute_sqlite(self.config.tracking_uri)
        return subprocess.Popen(self.worker_command(item, worker_index, timeout),
                                cwd=PROJECT_ROOT, env=env, preexec_fn=_die_with_parent)

    def worker_command(self, item: PreparedStudy, worker_index: int, timeout: float | None) -> list[str]:
        return worker_command(self.config, self.args, item, worker_index, timeout)

    def target_reached(self, study: optuna.Study) -> bool:
        """Whether a lost worker's place may stay empty: the study has its --trials."""
        return self.config.trials is not None and finished_count(study) >= self.config.trials

    def after_loss(self, session: StudySession) -> None:
        """What a lost worker leaves to do besides its FAILed trial: nothing for a search (the
        sampler draws on); a sweep queues the arm again (study/sweep_runner.py)."""

    def run_trials(self, session: StudySession, timeout: float | None) -> ExitCode:
        study, trials = session.study, self.config.trials
        if self.stop.signum is not None:  # caught between two studies: start no workers for the next
            return ExitCode.INTERRUPTED
        if self.target_reached(study):
            # already there (a re-run): no need to start N TensorFlow processes
            print(f"[{session.item.name}] already has {finished_count(study)}/{trials} finished trials", flush=True)
            return ExitCode.OK
        return self.supervise(session, timeout)

    def supervise(self, session: StudySession, timeout: float | None) -> ExitCode:
        """N workers on the study until they are done, with a clean-up if this process fails."""
        deadline = None if timeout is None else time.monotonic() + timeout
        children: dict[int, subprocess.Popen] = {}
        try:
            return self.watch(session, children, deadline)
        finally:
            stop_children(children)  # only left on a crash of the supervisor's own steps

    def exit_line(self, code: ExitCode, session: StudySession) -> str | None:
        if code == ExitCode.INTERRUPTED:
            return interrupted_line(session)
        if code == ExitCode.FAILURES:
            return (f"search: stopped after --max-consecutive-failures {self.config.max_consecutive_failures} "
                    f"consecutive failed trials in a worker; check the ranges in {self.config.space_file}")
        if code == ExitCode.ERROR:
            return (f"search: workers kept dying before the study reached {self.config.trials} trials; "
                    "re-run the same command to continue")
        return None

    def watch(self, session: StudySession, children: dict[int, subprocess.Popen],
              deadline: float | None) -> ExitCode:
        """Start N workers on one study and watch them until all have exited; the exit code."""
        item, study, tracker = session.item, session.study, session.tracker
        workers = self.config.workers

        def remaining() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        children.update({i: self.spawn(item, self.base_index + i, remaining()) for i in range(workers)})
        generation = dict.fromkeys(children, 0)
        restarts_left, lost, tripped = workers, 0, False
        stop_sent: float | None = None
        while children:
            if (self.stop.signum is not None or tripped) and stop_sent is None:
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
                ended_by_stop = (self.stop.signum is not None or tripped) and code in STOP_EXIT_CODES
                reason = "interrupted" if code == ExitCode.INTERRUPTED or ended_by_stop else "worker_lost"
                failed = fail_process_trials(study, tracker, proc.pid, reason)  # normally none left
                if ended_by_stop and code == -signal.SIGKILL:
                    print(f"supervisor: worker {index} (pid {proc.pid}) was killed: it did not stop within "
                          f"{KILL_AFTER_SECONDS:.0f} s; {failed} running trial(s) marked FAIL ({reason})", flush=True)
                if code == ExitCode.FAILURES:
                    tripped = True
                elif code != ExitCode.OK and not ended_by_stop:
                    # dead, or stopped by someone else's signal: its place is filled again
                    lost += 1
                    print(f"supervisor: worker {index} (pid {proc.pid}) {describe_exit(code)}; "
                          f"{failed} running trial(s) marked FAIL ({reason})", flush=True)
                    reconcile_study(study, tracker, session.experiment_id)  # e.g. a run created just before the kill
                    self.after_loss(session)
                    left = remaining()
                    stopping = self.stop.signum is not None or tripped  # a signal may have come in meanwhile
                    if not stopping and restarts_left > 0 and not self.target_reached(study) and (left is None or left > 1):
                        restarts_left -= 1
                        generation[index] += 1  # its own worker index: a fresh sampler stream
                        worker_index = self.base_index + index + workers * generation[index]
                        children[index] = self.spawn(item, worker_index, left)
                        print(f"supervisor: worker {index} restarted (pid {children[index].pid}, "
                              f"worker index {worker_index})", flush=True)
            time.sleep(POLL_SECONDS)
        reconcile_study(study, tracker, session.experiment_id)  # nothing of ours is left RUNNING
        if self.stop.signum is not None:
            return ExitCode.INTERRUPTED
        if tripped:
            return ExitCode.FAILURES
        if lost and not self.target_reached(study) and (deadline is None or time.monotonic() < deadline):
            return ExitCode.ERROR
        return ExitCode.OK


def stop_children(children: dict[int, subprocess.Popen]) -> None:
    """SIGTERM the workers still running (they end their trials as interrupted), then wait."""
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children.values():
        try:
            proc.wait(KILL_AFTER_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_supervised(config: SearchConfig, args: argparse.Namespace) -> int:
    """`search --workers N`: check, create once, then supervise N workers per study."""
    checked = check_inputs(config)  # bad input: exit 2 before anything exists
    return drive(config, checked, Supervisor(config, args, args.worker_index))
