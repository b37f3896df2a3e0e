"""Scale benchmark (issues 4 and 12): coordination overhead of 1, 2, 4, 8 workers on one study.

**Sleep objective (the figure, issue 12).** W worker processes share one study on the
journal file and on PostgreSQL (RDBStorage with heartbeats, as `study.storage.open_storage`
opens it). Each trial does what a real trial does to the storage (user attributes host, pid
and run id; every knob of cnn.yaml suggested through `study.sampling.suggest_params`; one
report and pruning check per epoch; the runner's callbacks: `MaxTrialsCallback` and a
progress read of every trial) but sleeps a known time instead of training, so the cores are
not the limit and what is left is coordination. All workers import and open the study first,
then start, and run until the study holds 48 trials, at every W: a trial's reads grow with
the study, so the comparison holds the study's size fixed and varies only W. Every W > 1
runs twice: all workers starting *together*, and at *random* phases (each worker after its own
uniform delay within one trial, seeded). Together, trials of one fixed length keep the
workers in lockstep, so their storage calls (about 0.14 CPU s per trial on PostgreSQL at one
worker, 0.2 at eight, mostly SQLAlchemy, one transaction per suggested parameter) all land at
once, and 8 clients plus the server most likely collide on the 2 cores (row or lock contention
in PostgreSQL is not ruled out): a limit of the cores, which the figure is meant to leave out,
not of coordination. Random phases are what unequal trial lengths give a real cluster's workers
(bursts still collide by chance); the goal is judged on them, lockstep reported beside.
Per storage, W and start, >= 3 repeats (interleaved within each repeat):

    trials/s(W)  = finished trials / (last trial's end - first trial's start)
    overhead(W)  = 1 - trials/s(W) / (W x trials/s(1))       (same repeat's 1-worker figure)

reported as the median over repeats with the spread (min-max). Goal: <= 5 % at 8 workers on
PostgreSQL, random phases, steady. The *steady* overhead: the same formula on the rate all W workers
sustain while running, the sum over workers of 1 / their mean cycle (a trial's start to the
same worker's next start). It leaves out the start and the tail, where finished workers wait
for the last trial: with 6 trials per worker one trial is a sixth of the run, a cost of the
run's length that a long run amortises, not of coordination. A random-phase run has only the
steady figure, since its span holds the delays themselves. `cpu_share` = the workers' CPU seconds / (span x cores): well under 1 means the
cores were not the limit. `storage_ops_per_trial`: journal = records appended per trial;
PostgreSQL = committed + rolled-back transactions per trial (`pg_stat_database`).

**Real trials (optional, `--real-trials`).** The real runner (`python -m study search
[--workers W]`) with a minimal trial (1 epoch on 256 images, a 1-block net, random sampler,
no pruning), one repeat; its overhead subtracts the cores' limit:
1 - trials/s(W) / (min(W, cores) x trials/s(1)). Per configuration:

- `trials_per_s`: finished trials / span from the first trial's start to the last one's end
  (steady state, start-up excluded), and `wall_s` of the whole command (start-up included);
- `trial_s`: mean trial duration (Optuna timestamps; includes MLflow logging);
- `gap_s`: mean time a worker spends between the end of one trial and the start of its next:
  Optuna ask/tell, sampler, callbacks: the coordination cost per trial;
- `storage_ops_per_trial`: journal = log records appended per trial (every write is one
  locked append; reads replay the tail); PostgreSQL = committed + rolled-back transactions
  per trial from `pg_stat_database` (each at least one network round trip).

Also measured (`mlflow_sqlite`): P processes writing trial-shaped runs to one MLflow SQLite
store, with the default rollback journal and in WAL mode, and P processes opening a *fresh*
store at once (the supervisor exists because of that one).

PostgreSQL comes from $SCALE_POSTGRES_URL, or a temporary cluster (initdb/pg_ctl from
Debian's postgresql on a free 127.0.0.1 port); without either only the journal is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import multiprocessing as mp
import os
import random
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (DEFAULT_SPACE, ROOT, Options, Row, environment, markdown_table, quiet, stats,
                               write_results)

NAME = "scale"
WORKER_COUNTS = (1, 2, 4, 8)
GOAL_OVERHEAD = 0.05
GOAL = (f"coordination overhead 1 - trials/s(8) / (8 x trials/s(1)) <= {GOAL_OVERHEAD:.0%} at 8 workers on "
        "PostgreSQL (sleep objective, workers at random phases, steady rate, >= 3 repeats)")
# How the W workers start. `together`: all at once, so with trials of one fixed length their
# storage calls stay in lockstep, and 8 clients' CPU bursts (SQLAlchemy) plus the server's
# most likely collide on 2 cores: the cores' limit, not coordination. `random`: each worker after its
# own uniform delay within one trial, the independent phases that unequal trial lengths give
# a real cluster's workers (bursts still collide, by chance).
TOGETHER, RANDOM = "together", "random"
STARTS = (TOGETHER, RANDOM)
GOAL_CONFIGURATION = ("postgresql", 8, RANDOM)  # (storage, workers, start) of the goal's figure
MIN_REPEATS = 3
# Every W runs a study of the same size: a trial's storage reads grow with the study (the
# runner's progress line reads every trial), so a study of 6 trials per worker made the
# 8-worker study 8x larger than the 1-worker one, and charged that growth to coordination.
STUDY_TRIALS = 48       # 6 trials per worker at W = 8; 144 s of sleep at W = 1
QUICK_STUDY_TRIALS = 8
TINY = ["--sampler", "random", "--pruner", "none", "--set", "data.train_size=256", "--set", "data.val_size=128",
        "--set", "data.test_size=128", "--set", "train.epochs=1", "--set", "params.n_conv_blocks=1",
        "--set", "params.filters=16", "--set", "params.convs_per_block=1", "--set", "params.kernel_size=3",
        "--set", "params.dense_units=64", "--set", "params.augment=false", "--set", "params.batch_size=128"]


# --- PostgreSQL ---------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TempPostgres:
    """initdb as `postgres` (it refuses root) + pg_ctl on 127.0.0.1; trust auth, bench only."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("Debian's postgresql is not installed")
        self.bindir = Path(found[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="scale-bench-pg-"))
        self.folder.chmod(0o755)
        self.port = _free_port()

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, text=True)

    def __enter__(self) -> "TempPostgres":
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        data = self.folder / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "bench", "-A", "trust", "--no-sync")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.folder / "log"), "-w", "-o",
                  f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200", "start")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://bench@127.0.0.1:{self.port}/{db}"


