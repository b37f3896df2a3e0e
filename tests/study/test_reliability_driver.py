"""Issue 8 (driver): re-runs draw new samples, replicates are independent, an interrupted
baseline is trained again, and a crash inside a study leaves nothing RUNNING in MLflow."""

from __future__ import annotations

import itertools
import os
import signal
from pathlib import Path

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from study.exit_codes import ExitCode
from study.sampling import baseline_params, make_sampler, sampler_seed, suggest_params
from study.space import load_space
from study.storage import open_storage
from study.contract import FAILURE_REASON, ROLE_STUDY, ROLE_TRIAL, RUN_ROLE, TRIAL_NUMBER, TRIAL_STATE
from tests.conftest import PROJECT_ROOT, run_cli
from tests.scale.conftest import running_trial_with_run, start_cli, stop, wait_for

DIGITS = PROJECT_ROOT / "search_spaces" / "digits.yaml"
STUDY = "digits-cnn-seed0"


def digits_search(stores: dict[str, str], *extra: str) -> list[str]:
    return ["study", "search", "--space", str(DIGITS), "--sampler", "random", "--pruner", "none",
            "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"], *extra]


def load(stores: dict[str, str], name: str = STUDY) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(stores["storage"]))


def all_runs(tracking_uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)


# --- item 2: sampler seeds ---------------------------------------------------------------


def test_sampler_seeds_never_collide_across_seeds_workers_and_invocations() -> None:
    grid = list(itertools.product(range(8), range(8), range(0, 60, 3)))
    seeds = [sampler_seed("tpe", seed, worker, count) for seed, worker, count in grid]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= value < 2**32 for value in seeds)  # numpy's limit
    # Replicate s's worker 1 and replicate s+1's worker 0 used to share seed s+1.
    assert sampler_seed("random", 3, 1, 0) != sampler_seed("random", 4, 0, 0)
    # A fresh seeded study stays reproducible: the same inputs give the same seed.
    assert sampler_seed("random", 7, 0, 1) == sampler_seed("random", 7, 0, 1)


def test_qmc_keeps_the_study_seed_for_every_worker_and_invocation() -> None:
    """Optuna resumes a QMC sequence by sample id stored under its seed; workers must share it."""
    assert {sampler_seed("qmc", 5, worker, count) for worker in range(4) for count in (0, 9)} == {5}
    space = load_space(DIGITS)
    study = optuna.create_study(sampler=make_sampler("qmc", sampler_seed("qmc", 5, 0, 0)))
    first = [suggest_params(study.ask(), space) for _ in range(2)]
    study.sampler = make_sampler("qmc", sampler_seed("qmc", 5, 1, 2))  # a re-run, another worker
    assert suggest_params(study.ask(), space) not in first  # the sequence went on, not restarted


@pytest.mark.slow
def test_a_larger_trials_rerun_draws_new_parameters(resumed_digits_search: dict) -> None:
    """`--trials 2`, then `--trials 4`, then `--trials 5` on one study (tests/conftest.py):
    each later invocation used to replay the first's samples."""
    trials = optuna.load_study(study_name=STUDY, storage=open_storage(str(resumed_digits_search["journal"]))).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    assert trials[0].params == baseline_params(load_space(DIGITS))
    drawn_before = [trials[1].params]
    assert all(t.params not in drawn_before for t in trials[2:]), [t.params for t in trials]


# --- item 14: the interrupted baseline -------------------------------------------------


@pytest.mark.slow
def test_a_baseline_interrupted_by_ctrl_c_is_trained_on_the_rerun(stores: dict[str, str], tmp_path: Path) -> None:
    args = digits_search(stores, "--trials", "2", "--set", "train.epochs=60")
    log = tmp_path / "first.log"
    proc = start_cli(*args, log=log)
    try:
        victim = wait_for(lambda: running_trial_with_run(stores["storage"], STUDY), 300,
                          "trial 0 running with its MLflow run", proc, log)
        assert victim.number == 0
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(120) == ExitCode.INTERRUPTED, log.read_text()[-3000:]
    finally:
        stop(proc)
    interrupted = load(stores).trials[0]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs[FAILURE_REASON] == "interrupted"

    rerun = run_cli(*args, timeout=600)
    assert rerun.returncode == ExitCode.OK, rerun.stdout + rerun.stderr
    trials = load(stores).trials
    baseline = baseline_params(load_space(DIGITS))
    assert trials[1].params == baseline and trials[1].state.name == "COMPLETE", [
        (t.number, t.state.name, t.params) for t in trials]


