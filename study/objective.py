"""One Optuna trial: propose, train, record in MLflow, and classify how it ended."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna_integration import KerasPruningCallback

from study.config import SearchConfig
from study.contract import CPU_ISA, CPU_MODEL, FAILURE_REASON, LEARNING_CURVES_PNG, RELATIVE_COST, TRIAL_NUMBER
from study.cost import OVER_COST_CAP, relative_cost, untrained
from study.curves import plot_learning_curves
from study.data import Splits
from study.driver import finished_count
from study.machine import cpu_isa, cpu_model
from study.metrics import summarize_history
from study.model import InfeasibleArchitecture
from study.pairing import PairingProbe
from study.sampling import suggest_params
from study.signals import interrupt_replacing, signal_pending
from study.storage import HOST, own_process_token
from study.sweep import arm_of, pair_seed, pinned_level
from study.tracking import Tracker
from study.training import EpochEvaluator, NonFiniteLoss, TrialTimeout, train_dataset, train_trial


class TrialFailed(Exception):
    """Raised after a trial is recorded as FAIL, so Optuna marks it and the study goes on."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(frozen=True)
class TrialHooks:
    """What a benchmark may change or observe in a trial, without patching the study:
    `on_epoch(trial_number, epoch, row)` runs after each epoch is logged (it may raise to
    end the search: a BaseException passes every trial handler); `evaluate_test=False`
    drops the per-epoch test evaluation. The defaults are the product's behaviour."""

    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None
    evaluate_test: bool = True


# Installed around a call rather than passed down: the product's call chain (run_search,
# the workers) carries no benchmark-only arguments, and each TrialContext picks them up.
_installed_hooks = TrialHooks()


@contextlib.contextmanager
def trial_hooks(hooks: TrialHooks) -> Iterator[TrialHooks]:
    """Every TrialContext made inside the block (e.g. by `run_search`) gets these hooks."""
    global _installed_hooks
    previous, _installed_hooks = _installed_hooks, hooks
    try:
        yield hooks
    finally:
        _installed_hooks = previous


def installed_hooks() -> TrialHooks:
    return _installed_hooks


@dataclass
class TrialContext:
    """What every trial of one study shares."""

    config: SearchConfig
    splits: Splits
    tracker: Tracker
    experiment_id: str
    study_run_id: str
    study_name: str
    seed: int
    base_params: dict[str, Any] = field(default_factory=dict)
    hooks: TrialHooks = field(default_factory=installed_hooks)


def shared_trial_params(config: SearchConfig, splits: Splits) -> dict[str, Any]:
    """The MLflow params every trial run of a study carries besides its knobs: the search's
    config, the data's sizes and source, and the threads and CPU (model, ISA) it trains with."""
    from study.workers import tf_thread_params

    return {**config.flat(), **splits.sizes(), "data.source": splits.source, **tf_thread_params(),
            CPU_MODEL: cpu_model(), CPU_ISA: cpu_isa()}


def objective_value(config: SearchConfig, summary: dict[str, float]) -> float | tuple[float, float]:
    """Best-over-epochs scoring, the same rule the analysis uses."""
    if config.objective == "val_loss":
        return summary["best_val_loss"]
    if config.objective == "both":
        return summary["best_val_loss"], summary["best_val_accuracy"]
    return summary["best_val_accuracy"]


def _becomes_best(study: optuna.Study, value: float | tuple) -> bool:
    if isinstance(value, tuple):
        return False  # multi-objective: no single best to keep a model for
    previous = [t.value for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))]
    if not previous:
        return True
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    return value > max(previous) if maximize else value < min(previous)


