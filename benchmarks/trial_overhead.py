"""Benchmark (issue 5, item 1): a pipeline trial / a raw `model.fit` of the same model, data, epochs.

Four variants, interleaved in every repeat (order rotated), on the enqueued baseline design:

- `raw`: `build_model` + `compile_model`, then `model.fit(x_train, y_train, batch_size,
  epochs, validation_data=(x_val, y_val))` on numpy arrays: what a Keras user writes;
- `trainer_no_test`: `study.training.train_trial` (tf.data input, EpochEvaluator with
  validation metrics), no test evaluation, no MLflow: the training path alone;
- `pipeline_no_test`: the real path, `study.search.run_search` with one trial, MLflow into a
  temporary sqlite store and Optuna into a temporary journal, but with the per-epoch test
  evaluation switched off (the benchmark patches `study.objective.EpochEvaluator` with
  `evaluate_test=False`);
- `pipeline`: the real path, unchanged (per-epoch test evaluation on).

Pipeline trial time = the Optuna trial's duration (objective call: MLflow run, training,
per-epoch logging, artifacts, learning-curve PNG, model logged as the study's best).
Raw time = clear_session + build + compile + fit. Study set-up (experiment, study run) is
per study, not per trial, and reported apart. Process CPU seconds are recorded too
(`*_cpu` ratios; the pipeline's include its study set-up): unlike wall time they hardly move
when other users load the shared machine.

overhead_ratio = pipeline_no_test / raw (goal <= 1.03); test_eval_extra = (pipeline -
pipeline_no_test) / raw; logging_extra = (pipeline_no_test - trainer_no_test) / raw.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (DEFAULT_SPACE, Stopwatch, baseline_hp, environment, load_space, load_splits,
                               markdown_table, quiet, stats, write_results)

NAME = "trial_overhead"
GOAL = 1.03
VARIANTS = ("raw", "trainer_no_test", "pipeline_no_test", "pipeline")


def raw_fit_seconds(hp: dict[str, Any], splits, epochs: int, seed: int) -> tuple[float, float]:
    import keras

    from study.model import build_model, compile_model

    cpu = time.process_time()
    with Stopwatch() as watch:
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        model = build_model(hp, splits.input_shape, splits.num_classes)
        batch_size = int(hp["batch_size"])
        compile_model(model, hp, math.ceil(len(splits.y_train) / batch_size), epochs)
        model.fit(splits.x_train, splits.y_train, batch_size=batch_size, epochs=epochs, verbose=0,
                  validation_data=(splits.x_val, splits.y_val), shuffle=True)
    return watch.seconds, time.process_time() - cpu


def trainer_seconds(hp: dict[str, Any], splits, space, seed: int) -> tuple[float, float]:
    from study.training import EpochEvaluator, train_trial

    cpu = time.process_time()
    with Stopwatch() as watch:
        evaluator = EpochEvaluator(splits, space.train, "val_accuracy", evaluate_test=False)
        train_trial(hp, splits, space.train, seed, evaluator)
    return watch.seconds, time.process_time() - cpu


class PipelineRunner:
    """One MLflow sqlite store and one Optuna journal in a temp folder; one study per call."""

    def __init__(self, space, splits, folder: Path) -> None:
        from study.config import SearchConfig
        from study.tracking import Tracker

        self.space, self.splits, self.folder = space, splits, folder
        self.tracking_uri = f"sqlite:///{folder / 'mlflow.db'}"
        self.storage = str(folder / "optuna.journal")
        self.tracker = Tracker(self.tracking_uri)
        self.tracker.client.search_experiments(max_results=1)  # create the schema outside the clock
        self.make_config = functools.partial(
            SearchConfig, space_file=str(DEFAULT_SPACE), space=space, trials=1, experiment="bench-overhead",
            seed=0, sampler="tpe", pruner="hyperband", objective="val_accuracy",
            storage=self.storage, tracking_uri=self.tracking_uri)
        self.count = 0

    def __call__(self, evaluate_test: bool, space=None) -> tuple[float, float, float]:
        """(trial seconds, whole run_search seconds, run_search CPU seconds) for a fresh one-trial study."""
        import optuna

        import study.objective
        from study.inputs import PreparedStudy
        from study.search import run_search
        from study.storage import open_storage
        from study.training import EpochEvaluator

        self.count += 1
        name = f"overhead-{self.count}"
        config = self.make_config(study_name=name, **({"space": space} if space is not None else {}))
        prepared = [PreparedStudy(name, 0, open_storage(self.storage))]
        original = study.objective.EpochEvaluator
        if not evaluate_test:
            study.objective.EpochEvaluator = functools.partial(EpochEvaluator, evaluate_test=False)
        cpu = time.process_time()
        try:
            with contextlib.redirect_stdout(io.StringIO()), Stopwatch() as watch:
                code = run_search(config, (self.splits, self.tracker, prepared))
        finally:
            study.objective.EpochEvaluator = original
        if code != 0:
            raise RuntimeError(f"run_search exited {code}")
        trial = optuna.load_study(study_name=name, storage=prepared[0].storage).trials[0]
        if trial.state != optuna.trial.TrialState.COMPLETE:
            raise RuntimeError(f"benchmark trial ended {trial.state.name}: {trial.user_attrs}")
        return ((trial.datetime_complete - trial.datetime_start).total_seconds(), watch.seconds,
                time.process_time() - cpu)


def run(quick: bool = True, repeats: int | None = None, epochs: int | None = None,
        train_size: int | None = None, val_size: int | None = None, test_size: int | None = None,
        results_dir=None) -> dict[str, Any]:
    quiet()
    repeats = repeats or 3
    epochs = epochs or 3
    train_size = train_size or (12000 if quick else 25000)
    val_size = val_size or (6000 if quick else 10000)
    overrides = [f"data.train_size={train_size}", f"data.val_size={val_size}", f"train.epochs={epochs}"]
    if test_size:
        overrides.append(f"data.test_size={test_size}")
    space = load_space(overrides)
    splits = load_splits(space)
    hp = baseline_hp(space)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    study_seconds: list[float] = []
    seed = 10007 * 0 + 0  # the seed the baseline trial 0 of a seed-0 study gets
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as folder:
        pipeline = PipelineRunner(space, splits, Path(folder))
        # Untimed warm-up, one epoch each: first TF kernels, the first MLflow artifact and
        # model upload, matplotlib's import and font cache.
        one_epoch = space.model_copy(update={"train": space.train.model_copy(update={"epochs": 1})})
        trainer_seconds({**hp}, splits, one_epoch, seed)
        pipeline(evaluate_test=True, space=one_epoch)
        for repeat in range(repeats):
            order = VARIANTS[repeat % len(VARIANTS):] + VARIANTS[:repeat % len(VARIANTS)]
            for variant in order:
                if variant == "raw":
                    wall_s, cpu_s = raw_fit_seconds(hp, splits, epochs, seed)
                elif variant == "trainer_no_test":
                    wall_s, cpu_s = trainer_seconds(hp, splits, space, seed)
                else:
                    wall_s, total_s, cpu_s = pipeline(evaluate_test=variant == "pipeline")
                    study_seconds.append(total_s - wall_s)
                times[variant].append(wall_s)
                cpu[variant].append(cpu_s)
    raw = times["raw"]
    per_repeat = {
        "overhead_ratio": [p / r for p, r in zip(times["pipeline_no_test"], raw)],
        "pipeline_with_test_ratio": [p / r for p, r in zip(times["pipeline"], raw)],
        "trainer_ratio": [t / r for t, r in zip(times["trainer_no_test"], raw)],
        "test_eval_extra": [(p - q) / r for p, q, r in zip(times["pipeline"], times["pipeline_no_test"], raw)],
        "logging_extra": [(q - t) / r for q, t, r in zip(times["pipeline_no_test"], times["trainer_no_test"], raw)],
    }
    # Process CPU time: robust to other users of the machine; pipeline CPU includes study set-up.
    per_repeat["overhead_ratio_cpu"] = [p / r for p, r in zip(cpu["pipeline_no_test"], cpu["raw"])]
    per_repeat["trainer_ratio_cpu"] = [t / r for t, r in zip(cpu["trainer_no_test"], cpu["raw"])]
    ratios = {key: stats(values) for key, values in per_repeat.items()}
    # Fastest repeat of each variant: other users' load only ever adds time.
    ratios["overhead_ratio_fastest"] = stats([min(times["pipeline_no_test"]) / min(raw)])
    payload = {
        "name": NAME, "mode": "quick" if quick else "full", "repeats": repeats, "epochs": epochs,
        "data": {**splits.sizes(), "source": splits.source}, "design": "baseline (cnn.yaml `baseline:`)",
        "seconds": {k: stats(v) for k, v in times.items()},
        "cpu_seconds": {k: stats(v) for k, v in cpu.items()},
        "study_setup_seconds": stats(study_seconds),
        "ratios": ratios,
        "overhead_ratio": ratios["overhead_ratio"]["median"],
        "test_eval_extra": ratios["test_eval_extra"]["median"],
        "logging_extra": ratios["logging_extra"]["median"],
        "goal": GOAL, "meets_goal": (ratios["overhead_ratio"]["median"] or math.inf) <= GOAL,
        "environment": environment(),
    }
    rows = [[key, r["median"], f'{r["min"]:.3f}-{r["max"]:.3f}', r["n"]] for key, r in ratios.items()]
    table = markdown_table(["ratio (÷ raw model.fit)", "median", "spread (min-max)", "repeats"], rows)
    table += "\n" + markdown_table(["variant", "median s", "min s", "max s"],
                                   [[k, v["median"], v["min"], v["max"]] for k, v in payload["seconds"].items()])
    table += (f"\n`overhead_ratio` (pipeline without test eval ÷ raw) = {payload['overhead_ratio']:.3f}, goal <= {GOAL}; "
              f"{epochs} epochs on {len(splits.y_train)} train / {len(splits.y_val)} val / {len(splits.y_test)} test images.\n")
    return write_results(NAME, payload, table, results_dir)


def main(quick: bool = True) -> dict[str, Any]:
    return run(quick=quick)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--train-size", type=int)
    args = parser.parse_args()
    result = run(quick=args.quick, repeats=args.repeats, epochs=args.epochs, train_size=args.train_size)
    print({k: result[k] for k in ("overhead_ratio", "test_eval_extra", "logging_extra")}, result["seconds"])