# A sitecustomize for the search process: once the test creates the marker file, the next
# garbage collection in the main thread sends this process SIGTERM and waits inside the
# collector's callback until the handler has run there. Python cannot raise the handler's
# KeyboardInterrupt out of a GC callback: it prints "Exception ignored" and goes on, which is
# what happens to a real signal that lands in a finalizer or a library's bare `except:`.
SWALLOWING_SITECUSTOMIZE = """
import gc, os, signal, threading, time

MARKER = os.environ["SIGTERM_MARKER"]


def swallow_sigterm(phase, info):
    if threading.current_thread() is not threading.main_thread() or not os.path.exists(MARKER):
        return
    os.unlink(MARKER)
    os.kill(os.getpid(), signal.SIGTERM)
    deadline = time.monotonic() + 5
    while signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN and time.monotonic() < deadline:
        pass  # the handler runs on one of these lines, and raises here


gc.callbacks.append(swallow_sigterm)
"""


def search_sigtermed_from_within(stores: dict[str, str], tmp_path: Path, sitecustomize: str,
                                 *extra: str) -> tuple[optuna.trial.FrozenTrial, str]:
    """A digits search whose own process sends itself SIGTERM where `sitecustomize` says, once
    trial 0 runs with its MLflow run; it must exit 130. The victim trial and the log."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(sitecustomize)
    marker = tmp_path / "send-sigterm-now"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "SIGTERM_MARKER": str(marker)}
    log = tmp_path / "search.log"
    proc = start_cli(*digits_search(stores, "--trials", "3", "--set", "train.epochs=60", *extra), env=env, log=log)
    try:
        victim = wait_for(lambda: running_trial_with_run(stores["storage"], STUDY), 300,
                          "trial 0 running with its MLflow run", proc, log)
        marker.touch()
        assert proc.wait(300) == ExitCode.INTERRUPTED, log.read_text()[-3000:]
    finally:
        stop(proc)
    assert not marker.exists(), "the signal was never sent from the main thread"
    return victim, log.read_text()


def assert_interrupted(stores: dict[str, str], victim: optuna.trial.FrozenTrial) -> optuna.trial.FrozenTrial:
    interrupted = load(stores).trials[victim.number]
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs[FAILURE_REASON] == "interrupted"
    run = MlflowClient(stores["tracking_uri"]).get_run(interrupted.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    return interrupted


@pytest.mark.slow
def test_a_sigterm_whose_interrupt_is_swallowed_still_stops_the_trial(stores: dict[str, str], tmp_path: Path) -> None:
    victim, text = search_sigtermed_from_within(stores, tmp_path, SWALLOWING_SITECUSTOMIZE)
    assert "Exception ignored" in text and "KeyboardInterrupt: SIGTERM" in text, text[-3000:]  # it was swallowed
    assert_interrupted(stores, victim)
    trials = load(stores).trials
    assert len(trials) == 1, [(t.number, t.state.name) for t in trials]  # no trial started after it


# Optuna's journal lock (JournalFileSymlinkLock.release) renames its lock file and unlinks
# the renamed one; an interrupt that lands just after that unlink sends it to an
# `except BaseException` that unlinks the file again and raises FileNotFoundError in the
# interrupt's place (seen in CI, 2026-11-27). This sitecustomize lands a real SIGTERM exactly
# there, once the test creates the marker.
CONVERTING_SITECUSTOMIZE = """
import os, signal, threading, time

MARKER = os.environ["SIGTERM_MARKER"]
real_unlink = os.unlink


def unlink(path, *args, **kwargs):
    real_unlink(path, *args, **kwargs)
    if (str(path).endswith(".rename") and threading.current_thread() is threading.main_thread()
            and os.path.exists(MARKER)):
        real_unlink(MARKER)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN and time.monotonic() < deadline:
            pass  # the handler raises here, inside the lock's release