def _pg_engine(url: str):
    import sqlalchemy

    from study.storage import with_installed_driver

    return sqlalchemy.create_engine(with_installed_driver(url), isolation_level="AUTOCOMMIT")


def _pg_new_database(admin_url: str, name: str) -> str:
    import sqlalchemy

    with _pg_engine(admin_url).connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    return admin_url.rsplit("/", 1)[0] + "/" + name


def _pg_transactions(url: str) -> int:
    import sqlalchemy

    engine = _pg_engine(url)
    with engine.connect() as connection:
        value = connection.execute(sqlalchemy.text(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()")).scalar()
    engine.dispose()
    return int(value or 0)


def pg_profile(url: str, commits: int = 50) -> dict[str, Any]:
    """The server's durability settings and the latency of one small committed write: with
    fsync on, every storage operation of a trial waits for it, so it sets what one
    PostgreSQL serves (docs/cluster.md)."""
    import sqlalchemy

    engine = _pg_engine(url)
    latencies = []
    with engine.connect() as connection:
        settings = {name: connection.execute(sqlalchemy.text(f"SHOW {name}")).scalar()
                    for name in ("server_version", "fsync", "synchronous_commit", "max_connections")}
        connection.execute(sqlalchemy.text("CREATE TEMP TABLE commit_probe (x int)"))
        for value in range(commits):
            started = time.perf_counter()
            connection.execute(sqlalchemy.text("INSERT INTO commit_probe VALUES (:x)"), {"x": value})
            latencies.append(time.perf_counter() - started)  # AUTOCOMMIT: the insert is its own transaction
    engine.dispose()
    return {**settings, "commit_ms": stats(1000 * latency for latency in latencies)}


# --- one configuration ----------------------------------------------------------------


def _run_config(storage_kind: str, storage: str, workers: int, trials: int, folder: Path) -> dict[str, Any]:
    import optuna

    from study.storage import open_storage

    tracking = f"sqlite:///{folder / 'mlflow.db'}"
    name = f"scale-{storage_kind}-w{workers}"
    command = [sys.executable, "-m", "study", "search", "--experiment", name, "--trials", str(trials),
               "--storage", storage, "--tracking-uri", tracking, *TINY]
    if workers > 1:
        command += ["--workers", str(workers)]
    before = _pg_transactions(storage) if storage_kind == "postgresql" else 0
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=3600)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{name}: exit {result.returncode}: {result.stderr[-2000:]}")
    study = optuna.load_study(study_name=f"{name}-seed0", storage=open_storage(storage))
    finished = [t for t in study.trials if t.state.is_finished() and t.datetime_start and t.datetime_complete]
    span = (max(t.datetime_complete for t in finished) - min(t.datetime_start for t in finished)).total_seconds()
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in finished]
    per_worker = trials_by_worker(finished)
    gaps = [(b.datetime_start - a.datetime_complete).total_seconds() for own in per_worker for a, b in zip(own, own[1:])]
    if storage_kind == "postgresql":
        time.sleep(1.5)  # backends flush their statistics when they exit
        ops = _pg_transactions(storage) - before
    else:
        ops = sum(1 for _ in open(storage, "rb"))
    return {"storage": storage_kind, "workers": workers, "trials": len(finished), "wall_s": round(wall, 2),
            "span_s": round(span, 2), "trials_per_s": round(len(finished) / span, 4) if span else None,
            "trial_s": round(sum(durations) / len(durations), 3),
            "gap_s": round(sum(gaps) / len(gaps), 4) if gaps else None,
            "storage_ops_per_trial": round(ops / len(finished), 1),
            "processes": len(per_worker)}


