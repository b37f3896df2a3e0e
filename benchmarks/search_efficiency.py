"""Benchmark (issue 5, item 3): time to a target validation accuracy, three searchers.

The set-up is fixed in advance (issue 5) so the figure cannot be tuned: Fashion-MNIST, 12000
training and 6000 validation images (split seed 0; the official test set is used only by the
pipeline's own per-epoch test metrics), at most 9 epochs per trial, 900 s budget, target
validation accuracy 0.89, 3 seeds. Searchers:

- `default_study`: this project's default study, unchanged: `study.search.run_search` with
  TPE + Hyperband pruner and the enqueued baseline, MLflow into a temporary sqlite store,
  per-epoch test evaluation included;
- `tpe_no_pruning`: the same with `--pruner none`;
- `kerastuner_hyperband`: KerasTuner Hyperband (max_epochs=9, factor=3) on our own
  `study.model.build_model`, wrapped as a `keras_tuner.HyperModel` over the same YAML space
  (conditional knobs via `hp.conditional_scope`, same LR schedules, optimizers, augmentation
  in tf.data, batch size as a hyperparameter, validation every epoch at batch 1024).

Time to target = wall time from the searcher's start to the end of the first epoch of any
trial whose validation accuracy >= target; a run that misses counts as "> budget".

Protocol vs `make bench`: the full protocol (3 seeds x 3 searchers x 900 s, no early stop,
`--protocol full`) takes 135 min. `make bench` runs 1 seed by default and stops each run as
soon as it reaches the target (so "best accuracy" is then the best at that moment, not at
900 s); a run that never reaches the target still costs its 900 s.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import DEFAULT_SPACE, environment, load_space, load_splits, markdown_table, quiet, write_results

NAME = "search_efficiency"
SEARCHERS = ("default_study", "tpe_no_pruning", "kerastuner_hyperband")
TARGET, BUDGET, MAX_EPOCHS, TRAIN, VAL = 0.89, 900.0, 9, 12000, 6000


class StopSearch(BaseException):
    """Ends a searcher run from inside a Keras callback; BaseException so no searcher's
    per-trial error handling (Optuna objective, KerasTuner retries) swallows it."""


class Watch:
    """Records (seconds since start, val_accuracy) at every epoch end; stops the run."""

    def __init__(self, target: float, budget: float, stop_at_target: bool) -> None:
        self.target, self.budget, self.stop_at_target = target, budget, stop_at_target
        self.start = time.monotonic()
        self.epochs: list[tuple[float, float]] = []
        self.trials: set[Any] = set()

    def epoch(self, accuracy: float, trial: Any = None) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed > self.budget:
            raise StopSearch("budget")
        self.epochs.append((elapsed, float(accuracy)))
        self.trials.add(trial)
        if self.stop_at_target and accuracy >= self.target:
            raise StopSearch("target")

    def result(self) -> dict[str, Any]:
        hit = next((t for t, acc in self.epochs if acc >= self.target), None)
        return {"time_to_target_s": None if hit is None else round(hit, 1),
                "best_val_accuracy": round(max((acc for _, acc in self.epochs), default=float("nan")), 4),
                "epochs_trained": len(self.epochs), "trials_started": len(self.trials),
                "wall_s": round(time.monotonic() - self.start, 1)}


def run_optuna(pruner: str, seed: int, space, splits, folder: Path, watch_args: tuple) -> dict[str, Any]:
    from study.config import SearchConfig
    from study.inputs import PreparedStudy
    from study.search import run_search
    from study.storage import open_storage
    from study.tracking import Tracker

    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    storage = str(folder / "optuna.journal")
    tracker = Tracker(tracking_uri)
    tracker.client.search_experiments(max_results=1)  # schema creation is not search time
    name = f"efficiency-{pruner}-seed{seed}"
    config = SearchConfig(space_file=str(DEFAULT_SPACE), space=space, trials=None, timeout=watch_args[1] + 5,
                          experiment="bench-efficiency", study_name=name, seed=seed, sampler="tpe",
                          pruner=pruner, objective="val_accuracy", storage=storage, tracking_uri=tracking_uri)
    prepared = [PreparedStudy(name, seed, open_storage(storage))]
    watch = Watch(*watch_args)
    original = tracker.log_epoch

    def log_epoch(run_id: str, epoch: int, row: dict) -> None:
        original(run_id, epoch, row)
        watch.epoch(row["val_accuracy"], run_id)

    tracker.log_epoch = log_epoch
    watch.start = time.monotonic()
    with contextlib.suppress(StopSearch), contextlib.redirect_stdout(io.StringIO()):
        run_search(config, (splits, tracker, prepared))
    return watch.result()


def kerastuner_hypermodel(space, splits, max_epochs: int):
    """Our builder and space as a KerasTuner HyperModel (imports keras_tuner lazily)."""
    import keras
    import keras_tuner as kt
    import tensorflow as tf

    from study.model import build_model, compile_model, plateau_callbacks
    from study.training import augmentation, train_dataset

    class StudyHyperModel(kt.HyperModel):
        def values(self, hp: kt.HyperParameters) -> dict[str, Any]:
            """Declare every YAML knob as a KerasTuner hyperparameter; inactive ones take default."""
            chosen: dict[str, Any] = {}
            for name, spec in space.params.items():
                if spec.role == "fixed":
                    chosen[name] = spec.value
                    continue
                with contextlib.ExitStack() as scopes:
                    for parent, allowed in (spec.condition or {}).items():
                        if space.params[parent].role != "fixed":
                            scopes.enter_context(hp.conditional_scope(
                                parent, allowed if isinstance(allowed, list) else [allowed]))
                    value = self._declare(hp, name, spec)
                chosen[name] = value if spec.is_active(chosen) and value is not None else spec.default
            return chosen

        @staticmethod
        def _declare(hp: kt.HyperParameters, name: str, spec) -> Any:
            sampling = "log" if spec.log else "linear"
            if spec.type == "int":
                return hp.Int(name, int(spec.low), int(spec.high), step=int(spec.step or 1), sampling=sampling)
            if spec.type == "float":
                return hp.Float(name, spec.low, spec.high, step=spec.step, sampling=sampling)
            if spec.type == "bool":
                return hp.Boolean(name)
            return hp.Choice(name, spec.choices)

        def build(self, hp: kt.HyperParameters) -> keras.Model:
            values = self.values(hp)
            model = build_model(values, splits.input_shape, splits.num_classes)
            steps = math.ceil(len(splits.y_train) / int(values["batch_size"]))
            return compile_model(model, values, steps, max_epochs)

        def fit(self, hp: kt.HyperParameters, model: keras.Model, *args, **kwargs):
            values = self.values(hp)
            seed = int(hp.values.get("tuner/round", 0)) * 7919 + len(hp.values)
            data = train_dataset(splits.x_train, splits.y_train, int(values["batch_size"]), seed,
                                 augmentation(values, seed))
            callbacks = [*kwargs.pop("callbacks", []), *plateau_callbacks(values)]
            val = tf.data.Dataset.from_tensor_slices((splits.x_val, splits.y_val)).batch(1024).cache()
            kwargs.pop("validation_data", None)
            kwargs.pop("shuffle", None)  # our tf.data input is shuffled already
            kwargs["verbose"] = 0
            return model.fit(data, validation_data=val, callbacks=callbacks, **kwargs)

    return StudyHyperModel()


def run_kerastuner(seed: int, space, splits, folder: Path, watch_args: tuple) -> dict[str, Any]:
    import keras
    import keras_tuner as kt

    watch = Watch(*watch_args)

    class EpochWatch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            watch.epoch(float((logs or {}).get("val_accuracy", 0.0)), id(self.model))

    tuner = kt.Hyperband(kerastuner_hypermodel(space, splits, MAX_EPOCHS), objective="val_accuracy",
                         max_epochs=MAX_EPOCHS, factor=3, seed=seed, directory=str(folder),
                         project_name=f"kt-seed{seed}", overwrite=True, max_consecutive_failed_trials=5)
    watch.start = time.monotonic()
    with contextlib.suppress(StopSearch), contextlib.redirect_stdout(io.StringIO()):
        tuner.search(epochs=MAX_EPOCHS, callbacks=[EpochWatch()], verbose=0)
    return watch.result()


def _median_time(times: list[float | None], budget: float) -> float:
    return statistics.median([math.inf if t is None else t for t in times])


def run(quick: bool = True, protocol: str = "bench", seeds: int | None = None, budget: float | None = None,
        target: float = TARGET, train_size: int = TRAIN, val_size: int = VAL, max_epochs: int = MAX_EPOCHS,
        searchers: tuple[str, ...] = SEARCHERS, results_dir=None, test_size: int | None = None) -> dict[str, Any]:
    """protocol: "full" = the issue's 3 seeds x 900 s, no early stop; "bench" = 1 seed, stop at
    target; quick = "bench" with a 240 s budget (reference run on a shared machine)."""
    quiet()
    full = protocol == "full"
    seeds = seeds or (3 if full else 1)
    budget = budget or (BUDGET if (full or not quick) else 240.0)
    stop_at_target = not full
    overrides = [f"data.train_size={train_size}", f"data.val_size={val_size}", f"train.epochs={max_epochs}"]
    if test_size:  # smoke tests only: the protocol keeps the official test set
        overrides.append(f"data.test_size={test_size}")
    space = load_space(overrides)
    splits = load_splits(space)
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in searchers}
    for seed in range(seeds):  # round-robin: every searcher sees the same machine load
        for searcher in searchers:
            with tempfile.TemporaryDirectory(prefix=f"bench-{searcher}-") as folder:
                watch_args = (target, budget, stop_at_target)
                if searcher == "kerastuner_hyperband":
                    result = run_kerastuner(seed, space, splits, Path(folder), watch_args)
                else:
                    pruner = "hyperband" if searcher == "default_study" else "none"
                    result = run_optuna(pruner, seed, space, splits, Path(folder), watch_args)
            runs[searcher].append({"seed": seed, **result})
            print(f"search_efficiency: {searcher} seed {seed}: {result}", flush=True)
    summary = {}
    for searcher, items in runs.items():
        median = _median_time([r["time_to_target_s"] for r in items], budget)
        summary[searcher] = {"median_time_to_target_s": None if math.isinf(median) else round(median, 1),
                             "reached": f"{sum(r['time_to_target_s'] is not None for r in items)}/{len(items)}",
                             "median_best_val_accuracy": round(statistics.median(r["best_val_accuracy"] for r in items), 4)}

    def ratio(other: str) -> float | None:
        ours = summary.get("default_study", {}).get("median_time_to_target_s")
        theirs = summary.get(other, {}).get("median_time_to_target_s")
        if ours is None or other not in summary:
            return None
        return round((theirs if theirs is not None else budget) / ours, 3)  # a miss counts as the budget: a lower bound

    payload = {
        "name": NAME, "mode": "quick" if quick else "full", "protocol": protocol, "seeds": seeds,
        "budget_s": budget, "target_val_accuracy": target, "max_epochs": max_epochs,
        "data": {**splits.sizes(), "source": splits.source}, "stop_at_target": stop_at_target,
        "runs": runs, "summary": summary,
        "speedup_vs_kerastuner": ratio("kerastuner_hyperband"),
        "speedup_vs_tpe_no_pruning": ratio("tpe_no_pruning"),
        "goals": {"speedup_vs_kerastuner": ">= 2", "speedup_vs_tpe_no_pruning": "> 1"},
        "environment": environment(),
    }
    best_note = "best val acc (at the target stop, else at the budget)" if stop_at_target else f"best val acc at {budget:.0f} s"
    rows = [[s, v["median_time_to_target_s"] if v["median_time_to_target_s"] is not None else f"> {budget:.0f}",
             v["reached"], v["median_best_val_accuracy"]] for s, v in summary.items()]
    table = markdown_table(["searcher", "median time to target (s)", "reached", best_note], rows)
    def shown(value: float | None) -> str:
        return "n/a (the default study missed the target)" if value is None else f"{value}"

    table += (f"\nspeed-up of the default study: vs KerasTuner {shown(payload['speedup_vs_kerastuner'])} (goal >= 2), "
              f"vs TPE without pruning {shown(payload['speedup_vs_tpe_no_pruning'])} (goal > 1). Target {target}, "
              f"budget {budget:.0f} s, {seeds} seed(s), protocol `{protocol}`"
              f"{', each run stops at the target' if stop_at_target else ''}.\n")
    return write_results(NAME, payload, table, results_dir)


def main(quick: bool = True, protocol: str = "bench") -> dict[str, Any]:
    return run(quick=quick, protocol=protocol)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="240 s budget, 1 seed, stop at target")
    parser.add_argument("--protocol", choices=("bench", "full"), default="bench")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--budget", type=float)
    parser.add_argument("--searchers", nargs="+", choices=SEARCHERS, default=list(SEARCHERS))
    args = parser.parse_args()
    out = run(quick=args.quick, protocol=args.protocol, seeds=args.seeds, budget=args.budget,
              searchers=tuple(args.searchers))
    print(out["summary"], out["speedup_vs_kerastuner"], out["speedup_vs_tpe_no_pruning"])