class Objective:
    """Callable handed to `study.optimize`."""

    def __init__(self, context: TrialContext) -> None:
        self.context = context
        self.run_id: str | None = None
        self.interrupted_recorded = False

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        """A signal can land on any line, not only inside training: wherever it does, the
        trial ends FAIL `interrupted` and its run KILLED (further signals are ignored by then).
        Any other exception that escapes (MLflow refusing a call, the best model's upload)
        leaves the trial FAIL too, so its run says FAIL as well, and exists."""
        self.run_id, self.interrupted_recorded = None, False
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            # Optuna turns a KeyboardInterrupt into FAIL, even after a COMPLETE was recorded
            # (e.g. while the best model uploads), so MLflow must say the same.
            if not self.interrupted_recorded:
                self._record_failure(trial, "interrupted", "SIGINT/SIGTERM", "KILLED")
            raise
        except (TrialFailed, optuna.TrialPruned):
            raise  # recorded in MLflow already
        except Exception as exc:
            if signal_pending():  # the interrupt, replaced by a library's clean-up
                if not self.interrupted_recorded:
                    self._record_failure(trial, "interrupted", "SIGINT/SIGTERM", "KILLED")
                raise interrupt_replacing(exc) from exc
            reason = trial.user_attrs.get(FAILURE_REASON) or f"exception:{type(exc).__name__}"
            self._record_failure(trial, reason, f"{type(exc).__name__}: {exc}", "FAILED")
            raise

    def _record_failure(self, trial: optuna.Trial, reason: str, message: str, status: str) -> None:
        """Best effort, since MLflow may be what failed: the reason on the trial, and its run
        ended FAIL, so that no FAIL trial lacks its run."""
        try:
            trial.set_user_attr(FAILURE_REASON, reason)
            run_id = self._own_run(trial)
            self.context.tracker.finish_trial_run(run_id, "FAIL", status=status, failure_reason=reason,
                                                  failure_message=message)
        except Exception as second:  # noqa: BLE001 - the original exception is the one to report
            print(f"study: warning: trial {trial.number}: MLflow run not ended ({type(second).__name__}); "
                  "`python -m study reconcile` repairs it", flush=True)

    def _own_run(self, trial: optuna.Trial) -> str:
        """This trial's run: the one it started, one whose start was cut short (created, then
        its params refused or a signal), or, if it failed before any, a new one."""
        ctx = self.context
        if self.run_id is None:
            for run in ctx.tracker.trial_runs(ctx.experiment_id, ctx.study_name):
                if run.data.tags.get(TRIAL_NUMBER) == str(trial.number):
                    self.run_id = run.info.run_id
                    break
            else:
                # The pinned level too: a sweep arm that failed early still says what it trained.
                hp = {**trial.params, **pinned_level(ctx.config.space, arm_of(trial.user_attrs))}
                self.run_id = ctx.tracker.start_trial_run(
                    ctx.experiment_id, ctx.study_run_id, ctx.study_name, trial.number,
                    params=self._run_params(trial, hp), tags={"host": HOST, "pid": os.getpid()})
            trial.set_user_attr("mlflow_run_id", self.run_id)
        return self.run_id

    def _run_params(self, trial: optuna.Trial, hp: dict[str, Any]) -> dict[str, Any]:
        """What a trial's MLflow run logs as params: its values, the study's fixed ones, its arm."""
        return {**hp, **self.context.base_params, **_sweep_params(trial)}

    def _start(self, trial: optuna.Trial) -> tuple[dict[str, Any], str]:
        """The trial's values and its MLflow run, or PRUNED before any run if over the cost cap."""
        ctx, config = self.context, self.context.config
        # First, so a crash at any later point leaves a trial another process can diagnose.
        trial.set_user_attr("host", HOST)
        trial.set_user_attr("process_token", own_process_token())  # before the pid: every pid has its life
        trial.set_user_attr("pid", os.getpid())
        # A sweep arm's level of a knob the space pins off reaches the net here.
        pinned = pinned_level(config.space, arm_of(trial.user_attrs))
        hp = {**suggest_params(trial, config.space), **pinned}
        self._skip_if_over_cost_cap(trial, hp)
        run_id = ctx.tracker.start_trial_run(
            ctx.experiment_id, ctx.study_run_id, ctx.study_name, trial.number,
            params=self._run_params(trial, hp), tags={"host": HOST, "pid": os.getpid()})
        self.run_id = run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        print(f"[{ctx.study_name}] trial {trial.number} started: "
              + " ".join(f"{k}={_short(v)}" for k, v in {**trial.params, **pinned}.items()), flush=True)
        return hp, run_id

    def _run(self, trial: optuna.Trial) -> float | tuple[float, float]:
        ctx, config = self.context, self.context.config
        hp, run_id = self._start(trial)
        # Best weights are kept only for the model upload, which lean trials skip.
        best_metric = None if config.objective == "both" or config.trial_artifacts == "lean" else config.objective

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            ctx.tracker.log_epoch(run_id, epoch, row)
            if ctx.hooks.on_epoch is not None:
                ctx.hooks.on_epoch(trial.number, epoch, row)

        evaluator = EpochEvaluator(ctx.splits, config.space.train, best_metric, on_epoch=on_epoch,
                                   evaluate_test=ctx.hooks.evaluate_test)
        callbacks = []
        if config.objective != "both" and config.pruner != "none":
            callbacks.append(KerasPruningCallback(trial, config.objective))
        # A sweep's arms share their pair's seed and initial kernels (study/pairing.py).
        arm = arm_of(trial.user_attrs)
        seed = pair_seed(ctx.study_name, arm.pair) if arm else ctx.seed * 10007 + trial.number
        if arm:
            callbacks.append(self._pairing_probe(trial, run_id, hp, seed))
        try:
            model = train_trial(hp, ctx.splits, config.space.train, seed, evaluator, callbacks,
                                init_seed=seed if arm else None)
        except InfeasibleArchitecture as exc:
            self._finish(trial, run_id, evaluator, "PRUNED", "infeasible_architecture", str(exc))
            raise optuna.TrialPruned(str(exc)) from None
        except optuna.TrialPruned:
            self._finish(trial, run_id, evaluator, "PRUNED", None, None)
            raise
        except NonFiniteLoss as exc:
            self._finish(trial, run_id, evaluator, "FAIL", "nan_loss", str(exc))
            raise TrialFailed("nan_loss", str(exc)) from None
        except TrialTimeout as exc:
            self._finish(trial, run_id, evaluator, "FAIL", "timeout", str(exc))
            raise TrialFailed("timeout", str(exc)) from None
        except KeyboardInterrupt:
            self._finish(trial, run_id, evaluator, "FAIL", "interrupted", "SIGINT/SIGTERM", status="KILLED")
            raise
        except Exception as exc:  # OOM and any other crash: this trial fails, the study goes on
            if signal_pending():  # the interrupt, replaced by a library's clean-up
                self._finish(trial, run_id, evaluator, "FAIL", "interrupted", "SIGINT/SIGTERM", status="KILLED")
                raise interrupt_replacing(exc) from exc
            reason = f"exception:{type(exc).__name__}"
            self._finish(trial, run_id, evaluator, "FAIL", reason, str(exc))
            raise TrialFailed(reason, str(exc)) from None

        summary = self._finish(trial, run_id, evaluator, "COMPLETE", None, None)
        value = objective_value(config, summary)
        keeps_model = config.trial_artifacts == "full"  # a campaign skips the upload (throughput)
        if keeps_model and evaluator.best_weights is not None and _becomes_best(trial.study, value):
            model.set_weights(evaluator.best_weights)
            ctx.tracker.log_keras_model(run_id, model)
        return value

    def _pairing_probe(self, trial: optuna.Trial, run_id: str, hp: dict[str, Any], seed: int) -> PairingProbe:
        """Logs the pairing hashes as user attrs and MLflow params when training starts."""
        splits, tracker = self.context.splits, self.context.tracker

        def on_hashes(hashes: dict[str, str]) -> None:
            for key, value in hashes.items():
                trial.set_user_attr(key, value)
            tracker.log_params(run_id, hashes)

        return PairingProbe(lambda: train_dataset(splits.x_train, splits.y_train, int(hp["batch_size"]), seed),
                            on_hashes)

    def _skip_if_over_cost_cap(self, trial: optuna.Trial, hp: dict[str, Any]) -> None:
        """A draw above `train.max_cost` ends PRUNED before training, with no MLflow run: it is
        outside the capped space, like a draw that cannot be built, and costs milliseconds."""
        space, splits = self.context.config.space, self.context.splits
        cap = space.train.max_cost
        if cap is None:
            return
        cost = relative_cost(hp, space.baseline_values(), splits.input_shape, splits.num_classes)
        trial.set_user_attr(RELATIVE_COST, cost)
        if cost > cap:
            trial.set_user_attr(FAILURE_REASON, OVER_COST_CAP)
            raise optuna.TrialPruned(f"{cost:.1f} baseline nets per image, above train.max_cost={cap:g}")

    def _finish(self, trial: optuna.Trial, run_id: str, evaluator: EpochEvaluator, state: str,
                reason: str | None, message: str | None, status: str | None = None) -> dict[str, float]:
        history = evaluator.history
        summary = {**summarize_history(history), "train_seconds": evaluator.seconds}
        if RELATIVE_COST in trial.user_attrs:
            summary[RELATIVE_COST] = float(trial.user_attrs[RELATIVE_COST])
        if reason:
            trial.set_user_attr(FAILURE_REASON, reason)
        with tempfile.TemporaryDirectory() as folder:
            figure = None
            if not history.empty and self.context.config.trial_artifacts == "full":
                figure = plot_learning_curves(history, f"{self.context.study_name} trial {trial.number} ({state})",
                                              Path(folder) / LEARNING_CURVES_PNG)
            self.context.tracker.finish_trial_run(
                run_id, state, status=status, failure_reason=reason, failure_message=message,
                summary=summary, history=history, predictions=evaluator.predictions_at_best(), figure=figure,
                outcomes=evaluator.outcomes())
        self.interrupted_recorded = reason == "interrupted"
        return summary


