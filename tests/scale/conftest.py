"""Scale-out tests: tiny real trials, real processes and signals, a real PostgreSQL."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from study.storage import open_storage
from study.contract import FAILURE_REASON, ROLE_STUDY, ROLE_TRIAL, RUN_ROLE, TRIAL_NUMBER, TRIAL_STATE
from tests.conftest import CLI_ENV, FASHION_DIR, PROJECT_ROOT, free_port, require

# The smallest real trial: 1 epoch on a few hundred images of a 1-block net.
TINY = ["--set", "data.train_size=256", "--set", "data.val_size=128", "--set", "data.test_size=128",
        "--set", "train.epochs=1", "--set", "params.n_conv_blocks=1", "--set", "params.filters=16",
        "--set", "params.convs_per_block=1", "--set", "params.kernel_size=3", "--set", "params.dense_units=64",
        "--set", "params.augment=false", "--set", "params.batch_size=128"]
FAST = ["--sampler", "random", "--pruner", "none", *TINY]
PG_PASSWORD = "s3cr3t-pw"


@pytest.fixture(autouse=True)
def _fashion_mnist() -> None:
    require((FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), "dataset-fashion-mnist is not installed")


def search_args(stores: dict[str, str], experiment: str, *extra: str) -> list[str]:
    return ["study", "search", "--experiment", experiment, "--storage", stores["storage"],
            "--tracking-uri", stores["tracking_uri"], *FAST, *extra]


def start_cli(*args: str, env: dict | None = None, log: Path | None = None) -> subprocess.Popen:
    """`python -m <args>` in the background, its own process group, output to a file."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", *args], cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **CLI_ENV, **(env or {})}, start_new_session=True)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)


def load(storage: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage))


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.25)
    detail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


def running_trial_with_run(storage: str, name: str):
    """A RUNNING trial whose process recorded its pid and already has an MLflow run."""
    try:
        study = load(storage, name)
    except KeyError:
        return None
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if "pid" in trial.user_attrs and "mlflow_run_id" in trial.user_attrs:
            return trial
    return None


def trial_runs(tracking_uri: str, experiment: str) -> dict[int, list]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    by_number: dict[int, list] = {}
    for run in runs:
        if run.data.tags.get(RUN_ROLE) == ROLE_TRIAL:
            by_number.setdefault(int(run.data.tags[TRIAL_NUMBER]), []).append(run)
    return by_number


def study_runs(tracking_uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    return [r for r in client.search_runs([exp.experiment_id], max_results=100)
            if r.data.tags.get(RUN_ROLE) == ROLE_STUDY]


def assert_consistent(storage: str, tracking_uri: str, experiment: str, name: str) -> optuna.Study:
    """Optuna and MLflow agree: nothing RUNNING anywhere, one run per trial, same states."""
    study = load(storage, name)
    trials = study.get_trials(deepcopy=False)
    assert not [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    runs = trial_runs(tracking_uri, experiment)
    for number, group in runs.items():
        assert len(group) == 1, f"trial {number} has {len(group)} MLflow runs"
        assert group[0].info.status != "RUNNING", f"trial {number}'s run is RUNNING"
    for trial in trials:
        if trial.state == optuna.trial.TrialState.WAITING:
            continue
        run = runs[trial.number][0]
        assert run.data.tags[TRIAL_STATE] == trial.state.name, trial.number
        assert run.info.status == {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": ("FAILED", "KILLED")[
            trial.user_attrs.get(FAILURE_REASON) == "interrupted"]}[trial.state.name], trial.number
    assert all(r.info.status != "RUNNING" for r in study_runs(tracking_uri, experiment))
    return study


# --- PostgreSQL ---------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


class Postgres:
    """A throw-away cluster: initdb as the postgres user, pg_ctl on 127.0.0.1:<free port>."""

    def __init__(self, bindir: Path, folder: Path) -> None:
        self.bindir, self.folder, self.port = bindir, folder, free_port()
        self.data = folder / "data"

    def _as_postgres(self, *command: str, **kwargs) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*prefix, *command], capture_output=True, text=True, check=True, **kwargs)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        pwfile = self.folder / "pw"
        pwfile.write_text(PG_PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres")
        self._as_postgres(str(self.bindir / "initdb"), "-D", str(self.data), "-U", "study", "-A", "scram-sha-256",
                          f"--pwfile={pwfile}", "--no-sync")
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "log"), "-w",
                          "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                                "-c max_connections=200", "start")
        env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
        subprocess.run([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "study",
                        "optuna"], check=True, env=env, capture_output=True)

    def stop(self) -> None:
        self._as_postgres(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, password: str = PG_PASSWORD, db: str = "optuna") -> str:
        return f"postgresql://study:{password}@127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres | str]:
    """A running PostgreSQL: $SCALE_POSTGRES_URL if exported, else a temporary cluster."""
    if os.environ.get("SCALE_POSTGRES_URL"):
        yield os.environ["SCALE_POSTGRES_URL"]
        return
    bindir = _pg_bin()
    require(bindir is not None, "Debian's postgresql is not installed (/usr/lib/postgresql/*/bin/initdb)")
    require(os.geteuid() != 0 or shutil.which("runuser") is not None, "runuser is needed to initdb as root")
    folder = Path(tempfile.mkdtemp(prefix="scale-pg-"))
    folder.chmod(0o755)
    cluster = Postgres(bindir, folder)
    try:
        cluster.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        require(False, f"could not start PostgreSQL: {exc.stderr.strip()[:300]}")
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_url(postgres, request) -> str:
    """A fresh database per test in the shared cluster."""
    if isinstance(postgres, str):
        return postgres
    name = "t_" + request.node.name.lower().replace("[", "_").replace("]", "").replace("-", "_")[:50]
    env = {**os.environ, "PGPASSWORD": PG_PASSWORD}
    subprocess.run([str(postgres.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "study",
                    name], check=True, env=env, capture_output=True)
    return postgres.url(db=name)
