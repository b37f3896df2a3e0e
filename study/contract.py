"""The names that join `study/` (which writes them) to `analysis/` (which reads them).

Tags, per-epoch metrics and artifact file names are one constant each, here, and both
sides and the tests import them, as MLflow keeps its reserved tags in `mlflow_tags.py`.
A name changed here changes what new stores hold; older stores keep the old name, so a
rename needs a reader for both.
"""

from __future__ import annotations

from mlflow.utils import mlflow_tags

# --- Tags on MLflow runs -------------------------------------------------------------
# MLflow's own, reused so the UI nests trial runs under their study run.
PARENT_RUN_ID = mlflow_tags.MLFLOW_PARENT_RUN_ID
# The UI opens on GenAI unless an experiment says it holds model development.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_VALUE = "custom_model_development"

RUN_ROLE = "run_role"                 # which of the two run kinds this is
ROLE_STUDY = "study"                  # one per Optuna study: config, space, result
ROLE_TRIAL = "trial"                  # one per Optuna trial: params, per-epoch metrics
STUDY_NAME = "optuna.study_name"      # matched exactly on the client, never in a filter
TRIAL_NUMBER = "optuna.trial_number"
TRIAL_STATE = "optuna.trial_state"    # Optuna's state name, mirrored (Optuna is the truth)
FAILURE_REASON = "failure_reason"     # a word from study.objective's fixed vocabulary
FAILURE_MESSAGE = "failure_message"
BEST_MODEL_LOGGED = "best_model_logged"

# --- Per-epoch metrics (step = epoch, 0-based) -----------------------------------------
# Keras's own training metrics, then ours, computed once per epoch on the validation and
# test sets in one pass (study/training.py, definitions in study/metrics.py).
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_crossentropy", "val_ece",
                 "val_confidence", "test_loss", "test_accuracy", "test_crossentropy", "lr")
# metric -> the direction in which it is better; the metrics a selection rule may monitor.
SELECTION_METRICS = {"val_loss": "min", "val_crossentropy": "min", "val_accuracy": "max"}

# --- Artifacts of a trial run ----------------------------------------------------------
HISTORY_CSV = "history.csv"                    # the per-epoch table, one row per epoch
TEST_PREDICTIONS = "test_predictions.npz"      # predicted test labels per epoch (McNemar)
LEARNING_CURVES_PNG = "learning_curves.png"
# Per-image outcomes of every epoch, for what resamples images (validation noise):
# val_labels / test_labels (n,) int16; val_predicted / test_predicted (epochs, n) uint8;
# val_true_logprob / test_true_logprob (epochs, n) float16, ln p(true class) clipped like
# Keras at 1e-7; penalty (epochs,) float32 = val_loss - val_crossentropy (Keras's L2 term).
OUTCOMES_NPZ = "outcomes.npz"

# --- Artifacts of an analysis report ---------------------------------------------------
SUMMARY_JSON = "summary.json"
