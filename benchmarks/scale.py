"""Scale benchmark (issue 4): coordination overhead of 1, 2, 4, 8 workers on one study.

The real runner (`python -m study search [--workers W]`) with a minimal trial (1 epoch on
256 images, a 1-block net, random sampler, no pruning), on the journal file and on
PostgreSQL (RDBStorage). A report, not pass/fail. Per configuration:

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
import glob
import multiprocessing as mp
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, environment, markdown_table, quiet, write_results

NAME = "scale"
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
    gaps = []
    by_pid: dict[Any, list] = {}
    for t in finished:
        by_pid.setdefault(t.user_attrs.get("pid"), []).append(t)
    for own in by_pid.values():
        own.sort(key=lambda t: t.datetime_start)
        gaps += [(b.datetime_start - a.datetime_complete).total_seconds() for a, b in zip(own, own[1:])]
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
            "processes": len(by_pid)}


# --- MLflow on SQLite from several processes ---------------------------------------------


def _hammer(uri: str, experiment_id: str, runs: int, queue: Any) -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    quiet()
    errors, latencies = [], []
    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        artifact = Path(tempfile.mkdtemp()) / "history.csv"
        artifact.write_text("epoch,loss\n0,1.0\n")
        for i in range(runs):
            started = time.perf_counter()
            try:  # the shape of one trial: run, params, per-epoch metrics, artifact, end
                run_id = client.create_run(experiment_id, run_name=f"t{i}", tags={"run_role": "trial"}).info.run_id
                client.log_batch(run_id, params=[Param(f"p{k}", str(k)) for k in range(30)])
                for epoch in range(3):
                    client.log_batch(run_id, metrics=[Metric(f"m{k}", 0.1 * k, int(time.time() * 1000), epoch)
                                                      for k in range(12)])
                client.log_artifact(run_id, str(artifact))
                client.log_batch(run_id, tags=[RunTag("optuna.trial_state", "COMPLETE")])
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


# --- the report ---------------------------------------------------------------------------


def run(quick: bool = False, results_dir: Path | None = None) -> dict[str, Any]:
    quiet()
    worker_counts = (1, 2, 4) if quick else (1, 2, 4, 8)
    payload: dict[str, Any] = {"mode": "quick" if quick else "full", "environment": environment(),
                               "trial": "1 epoch, 256 train / 128 val / 128 test images, 1 conv block x 16 filters",
                               "configs": [], "mlflow_sqlite": []}
    for processes, runs in ((4, 10), (4, 25)) if quick else ((4, 40), (8, 25)):
        for mode in ("rollback", "wal"):
            payload["mlflow_sqlite"].append(sqlite_concurrency(processes, runs, mode))
            print(f"scale: mlflow sqlite {payload['mlflow_sqlite'][-1]}", flush=True)
        if processes == 4:
            payload["mlflow_sqlite"].append(sqlite_concurrency(processes, 0, "fresh"))
            print(f"scale: mlflow sqlite {payload['mlflow_sqlite'][-1]}", flush=True)

    def trials_for(workers: int) -> int:
        return max(6, 3 * workers) if quick else max(8, 4 * workers)

    with tempfile.TemporaryDirectory(prefix="scale-bench-") as tmp:
        for workers in worker_counts:
            folder = Path(tmp) / f"journal-{workers}"
            folder.mkdir()
            payload["configs"].append(_run_config("journal", str(folder / "optuna.journal"), workers,
                                                  trials_for(workers), folder))
            print(f"scale: {payload['configs'][-1]}", flush=True)
        pg_admin, cluster = os.environ.get("SCALE_POSTGRES_URL"), None
        try:
            if pg_admin is None:
                cluster = TempPostgres().__enter__()
                pg_admin = cluster.url()
        except (RuntimeError, subprocess.CalledProcessError, OSError) as exc:
            payload["postgresql_skipped"] = str(exc)[:300]
        try:
            if pg_admin is not None:
                for workers in worker_counts:
                    folder = Path(tmp) / f"pg-{workers}"
                    folder.mkdir()
                    url = _pg_new_database(pg_admin, f"scale_w{workers}")
                    payload["configs"].append(_run_config("postgresql", url, workers, trials_for(workers), folder))
                    print(f"scale: {payload['configs'][-1]}", flush=True)
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)

    headers = ["storage", "workers", "trials", "trials/s", "trial s", "gap s", "storage ops/trial", "wall s"]
    rows = [[c["storage"], c["workers"], c["trials"], c["trials_per_s"], c["trial_s"], c["gap_s"],
             c["storage_ops_per_trial"], c["wall_s"]] for c in payload["configs"]]
    table = markdown_table(headers, rows)
    table += ("\nMLflow SQLite store written by P processes at once (trial-shaped runs: create, 30 params, "
              "3 metric batches, 1 artifact, end):\n\n")
    table += markdown_table(["journal mode", "processes", "runs each", "errors", "mean s/run", "max s/run", "wall s"],
                            [[m["mode"], m["processes"], m["runs_per_process"], m["errors"], m["mean_run_s"],
                              m["max_run_s"], m["wall_s"]] for m in payload["mlflow_sqlite"]])
    notes = (f"Load average at start: {payload['environment']['load_average_1min_at_start']} on "
             f"{payload['environment']['cpus']} CPUs (shared machine: absolute times move with other users' load). "
             "`gap s` = a worker's time between two trials (Optuna ask/tell, sampler, callbacks); "
             "`storage ops/trial` = journal records appended, or PostgreSQL transactions. "
             "`fresh` = P processes opening a store that does not exist yet: why the supervisor creates it first.")
    return write_results(NAME, payload, table, results_dir, notes)


def main(quick: bool = False) -> dict[str, Any]:
    return run(quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    main(quick=parser.parse_args().quick)
