"""TEST AND BENCHMARK FIXTURE: write synthetic searches into an MLflow store per the contract.

Not used by the report, so not in the `analysis` package. Tests and `benchmarks/analysis_speed.py` use it to build stores
with exactly the run roles, tags, params, metrics and artifacts the search pipeline
writes, without training networks. Curves are made up; the layout is what matters.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from study.contract import (CLASS_IMBALANCE, EFFECTIVE_SPACE_JSON, EPOCH_BUDGET, FAILURE_REASON, HISTORY_CSV,
                            PARENT_RUN_ID, ROLE_STUDY, ROLE_TRIAL, RUN_ROLE, STUDY_NAME, TEST_PREDICTIONS, TRIAL_NUMBER,
                            TRIAL_STATE)

# The searched space `_write_trial` samples from, in the layout of the study run's
# `space/effective_space.json` artifact (the search space's pydantic dump).
_KNOB = {"low": None, "high": None, "log": False, "step": None, "choices": None, "value": None,
         "default": None, "condition": None}
SEARCHED_PARAMS = {
    "l2": {**_KNOB, "type": "float", "role": "scientific", "low": 1e-6, "high": 1e-2, "log": True},
    "dropout": {**_KNOB, "type": "float", "role": "scientific", "low": 0.0, "high": 0.5},
    "learning_rate": {**_KNOB, "type": "float", "role": "nuisance", "low": 1e-4, "high": 1e-2,
                      "log": True},
    "n_conv_blocks": {**_KNOB, "type": "int", "role": "scientific", "low": 1, "high": 3},
    "batch_norm": {**_KNOB, "type": "bool", "role": "scientific"},
    "optimizer": {**_KNOB, "type": "categorical", "role": "nuisance", "choices": ["adam", "sgd"]},
}


def _curves(rng: np.random.Generator, hp: dict, epochs: int, n_val: int, n_test: int) -> pd.DataFrame:
    """Shapes that make the rules disagree now and then: val_loss turns up when overfitting
    starts, while val_accuracy keeps creeping up; stronger L2 adds a penalty to val_loss."""
    t = np.arange(epochs)
    ceiling = 0.75 + 0.15 * rng.random() - 0.05 * hp["dropout"]
    speed = 0.3 + 2.5 * hp["learning_rate"] / 1e-2
    overfit = (0.02 + 0.03 * rng.random()) * (1 - hp["dropout"]) / (1 + 1e3 * hp["l2"])
    acc_clean = ceiling * (1 - np.exp(-speed * (t + 1))) + 0.004 * t * rng.random()
    val_acc = np.clip(acc_clean + rng.normal(0, 0.01, epochs), 0.05, 0.99)
    val_acc = np.round(val_acc * n_val) / n_val  # accuracies are counts: ties are real
    xent = 0.35 + 1.6 * np.exp(-speed * (t + 1)) + overfit * t + rng.normal(0, 0.01, epochs)
    penalty = hp["l2"] * 40 * (1 + 0.1 * t)
    test_acc = np.clip(val_acc + rng.normal(0, 0.01, epochs), 0.05, 0.99)
    test_acc = np.round(test_acc * n_test) / n_test
    return pd.DataFrame({
        "epoch": t, "loss": xent - 0.4 * overfit * t + penalty,
        "accuracy": np.clip(val_acc + overfit * t * 2, 0, 1), "val_loss": xent + penalty,
        "val_accuracy": val_acc, "val_crossentropy": xent,
        "val_ece": np.abs(0.03 + overfit * t + rng.normal(0, 0.005, epochs)),
        "val_confidence": np.clip(val_acc + overfit * t, 0, 1),
        "test_loss": xent + penalty + rng.normal(0, 0.01, epochs), "test_accuracy": test_acc,
        "test_crossentropy": xent + rng.normal(0, 0.01, epochs),
        "lr": np.full(epochs, hp["learning_rate"])})


def _predictions(rng: np.random.Generator, hist: pd.DataFrame, y_true: np.ndarray) -> dict:
    # One uniform draw per test image keeps a trial's predictions nested across epochs.
    u = rng.random(len(y_true))
    wrong = (y_true + 1 + rng.integers(0, 9, len(y_true))) % 10
    per_epoch = np.stack([np.where(u < a, y_true, wrong) for a in hist["test_accuracy"]])
    out = {"y_true": y_true, "per_epoch": per_epoch}
    for m, fn in (("val_loss", "idxmin"), ("val_crossentropy", "idxmin"), ("val_accuracy", "idxmax")):
        out[f"best_{m}"] = per_epoch[int(getattr(hist[m], fn)())]
    return out


def write_synthetic_store(tracking_uri: str, experiment: str, *, studies: int = 3, trials: int = 8,
                          epochs: int = 10, seed: int = 0, n_val: int = 500, n_test: int = 200,
                          sampler: str = "random", pruner: str = "none",
                          objective: str = "val_accuracy", prune_fraction: float = 0.0,
                          fail_fraction: float = 0.0, class_imbalance: float = 1.0,
                          searched_space: bool = True) -> str:
    """Write `studies` study runs with `trials` trial runs each; returns the experiment id.

    With `searched_space`, each study run also gets `space/effective_space.json`."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from study.tracking import Tracker

    client = MlflowClient(tracking_uri)
    # The search's own experiment set-up: same tags, artifacts beside the store.
    exp_id = Tracker(tracking_uri).ensure_experiment(experiment)
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 10, n_test)
    with tempfile.TemporaryDirectory() as tmp:
        for s in range(studies):
            name = f"{experiment}-seed{seed + s}"
            study = client.create_run(exp_id, run_name=name, tags={
                RUN_ROLE: ROLE_STUDY, STUDY_NAME: name, "sampler": sampler,
                "pruner": pruner, "objective": objective, "seed": str(seed + s),
                "dataset": "synthetic", "space_sha": "0" * 12})
            if searched_space:
                client.log_dict(study.info.run_id, {"name": experiment, "params": SEARCHED_PARAMS},
                                EFFECTIVE_SPACE_JSON)
            for number in range(trials):
                _write_trial(client, exp_id, study.info.run_id, name, number, rng, Path(tmp),
                             epochs=epochs, n_val=n_val, y_true=y_true, prune_fraction=prune_fraction,
                             fail_fraction=fail_fraction, class_imbalance=class_imbalance,
                             Metric=Metric, Param=Param, RunTag=RunTag)
            client.set_terminated(study.info.run_id)
    return exp_id


