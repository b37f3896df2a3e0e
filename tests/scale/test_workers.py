"""Several workers on one journal-file study: counts, 1:1 MLflow runs, no lock errors."""

from __future__ import annotations

import os
import re
import subprocess
import time

import pytest

from study.contract import CPU_ISA, CPU_MODEL, FAILURE_REASON, TF_INTER_OP_THREADS, TF_INTRA_OP_THREADS
from tests.conftest import run_cli
from tests.scale.conftest import assert_consistent, search_args, study_runs, trial_runs

pytestmark = pytest.mark.slow

LOG_ERRORS = re.compile(r"database is locked|database schema|duplicate column|no such table|Traceback",
                        re.IGNORECASE)


# Two trials per worker: every worker still takes part (the four start together and each trial
# takes seconds; measured [2, 2, 3, 3] trials per worker) and numbers, proposals and runs are
# still checked across processes; sixteen cost twice the training and asserted nothing more.
WORKERS, TRIALS = 4, 8


def test_four_workers_eight_trials_on_the_journal(stores: dict[str, str]) -> None:
    started = time.monotonic()
    result = run_cli(*search_args(stores, "scale4", "--workers", str(WORKERS), "--trials", str(TRIALS)), timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert not LOG_ERRORS.search(log), LOG_ERRORS.search(log).group(0)

    study = assert_consistent(stores["storage"], stores["tracking_uri"], "scale4", "scale4-seed0")
    finished = [t for t in study.trials if t.state.is_finished()]
    numbers = [t.number for t in finished]
    assert TRIALS <= len(finished) <= TRIALS + WORKERS - 1, len(finished)  # MaxTrialsCallback's N..N+W-1 race
    assert len(set(numbers)) == len(numbers)
    assert len({t.user_attrs["pid"] for t in finished}) == WORKERS  # four real processes shared the work
    assert all(t.user_attrs["host"] for t in finished)
    # Seeds seed+index: no two workers proposed the same configuration.
    proposals = [tuple(sorted(t.params.items())) for t in finished]
    assert len(set(proposals)) == len(proposals)

    runs = trial_runs(stores["tracking_uri"], "scale4")
    assert sorted(runs) == sorted(t.number for t in study.trials)  # 1:1, one run each (checked above)
    (study_run,) = study_runs(stores["tracking_uri"], "scale4")
    assert study_run.info.status == "FINISHED" and study_run.data.tags["workers"] == "4"
    assert {r[0].data.params["worker_index"] for r in runs.values()} == {"0", "1", "2", "3"}
    # Four workers on 2 cores: one thread each (study/workers.thread_split), and each trial says so.
    assert {(r[0].data.params[TF_INTRA_OP_THREADS], r[0].data.params[TF_INTER_OP_THREADS])
            for r in runs.values()} == {("1", "1")}
    # And the CPU it trained on (oneDNN's kernels depend on it): the model as lscpu names it,
    # and the AVX-512 and AMX flags among the ISA flags, as lscpu lists them.
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True,
                           env={**os.environ, "LC_ALL": "C"}).stdout
    model = re.search(r"^Model name:\s*(.+)$", lscpu, re.MULTILINE).group(1).strip()
    flags = re.search(r"^Flags:\s*(.+)$", lscpu, re.MULTILINE).group(1).split()
    assert {r[0].data.params[CPU_MODEL] for r in runs.values()} == {model}
    [isa] = {r[0].data.params[CPU_ISA] for r in runs.values()}
    assert {f for f in flags if f.startswith(("avx512", "amx", "avx2"))} == {
        f for f in isa.split() if f.startswith(("avx512", "amx", "avx2"))}
    per_pid = sorted(sum(t.user_attrs["pid"] == pid for t in finished) for pid in {t.user_attrs["pid"] for t in finished})
    print(f"{WORKERS} workers x {TRIALS} trials: {time.monotonic() - started:.0f} s, trials per worker {per_pid}")


def test_nan_loss_fails_the_trial_and_the_next_one_runs(stores: dict[str, str]) -> None:
    """lr=1e30 diverges at once: FAIL nan_loss, the study goes on, then exit 3 after the limit."""
    result = run_cli(*search_args(stores, "nan", "--trials", "4", "--max-consecutive-failures", "2",
                                  "--set", "params.learning_rate=1e30", "--set", "params.optimizer=sgd"),
                     timeout=300)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "search_spaces/cnn.yaml" in result.stdout and "consecutive" in result.stdout
    study = assert_consistent(stores["storage"], stores["tracking_uri"], "nan", "nan-seed0")
    assert [(t.state.name, t.user_attrs.get(FAILURE_REASON)) for t in study.trials] == [("FAIL", "nan_loss")] * 2
    runs = trial_runs(stores["tracking_uri"], "nan")
    for number in (0, 1):
        run = runs[number][0]
        assert run.info.status == "FAILED" and run.data.tags[FAILURE_REASON] == "nan_loss"
    (study_run,) = study_runs(stores["tracking_uri"], "nan")
    assert study_run.info.status == "FAILED"
