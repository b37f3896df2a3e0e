"""Reading `outcomes.npz` from a real MLflow SQLite store, through the path the report
takes (`load_mlflow` then `read_outcomes`), and the checks on a malformed artifact."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from analysis import validation_noise as vn
from analysis.outcomes import OutcomesProblem, missing_table, parse_outcomes, read_outcomes
from analysis.sources import load_mlflow
from analysis.store import open_store
from study import contract
from tests.analysis.test_validation_noise import ACCURACY, LOSS, RULES, right_on


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def contract_arrays(right: list[int], n_val: int = 60, n_test: int = 40,
                    logprob: float = -0.2) -> dict[str, np.ndarray]:
    """The arrays of one trial in exactly the contract's names and dtypes: epoch e gets the
    first `right[e]` validation images right; a wrong image is predicted as the next class."""
    val_labels, test_labels = np.arange(n_val) % 4, np.arange(n_test) % 4
    val_predicted = np.stack([np.where(right_on(n_val, 0, r), val_labels, (val_labels + 1) % 4)
                              for r in right])
    test_predicted = np.tile(test_labels, (len(right), 1))
    return {"val_labels": val_labels.astype(np.int16), "test_labels": test_labels.astype(np.int16),
            "val_predicted": val_predicted.astype(np.uint8),
            "test_predicted": test_predicted.astype(np.uint8),
            "val_true_logprob": np.full((len(right), n_val), logprob, np.float16),
            "test_true_logprob": np.full((len(right), n_test), -0.1, np.float16),
            "penalty": np.linspace(0.01, 0.02, len(right)).astype(np.float32)}


GOOD = {"0": contract_arrays([30, 40], logprob=-0.1), "1": contract_arrays([35, 50], logprob=-0.3)}
BAD_SHAPE = {**GOOD["0"], "val_true_logprob": np.zeros((2, 59), np.float16)}
FLOAT_LABELS = {**GOOD["0"], "val_labels": GOOD["0"]["val_labels"].astype(np.float32)}
# study "clean": two good trials; study "broken": one good trial and every kind of bad one
ARTIFACTS = {("clean", "0"): npz_bytes(**GOOD["0"]), ("clean", "1"): npz_bytes(**GOOD["1"]),
             ("broken", "0"): npz_bytes(**GOOD["0"]), ("broken", "1"): None,
             ("broken", "2"): npz_bytes(**BAD_SHAPE), ("broken", "3"): b"not a zip file",
             ("broken", "4"): npz_bytes(**FLOAT_LABELS)}


def _log_trial(client, experiment_id: str, parent: str, study: str, number: str,
               blob: bytes | None, folder) -> None:
    run = client.create_run(experiment_id, run_name=f"trial-{number}", tags={
        contract.PARENT_RUN_ID: parent, contract.RUN_ROLE: contract.ROLE_TRIAL,
        contract.STUDY_NAME: study, contract.TRIAL_NUMBER: number,
        contract.TRIAL_STATE: "COMPLETE"})
    client.log_param(run.info.run_id, "train.epochs", "2")
    history = folder / contract.HISTORY_CSV
    pd.DataFrame({"epoch": [0, 1], "val_loss": [0.5, 0.4],
                  "val_accuracy": [0.5, 0.6]}).to_csv(history, index=False)
    client.log_artifact(run.info.run_id, str(history))
    if blob is not None:
        (folder / contract.OUTCOMES_NPZ).write_bytes(blob)
        client.log_artifact(run.info.run_id, str(folder / contract.OUTCOMES_NPZ))
    client.set_terminated(run.info.run_id)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    from mlflow import MlflowClient

    from study.tracking import Tracker

    root = tmp_path_factory.mktemp("outcomes_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    experiment_id = Tracker(uri).ensure_experiment("noise")  # artifacts beside the store
    client = MlflowClient(uri)
    for study in ("clean", "broken"):
        parent = client.create_run(experiment_id, run_name=study, tags={
            contract.RUN_ROLE: contract.ROLE_STUDY, contract.STUDY_NAME: study}).info.run_id
        for (owner, number), blob in ARTIFACTS.items():
            if owner == study:
                folder = root / study / number
                folder.mkdir(parents=True)
                _log_trial(client, experiment_id, parent, study, number, blob, folder)
    return uri


def test_outcomes_are_read_back_as_logged_and_a_bad_artifact_is_a_reason(store):
    ds = load_mlflow(["noise"], store)
    studies = {s.study: s for s in read_outcomes(open_store(store), ds.trials)}
    assert set(studies["clean"].trials) == {"0", "1"} and not studies["clean"].missing
    read = studies["clean"].trials["1"]
    for name, logged in GOOD["1"].items():
        np.testing.assert_array_equal(getattr(read, name), logged)
        assert getattr(read, name).dtype == logged.dtype  # compact dtypes kept
    assert set(studies["broken"].trials) == {"0"}
    assert studies["broken"].missing == {
        "1": "no outcomes.npz artifact",
        "2": "outcomes.npz: val_true_logprob has shape (2, 59); expected (2, 60) (epochs from "
             "penalty, images from val_labels)",
        "3": "outcomes.npz: not an .npz archive (no zip structure)",
        "4": "outcomes.npz: val_labels is float32 with shape (60,); expected integer of rank 1"}
    assert sorted(missing_table(list(studies.values()))["trial"]) == ["1", "2", "3", "4"]


def test_the_store_feeds_the_bootstrap(store):
    ds = load_mlflow(["noise"], store)
    result = vn.validation_noise(read_outcomes(open_store(store), ds.trials), RULES,
                                 loss_rule=LOSS.name, accuracy_rule=ACCURACY.name, replicates=50)
    assert set(result.stability["study"]) == {"clean"}
    assert result.excluded.set_index("name").loc["broken", "reason"].startswith(
        "4 of 5 trials without usable outcomes")
    # loss: trial 0 (ln p -0.1 < 0.3 everywhere) at epoch 0 (smaller penalty); accuracy:
    # trial 1 epoch 1 (50 of 60 right) -> the accuracy pick is 50 - 30 = 20 images ahead.
    margin = result.margins.iloc[0]
    assert (margin["loss_trial"], margin["loss_epoch"], margin["accuracy_trial"],
            margin["accuracy_epoch"], margin["margin"]) == ("0", 0, "1", 1, 20)


@pytest.mark.parametrize(("arrays", "reason"), [
    ({k: v for k, v in GOOD["0"].items() if k != "penalty"}, "missing array(s) penalty"),
    ({**GOOD["0"], "val_predicted": GOOD["0"]["val_predicted"][0]},
     "val_predicted is uint8 with shape (60,); expected integer of rank 2"),
    ({**GOOD["0"], "test_predicted": GOOD["0"]["test_predicted"][:1]},
     "test_predicted has shape (1, 40); expected (2, 40)"),
    ({**GOOD["0"], "val_true_logprob": np.full((2, 60), 0.5, np.float16)},
     "val_true_logprob is not a finite log-probability"),
    ({**GOOD["0"], "test_true_logprob": np.full((2, 40), np.nan, np.float16)},
     "test_true_logprob is not a finite log-probability"),
    ({**GOOD["0"], "val_labels": GOOD["0"]["val_labels"] - 1}, "val has a negative class index"),
    ({**GOOD["0"], "penalty": np.array([0.1, np.inf], np.float32)}, "penalty has a non-finite"),
    ({**GOOD["0"], "penalty": np.zeros(0, np.float32)}, "no epochs"),
])
def test_a_malformed_artifact_names_what_is_wrong(arrays, reason):
    with pytest.raises(OutcomesProblem, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_outcomes(npz_bytes(**arrays))


def test_a_pickled_array_is_refused_not_unpickled():
    with pytest.raises(OutcomesProblem, match="not a readable .npz .ValueError: Object arrays"):
        parse_outcomes(npz_bytes(**{**GOOD["0"], "penalty": np.array([{"x": 1}, 2], object)}))