def _write_trial(client, exp_id, parent, study_name, number, rng, tmp: Path, *, epochs, n_val,
                 y_true, prune_fraction, fail_fraction, class_imbalance, Metric, Param, RunTag):
    hp = {"l2": float(10 ** rng.uniform(-6, -2)), "dropout": float(rng.uniform(0, 0.5)),
          "learning_rate": float(10 ** rng.uniform(-4, -2)),
          "n_conv_blocks": int(rng.integers(1, 4)), "batch_norm": bool(rng.random() < 0.5),
          "optimizer": str(rng.choice(["adam", "sgd"]))}
    state = "COMPLETE"
    if rng.random() < fail_fraction:
        state = "FAIL"
    elif rng.random() < prune_fraction:
        state = "PRUNED"
    run = client.create_run(exp_id, run_name=f"trial-{number:04d}", tags={
        PARENT_RUN_ID: parent, RUN_ROLE: ROLE_TRIAL, STUDY_NAME: study_name,
        TRIAL_NUMBER: str(number), TRIAL_STATE: state})
    rid = run.info.run_id
    params = {**{k: str(v) for k, v in hp.items()}, EPOCH_BUDGET: str(epochs),
              "data.name": "synthetic", CLASS_IMBALANCE: str(class_imbalance),
              "data.label_noise": "0.0", "data.train_size": "1000", "data.val_size": str(n_val),
              "data.test_size": str(len(y_true))}
    if state == "FAIL":
        client.log_batch(rid, params=[Param(k, v) for k, v in params.items()],
                         tags=[RunTag(FAILURE_REASON, "nan_loss")])
        client.set_terminated(rid, status="FAILED")
        return
    hist = _curves(rng, hp, epochs, n_val, len(y_true))
    if state == "PRUNED":
        hist = hist.iloc[: max(1, epochs // 3)]
    ts = 1_700_000_000_000
    metrics = [Metric(m, float(v), ts, int(e)) for m in hist.columns if m != "epoch"
               for e, v in zip(hist["epoch"], hist[m])]
    summary = {"epochs_trained": len(hist), "train_seconds": 1.0}
    for m in ("val_loss", "val_crossentropy", "val_accuracy"):
        i = int(hist[m].idxmax() if m == "val_accuracy" else hist[m].idxmin())
        summary.update({f"best_{m}": hist[m].iloc[i], f"best_{m}_epoch": i,
                        f"test_accuracy_at_best_{m}": hist["test_accuracy"].iloc[i]})
    metrics += [Metric(k, float(v), ts, 0) for k, v in summary.items()]
    for start in range(0, len(metrics), 1000):
        client.log_batch(rid, metrics=metrics[start:start + 1000],
                         params=[Param(k, v) for k, v in params.items()] if start == 0 else [])
    hist.to_csv(tmp / HISTORY_CSV, index=False)
    client.log_artifact(rid, str(tmp / HISTORY_CSV))
    buf = io.BytesIO()
    np.savez_compressed(buf, **_predictions(rng, hist, y_true))
    (tmp / TEST_PREDICTIONS).write_bytes(buf.getvalue())
    client.log_artifact(rid, str(tmp / TEST_PREDICTIONS))
    client.set_terminated(rid)