os.unlink = unlink
"""


@pytest.mark.slow
def test_an_interrupt_that_optunas_lock_turns_into_another_error_still_ends_interrupted(
        stores: dict[str, str], tmp_path: Path) -> None:
    # A pruner, so that every epoch writes to the journal (its report) while the trial trains.
    victim, text = search_sigtermed_from_within(stores, tmp_path, CONVERTING_SITECUSTOMIZE, "--pruner", "median")
    assert "FileNotFoundError" in text, text[-3000:]  # Optuna did replace the interrupt
    assert_interrupted(stores, victim)


# A SIGTERM that lands as the last study closes (after the driver's last check) and is
# swallowed there: this sitecustomize wraps study.driver.close_study as the module loads, and
# sends the signal and swallows its KeyboardInterrupt once the real one has returned.
CLOSING_SITECUSTOMIZE = """
import importlib.abc, importlib.machinery, os, signal, sys, time


class WrapCloseStudy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "study.driver":
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        real_exec = spec.loader.exec_module

        def exec_module(module):
            real_exec(module)
            real_close = module.close_study

            def close_study(*args, **kwargs):
                real_close(*args, **kwargs)
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    deadline = time.monotonic() + 5
                    while signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN and time.monotonic() < deadline:
                        pass
                except KeyboardInterrupt:
                    print("sitecustomize: swallowed the SIGTERM", flush=True)

            module.close_study = close_study

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, WrapCloseStudy())
"""


@pytest.mark.slow
def test_a_sigterm_swallowed_as_the_last_study_closes_exits_130_with_its_work_done(
        stores: dict[str, str], tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(CLOSING_SITECUSTOMIZE)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    result = run_cli(*digits_search(stores, "--trials", "1", "--set", "train.epochs=2"), env=env, timeout=600)
    assert "sitecustomize: swallowed the SIGTERM" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == ExitCode.INTERRUPTED, result.stdout[-3000:]  # it exited 0
    assert "study: interrupted as the last study closed; its trials and runs are complete" in result.stdout
    assert [t.state.name for t in load(stores).trials] == ["COMPLETE"]
    runs = all_runs(stores["tracking_uri"], "digits-cnn")
    assert sorted((r.data.tags[RUN_ROLE], r.info.status) for r in runs) == [(ROLE_STUDY, "FINISHED"),
                                                                          (ROLE_TRIAL, "FINISHED")]


# --- item 5 (the finally): a crash inside a study ---------------------------------------


@pytest.mark.slow
def test_a_crash_inside_a_study_leaves_no_running_mlflow_run(stores: dict[str, str], tmp_path: Path) -> None:
    """A knob whose name MLflow refuses ('%') passes the space checks; MLflow refuses the trial
    run's params after creating the run. The study used to stay RUNNING with that run."""
    raw = yaml.safe_load(DIGITS.read_text())
    raw["params"]["width%"] = {"type": "categorical", "choices": [1, 2], "role": "scientific"}
    space = tmp_path / "digits-percent.yaml"
    space.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = run_cli("study", "search", "--space", str(space), "--sampler", "random", "--pruner", "none",
                     "--trials", "2", "--storage", stores["storage"], "--tracking-uri", stores["tracking_uri"],
                     "--set", "train.epochs=1")
    assert result.returncode == ExitCode.ERROR, result.stdout + result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("study: error: MlflowException")

    runs = all_runs(stores["tracking_uri"], "digits-cnn")
    assert [r.data.tags[RUN_ROLE] for r in runs if r.info.status == "RUNNING"] == []
    (study_run,) = [r for r in runs if r.data.tags.get(RUN_ROLE) == ROLE_STUDY]
    assert study_run.info.status == "FAILED"
    trial_runs = [r for r in runs if r.data.tags.get(RUN_ROLE) == ROLE_TRIAL]
    assert [r.data.tags[TRIAL_NUMBER] for r in trial_runs] == ["0"]  # the FAIL trial has its run
    assert trial_runs[0].info.status == "FAILED"
    assert trial_runs[0].data.tags[TRIAL_STATE] == "FAIL"
    assert trial_runs[0].data.tags[FAILURE_REASON] == "exception:MlflowException"
    trials = load(stores).trials
    assert [t.state.name for t in trials] == ["FAIL"]
    assert trials[0].user_attrs[FAILURE_REASON] == "exception:MlflowException"
