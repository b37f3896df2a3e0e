"""`python -m study sweep`: factor checks, the arms and their resumable queue, the pairing
(seeded kernels, init and batch hashes), and one real digits sweep into real stores."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from study.cli import main
from study.contract import (ARM_REFERENCE, ARM_REPLICATE, ARM_TREATMENT, FAILURE_REASON, SWEEP_ARM,
                            SWEEP_BATCH_HASH, SWEEP_FACTOR, SWEEP_INIT_HASH, SWEEP_LEVEL, SWEEP_PAIR,
                            TRIAL_STATE)
from study.space import load_space
from study.sweep import (Factor, SweepError, arms_of_pair, check_knob_factor, level_params, pair_seed,
                         published_pairs, study_name)
from tests.conftest import PROJECT_ROOT, run_cli

CNN = PROJECT_ROOT / "search_spaces" / "cnn.yaml"
DIGITS = PROJECT_ROOT / "search_spaces" / "digits.yaml"


# --- bad input: exit 2, one line, nothing created ------------------------------------------


@pytest.mark.parametrize(("argv", "expected"), [
    (["--factor", "nope=1,2"], "--factor nope=1,2: unknown factor"),
    (["--factor", "dropout=0"], "needs at least 2 levels"),
    (["--factor", "dropout=0,0.7"], "level 0.7: 0.7 is outside [0, 0.5]"),
    (["--factor", "l2=0,0.5"], "level 0.5: 0.5 is outside [1e-06, 0.01], or 0.0 (use_l2 off)"),
    (["--factor", "batch_norm=false,maybe"], "level maybe: 'maybe' is not true or false"),
    (["--factor", "data.label_noise=0,1.5"], "level 1.5"),
    (["--factor", "dropout=0,0.0"], "the levels must differ"),
    (["--factor", "label_smoothing=0,1.5"], "--factor label_smoothing: level 1.5: "),
    (["--factor", "weight_decay=0,0.01"], "acts only under optimizer: adamw"),
    (["--factor", "dropout=0,0.3", "--set", "params.dropout=0.1"], "--set params.dropout=0.1: the sweep of dropout"),
    (["--factor", "l2=0,1e-3", "--set", "params.use_l2=true"], "use_l2 is fixed, and the sweep must set it"),
    (["--factor", "dropout=0,0.3", "--factor", "dropout=0,0.2"], "--factor dropout: given twice"),
    (["--factor", "dropout=0,0.3", "--pairs", "0"], "--pairs: 0 must be >= 1"),
    (["--factor", "dropout=0,0.3", "--set", "train.epochs=4"], "below the campaign floor of 5"),
    (["--data", "digits", "--factor", "augment=false,true"], "fixes augment=False; a sweep varies a knob the space samples"),
    (["--factor", "dropout=0,0.3", "--workers", "0"], "--workers: 0 must be >= 1"),
    (["--factor", "decay=l2,sgd"], "--factor decay=l2,sgd: level sgd: one of l2, adamw, none"),
    (["--factor", "decay=l2,l2"], "--factor decay=l2,l2: the levels must differ"),
    (["--factor", "decay=l2,adamw", "--set", "params.optimizer=sgd"],
     "--set params.optimizer=sgd: the sweep of decay sets params.optimizer in each arm"),
    (["--factor", "decay=l2,adamw", "--set", "params.l2=1e-4"], "the sweep of decay sets params.l2 in each arm"),
    (["--factor", "decay=l2,adamw", "--set", "params.l1=1e-4"], "--set params.l1=1e-4: the decay control compares"),
    (["--factor", "decay=l2,adamw", "--set", "params.clipnorm=1"], "an L1 penalty or gradient clipping"),
    (["--factor", "decay=l2,adamw,adamw"], "the levels must differ"),
])
def test_bad_input_is_exit_2_and_one_line(argv: list[str], expected: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    stores = ["--storage", str(tmp_path / "optuna.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    assert exit_code(["sweep", *argv, *stores]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert list(tmp_path.iterdir()) == []


def exit_code(argv: list[str]) -> int:
    """What `python -m study` exits with: main's return, or argparse's exit on a bad flag."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def test_a_bad_factor_among_good_ones_creates_nothing(tmp_path: Path) -> None:
    """As a user runs it, in its own process: the one line, exit 2, and no store."""
    proc = run_cli("study", "sweep", "--data", "digits", "--factor", "dropout=0,0.3", "--factor", "l2=0,1",
                   "--storage", str(tmp_path / "o.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}",
                   timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "study: error: --factor l2=0,1: level 1: 1.0 is outside [1e-06, 0.01], or 0.0 (use_l2 off)"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("argv", "expected"), [
    (["--factor", "dropout=0,0.3", "--worker-index", "0"],
     "study: error: --seed: a sweep worker needs the seed of the study it joins"),
    (["--factor", "dropout=0,0.3", "--factor", "l2=0,1e-3", "--seed", "0", "--worker-index", "0"],
     "study: error: --factor: a sweep worker trains one factor's study, not 2"),
    (["--factor", "dropout=0,0.3", "--seed", "0"], "the following arguments are required: --worker-index"),
])
def test_a_sweep_worker_without_its_study_is_exit_2_and_one_line(argv: list[str], expected: str, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    stores = ["--storage", str(tmp_path / "optuna.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    assert exit_code(["sweep-worker", "--data", "digits", *argv, *stores]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert list(tmp_path.iterdir()) == []


def test_an_ask_that_finds_no_arm_waiting_ends_untrained_and_stops_the_process() -> None:
    """Two workers: the other took the last arm between this one's check and its ask, so Optuna
    made a fresh trial. It must not train, count as finished, or let the process ask again."""
    from study.cost import NO_ARM_WAITING
    from study.driver import finished_count
    from study.sweep_runner import ArmObjective, stop_when_no_arm_waits

    def never(trial: optuna.Trial) -> float:
        raise AssertionError("an arm's objective ran")

    study = optuna.create_study()
    study.optimize(ArmObjective({"0": never}), n_trials=3, callbacks=[stop_when_no_arm_waits])
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.user_attrs[FAILURE_REASON] == NO_ARM_WAITING
    assert finished_count(study) == 0


def test_a_published_count_leaves_an_empty_ask_out_and_keeps_a_skipped_draw(tmp_path: Path) -> None:
    from analysis.publish import study_times
    from study.cost import NO_ARM_WAITING, OVER_COST_CAP

    journal = str(tmp_path / "optuna.journal")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    study = optuna.create_study(study_name="s", storage=storage)
    for reason in (None, OVER_COST_CAP, None, NO_ARM_WAITING):
        trial = study.ask()
        if reason is None:
            study.tell(trial, 0.5)
        else:
            trial.set_user_attr(FAILURE_REASON, reason)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    times = study_times(journal, "s")
    assert (times["states"], times["skipped_over_cap"], times["draws"]) == ({"COMPLETE": 2}, 1, 3)


def test_the_queue_callback_stops_only_when_no_arm_waits() -> None:
    from study.sweep_runner import stop_when_no_arm_waits

    study = optuna.create_study()
    study.enqueue_trial({"x": 1.0})
    study.enqueue_trial({"x": 2.0})
    study.optimize(lambda trial: trial.suggest_float("x", 0, 3), n_trials=5, callbacks=[stop_when_no_arm_waits])
    assert [t.params["x"] for t in study.trials] == [1.0, 2.0]  # both arms, and no fresh trial after them


def sweep_plans_of(argv: list[str], folder: Path) -> list:
    from study.cli import build_parser, sweep_plans

    stores = ["--storage", str(folder / "optuna.journal"), "--tracking-uri", f"sqlite:///{folder / 'm.db'}"]
    return sweep_plans(build_parser().parse_args(["sweep", "--data", "digits", *argv, *stores]))


def test_a_data_level_the_data_cannot_give_is_refused_before_any_store(tmp_path: Path) -> None:
    from study.cli import build_parser
    from study.inputs import BadInput
    from study.sweep import SweepPlan
    from study.sweep_runner import run_sweep

    factors = ["--factor", "dropout=0,0.3", "--factor", "data.class_imbalance=1,100"]
    plans = sweep_plans_of(factors, tmp_path)
    args = build_parser().parse_args(["sweep", "--data", "digits", *factors])
    with pytest.raises(BadInput, match=r"^--factor data.class_imbalance=1,100: level 100: data.val_size"):
        run_sweep([SweepPlan(config, factor, 1) for config, factor in plans], args)
    assert list(tmp_path.iterdir()) == []


def test_each_label_noise_level_trains_on_its_own_labels_and_logs_its_setting(tmp_path: Path) -> None:
    from study.sweep_runner import data_levels

    ((config, factor),) = sweep_plans_of(["--factor", "data.label_noise=0,0.2"], tmp_path)
    assert config.space.data.label_noise == 0.0  # the study records the reference level
    levels = data_levels(config, factor)
    (clean_config, clean), (noisy_config, noisy) = levels["0"], levels["0.2"]
    assert (clean_config.flat()["data.label_noise"], noisy_config.flat()["data.label_noise"]) == (0.0, 0.2)
    assert np.array_equal(clean.x_train, noisy.x_train) and np.array_equal(clean.y_val, noisy.y_val)
    assert (clean.y_train != noisy.y_train).sum() == round(0.2 * len(clean.y_train))  # 1137 images: 227


# --- levels and arms ---------------------------------------------------------------------------


def test_l2_zero_turns_its_switch_off_and_other_levels_on() -> None:
    space = load_space(CNN)
    factor = check_knob_factor("l2", ("0", "1e-5", "1e-2"), space, str(CNN))
    assert factor.values == (0.0, 1e-5, 1e-2)
    assert [level_params(space, factor, value) for value in factor.values] == [
        {"use_l2": False}, {"use_l2": True, "l2": 1e-5}, {"use_l2": True, "l2": 1e-2}]


def test_a_pair_is_reference_treatments_then_the_replicate_of_the_reference() -> None:
    factor = Factor("l2", ("0", "1e-4", "1e-3"), (0.0, 1e-4, 1e-3))
    assert [(arm.level, arm.arm, arm.pair) for arm in arms_of_pair(factor, 7)] == [
        ("0", ARM_REFERENCE, 7), ("1e-4", ARM_TREATMENT, 7), ("1e-3", ARM_TREATMENT, 7), ("0", ARM_REPLICATE, 7)]
    assert arms_of_pair(factor, 7)[0].user_attrs() == {SWEEP_FACTOR: "l2", SWEEP_LEVEL: "0", SWEEP_PAIR: 7,
                                                      SWEEP_ARM: ARM_REFERENCE}
    assert study_name(factor, 0) == "sweep-l2=0,1e-4,1e-3-seed0"
    assert pair_seed("sweep-l2=0,1e-4,1e-3-seed0", 7) == pair_seed("sweep-l2=0,1e-4,1e-3-seed0", 7)
    seeds = {pair_seed(name, pair) for name in ("sweep-l2=0,1e-4,1e-3-seed0", "sweep-l2=0,1e-3-seed0",
                                                 "sweep-l2=0,1e-3-seed1") for pair in (7, 8)}
    assert len(seeds) == 6


@pytest.fixture(scope="module")
def digits_splits():  # noqa: ANN201 - study.data loads scikit-learn
    from study.data import load_dataset

    return load_dataset(load_space(DIGITS).data)


def test_bases_are_seeded_draws_inside_the_cap_with_the_factors_children_drawn(digits_splits) -> None:  # noqa: ANN001
    from study.cost import relative_cost
    from study.sweep_runner import draw_bases

    space = load_space(CNN, ["train.max_cost=6"])
    factor = check_knob_factor("augment", ("false", "true"), space, str(CNN))
    bases = draw_bases(space, factor, "sweep-a", 20, digits_splits)
    assert bases == draw_bases(space, factor, "sweep-a", 20, digits_splits)  # a re-run draws the same bases
    assert bases != draw_bases(space, factor, "sweep-b", 20, digits_splits)
    assert len({repr(sorted(base.items())) for base in bases}) == 20
    for base in bases:
        assert "augment" not in base and {"rotation", "shift", "zoom", "flip", "contrast"} <= set(base)
        hp = {**space.baseline_values(), **base}
        assert relative_cost(hp, space.baseline_values(), digits_splits.input_shape, 10) <= 6


def test_a_rerun_enqueues_only_missing_arms_and_a_cut_arm_again(digits_splits) -> None:  # noqa: ANN001
    from study.sweep_runner import draw_bases, enqueue_missing

    space = load_space(DIGITS)
    factor = check_knob_factor("dropout", ("0", "0.3"), space, str(DIGITS))
    study = optuna.create_study()  # Optuna's in-memory storage: the same enqueue and state logic
    bases = draw_bases(space, factor, "sweep-a", 3, digits_splits)
    assert enqueue_missing(study, space, factor, bases[:2]) == 6
    assert enqueue_missing(study, space, factor, bases[:2]) == 0  # waiting arms are not queued twice
    waiting = study.get_trials(deepcopy=False)
    assert [t.user_attrs[SWEEP_ARM] for t in waiting] == [ARM_REFERENCE, ARM_TREATMENT, ARM_REPLICATE] * 2
    assert waiting[1].system_attrs["fixed_params"] == {**bases[0], "dropout": 0.3}
    for reason in ("interrupted", "nan_loss"):  # pops pair 0's reference, then its treatment
        trial = study.ask()
        trial.set_user_attr(FAILURE_REASON, reason)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    # The cut reference is trained again, the treatment failed on its own (done), pair 2 is new.
    assert enqueue_missing(study, space, factor, bases) == 4
    added = [(t.user_attrs[SWEEP_PAIR], t.user_attrs[SWEEP_ARM]) for t in study.get_trials(deepcopy=False)[6:]]
    assert added == [(0, ARM_REFERENCE), (2, ARM_REFERENCE), (2, ARM_TREATMENT), (2, ARM_REPLICATE)]
    assert enqueue_missing(study, space, factor, bases) == 0


# --- the pairing: seeded kernels and the hashes that prove it ----------------------------------


BASE = {"n_conv_blocks": 2, "filters": 8, "filter_growth": 2.0, "kernel_size": 3, "dense_units": 32,
        "dropout": 0.0, "batch_norm": False, "l2": 0.0, "batch_size": 32}


def arm_hashes(hp: dict, splits, seed: int) -> tuple[str, str]:  # noqa: ANN001
    """Build the arm as train_trial does (global seed, then seeded kernels) and hash it."""
    import keras

    from study.model import build_model
    from study.pairing import first_batch_hash, kernel_hash, seed_kernels
    from study.training import train_dataset

    keras.utils.set_random_seed(seed)
    model = build_model(hp, splits.input_shape, splits.num_classes)
    seed_kernels(model, seed)
    batches = first_batch_hash(train_dataset(splits.x_train, splits.y_train, hp["batch_size"], seed))
    return kernel_hash(model), batches


@pytest.mark.parametrize(("knob", "treatment"), [("l2", 1e-3), ("dropout", 0.3), ("batch_norm", True)])
def test_arms_of_a_pair_share_init_and_first_batch_and_pairs_differ(knob: str, treatment: object,
                                                                    digits_splits) -> None:  # noqa: ANN001
    pair_0, pair_1 = pair_seed(f"sweep-{knob}", 0), pair_seed(f"sweep-{knob}", 1)
    reference = arm_hashes(BASE, digits_splits, pair_0)
    assert arm_hashes({**BASE, knob: treatment}, digits_splits, pair_0) == reference
    assert arm_hashes(BASE, digits_splits, pair_0) == reference  # the replicate
    other = arm_hashes(BASE, digits_splits, pair_1)
    assert other[0] != reference[0] and other[1] != reference[1]


def test_seeded_kernels_are_glorot_uniform_with_zero_biases(digits_splits) -> None:  # noqa: ANN001
    """Keras's default distribution, worked out by hand: U(-limit, limit), limit = sqrt(6 / (fan_in +
    fan_out)), fans of a k x k conv = k*k*channels; the variance of U(-a, a) is a^2 / 3."""
    import keras

    from study.model import build_model
    from study.pairing import seed_kernels, weighted_layers

    model = build_model({**BASE, "dense_units": 256}, digits_splits.input_shape, 10)
    seed_kernels(model, 3)
    conv, dense = weighted_layers(model)[1], weighted_layers(model)[2]
    # 8x8 pooled twice is 2x2, so the dense layer sees 2 * 2 * 16 = 64 inputs
    assert tuple(conv.kernel.shape) == (3, 3, 8, 16) and tuple(dense.kernel.shape) == (64, 256)
    for layer, fan_in, fan_out in ((conv, 9 * 8, 9 * 16), (dense, 64, 256)):
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        limit = math.sqrt(6 / (fan_in + fan_out))
        assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
        assert kernel.var() == pytest.approx(limit ** 2 / 3, rel=0.1)
        assert not keras.ops.convert_to_numpy(layer.bias).any()


def test_without_seeded_kernels_a_dropout_layer_changes_the_other_layers_weights(digits_splits) -> None:  # noqa: ANN001
    """Why sweeps seed each kernel: Keras's own initialisation is not paired across arms."""
    import keras

    from study.model import build_model
    from study.pairing import kernel_hash

    hashes = []
    for dropout in (0.0, 0.3):
        keras.utils.set_random_seed(5)
        hashes.append(kernel_hash(build_model({**BASE, "dropout": dropout}, digits_splits.input_shape, 10)))
    assert hashes[0] != hashes[1]


# --- one real sweep: digits, real Optuna journal, real MLflow SQLite store ------------------------

SMOKE = ["--data", "digits", "--factor", "dropout=0,0.3", "--pairs", "2",
         "--set", "train.epochs=1", "--set", "data.train_size=400"]
STUDY = "sweep-dropout=0,0.3-seed0"


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("sweep")
    stores = ["--storage", str(folder / "optuna.journal"), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]
    first = run_cli("study", "sweep", *SMOKE, *stores, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "optuna.journal")))
    trials = optuna.load_study(study_name=STUDY, storage=storage).get_trials()
    again = run_cli("study", "sweep", *SMOKE, *stores, timeout=600)
    return {"folder": folder, "first": first, "again": again, "trials": trials, "storage": storage}


def trial_runs(folder: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sweep-digits-smoke")
    return client.search_runs([experiment.experiment_id], "tags.run_role = 'trial'")


@pytest.mark.slow
def test_a_sweep_trains_every_arm_paired_and_logs_it(swept: dict) -> None:
    trials = swept["trials"]
    assert "SMOKE RUN on digits" in swept["first"].stdout
    assert [t.state.name for t in trials] == ["COMPLETE"] * 6
    arms = [(t.user_attrs[SWEEP_PAIR], t.user_attrs[SWEEP_ARM], t.user_attrs[SWEEP_LEVEL]) for t in trials]
    assert arms == [(0, ARM_REFERENCE, "0"), (0, ARM_TREATMENT, "0.3"), (0, ARM_REPLICATE, "0"),
                    (1, ARM_REFERENCE, "0"), (1, ARM_TREATMENT, "0.3"), (1, ARM_REPLICATE, "0")]
    for pair in (trials[:3], trials[3:]):
        assert [t.params["dropout"] for t in pair] == [0.0, 0.3, 0.0]
        rest = [{k: v for k, v in t.params.items() if k != "dropout"} for t in pair]
        assert rest[0] == rest[1] == rest[2]  # one base configuration per pair
        for key in (SWEEP_INIT_HASH, SWEEP_BATCH_HASH):
            assert len({t.user_attrs[key] for t in pair}) == 1
    for key in (SWEEP_INIT_HASH, SWEEP_BATCH_HASH):
        assert trials[0].user_attrs[key] != trials[3].user_attrs[key]
    runs = {int(r.data.tags["optuna.trial_number"]): r.data.params for r in trial_runs(swept["folder"])}
    assert sorted(runs) == list(range(6))
    for trial in trials:
        params = runs[trial.number]
        for key in (SWEEP_FACTOR, SWEEP_LEVEL, SWEEP_PAIR, SWEEP_ARM, SWEEP_INIT_HASH, SWEEP_BATCH_HASH):
            assert params[key] == str(trial.user_attrs[key])
        assert params[SWEEP_FACTOR] == "dropout" and float(params["dropout"]) == trial.params["dropout"]


@pytest.mark.slow
def test_publish_writes_a_sweeps_export_paired_report_and_readme(swept: dict, tmp_path: Path) -> None:
    folder, out = swept["folder"], tmp_path / "published"
    proc = run_cli("analysis", "publish", "--experiment", "sweep-digits-smoke", "--tracking-uri",
                   f"sqlite:///{folder / 'mlflow.db'}", "--storage", str(folder / "optuna.journal"),
                   "--out", str(out), "--bootstrap", "50", timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # one line naming the published folder: the report's own line named the staging folder
    assert proc.stdout.splitlines() == [f"published sweep-digits-smoke to {out}"]
    assert (out / "epochs.csv.gz").is_file()
    sweep = json.loads((out / "summary.json").read_text())["sweep"]
    assert [(f["factor"], f["pairs"], f["replicate"]) for f in sweep["factors"]] == [("dropout", 2, True)]
    assert "## The sweep: what each factor changes" in (out / "report.md").read_text()
    readme = (out / "README.md").read_text()
    assert readme.startswith("# Sweep `sweep-digits-smoke`")
    assert "- `dropout`: reference 0, treatment(s) 0.3; 2 complete pairs with an A/A replicate" in readme
    assert "- Trials: 6 (6 COMPLETE)." in readme and "trial-hours)." in readme
    # 2 pairs, fewer than k = 10: no P(disagree | k) difference, shown as a dash
    assert "| dropout: 0.3 vs 0 | disagree_at_k | 2 | – | – | no |" in readme


@pytest.mark.slow
def test_a_publish_whose_report_fails_leaves_the_published_folder_as_it_was(swept: dict, tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """2026-11-28: a sweep report refused the export (an arm trained twice) after the export
    and studies.json had replaced the published ones and the figures were deleted. Now the
    report fails in a staging folder, and the published folder keeps every byte."""
    from analysis import publish as publishing
    from analysis.errors import AnalysisInputError

    folder, out = swept["folder"], tmp_path / "published"
    stores = (f"sqlite:///{folder / 'mlflow.db'}", str(folder / "optuna.journal"))
    publishing.publish("sweep-digits-smoke", *stores, out, 0)
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    assert {"epochs.csv.gz", "studies.json", "summary.json", "README.md"} <= set(before)

    def failing_report(*args, **kwargs):
        raise AnalysisInputError("--experiment sweep-digits-smoke: the report failed (exit 2)")

    monkeypatch.setattr(publishing, "csv_report", failing_report)
    with pytest.raises(AnalysisInputError, match="the report failed"):
        publishing.publish("sweep-digits-smoke", *stores, out, 0)
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published"]  # no staging folder left


@pytest.mark.slow
def test_a_fresh_store_continues_the_published_pairs_with_the_next_seed(swept: dict, tmp_path: Path) -> None:
    """Published from the first store (2 pairs of seed0), the sweep continued to 3 pairs on an
    empty store (a new machine) and published into the same folder: one pair of seed1 joins."""
    folder, out, fresh = swept["folder"], tmp_path / "published", tmp_path / "fresh"
    publish = ["analysis", "publish", "--experiment", "sweep-digits-smoke", "--out", str(out), "--bootstrap", "50"]
    first = run_cli(*publish, "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--storage",
                    str(folder / "optuna.journal"), timeout=300)
    assert first.returncode == 0, first.stderr
    stores = ["--storage", str(fresh / "optuna.journal"), "--tracking-uri", f"sqlite:///{fresh / 'mlflow.db'}"]
    flags = [*SMOKE[:4], "--pairs", "3", *SMOKE[-4:], "--published", str(out), *stores]
    refused = run_cli("study", "sweep", *flags, "--seed", "0", timeout=300)
    assert refused.returncode == 2 and "--seed 0: sweep-dropout=0,0.3-seed0 is published" in refused.stderr
    assert not fresh.exists()
    run = run_cli("study", "sweep", *flags, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert ("sweep dropout=0,0.3: continues the published pool: 2 complete pairs of sweep-dropout=0,0.3-seed0 (2) "
            "are from another store; this store's study sweep-dropout=0,0.3-seed1 runs to 1 complete pairs") in run.stdout
    second = run_cli(*publish, *stores, timeout=300)
    assert second.returncode == 0, second.stderr
    table = pd.read_csv(out / "epochs.csv.gz").drop_duplicates(["study", "trial"])
    assert table["study"].value_counts().to_dict() == {STUDY: 6, "sweep-dropout=0,0.3-seed1": 3}
    sweep = json.loads((out / "summary.json").read_text())["sweep"]
    assert [(f["factor"], f["pairs"]) for f in sweep["factors"]] == [("dropout", 3)]


def export_of_arms(rows: list[tuple[str, int, str, str, str]], folder: Path) -> Path:
    """A sweep export's identifying columns, two epochs a trial, from (study, pair, arm, level, state)."""
    trials = [{"study": study, "trial": number, "epoch": epoch, "pair": pair, "arm": arm, "level": level,
               "state": state, "val_loss": 1.0}
              for number, (study, pair, arm, level, state) in enumerate(rows) for epoch in (1, 2)]
    folder.mkdir()
    pd.DataFrame(trials).to_csv(folder / "epochs.csv.gz", index=False)
    return folder


def test_a_published_pair_counts_only_when_every_arm_and_level_completed(tmp_path: Path) -> None:
    """Two studies, counted by hand. l2 (two levels, 3 arms a pair): pair 0 whole; pair 1 has a
    FAILED replicate; pair 2 lacks its treatment. A dose sweep (three levels, 4 arms a pair):
    pair 0 whole; pair 1 has all three arm names but lacks level 1e-3: 1 and 1 complete pairs."""
    two, dose = "sweep-l2=0,1e-3-seed0", "sweep-l2=0,1e-4,1e-3-seed0"
    ok, failed = "COMPLETE", "FAIL"
    rows = [(two, 0, ARM_REFERENCE, "0", ok), (two, 0, ARM_TREATMENT, "1e-3", ok), (two, 0, ARM_REPLICATE, "0", ok),
            (two, 1, ARM_REFERENCE, "0", ok), (two, 1, ARM_TREATMENT, "1e-3", ok), (two, 1, ARM_REPLICATE, "0", failed),
            (two, 2, ARM_REFERENCE, "0", ok), (two, 2, ARM_REPLICATE, "0", ok),
            (dose, 0, ARM_REFERENCE, "0", ok), (dose, 0, ARM_TREATMENT, "1e-4", ok),
            (dose, 0, ARM_TREATMENT, "1e-3", ok), (dose, 0, ARM_REPLICATE, "0", ok),
            (dose, 1, ARM_REFERENCE, "0", ok), (dose, 1, ARM_TREATMENT, "1e-4", ok), (dose, 1, ARM_REPLICATE, "0", ok)]
    assert published_pairs(export_of_arms(rows, tmp_path / "sweeps")) == {two: 1, dose: 1}
    assert published_pairs(tmp_path / "nothing") == {}


def test_a_published_folder_that_is_not_a_sweep_export_is_a_sweep_error(tmp_path: Path) -> None:
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    pd.DataFrame({"study": ["a"], "trial": [0], "epoch": [1]}).to_csv(campaign / "epochs.csv.gz", index=False)
    with pytest.raises(SweepError, match="is not a sweep export"):
        published_pairs(campaign)
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "epochs.csv.gz").write_bytes((campaign / "epochs.csv.gz").read_bytes()[:30])
    with pytest.raises(SweepError, match="is not a sweep export"):
        published_pairs(truncated)


@pytest.mark.slow
def test_a_rerun_trains_nothing_that_is_done(swept: dict) -> None:
    again = swept["again"]
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"[{STUDY}] all 6 arms of 2 pairs are done" in again.stdout and "started" not in again.stdout
    trials = optuna.load_study(study_name=STUDY, storage=swept["storage"]).get_trials()
    assert [(t.number, t.state.name, t.datetime_complete) for t in trials] == [
        (t.number, t.state.name, t.datetime_complete) for t in swept["trials"]]
    assert len(trial_runs(swept["folder"])) == 6


def test_a_knob_the_space_pins_off_is_swept_arm_by_arm() -> None:
    from study.sweep import SweepArm, pinned_level

    space = load_space(CNN)
    factor = check_knob_factor("label_smoothing", ("0", "0.1"), space, str(CNN))
    assert factor.values == (0.0, 0.1)
    assert level_params(space, factor, 0.1) == {}  # Optuna samples only what the space searches
    assert pinned_level(space, SweepArm("label_smoothing", "0.1", 0, ARM_TREATMENT)) == {"label_smoothing": 0.1}
    assert pinned_level(space, SweepArm("dropout", "0.3", 0, ARM_TREATMENT)) == {}  # a sampled knob
    assert pinned_level(space, None) == {}


def test_the_decay_control_sets_l2_or_adamw_at_twice_l2_on_adam_bases(digits_splits) -> None:  # noqa: ANN001
    from optuna.trial import FixedTrial

    from study.sampling import suggest_params
    from study.sweep import SweepArm, check_decay_factor, pinned_level
    from study.sweep_runner import arm_params, draw_bases

    space = load_space(CNN, ["train.max_cost=6"])
    factor = check_decay_factor(("none", "l2", "adamw"), space, str(CNN))
    bases = draw_bases(space, factor, "sweep-decay", 10, digits_splits)
    knobs = ("optimizer", "use_l2", "l2", "weight_decay")
    for base in bases:
        assert not {"optimizer", "momentum", "use_l2", "l2"} & set(base)  # pinned while drawing
        assert 1e-4 <= base["learning_rate"] <= 1e-2  # Adam's range of cnn.yaml
        arms = {level: {**suggest_params(FixedTrial(arm_params(space, factor, base, level)), space),
                        **pinned_level(space, SweepArm("decay", level, 0, ARM_TREATMENT))} for level in factor.levels}
        assert {level: tuple(hp[k] for k in knobs) for level, hp in arms.items()} == {
            "none": ("adam", False, 0.0, 0.0), "l2": ("adam", True, 1e-3, 0.0), "adamw": ("adamw", False, 0.0, 2e-3)}
        shared = [{k: v for k, v in hp.items() if k not in knobs} for hp in arms.values()]
        assert shared[0] == shared[1] == shared[2]  # the base, unchanged by the level


def test_the_decay_control_needs_adam_and_an_l2_range_holding_its_level() -> None:
    from study.sweep import check_decay_factor

    space = load_space(CNN)
    params = dict(space.params)
    no_adam = space.model_copy(update={"params": {**params, "optimizer": params["optimizer"].model_copy(
        update={"choices": ["sgd", "rmsprop"]})}})
    with pytest.raises(SweepError, match=r"^--factor decay=l2,adamw: cnn.yaml offers no adam optimizer"):
        check_decay_factor(("l2", "adamw"), no_adam, "cnn.yaml")
    low_l2 = space.model_copy(update={"params": {**params, "l2": params["l2"].model_copy(update={"high": 1e-4})}})
    with pytest.raises(SweepError, match=r"its l2 arm sets l2=0.001, and l2: 0.001 is outside \[1e-06, 0.0001\]"):
        check_decay_factor(("l2", "adamw"), low_l2, "cnn.yaml")


@pytest.mark.slow
def test_a_decay_control_trains_l2_in_the_loss_and_adamw_outside_it(tmp_path: Path) -> None:
    """The levels reach the net, paired: the l2 arms' val_loss holds the penalty above their
    val_crossentropy, the adamw arm's val_loss is its cross-entropy (the decay is no loss term),
    and all three arms start from the same kernels and batch."""
    from mlflow.tracking import MlflowClient

    stores = ["--storage", str(tmp_path / "optuna.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    done = run_cli("study", "sweep", "--data", "digits", "--factor", "decay=l2,adamw", "--pairs", "1",
                   "--set", "train.epochs=1", "--set", "data.train_size=400", *stores, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Adam bases only: l2 is Adam with an L2 penalty of 0.001" in done.stdout
    assert "optimizer=adamw" in done.stdout and "weight_decay=0.002" in done.stdout  # the arm's start line
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("sweep-digits-smoke")
    runs = {r.data.params[SWEEP_ARM]: r for r in client.search_runs([experiment.experiment_id],
                                                                    "tags.run_role = 'trial'")}
    assert sorted(runs) == sorted([ARM_REFERENCE, ARM_TREATMENT, ARM_REPLICATE])
    params = {arm: runs[arm].data.params for arm in runs}
    assert [(params[arm]["optimizer"], float(params[arm]["l2"]), float(params[arm]["weight_decay"]))
            for arm in (ARM_REFERENCE, ARM_TREATMENT, ARM_REPLICATE)] == [
        ("adam", 1e-3, 0.0), ("adamw", 0.0, 2e-3), ("adam", 1e-3, 0.0)]
    for key in (SWEEP_INIT_HASH, SWEEP_BATCH_HASH):
        assert len({params[arm][key] for arm in params}) == 1
    gap = {arm: runs[arm].data.metrics["val_loss"] - runs[arm].data.metrics["val_crossentropy"] for arm in runs}
    assert gap[ARM_TREATMENT] == pytest.approx(0.0, abs=1e-6)
    # 1e-3 x the squared kernels of a fresh Glorot net is well above 1e-3 (digits' nets: 0.01-0.1)
    assert gap[ARM_REFERENCE] > 1e-3 and gap[ARM_REFERENCE] == pytest.approx(gap[ARM_REPLICATE], abs=1e-6)
    # The published README says what each level trained, from the arms' logged params.
    published = run_cli("analysis", "publish", "--experiment", "sweep-digits-smoke", "--tracking-uri",
                        f"sqlite:///{tmp_path / 'm.db'}", "--storage", str(tmp_path / "optuna.journal"),
                        "--out", str(tmp_path / "published"), "--bootstrap", "20", timeout=300)
    assert published.returncode == 0, published.stdout + published.stderr
    assert ("- `decay` levels as trained (Adam bases; the arms' logged params): "
            "l2 = optimizer adam, use_l2 True, l2 0.001, weight_decay 0.0 | "
            "adamw = optimizer adamw, use_l2 False, l2 0.0, weight_decay 0.002\n") in (
        tmp_path / "published" / "README.md").read_text()


@pytest.mark.slow
def test_a_label_smoothing_sweep_trains_the_treatment_smoothed(tmp_path: Path) -> None:
    """The level reaches the net: the treatment's val_loss is the smoothed objective, above the
    plain cross-entropy; the reference's val_loss is the cross-entropy (no L2 is drawn off here,
    so the test reads the penalty from the difference of the reference and allows it)."""
    from mlflow.tracking import MlflowClient

    stores = ["--storage", str(tmp_path / "optuna.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    done = run_cli("study", "sweep", "--data", "digits", "--factor", "label_smoothing=0,0.1", "--pairs", "1",
                   "--set", "train.epochs=1", "--set", "data.train_size=400", *stores, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("sweep-digits-smoke")
    runs = {r.data.params[SWEEP_ARM]: r for r in client.search_runs([experiment.experiment_id],
                                                                    "tags.run_role = 'trial'")}
    assert sorted(runs) == sorted([ARM_REFERENCE, ARM_TREATMENT, ARM_REPLICATE])
    assert [float(runs[arm].data.params["label_smoothing"]) for arm in (ARM_REFERENCE, ARM_TREATMENT)] == [0.0, 0.1]
    gap = {arm: runs[arm].data.metrics["val_loss"] - runs[arm].data.metrics["val_crossentropy"] for arm in runs}
    # Smoothing adds s * (mean over classes of -log p - (-log p_true)) > 0 to the loss of a net
    # that is at all confident; the reference's gap is its L2 penalty only, equal in its replicate.
    assert gap[ARM_TREATMENT] > gap[ARM_REFERENCE] + 1e-3
    assert gap[ARM_REFERENCE] == pytest.approx(gap[ARM_REPLICATE], abs=1e-6)


@pytest.mark.slow
def test_an_arm_failing_before_its_run_exists_still_logs_the_level_it_was_to_train(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow refuses the adamw arm's run once: the trial fails before its run exists, and the
    FAIL run made for it names what that arm was to train (adamw, weight_decay 2e-3), not the
    Adam base the sweep enqueued, so the arm's params never say the wrong optimizer."""
    from mlflow.tracking import MlflowClient

    from study.tracking import Tracker

    real_start, refused = Tracker.start_trial_run, []

    def refuse_the_first_adamw_run(self: Tracker, *args: object, **kwargs: object) -> str:
        params = kwargs.get("params", args[4] if len(args) > 4 else {})
        if params.get("optimizer") == "adamw" and not refused:
            refused.append(True)
            raise RuntimeError("tracking server refused the run")
        return real_start(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "start_trial_run", refuse_the_first_adamw_run)
    stores = ["--storage", str(tmp_path / "optuna.journal"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    exit_code(["sweep", "--data", "digits", "--factor", "decay=l2,adamw", "--pairs", "1",
               "--set", "train.epochs=1", "--set", "data.train_size=400", *stores])
    assert refused == [True]
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.get_experiment_by_name("sweep-digits-smoke")
    failed = [run for run in client.search_runs([experiment.experiment_id], "tags.run_role = 'trial'")
              if run.data.tags.get(TRIAL_STATE) == "FAIL"]
    assert [(run.data.params[SWEEP_ARM], run.data.params["optimizer"], float(run.data.params["weight_decay"]))
            for run in failed] == [(ARM_TREATMENT, "adamw", 2e-3)]
