"""The published campaign data is what the code produces: two committed trials, retrained
from their logged parameters and seed on real Fashion-MNIST, match their logged
validation-accuracy curves within 0.5 pp at every epoch (issue 10), on the CPU model that
trained them; on another, see CROSS_CPU_TOLERANCE.

They retrain in a process of their own with the TensorFlow threads the trial logged, or
one, as a campaign's workers trained before trials logged it (`WORKERS=2` on 2 cores). With that, the two cheapest trials of the
balanced pool retrained bit for bit (2026-11-27); with TensorFlow's default two threads,
one of them drifted to 0.5 pp by its last epoch (float sums in another order)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from study.contract import CPU_ISA, CPU_MODEL, EPOCH_METRICS, TF_INTER_OP_THREADS, TF_INTRA_OP_THREADS
from study.cost import relative_cost
from study.machine import cpu_isa, cpu_model
from study.space import DataConfig, TrainConfig, load_space
from study.workers import THREAD_VARS
from tests.conftest import PROJECT_ROOT, require

RESULTS = PROJECT_ROOT / "results"
TOLERANCE = 0.005  # 0.5 pp: a pool may hold trials trained with other thread counts
# How a campaign worker trains when two share 2 cores (study/workers.py worker_env): the
# threads of a trial exported before trials logged theirs.
CAMPAIGN_THREADS = (1, 1)
SPACE_FILE = PROJECT_ROOT / "search_spaces" / "cnn.yaml"


def thread_env(rows: pd.DataFrame) -> dict[str, str]:
    """The TensorFlow thread variables a trial trained with, from its logged params."""
    logged = [rows[name].iloc[0] if name in rows else None for name in (TF_INTRA_OP_THREADS, TF_INTER_OP_THREADS)]
    intra, inter = CAMPAIGN_THREADS if any(pd.isna(count) for count in logged) else map(int, logged)
    return {THREAD_VARS[0]: str(intra), THREAD_VARS[1]: str(inter), "OMP_NUM_THREADS": str(intra)}


def published_exports() -> list[Path]:
    return sorted(RESULTS.glob("campaign-*/epochs.csv.gz"))


def _value(hp, raw):
    """A CSV cell back to the type the space gives the knob."""
    if hp.type == "bool":
        return raw if isinstance(raw, bool) else str(raw) == "True"
    if hp.type == "int":
        return int(float(raw))
    if hp.type == "float":
        return float(raw)
    return next(choice for choice in hp.choices if str(choice) == str(raw) or
                (not isinstance(choice, str) and float(choice) == float(raw)))


def trial_inputs(rows: pd.DataFrame) -> tuple[list[str], dict, int]:
    """The --set overrides, the hyperparameters and the training seed a trial ran with."""
    first = rows.iloc[0]
    overrides = [f"{section}.{key}={first[f'{section}.{key}']}"
                 for section, fields in (("data", DataConfig.model_fields), ("train", TrainConfig.model_fields))
                 for key in fields if f"{section}.{key}" in rows and pd.notna(first[f"{section}.{key}"])
                 and key != "data_dir"]
    space = load_space(SPACE_FILE, overrides)
    # The export prefixes a knob named like a metric (`loss`) with `param.`; a knob it lacks
    # (added to the space after the trial ran) is at its pinned value.
    columns = {name: f"param.{name}" if name in EPOCH_METRICS else name for name in space.params}
    hp = {name: spec.value if spec.role == "fixed" else  # a fixed knob is pinned, whatever was logged
          _value(spec, first[columns[name]]) if columns[name] in first and pd.notna(first[columns[name]])
          else spec.default
          for name, spec in space.params.items()}
    return overrides, hp, int(first["seed"]) * 10007 + int(first["trial"])


LEARNED = 0.5  # last val_accuracy: chance is 0.1


def cheapest_trials(table: pd.DataFrame, count: int) -> list[pd.DataFrame]:
    """The `count` cheapest COMPLETE trials that learned and did not augment (the test
    retrains them on 2 cores). Not every trial retrains to its curve (docs/campaign.md,
    "Reproducibility"): a trial stuck near chance matched to 0.1 pp for 2 epochs, then drifted
    by 13 pp; an augmented one was 13 pp off after its first epoch (random ops in tf.data)."""
    complete = table[(table["state"] == "COMPLETE") & (table["augment"].astype(str) == "False")]
    trials = [rows for _, rows in complete.groupby(["study", "trial"])  # a pool may span studies
              if rows.sort_values("epoch")["val_accuracy"].iloc[-1] >= LEARNED]
    space = load_space(SPACE_FILE)

    def cost(rows: pd.DataFrame) -> float:
        return relative_cost(trial_inputs(rows)[1], space.baseline_values(), (28, 28, 1), 10)

    return sorted(trials, key=cost)[:count]


def retrained_curve(export: Path, study: str, trial: int) -> list[float]:
    """One published trial trained again from its logged inputs: its val_accuracy per epoch."""
    from study.data import load_dataset
    from study.training import EpochEvaluator, train_trial

    table = pd.read_csv(export)
    rows = table[(table["study"].astype(str) == study) & (table["trial"] == trial)]
    overrides, hp, seed = trial_inputs(rows)
    space = load_space(SPACE_FILE, overrides)
    splits = load_dataset(space.data)
    assert len(splits.y_val) == int(rows["data.n_val"].iloc[0])
    evaluator = EpochEvaluator(splits, space.train)
    train_trial(hp, splits, space.train, seed, evaluator)
    return evaluator.history["val_accuracy"].tolist()


# On another CPU model, oneDNN picks other kernels and sums floats in another order: on an
# Intel Xeon (2026-11-27) the first of the two balanced trials drifted by up to 2.6 pp from the
# curve the AMD EPYC logged. There the test asks for what still holds: two retrains agree bit
# for bit, and stay within CROSS_CPU_TOLERANCE of the logged curve.
CROSS_CPU_TOLERANCE = 0.05


def trained_on(export: Path, rows: pd.DataFrame) -> tuple[str, str | None]:
    """The CPU a trial trained on, (model, ISA flags or None): its own `cpu_model` and
    `cpu_isa` params, which trials log since 2026-11-28, else the model of the machine that
    published its pool (the README's Machine line, from `cpu_model` there). Every trial of the
    balanced pool was trained on the machine that published it (sessions 9-13, one AMD EPYC)."""
    def logged(name: str) -> str | None:
        return str(rows[name].dropna().iloc[0]) if name in rows and rows[name].notna().any() else None

    if logged(CPU_MODEL) is not None:
        return logged(CPU_MODEL), logged(CPU_ISA)
    line = next(line for line in (export.parent / "README.md").read_text().splitlines() if line.startswith("- Machine:"))
    return line.split("(", 1)[1].split(")", 1)[0], None


def on_this_cpu(trained: tuple[str, str | None]) -> bool:
    model, isa = trained
    return model == cpu_model() and isa in (None, cpu_isa())


def retrain(export: Path, rows: pd.DataFrame) -> np.ndarray:
    study, trial = str(rows["study"].iloc[0]), int(rows["trial"].iloc[0])
    # A fresh process: TensorFlow takes its thread count when it starts.
    done = subprocess.run([sys.executable, "-m", "tests.study.test_published_retrain", str(export), study,
                           str(trial)], cwd=PROJECT_ROOT, env={**os.environ, **thread_env(rows)},
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.array(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_two_published_trials_retrain_to_their_logged_curves() -> None:
    exports = [path for path in published_exports() if path.parent.name == "campaign-balanced"]
    require(bool(exports), "no results/campaign-balanced/epochs.csv.gz committed")
    require(Path("/usr/share/datasets/fashion-mnist").exists(), "Debian dataset-fashion-mnist not installed")
    table = pd.read_csv(exports[0])
    for rows in cheapest_trials(table, 2):
        same_cpu = on_this_cpu(trained_on(exports[0], rows))
        retrained = retrain(exports[0], rows)
        logged = rows.sort_values("epoch")["val_accuracy"].to_numpy()
        assert len(retrained) == len(logged)
        where = (rows["study"].iloc[0], int(rows["trial"].iloc[0]), retrained, logged)
        if same_cpu:
            assert abs(retrained - logged).max() <= TOLERANCE, where
        else:
            assert retrain(exports[0], rows).tolist() == retrained.tolist(), where  # deterministic here
            assert abs(retrained - logged).max() <= CROSS_CPU_TOLERANCE, where


if __name__ == "__main__":
    print(json.dumps(retrained_curve(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]))))
