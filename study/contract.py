"""The names that join `study/` (which writes them) to `analysis/` (which reads them).

Tags, per-epoch metrics and artifact file names are one constant each, here, and both
sides and the tests import them, as MLflow keeps its reserved tags in `mlflow_tags.py`.
A name changed here changes what new stores hold; older stores keep the old name, so a
rename needs a reader for both.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """MLflow's own tag names, looked up when first used: importing `mlflow` takes ~3 s, and
    the CSV analysis and the bad-input checks import this module without needing MLflow."""
    if name == "PARENT_RUN_ID":  # reused so the UI nests trial runs under their study run
        from mlflow.utils import mlflow_tags

        return mlflow_tags.MLFLOW_PARENT_RUN_ID
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- Params of every trial run besides its knobs and the search config ----------------
# TensorFlow's thread counts change a trial's numbers in the last bits, which a few epochs
# can grow: a trial trained with 1 thread, retrained with 2, drifted 0.5 pp. So a trial says
# what it trained with, and a retrain can use the same.
TF_INTRA_OP_THREADS = "tf_intra_op_threads"
TF_INTER_OP_THREADS = "tf_inter_op_threads"
# And oneDNN picks its kernels per CPU: a trial retrained on another CPU model drifted 2.6 pp
# after one epoch (study/machine.py). Trials logged before 2026-11-28 lack it.
CPU_MODEL = "cpu_model"
CPU_ISA = "cpu_isa"  # its vector ISA flags: a VM's model name can be vague, oneDNN dispatches on these
# What a trial trained on: a sweep's pair whose arms differ in one of them carries that
# difference on top of the factor's (analysis.sweeps.mixed_pairs names such pairs).
MACHINE_PARAMS = (TF_INTRA_OP_THREADS, TF_INTER_OP_THREADS, CPU_MODEL, CPU_ISA)


# --- Tags on MLflow runs -------------------------------------------------------------
# PARENT_RUN_ID: MLflow's `mlflow.parentRunId`, see `__getattr__` above.
# The UI opens on GenAI unless an experiment says it holds model development.
EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_VALUE = "custom_model_development"

RUN_ROLE = "run_role"                 # which of the two run kinds this is
ROLE_STUDY = "study"                  # one per Optuna study: config, space, result
ROLE_TRIAL = "trial"                  # one per Optuna trial: params, per-epoch metrics
STUDY_NAME = "optuna.study_name"      # matched exactly on the client, never in a filter
TRIAL_NUMBER = "optuna.trial_number"
TRIAL_STATE = "optuna.trial_state"    # Optuna's state name, mirrored (Optuna is the truth)
FAILURE_REASON = "failure_reason"     # a word from study.objective's fixed vocabulary; the
                                      # Optuna trial's user attr of the same name holds it first
FAILURE_MESSAGE = "failure_message"
BEST_MODEL_LOGGED = "best_model_logged"
# Tags of a study run the analysis reads to describe a study (how it searched, on what).
STUDY_RUN_TAGS = ("sampler", "pruner", "objective", "seed", "dataset", "space_sha")
# The role of the run `python -m analysis report` logs its report to (unless --no-log): a
# role of its own keeps it out of both searches by role.
ROLE_REPORT = "report"

# --- Params of a trial run that the analysis reads -------------------------------------
# `SearchConfig.flat()` keys (study/config.py builds them from its nested fields).
EPOCH_BUDGET = "train.epochs"             # the configured budget, not the epochs trained
CLASS_IMBALANCE = "data.class_imbalance"
VAL_IMAGES = "data.n_val"                 # validation images the split gave (rules need n_val)
VAL_SIZE = "data.val_size"                # the configured size: older stores lack data.n_val

# --- Summary metrics of a trial run ---------------------------------------------------
# Training FLOPs per image in units of the baseline net's (study/cost.py); logged when the
# space has a cost cap (train.max_cost), and an Optuna user attr of the same name.
RELATIVE_COST = "relative_cost"

# --- Per-epoch metrics (step = epoch, 0-based) -----------------------------------------
# Keras's own training metrics, then ours, computed once per epoch on the validation and
# test sets in one pass (study/training.py, definitions in study/metrics.py).
# Appended after Keras's and the first ours (existing columns keep their positions): the
# temperature-scaled NLL and its temperature (Guo et al. 2017), class-balanced scores, the
# multi-class Brier score and the test ECE (definitions in study/metrics.py).
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_crossentropy", "val_ece",
                 "val_confidence", "test_loss", "test_accuracy", "test_crossentropy", "lr",
                 "val_calibrated_nll", "val_temperature", "val_balanced_accuracy", "val_macro_f1",
                 "val_brier", "test_balanced_accuracy", "test_macro_f1", "test_ece", "test_brier")
# metric -> the direction in which it is better; the metrics a selection rule may monitor.
SELECTION_METRICS = {"val_loss": "min", "val_crossentropy": "min", "val_accuracy": "max"}

# --- Artifacts of a trial run ----------------------------------------------------------
HISTORY_CSV = "history.csv"                    # the per-epoch table, one row per epoch
TEST_PREDICTIONS = "test_predictions.npz"      # predicted test labels per epoch (McNemar)
LEARNING_CURVES_PNG = "learning_curves.png"
# Per-image outcomes of every epoch, for what resamples images (validation noise):
# val_labels / test_labels (n,) int16; val_predicted / test_predicted (epochs, n) uint8;
# val_true_logprob / test_true_logprob (epochs, n) float16, ln p(true class) clipped like
# Keras at 1e-7; penalty (epochs,) float32: the L1/L2 weight penalty, which is val_loss -
# val_crossentropy while the objective is plain cross-entropy. With label smoothing or focal
# loss it is not, and analysis/validation_noise.py's rebuilt val_loss (cross-entropy +
# penalty) is then the cross-entropy rule plus the penalty, not the smoothed/focal objective.
OUTCOMES_NPZ = "outcomes.npz"

# --- Artifacts of a study run ----------------------------------------------------------
SPACE_FOLDER = "space"                                 # the search space file as given
EFFECTIVE_SPACE_JSON = f"{SPACE_FOLDER}/effective_space.json"  # its parsed `params` (ranges, roles)

# --- Artifacts of an analysis report ---------------------------------------------------
SUMMARY_JSON = "summary.json"

# --- Paired sweeps (issue 11): study/sweep.py writes, analysis/sweeps.py reads ---------------
# Params of every trial run of a sweep (and Optuna user attrs of the same names). A pair is
# one base configuration drawn from the space; every arm of a pair shares its seed, data
# order and the initial weights of the layers the arms share.
SWEEP_FACTOR = "sweep.factor"        # the knob turned, e.g. "l2" or "data.label_noise"
SWEEP_LEVEL = "sweep.level"          # this arm's value of it, as given on the command line
SWEEP_PAIR = "sweep.pair"            # the base configuration's index (0, 1, ...) within the factor
SWEEP_ARM = "sweep.arm"              # one of SWEEP_ARMS
ARM_REFERENCE = "reference"          # the first level given
ARM_TREATMENT = "treatment"          # any other level
ARM_REPLICATE = "replicate"          # the reference again, same seed: the A/A control
SWEEP_ARMS = (ARM_REFERENCE, ARM_TREATMENT, ARM_REPLICATE)
# The decay control's factor (L2 in the loss against AdamW's decay; study/sweep.py) and the
# params its levels set, which the published README shows per level as trained.
DECAY_FACTOR = "decay"
DECAY_KNOBS = ("optimizer", "use_l2", "l2", "weight_decay")
# Proof of pairing: hashes of the initial weights of the layers every arm shares, and of the
# first training batch (images and labels). Equal within a pair, or the pair is not paired.
SWEEP_INIT_HASH = "sweep.init_hash"
SWEEP_BATCH_HASH = "sweep.batch_hash"
# The export's column for each sweep param (the campaign columns, then these).
SWEEP_COLUMNS = {SWEEP_FACTOR: "factor", SWEEP_LEVEL: "level", SWEEP_PAIR: "pair", SWEEP_ARM: "arm"}