def _sweep_params(trial: optuna.Trial) -> dict[str, Any]:
    """A sweep arm's factor, level, pair and arm (its user attrs), logged as params; {} otherwise."""
    arm = arm_of(trial.user_attrs)
    return arm.user_attrs() if arm else {}


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def elapsed_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """Plain lines (CI logs, files, terminals alike): state, best so far and an ETA."""

    def __init__(self, study_name: str, target: int | None, timeout: float | None,
                 finished_at_start: int = 0) -> None:
        self.study_name, self.target, self.timeout = study_name, target, timeout
        self.started = time.monotonic()
        self.done_here = 0
        # The rate counts every process's trials (other workers too), since this one started.
        self.finished_at_start = finished_at_start

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not untrained(trial.user_attrs):  # a skipped draw (or empty ask) took milliseconds
            self.done_here += 1
        finished = finished_count(study)
        value = "" if trial.values is None else " value=" + "/".join(f"{v:.4f}" for v in trial.values)
        reason = trial.user_attrs.get(FAILURE_REASON)
        line = f"[{self.study_name}] trial {trial.number} {trial.state.name}{value}"
        if reason:
            line += f" ({reason})"
        line += f" | {finished}/{self.target or '?'} finished"
        try:
            if len(study.directions) == 1:
                line += f" | best {study.best_value:.4f} (trial {study.best_trial.number})"
        except ValueError:
            pass
        elapsed = time.monotonic() - self.started
        counted_here = max(finished - self.finished_at_start, self.done_here)
        if self.target and not counted_here:  # only skipped draws so far: no rate to tell
            line += f" | elapsed {elapsed_text(elapsed)}"
        elif self.target:
            per_hour = counted_here * 3600.0 / max(elapsed, 1e-9)
            remaining = max(0, self.target - finished) * 3600.0 / per_hour
            if self.timeout:
                remaining = min(remaining, max(0.0, self.timeout - elapsed))
            line += (f" | {per_hour:.0f} trials/h, elapsed {elapsed_text(elapsed)}, "
                     f"ETA {elapsed_text(remaining)}")
        print(line, flush=True)
