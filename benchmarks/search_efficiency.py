"""Benchmark (issue 12): time to a target validation accuracy, three searchers, all cold.

Fixed in advance so the figure cannot be tuned: Fashion-MNIST, 12000 training and 6000
validation images (split seed 0; the official test set only feeds the pipeline's own
per-epoch test metrics), at most 9 epochs per trial, 900 s budget per run, targets 0.89 and
0.90 validation accuracy, >= 3 seeds. Searchers:

- `default_study`: this project's default study through `study.search.run_search` (the
  sampler and pruner that `SearchConfig` defaults to, today TPE + Hyperband, and the default
  space's cost cap `train.max_cost`; MLflow into a temporary sqlite store, per-epoch test
  evaluation included), but **cold**: `baseline=False`, so no trial is enqueued. If the
  default changes, this searcher follows it and the two anchors below stay;
- `tpe_no_pruning`: TPE with `--pruner none` on the space without a cost cap;
- `kerastuner_hyperband`: KerasTuner Hyperband (max_epochs=9, factor=3) on our own
  `study.model.build_model`, wrapped as a `keras_tuner.HyperModel` over the same YAML space
  without a cost cap (conditional knobs via `hp.conditional_scope`, same LR schedules,
  optimizers, augmentation in tf.data, batch size as a hyperparameter, validation every
  epoch at batch 1024).

Each run records its searcher's settings; a re-run keeps a stored run only while they are
unchanged, so a new default redoes the default study's seeds and keeps the anchors'.

No searcher gets an enqueued trial (`warm_start: false` in the JSON; every Optuna run
records how many enqueued trials its study held: 0). Time to a target = wall time from the
searcher's start to the end of the first epoch of any trial whose validation accuracy >=
the target. A run stops once it reaches the highest target (so its best is then the best at
that moment; the goal "best >= 0.90 in 900 s" is decided the same either way), else at the
budget. A seed that misses a target counts as the budget: a median that rests on a miss is
marked, and a speed-up over it is a lower bound (or undefined when the default study's
median missed). Each (searcher, seed) result is written to the JSON as it finishes; a re-run
with the same protocol skips what is there and measures the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (DEFAULT_SPACE, Options, Row, environment, load_space, load_splits, markdown_table,
                               quiet, read_result, write_results)
from benchmarks.hardware import gemm_peak_gflops

NAME = "search_efficiency"
SEARCHERS = ("default_study", "tpe_no_pruning", "kerastuner_hyperband")
TARGETS, BUDGET, MAX_EPOCHS, TRAIN, VAL, SEEDS = (0.89, 0.90), 900.0, 9, 12000, 6000, 3
QUICK_BUDGET = 300.0
BEST_GOAL = 0.90
ANCHOR_GOALS = {"kerastuner_hyperband": 2.0, "tpe_no_pruning": 1.0}  # >= 2x; strictly faster (> 1x)
GOAL = ("cold, median of >= 3 seeds: the default study reaches 0.89 and 0.90 >= 2x faster than KerasTuner "
        "Hyperband and faster than TPE without pruning; best >= 0.90 in 900 s")
STOP_RULE = "a run stops once it reaches the highest target, else at the budget"


class StopSearch(BaseException):
    """Ends a searcher run from inside an epoch hook; BaseException so no searcher's
    per-trial error handling (Optuna objective, KerasTuner retries) swallows it."""


class Watch:
    """Records (seconds since start, val_accuracy) at every epoch end; stops the run at the
    highest target or past the budget."""

    def __init__(self, targets: tuple[float, ...], budget: float) -> None:
        self.targets, self.budget = targets, budget
        self.start = time.monotonic()
        self.epochs: list[tuple[float, float]] = []
        self.trials: set[Any] = set()

    def epoch(self, accuracy: float, trial: Any = None) -> None:
        elapsed = time.monotonic() - self.start
        if elapsed > self.budget:
            raise StopSearch("budget")
        self.epochs.append((elapsed, float(accuracy)))
        self.trials.add(trial)
        if accuracy >= max(self.targets):
            raise StopSearch("target")

    def result(self) -> dict[str, Any]:
        def first_hit(target: float) -> float | None:
            hit = next((t for t, acc in self.epochs if acc >= target), None)
            return None if hit is None else round(hit, 1)

        return {"time_to_target_s": {target_key(t): first_hit(t) for t in self.targets},
                "best_val_accuracy": round(max((acc for _, acc in self.epochs), default=float("nan")), 4),
                "epochs_trained": len(self.epochs), "trials_started": len(self.trials),
                "wall_s": round(time.monotonic() - self.start, 1)}


def target_key(target: float) -> str:
    return f"{target:.2f}"


def uncapped(space):
    """The space without a cost cap: the anchors search it as they always did, so a change of
    the default (cnn.yaml's `train.max_cost`) is measured against the same two anchors."""
    return space.model_copy(update={"train": space.train.model_copy(update={"max_cost": None})})


def searcher_settings(searcher: str, space) -> dict[str, Any]:
    """What defines a searcher's runs: a stored run is reused only while these are unchanged.
    The default study follows the product's defaults (sampler, pruner, the space's cost cap);
    the anchors are fixed."""
    from study.config import SearchConfig

    if searcher == "default_study":
        return {**{name: SearchConfig.model_fields[name].default for name in ("sampler", "pruner")},
                "max_cost": space.train.max_cost}
    if searcher == "tpe_no_pruning":
        return {"sampler": "tpe", "pruner": "none", "max_cost": None}
    return {"tuner": "hyperband", "factor": 3, "max_cost": None}


def run_optuna(settings: dict[str, Any], seed: int, space, splits, folder: Path, watch: Watch) -> dict[str, Any]:
    import optuna

    from study.config import SearchConfig
    from study.inputs import PreparedStudy
    from study.objective import TrialHooks, trial_hooks
    from study.search import run_search
    from study.storage import open_storage
    from study.tracking import Tracker

    tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
    storage = str(folder / "optuna.journal")
    tracker = Tracker(tracking_uri)
    tracker.client.search_experiments(max_results=1)  # schema creation is not search time
    name = f"efficiency-{settings['sampler']}-{settings['pruner']}-seed{seed}"
    # cold: baseline=False enqueues nothing (the space keeps its baseline as the cost cap's unit)
    config = SearchConfig(space_file=str(DEFAULT_SPACE), space=space, trials=None, timeout=watch.budget + 5,
                          experiment="bench-efficiency", study_name=name, seed=seed, objective="val_accuracy",
                          storage=storage, tracking_uri=tracking_uri, baseline=False,
                          sampler=settings["sampler"], pruner=settings["pruner"])
    prepared = [PreparedStudy(name, seed, open_storage(storage))]
    hooks = TrialHooks(on_epoch=lambda trial, epoch, row: watch.epoch(row["val_accuracy"], trial))
    watch.start = time.monotonic()
    with trial_hooks(hooks), contextlib.suppress(StopSearch), contextlib.redirect_stdout(io.StringIO()):
        run_search(config, (splits, tracker, prepared))
    result = watch.result()
    trials = optuna.load_study(study_name=name, storage=prepared[0].storage).get_trials(deepcopy=False)
    return {**result, "enqueued_trials": sum("fixed_params" in t.system_attrs for t in trials)}


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


def run_kerastuner(seed: int, space, splits, folder: Path, watch: Watch, max_epochs: int) -> dict[str, Any]:
    import keras
    import keras_tuner as kt

    class EpochWatch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            watch.epoch(float((logs or {}).get("val_accuracy", 0.0)), id(self.model))

    tuner = kt.Hyperband(kerastuner_hypermodel(space, splits, max_epochs), objective="val_accuracy",
                         max_epochs=max_epochs, factor=3, seed=seed, directory=str(folder),
                         project_name=f"kt-seed{seed}", overwrite=True, max_consecutive_failed_trials=5)
    watch.start = time.monotonic()
    with contextlib.suppress(StopSearch), contextlib.redirect_stdout(io.StringIO()):
        tuner.search(epochs=max_epochs, callbacks=[EpochWatch()], verbose=0)
    return {**watch.result(), "enqueued_trials": 0}  # KerasTuner has no enqueued trial


# --- the figures ---------------------------------------------------------------------------


def median_time(times: list[float | None], budget: float) -> dict[str, Any]:
    """Median time to target with a miss counted as the budget; `censored` when the median
    rests on a miss (the true median is then > the value shown)."""
    values = sorted(budget if t is None else t for t in times)  # misses sort last
    count, misses = len(values), sum(t is None for t in times)
    median = statistics.median(values)
    censored = misses > 0 and count - misses <= count // 2  # a miss is among the middle values
    return {"median_s": round(median, 1), "censored": censored, "reached": f"{count - misses}/{count}"}


def speedup(ours: dict[str, Any], theirs: dict[str, Any], goal: float) -> dict[str, Any]:
    """theirs / ours, with its kind (exact or lower bound) and the verdict against the goal."""
    if ours["censored"]:
        return {"value": None, "bound": None,
                "verdict": "misses goal: the default study missed the target in the median seed"}
    value = round(theirs["median_s"] / ours["median_s"], 3)
    if not theirs["censored"]:
        met = value >= goal if goal > 1 else value > goal
        return {"value": value, "bound": "exact", "verdict": "meets goal" if met else "misses goal"}
    if value >= goal and (goal > 1 or value > goal):
        return {"value": value, "bound": "lower", "verdict": "meets goal (lower bound: the anchor missed)"}
    return {"value": value, "bound": "lower", "verdict": "not shown: a lower bound under the goal"}


def summarize(runs: dict[str, list[dict[str, Any]]], targets: tuple[float, ...], budget: float) -> dict[str, Any]:
    per_searcher = {}
    for searcher, items in runs.items():
        if not items:
            continue
        per_searcher[searcher] = {
            "seeds": [r["seed"] for r in items],
            "time_to_target": {target_key(t): median_time([r["time_to_target_s"][target_key(t)] for r in items],
                                                          budget) for t in targets},
            "median_best_val_accuracy": round(statistics.median(r["best_val_accuracy"] for r in items), 4)}
    speedups: dict[str, dict[str, Any]] = {}
    ours = per_searcher.get("default_study")
    for target in map(target_key, targets):
        speedups[target] = {anchor: speedup(ours["time_to_target"][target],
                                            per_searcher[anchor]["time_to_target"][target], goal)
                            for anchor, goal in ANCHOR_GOALS.items() if ours and anchor in per_searcher}
    best = None if ours is None else ours["median_best_val_accuracy"]
    return {"summary": per_searcher, "speedups": speedups,
            "default_best_val_accuracy": best,
            "default_best_meets_goal": None if best is None else best >= BEST_GOAL}


# --- runs, saved as they finish -------------------------------------------------------------


def protocol_of(targets: tuple[float, ...], budget: float, max_epochs: int, space, splits) -> dict[str, Any]:
    """What every searcher's runs share; a stored run is reused only under the same protocol
    (and its searcher's unchanged settings, `reusable`)."""
    return {"targets": [target_key(t) for t in targets], "budget_s": budget, "max_epochs": max_epochs,
            "data": splits.sizes(), "warm_start": False, "stop_rule": STOP_RULE,
            "space_sha": uncapped(space).sha()}


def reusable(stored: dict[str, Any], protocol: dict[str, Any], settings: dict[str, dict[str, Any]]
             ) -> dict[str, list[dict[str, Any]]]:
    """The stored runs a new run keeps: same protocol, and each run's searcher settings as
    they are now (a changed default redoes the default study's seeds, not the anchors')."""
    if stored.get("protocol") != protocol:
        return {}
    return {searcher: [run for run in runs if run.get("settings") == settings.get(searcher)]
            for searcher, runs in stored.get("runs", {}).items()}


def one_run(searcher: str, seed: int, space, splits, watch: Watch, max_epochs: int) -> dict[str, Any]:
    searched = space if searcher == "default_study" else uncapped(space)
    with tempfile.TemporaryDirectory(prefix=f"bench-{searcher}-") as folder:
        if searcher == "kerastuner_hyperband":
            return run_kerastuner(seed, searched, splits, Path(folder), watch, max_epochs)
        return run_optuna(searcher_settings(searcher, space), seed, searched, splits, Path(folder), watch)


def measure_efficiency(quick: bool = False, seeds: int = SEEDS, budget: float | None = None,
                       targets: tuple[float, ...] = TARGETS, train_size: int = TRAIN, val_size: int = VAL,
                       max_epochs: int = MAX_EPOCHS, searchers: tuple[str, ...] = SEARCHERS, results_dir=None,
                       test_size: int | None = None) -> dict[str, Any]:
    """Seeds round-robin across searchers (every searcher sees the same machine load); each
    finished (searcher, seed) is written at once, and a stored one of the same protocol is kept."""
    quiet()
    budget = budget or (QUICK_BUDGET if quick else BUDGET)
    overrides = [f"data.train_size={train_size}", f"data.val_size={val_size}", f"train.epochs={max_epochs}"]
    if test_size:  # smoke tests only: the protocol keeps the official test set
        overrides.append(f"data.test_size={test_size}")
    space = load_space(overrides)
    splits = load_splits(space)
    protocol = protocol_of(targets, budget, max_epochs, space, splits)
    settings = {searcher: searcher_settings(searcher, space) for searcher in SEARCHERS}
    previous = reusable(read_result(NAME, results_dir), protocol, settings)
    # a searcher not run this time keeps its stored seeds, so runs can be split across calls
    runs: dict[str, list[dict[str, Any]]] = {
        name: [] if name in searchers else [r for r in previous.get(name, []) if r["seed"] < seeds]
        for name in SEARCHERS}
    for seed in range(seeds):
        for searcher in searchers:
            done = next((r for r in previous.get(searcher, []) if r["seed"] == seed), None)
            if done is not None:
                print(f"search_efficiency: {searcher} seed {seed}: kept from the last run", flush=True)
            else:
                # the budget is absolute, so each run records how fast the shared machine was then
                speed = round(gemm_peak_gflops(), 1)
                done = {"seed": seed, "settings": settings[searcher], "gemm_gflops_at_start": speed,
                        **one_run(searcher, seed, space, splits, Watch(targets, budget), max_epochs)}
                print(f"search_efficiency: {searcher} seed {seed}: {done}", flush=True)
            runs[searcher].append(done)
            payload = payload_of(quick, protocol, runs, seeds, splits, targets, budget)
            write_results(NAME, payload, table_of(payload), results_dir)
    return payload


def payload_of(quick: bool, protocol: dict[str, Any], runs: dict[str, list[dict[str, Any]]], seeds: int, splits,
               targets: tuple[float, ...], budget: float) -> dict[str, Any]:
    finished = {searcher: len(items) for searcher, items in runs.items()}
    return {"name": NAME, "mode": "quick" if quick else "full", "protocol": protocol, "seeds": seeds,
            "complete": all(n == seeds for n in finished.values()), "finished_seeds": finished,
            "warm_start": protocol["warm_start"], "budget_s": budget, "targets": protocol["targets"],
            "max_epochs": protocol["max_epochs"], "data": {**splits.sizes(), "source": splits.source},
            "stop_rule": STOP_RULE, "runs": runs, **summarize(runs, targets, budget),
            "goals": {"speedup_vs_kerastuner_hyperband": ">= 2", "speedup_vs_tpe_no_pruning": "> 1",
                      "default_best_val_accuracy": f">= {BEST_GOAL}"},
            "environment": environment()}


def shown_speedup(figure: dict[str, Any]) -> str:
    if figure["value"] is None:
        return "n/a"
    return f"≥ {figure['value']}" if figure["bound"] == "lower" else f"{figure['value']}"


def table_of(payload: dict[str, Any]) -> str:
    budget = payload["budget_s"]
    rows = []
    for searcher, figures in payload["summary"].items():
        times = [f"> {budget:.0f}" if tt["censored"] else tt["median_s"] for tt in figures["time_to_target"].values()]
        reached = [tt["reached"] for tt in figures["time_to_target"].values()]
        rows.append([searcher, *times, " / ".join(reached), figures["median_best_val_accuracy"]])
    headers = ["searcher", *[f"median s to {t}" for t in payload["targets"]], "reached (per target)",
               "median best val acc"]
    table = markdown_table(headers, rows)
    for target, anchors in payload["speedups"].items():
        text = "; ".join(f"vs {anchor} {shown_speedup(figure)} ({figure['verdict']})" for anchor, figure in anchors.items())
        table += f"\nSpeed-up of the default study to {target}: {text or 'not computed'}.\n"
    return table + (f"\nCold start (no enqueued trial for any searcher), {len(payload['runs'].get('default_study', []))}"
                    f" of {payload['seeds']} seeds done, budget {budget:.0f} s, {STOP_RULE}; a miss counts as the "
                    f"budget.\n") + machine_speed_line(payload["runs"])


def machine_speed_line(runs: dict[str, list[dict[str, Any]]]) -> str:
    speeds = [run["gemm_gflops_at_start"] for items in runs.values() for run in items if "gemm_gflops_at_start" in run]
    if not speeds:
        return ""
    return (f"Machine speed at each run's start (float32 GEMM, as in `hardware`): {min(speeds)}-{max(speeds)} "
            f"GFLOP/s, median {statistics.median(speeds)}.\n")


def run(options: Options) -> dict[str, Any]:
    return measure_efficiency(options.quick, results_dir=options.results_dir)


def summary_rows(result: dict[str, Any]) -> list[Row]:
    if not isinstance(result.get("protocol"), dict):
        return [Row("speed-up vs KerasTuner / TPE without pruning", None, ">= 2 / > 1",
                    "stale: measured with the enqueued baseline (warm start), not the search; re-run")]
    seeds = f"{len(result['runs'].get('default_study', []))}/{result['seeds']} seeds"
    rows = [Row(f"speed-up to {target} vs {anchor} (median, {seeds}, cold)", shown_speedup(figure),
                result["goals"][f"speedup_vs_{anchor}"], figure["verdict"])
            for target, anchors in result["speedups"].items() for anchor, figure in anchors.items()]
    best = result.get("default_best_val_accuracy")
    met = result.get("default_best_meets_goal")
    rows.append(Row(f"default study best val acc in {result['budget_s']:.0f} s (median)", best, f">= {BEST_GOAL}",
                    "reported" if met is None else ("meets goal" if met else "misses goal")))
    if not result.get("complete", False):
        rows = [Row(row.figure, row.value, row.goal, row.verdict + " (incomplete: re-run to resume)") for row in rows]
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_BUDGET:.0f} s budget")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--budget", type=float)
    parser.add_argument("--searchers", nargs="+", choices=SEARCHERS, default=list(SEARCHERS))
    parser.add_argument("--results", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    if args.seeds < SEEDS:
        parser.error(f"--seeds {args.seeds}: at least {SEEDS} seeds per searcher")
    out = measure_efficiency(quick=args.quick, seeds=args.seeds, budget=args.budget, searchers=tuple(args.searchers),
                             results_dir=args.results)
    print(out["speedups"], out["default_best_val_accuracy"])