# --- MLflow on SQLite from several processes ---------------------------------------------


def _hammer(uri: str, experiment_id: str, runs: int, queue: Any) -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    quiet()
    errors, latencies = [], []
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        from study.contract import HISTORY_CSV, ROLE_TRIAL, RUN_ROLE, TRIAL_STATE

        client = MlflowClient(uri)
        artifact = Path(tempfile.mkdtemp()) / HISTORY_CSV
        artifact.write_text("epoch,loss\n0,1.0\n")
        for i in range(runs):
            started = time.perf_counter()
            try:  # the shape of one trial: run, params, per-epoch metrics, artifact, end
                run_id = client.create_run(experiment_id, run_name=f"t{i}", tags={RUN_ROLE: ROLE_TRIAL}).info.run_id
                client.log_batch(run_id, params=[Param(f"p{k}", str(k)) for k in range(30)])
                for epoch in range(3):
                    client.log_batch(run_id, metrics=[Metric(f"m{k}", 0.1 * k, int(time.time() * 1000), epoch)
                                                      for k in range(12)])
                client.log_artifact(run_id, str(artifact))
                client.log_batch(run_id, tags=[RunTag(TRIAL_STATE, "COMPLETE")])
                client.set_terminated(run_id, "FINISHED")
            except Exception as exc:  # noqa: BLE001 - counted, that is the measurement
                errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
            latencies.append(time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - e.g. a schema error while opening a fresh store
        errors.append(f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}")
    queue.put((errors, latencies))


def sqlite_concurrency(processes: int, runs: int, mode: str) -> dict[str, Any]:
    """mode: rollback (MLflow's default), wal (what study.tracking sets), fresh (no store yet)."""
    folder = Path(tempfile.mkdtemp(prefix="scale-sqlite-"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment_id = "0"
    if mode != "fresh":
        from mlflow.tracking import MlflowClient

        experiment_id = MlflowClient(uri).create_experiment("hammer", artifact_location=str(folder / "artifacts"))
        if mode == "wal":
            with sqlite3.connect(folder / "mlflow.db") as connection:
                connection.execute("PRAGMA journal_mode=WAL").fetchone()
    context = mp.get_context("spawn")
    queue = context.Queue()
    started = time.perf_counter()
    workers = [context.Process(target=_hammer, args=(uri, experiment_id, runs, queue)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    results = []
    for _ in workers:
        try:
            results.append(queue.get(timeout=600))
        except Exception:  # noqa: BLE001 - a process died without reporting
            results.append((["died without reporting"], []))
    for worker in workers:
        worker.join(30)
    wall = time.perf_counter() - started
    shutil.rmtree(folder, ignore_errors=True)
    errors = [e for r in results for e in r[0]]
    latencies = sorted(x for r in results for x in r[1])
    return {"mode": mode, "processes": processes, "runs_per_process": runs if mode != "fresh" else 0,
            "errors": len(errors), "error_examples": sorted(set(errors))[:3], "wall_s": round(wall, 2),
            "mean_run_s": round(sum(latencies) / len(latencies), 3) if latencies else None,
            "max_run_s": round(latencies[-1], 3) if latencies else None}


# --- the sleep objective: coordination alone ------------------------------------------------


def start_delays(start: str, workers: int, seconds: float, repeat: int) -> tuple[float, ...]:
    """Each worker's delay after the common start; random phases are seeded by W and repeat,
    so a re-run draws the same ones."""
    if start == TOGETHER:
        return ()
    draw = random.Random(f"scale-start-{workers}-{repeat}")
    return tuple(draw.uniform(0.0, seconds) for _ in range(workers))


def sleep_objective(space: Any, seconds: float, epochs: int):
    """A trial that talks to the storage as `study.objective.Objective` does, and sleeps
    `seconds` (in `epochs` steps) where the real one trains."""
    import optuna

    from study.sampling import suggest_params
    from study.storage import HOST

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("pid", os.getpid())
        suggest_params(trial, space)
        trial.set_user_attr("mlflow_run_id", f"sleep-{trial.number}")
        value = random.Random(trial.number).random()
        for epoch in range(epochs):
            time.sleep(seconds / epochs)
            trial.report(value * (epoch + 1) / epochs, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return value

    return objective


def _progress_read(study: Any, trial: Any) -> None:
    """What the runner's progress line reads after every trial: every trial, and the best."""
    study.get_trials(deepcopy=False)
    with contextlib.suppress(ValueError):
        _ = study.best_value


def sleep_worker(storage: str, study_name: str, index: int, seconds: float, epochs: int, total: int,
                 sampler: str, delay: float, ready: Any, start: Any, queue: Any) -> None:
    """One worker process: open the study, say it is ready, wait for the common start and then
    `delay` seconds, run trials until the study holds `total` finished ones; report this
    process's CPU seconds."""
    quiet()
    said_ready = False
    try:
        import optuna
        from optuna.study import MaxTrialsCallback

        from study.sampling import make_sampler
        from study.space import load_space
        from study.storage import open_storage

        space = load_space(DEFAULT_SPACE, [])
        finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage),
                                  sampler=make_sampler(sampler, index), pruner=optuna.pruners.NopPruner())
        ready.put(index)
        said_ready = True
        start.wait(600)
        time.sleep(delay)
        cpu = time.process_time()
        study.optimize(sleep_objective(space, seconds, epochs), gc_after_trial=False,
                       callbacks=[MaxTrialsCallback(total, states=finished), _progress_read])
        queue.put({"index": index, "cpu_s": time.process_time() - cpu, "error": None})
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the configuration
        if not said_ready:
            ready.put(index)
        queue.put({"index": index, "cpu_s": 0.0, "error": f"{type(exc).__name__}: {exc}"[:300]})


def _storage_ops(storage_kind: str, storage: str) -> int:
    if storage_kind == "postgresql":
        time.sleep(1.5)  # backends flush their statistics when they exit
        return _pg_transactions(storage)
    return sum(1 for _ in open(storage, "rb"))


def sleep_config(storage_kind: str, storage: str, workers: int, total: int, seconds: float,
                 epochs: int, sampler: str, delays: tuple[float, ...] = ()) -> dict[str, Any]:
    """W workers on a fresh study in `storage` until it holds `total` finished trials, worker i
    starting `delays[i]` seconds after the common start (none: all at once): throughput, CPU
    share and storage ops per trial."""
    import optuna

    from study.storage import open_storage

    name = f"sleep-w{workers}-{time.monotonic_ns()}"
    optuna.create_study(study_name=name, storage=open_storage(storage), direction="maximize")
    before = _storage_ops(storage_kind, storage)
    context = mp.get_context("spawn")
    ready, start, queue = context.Queue(), context.Event(), context.Queue()
    processes = [context.Process(target=sleep_worker, args=(storage, name, index, seconds, epochs, total, sampler,
                                                            delays[index] if delays else 0.0, ready, start,
                                                            queue))
                 for index in range(workers)]
    for process in processes:
        process.start()
    for _ in processes:  # imports and study loading are not coordination: all wait for one start
        ready.get(timeout=600)
    start.set()
    reports = [queue.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(60)
    errors = [r["error"] for r in reports if r["error"]]
    if errors:
        raise RuntimeError(f"scale: {storage_kind} with {workers} workers: {errors[0]}")
    ops = _storage_ops(storage_kind, storage) - before
    trials = [t for t in optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials(deepcopy=False)
              if t.state.is_finished() and t.datetime_start and t.datetime_complete]
    span = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    return {"storage": storage_kind, "workers": workers, "first_starts_s": first_starts(trials),
            "trials": len(trials), "span_s": round(span, 3),
            "trials_per_s": round(len(trials) / span, 4), "steady_trials_per_s": steady_trials_per_s(trials),
            "storage_ops_per_trial": round(ops / len(trials), 1),
            "cpu_share": round(sum(r["cpu_s"] for r in reports) / (span * (os.cpu_count() or 1)), 3),
            "load_average_1min": round(os.getloadavg()[0], 2)}  # other users' load: why a run may be slow


def trials_by_worker(trials: list[Any]) -> list[list[Any]]:
    """The trials of each worker process (user attribute `pid`), each list in start order."""
    by_pid: dict[Any, list] = {}
    for trial in trials:
        by_pid.setdefault(trial.user_attrs.get("pid"), []).append(trial)
    return [sorted(own, key=lambda trial: trial.datetime_start) for own in by_pid.values()]


def first_starts(trials: list[Any]) -> list[float]:
    """Each worker's first trial start, in seconds after the earliest, sorted: the start delays
    as they happened."""
    firsts = sorted(own[0].datetime_start for own in trials_by_worker(trials))
    return [round((first - firsts[0]).total_seconds(), 3) for first in firsts]


def steady_trials_per_s(trials: list[Any]) -> float | None:
    """The rate W workers sustain while all of them run: the sum over workers of 1 / their mean
    cycle (one trial's start to the same worker's next start: the trial, then ask, sampler
    and callbacks). Unlike finished trials / span, it leaves out the start and the tail, where
    workers that are done wait for the last trial, a cost of the run's length, not of
    coordination. None when a worker ran fewer than two trials (no cycle)."""
    cycles = [[(later.datetime_start - earlier.datetime_start).total_seconds() for earlier, later in zip(own, own[1:])]
              for own in trials_by_worker(trials)]
    if not cycles or not all(cycles):
        return None
    return round(sum(len(own) / sum(own) for own in cycles), 4)


def _configuration(run: dict[str, Any]) -> tuple[str, int, str]:
    return run["storage"], run["workers"], run.get("start", TOGETHER)  # the real runner starts together


def overhead_figures(runs: list[dict[str, Any]], cores_limit: int | None = None) -> list[dict[str, Any]]:
    """Per storage, W and start: trials/s and overhead = 1 - trials/s(W) / (ideal(W) x
    trials/s(1)) per repeat (ideal = W, or min(W, cores) when the cores are the limit), median
    and spread. A random-phase run has only the steady figure: its span holds the delays."""
    one = {(r["storage"], r.get("repeat", 0)): r["trials_per_s"] for r in runs if r["workers"] == 1}
    figures = []
    for storage, workers, start in sorted({_configuration(r) for r in runs}, key=lambda k: (k[0] != "postgresql", k)):
        own = [r for r in runs if _configuration(r) == (storage, workers, start)]
        ideal = workers if cores_limit is None else min(workers, cores_limit)
        figure = {"storage": storage, "workers": workers, "start": start, "repeats": len(own),
                  "trials_per_s": stats(r["trials_per_s"] for r in own),
                  **_steady_overhead(runs, own, storage, ideal),
                  "storage_ops_per_trial": statistics.median(r["storage_ops_per_trial"] for r in own),
                  "cpu_share": stats(r.get("cpu_share", 0.0) for r in own)}
        if start == TOGETHER:
            figure["overhead"] = stats(1 - r["trials_per_s"] / (ideal * one[(storage, r.get("repeat", 0))])
                                       for r in own if (storage, r.get("repeat", 0)) in one)
        figures.append(figure)
    return figures


def _steady_overhead(runs: list[dict[str, Any]], own: list[dict[str, Any]], storage: str,
                     ideal: int) -> dict[str, Any]:
    """`steady_overhead`: the overhead formula on `steady_trials_per_s`, per repeat; empty when
    a run lacks the rate (older results, or a worker with one trial)."""
    one = {r.get("repeat", 0): r.get("steady_trials_per_s") for r in runs
           if (r["storage"], r["workers"], r.get("start", TOGETHER)) == (storage, 1, TOGETHER)}
    pairs = [(r.get("steady_trials_per_s"), one.get(r.get("repeat", 0))) for r in own]
    if not pairs or not all(rate and base for rate, base in pairs):
        return {}
    return {"steady_overhead": stats(1 - rate / (ideal * base) for rate, base in pairs)}


@contextlib.contextmanager
def postgres_admin(skipped: dict[str, str]):
    """$SCALE_POSTGRES_URL, or a temporary cluster; None (and the reason in `skipped`) without."""
    url, cluster = os.environ.get("SCALE_POSTGRES_URL"), None
    try:
        if url is None:
            cluster = TempPostgres().__enter__()
            url = cluster.url()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
        skipped["postgresql_skipped"] = str(exc)[:300]
    try:
        yield url
    finally:
        if cluster is not None:
            cluster.__exit__(None, None, None)


def sleep_series(pg_admin: str | None, folder: Path, worker_counts: tuple[int, ...], repeats: int,
                 seconds: float, epochs: int, study_trials: int, sampler: str) -> list[dict[str, Any]]:
    """Every (storage, W, start) once per repeat, on a fresh journal file or a fresh database;
    one worker has no phase to draw, so W = 1 runs once."""
    runs = []
    for repeat in range(repeats):
        for kind in ("journal", "postgresql") if pg_admin else ("journal",):
            for workers, start in [(w, s) for w in worker_counts for s in STARTS if w > 1 or s == TOGETHER]:
                storage = (str(folder / f"sleep-w{workers}-{start}-r{repeat}.journal") if kind == "journal"
                           else _pg_new_database(pg_admin, f"sleep_w{workers}_{start}_r{repeat}"))
                row = sleep_config(kind, storage, workers, study_trials, seconds, epochs, sampler,
                                   start_delays(start, workers, seconds, repeat))
                runs.append({**row, "start": start, "repeat": repeat})
                print(f"scale: sleep {runs[-1]}", flush=True)
    return runs


def real_trial_series(pg_admin: str | None, folder: Path, worker_counts: tuple[int, ...]) -> list[dict[str, Any]]:
    """The real runner with a minimal Fashion-MNIST trial, one repeat (cores are the limit here)."""
    runs = []
    for kind in ("journal", "postgresql") if pg_admin else ("journal",):
        for workers in worker_counts:
            own = folder / f"real-{kind}-{workers}"
            own.mkdir()
            storage = (str(own / "optuna.journal") if kind == "journal"
                       else _pg_new_database(pg_admin, f"scale_w{workers}"))
            runs.append(_run_config(kind, storage, workers, max(8, 4 * workers), own))
            print(f"scale: real {runs[-1]}", flush=True)
    return runs


def mlflow_sqlite_series(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for processes, runs in ((4, 10), (4, 25)) if quick else ((4, 40), (8, 25)):
        for mode in ("rollback", "wal"):
            rows.append(sqlite_concurrency(processes, runs, mode))
            print(f"scale: mlflow sqlite {rows[-1]}", flush=True)
        if processes == 4:
            rows.append(sqlite_concurrency(processes, 0, "fresh"))
            print(f"scale: mlflow sqlite {rows[-1]}", flush=True)
    return rows


def measure_scale(quick: bool = False, worker_counts: tuple[int, ...] = WORKER_COUNTS, repeats: int = MIN_REPEATS,
                  seconds: float | None = None, epochs: int = 3, study_trials: int | None = None,
                  sampler: str = "random", real_trials: bool = False, mlflow_sqlite: bool = True,
                  results_dir: Path | None = None) -> dict[str, Any]:
    """The benchmark with every knob; `run` is it with the defaults."""
    quiet()
    seconds = seconds or (1.0 if quick else 3.0)
    study_trials = study_trials or (QUICK_STUDY_TRIALS if quick else STUDY_TRIALS)
    payload: dict[str, Any] = {
        "name": NAME, "mode": "quick" if quick else "full", "environment": environment(),
        "sleep": {"seconds_per_trial": seconds, "epochs_per_trial": epochs, "study_trials": study_trials,
                  "sampler": sampler, "repeats": repeats, "worker_counts": list(worker_counts)},
        "goal": GOAL_OVERHEAD}
    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp, postgres_admin(payload) as pg_admin:
        if pg_admin is not None:
            payload["postgresql"] = pg_profile(pg_admin)
        runs = sleep_series(pg_admin, Path(tmp), worker_counts, repeats, seconds, epochs, study_trials, sampler)
        payload["sleep"].update(runs=runs, figures=overhead_figures(runs))
        if real_trials:
            real = real_trial_series(pg_admin, Path(tmp), worker_counts)
            payload["real_trials"] = {"runs": real, "figures": overhead_figures(real, os.cpu_count() or 1)}
    if mlflow_sqlite:
        payload["mlflow_sqlite"] = mlflow_sqlite_series(quick)
    payload.update(goal_figures(payload["sleep"]["figures"]))
    return write_results(NAME, payload, table_of(payload), results_dir, notes_of(payload))


def goal_figures(figures: list[dict[str, Any]]) -> dict[str, Any]:
    """The 8-worker PostgreSQL figures, and the verdict on the random-phase steady overhead
    (the lockstep ones are reported beside it: see TOGETHER); None where the run lacks them."""
    def figure(start: str) -> dict[str, Any] | None:
        return next((f for f in figures if _configuration(f) == ("postgresql", 8, start)), None)

    together, random_phases = figure(TOGETHER), figure(RANDOM)
    goal = None if random_phases is None else random_phases.get("steady_overhead")
    return {"overhead_8_workers_postgresql": None if together is None else together["overhead"],
            "steady_overhead_8_workers_postgresql": None if together is None else together.get("steady_overhead"),
            "random_phase_overhead_8_workers_postgresql": goal,
            "meets_goal": None if goal is None else goal["median"] <= GOAL_OVERHEAD}


def _spread(figure: dict[str, Any]) -> str:
    return f"{figure['min']:.3f} to {figure['max']:.3f}" if figure["n"] else ""


def table_of(payload: dict[str, Any]) -> str:
    sleep = payload["sleep"]
    table = (f"Sleep objective ({sleep['seconds_per_trial']:g} s per trial in {sleep['epochs_per_trial']} epochs, "
             f"a study of {sleep['study_trials']} trials at every W, {sleep['sampler']} sampler, {sleep['repeats']} repeats; "
             "overhead = 1 - trials/s(W) / (W x trials/s(1)), median (min to max) over repeats; *steady*: the "
             "same with the rate all W workers sustain while running, the sum of 1 / each worker's mean cycle, "
             "without the start and the tail; *start*: `together`, all workers at once (lockstep), or "
             "`random`, each worker after its own uniform delay within one trial, which has only the steady "
             "figure):\n\n")
    table += markdown_table(
        ["storage", "workers", "start", "trials/s (median)", "overhead (median)", "overhead spread",
         "steady overhead (median)", "steady spread", "storage ops/trial", "CPU share (median)"],
        [[f["storage"], f["workers"], f.get("start", TOGETHER), f["trials_per_s"]["median"],
          f["overhead"]["median"] if "overhead" in f else "", _spread(f["overhead"]) if "overhead" in f else "",
          f.get("steady_overhead", {}).get("median"), _spread(f["steady_overhead"]) if "steady_overhead" in f else "",
          f["storage_ops_per_trial"], f["cpu_share"]["median"]] for f in sleep["figures"]])
    if "real_trials" in payload:
        table += ("\nReal runner, minimal Fashion-MNIST trial, 1 repeat (overhead against min(W, cores) x "
                  "trials/s(1): the cores are the limit here):\n\n")
        table += markdown_table(["storage", "workers", "trials/s", "overhead", "storage ops/trial"],
                                [[f["storage"], f["workers"], f["trials_per_s"]["median"], f["overhead"]["median"],
                                  f["storage_ops_per_trial"]] for f in payload["real_trials"]["figures"]])
    if payload.get("mlflow_sqlite"):
        table += ("\nMLflow SQLite store written by P processes at once (trial-shaped runs: create, 30 params, "
                  "3 metric batches, 1 artifact, end):\n\n")
        table += markdown_table(["journal mode", "processes", "runs each", "errors", "mean s/run", "max s/run", "wall s"],
                                [[m["mode"], m["processes"], m["runs_per_process"], m["errors"], m["mean_run_s"],
                                  m["max_run_s"], m["wall_s"]] for m in payload["mlflow_sqlite"]])
    return table


def notes_of(payload: dict[str, Any]) -> str:
    goal, cpus = payload.get("random_phase_overhead_8_workers_postgresql"), payload["environment"]["cpus"]
    verdict_text = (goal_missing(payload) if goal is None else
                    f"measured with workers at random phases, steady {goal['median']:.3f} ({_spread(goal)}): "
                    f"{'meets' if payload['meets_goal'] else 'misses'} the goal")
    together, steady = payload.get("overhead_8_workers_postgresql"), payload.get("steady_overhead_8_workers_postgresql")
    if together and steady:
        verdict_text += (f"; all starting together (lockstep), {together['median']:.3f} ({_spread(together)}) over "
                         f"the span and steady {steady['median']:.3f} ({_spread(steady)}), most likely 8 clients' "
                         f"storage calls colliding on {cpus} cores")
    return (f"Goal: overhead <= {GOAL_OVERHEAD:.0%} at 8 workers on PostgreSQL; {verdict_text}. "
            f"Load average at start: {payload['environment']['load_average_1min_at_start']} on "
            f"{cpus} CPUs. `CPU share` = the workers' CPU seconds / (span x cores), an average: well under 1, the "
            "cores were not the limit on average, though lockstep bursts can still collide. `storage ops/trial` = journal records appended, or "
            "PostgreSQL transactions. `fresh` = P processes opening an MLflow store that does not exist yet: why "
            "the supervisor creates it first." + (
                f" PostgreSQL {payload['postgresql']['server_version']}: fsync {payload['postgresql']['fsync']}, "
                f"synchronous_commit {payload['postgresql']['synchronous_commit']}, one small commit "
                f"{payload['postgresql']['commit_ms']['median']:.2f} ms (median)." if "postgresql" in payload else "")
            + (f" PostgreSQL skipped: {payload['postgresql_skipped']}"
                                                  if "postgresql_skipped" in payload else ""))


def run(options: Options) -> dict[str, Any]:
    return measure_scale(options.quick, results_dir=options.results_dir)


def summary_rows(result: dict[str, Any]) -> list[Row]:
    if "sleep" not in result:
        return [Row("coordination overhead at 8 workers, PostgreSQL", None, f"<= {GOAL_OVERHEAD:.0%}",
                    "stale: a quick real-runner run (1, 2, 4 workers, no repeats); re-run")]
    rows = []
    for figure in result["sleep"]["figures"]:
        if figure["workers"] == 1:
            continue
        label = f"{figure['workers']} workers, {figure['storage']}, starting {figure.get('start', TOGETHER)}"
        if "overhead" in figure:
            rows.append(Row(f"overhead, {label} (sleep objective, {figure['repeats']} repeats; spread "
                            f"{_spread(figure['overhead'])})", figure["overhead"]["median"], "reported", "reported"))
        if "steady_overhead" in figure:
            steady = figure["steady_overhead"]
            is_goal = _configuration(figure) == GOAL_CONFIGURATION
            verdict = ("meets goal" if steady["median"] <= GOAL_OVERHEAD else "misses goal") if is_goal else \
                "reported: the start and the tail left out"
            rows.append(Row(f"steady overhead, {label} (all workers running; spread {_spread(steady)})",
                            steady["median"], f"<= {GOAL_OVERHEAD:.0%}" if is_goal else "reported", verdict))
    missing = goal_missing(result)
    if missing:
        rows.append(Row("steady overhead, 8 workers, postgresql, starting random", None, f"<= {GOAL_OVERHEAD:.0%}",
                        missing))
    return rows


def goal_missing(result: dict[str, Any]) -> str | None:
    """Why a result has no verdict on the goal's figure (the random-phase steady overhead at
    8 workers on PostgreSQL), or None when it has one."""
    if "postgresql_skipped" in result:
        return "not measured: " + result["postgresql_skipped"][:80]
    if not any("start" in run for run in result["sleep"].get("runs", [])):
        return "stale: measured before random-phase starts (the goal's figure); re-run"
    figure = next((f for f in result["sleep"]["figures"] if _configuration(f) == GOAL_CONFIGURATION), None)
    if figure is None:
        return "not measured: no 8-worker run"
    if "steady_overhead" not in figure:
        return "not measured: no steady rate (a worker ran fewer than 2 trials)"
    return None


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"1 s trials, a study of {QUICK_STUDY_TRIALS}")
    parser.add_argument("--workers", type=int, nargs="+", default=list(WORKER_COUNTS))
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS)
    parser.add_argument("--seconds", type=float, help="sleep per trial (default 3, quick 1)")
    parser.add_argument("--study-trials", type=int, help=f"trials per study at every W (default {STUDY_TRIALS}; "
                        "a multiple of each W)")
    parser.add_argument("--real-trials", action="store_true", help="also the real runner with a minimal trial")
    parser.add_argument("--no-mlflow-sqlite", action="store_true")
    parser.add_argument("--results", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats {args.repeats}: at least {MIN_REPEATS}")
    if 1 not in args.workers:
        parser.error("--workers: 1 must be among them (the overhead is relative to one worker)")
    study_trials = args.study_trials or (QUICK_STUDY_TRIALS if args.quick else STUDY_TRIALS)
    if any(study_trials % workers or study_trials < 2 * workers for workers in args.workers):
        parser.error(f"--study-trials {study_trials}: must be a multiple of every --workers count and give each "
                     "worker at least 2 trials (a steady rate needs one cycle per worker)")
    measure_scale(args.quick, tuple(sorted(set(args.workers))), args.repeats, args.seconds,
                  study_trials=args.study_trials, real_trials=args.real_trials,
                  mlflow_sqlite=not args.no_mlflow_sqlite, results_dir=args.results)
