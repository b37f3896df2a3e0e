"""Validation noise on hand-made per-image outcomes whose answers are worked out by hand.

The rules here are stand-ins written to the `analysis.rules.Rule` interface (min
val_loss, max val_accuracy over all epochs of all trials, ties to the first trial and
epoch); the real rules plug in the same way.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, log_loss

from analysis import validation_noise as vn
from analysis.outcomes import Outcomes, StudyOutcomes


class Rule(NamedTuple):
    name: str
    description: str
    needs: tuple[str, ...]
    pick: Callable[[pd.DataFrame], pd.DataFrame]


def _best(metric: str, direction: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """Per study the first row (trial order, then epoch) at the optimum of `metric`."""
    def pick(table: pd.DataFrame) -> pd.DataFrame:
        ordered = table.sort_values(["study", "order", "epoch"], kind="stable")
        score = ordered[metric] if direction == "min" else -ordered[metric]
        first = score.groupby(ordered["study"]).idxmin().to_numpy()
        return ordered.loc[first, ["study", "trial", "epoch"]].reset_index(drop=True)
    return pick


LOSS = Rule("min_val_loss", "lowest val_loss", ("val_loss",), _best("val_loss", "min"))
ACCURACY = Rule("max_val_accuracy", "highest val_accuracy", ("val_accuracy",),
                _best("val_accuracy", "max"))
CALIBRATED = Rule("min_calibrated_nll", "lowest calibrated NLL", ("val_calibrated_nll",),
                  _best("val_loss", "min"))
RULES = (LOSS, ACCURACY)


def outcomes(labels: np.ndarray, correct: list[np.ndarray], logprob: list[float],
             classes: int = 3) -> Outcomes:
    """A trial whose epoch e gets images `correct[e]` right (a wrong image is predicted as
    the next class) with the same ln p(true) `logprob[e]` on every image; compact dtypes,
    as the search writes them."""
    predicted = np.stack([np.where(hit, labels, (labels + 1) % classes) for hit in correct])
    true_logprob = np.stack([np.full(len(labels), lp) for lp in logprob])
    return Outcomes(labels.astype(np.int16), predicted.astype(np.uint8),
                    true_logprob.astype(np.float16), labels.astype(np.int16),
                    predicted.astype(np.uint8), true_logprob.astype(np.float16),
                    np.zeros(len(correct), np.float32))


def right_on(n: int, first: int, stop: int) -> np.ndarray:
    return (np.arange(n) >= first) & (np.arange(n) < stop)


def two_trials(study: str, right_0: int, right_1: int, n: int = 100) -> StudyOutcomes:
    """Trial 0 gets images [0, right_0) right, trial 1 [0, right_1), nested; trial 0 has the
    lower loss on every draw (ln p = -0.1 vs -0.2 on every image), so the loss rule always
    picks trial 0 and the accuracy rule trial 1 on the full set."""
    labels = np.arange(n) % 3
    return StudyOutcomes(study, {"0": outcomes(labels, [right_on(n, 0, right_0)], [-0.1]),
                                 "1": outcomes(labels, [right_on(n, 0, right_1)], [-0.2])}, {})


def test_one_image_apart_the_accuracy_pick_changes_whenever_that_image_is_not_drawn():
    # Trial 1 is ahead by image 60 only. A replicate ties the trials when image 60 is not
    # drawn, probability (1 - 1/100)^100 = 0.366, and the tie goes to trial 0: a change.
    result = vn.validation_noise([two_trials("s", 60, 61)], RULES, loss_rule=LOSS.name,
                                 accuracy_rule=ACCURACY.name, replicates=2000, seed=1)
    rates = result.stability.set_index("rule")
    expected = (1 - 1 / 100) ** 100
    assert abs(rates.loc[ACCURACY.name, "rate"] - expected) < 0.045  # 4 SE of 2,000 draws
    assert rates.loc[ACCURACY.name, "trial"] == "1"
    assert rates.loc[ACCURACY.name, "rate_lo"] < expected < rates.loc[ACCURACY.name, "rate_hi"]
    assert rates.loc[LOSS.name, "changed"] == 0  # trial 0's loss is lower on every draw
    margin = result.margins.iloc[0]
    assert (margin["margin"], margin["loss_trial"], margin["accuracy_trial"]) == (1, "0", "1")
    # d = 1 on one image of 100: SE = sqrt(n var(d)) = sqrt(100 * 0.01 * 0.99)
    assert margin["se"] == pytest.approx(math.sqrt(0.99), rel=0.05)


def test_fifty_images_apart_the_pick_never_changes_and_the_se_is_multinomial():
    result = vn.validation_noise([two_trials("s", 25, 75)], RULES, loss_rule=LOSS.name,
                                 accuracy_rule=ACCURACY.name, replicates=4000, seed=2)
    # A change needs none of 50 of 100 images drawn in 100 draws: probability 2^-100.
    assert result.stability["changed"].tolist() == [0, 0]
    margin = result.margins.iloc[0]
    assert margin["margin"] == 50
    # d = 1 on 50 images, 0 on 50: var(d) = 0.25, so SE = sqrt(100 * 0.25) = 5 images.
    assert margin["se"] == pytest.approx(5.0, rel=0.05)
    assert margin["margin_over_se"] == pytest.approx(10.0, rel=0.05)
    assert result.margin_summary | {"margin_quartiles": None} == {
        "studies": 1, "picks_differ": 1, "margin_median": 50.0, "margin_quartiles": None,
        "se_median": pytest.approx(5.0, rel=0.05), "within_1se": 0, "within_2se": 0,
        "beyond_2se": 1}


def _mixed_study(rng: np.random.Generator, n: int = 40, trials: int = 3,
                 epochs: int = 2) -> StudyOutcomes:
    """Random outcomes over 5 classes, one of them (4) never a label but predicted, and
    class 3 on a single image, so replicates often leave a class undrawn."""
    labels = np.r_[rng.integers(0, 3, n - 1), 3]
    made = {}
    for trial in range(trials):
        predicted = np.where(rng.random((epochs, n)) < 0.7, labels, rng.integers(0, 5, (epochs, n)))
        logprob = np.where(predicted == labels, np.log(rng.uniform(0.4, 1.0, (epochs, n))),
                           np.log(rng.uniform(1e-7, 0.4, (epochs, n))))
        made[str(trial)] = Outcomes(labels.astype(np.int16), predicted.astype(np.uint8),
                                    logprob.astype(np.float16), labels.astype(np.int16),
                                    predicted.astype(np.uint8), logprob.astype(np.float16),
                                    rng.uniform(0, 0.1, epochs).astype(np.float32))
    return StudyOutcomes("mixed", made, {})


def test_replicate_metrics_equal_sklearn_with_the_draw_counts_as_sample_weights():
    rng = np.random.default_rng(3)
    arrays = vn.stack_study(_mixed_study(rng, trials=2))
    arrays.predicted[0][arrays.predicted[0] == 3] = 0  # row 0 never predicts class 3: its F1
    # still counts class 3 (a label), with F1 0, as sklearn does
    counts = vn.resample_counts(len(arrays.labels), 12, np.random.default_rng(4))
    assert (counts.sum(axis=1) == len(arrays.labels)).all() and (counts[0] == 1).all()
    metrics = vn.replicate_metrics(arrays, counts)
    assert (counts[1:, -1] == 0).any()  # some replicate never draws class 3: the hard case
    truth = arrays.labels
    for replicate in range(len(counts)):
        weight = counts[replicate]
        for row in range(len(arrays.penalty)):
            predicted = arrays.predicted[row]
            true_p = np.exp(arrays.true_logprob[row].astype(np.float64))
            proba = np.tile(((1 - true_p) / 4)[:, None], (1, 5))
            proba[np.arange(len(truth)), truth] = true_p
            with warnings.catch_warnings():  # sklearn warns about a class never drawn
                warnings.simplefilter("ignore")
                expected = {
                    "val_accuracy": accuracy_score(truth, predicted, sample_weight=weight),
                    "val_balanced_accuracy": balanced_accuracy_score(truth, predicted,
                                                                     sample_weight=weight),
                    "val_macro_f1": f1_score(truth, predicted, average="macro",
                                             sample_weight=weight, zero_division=0),
                    "val_crossentropy": log_loss(truth, proba, sample_weight=weight,
                                                 labels=range(5))}
            expected["val_loss"] = expected["val_crossentropy"] + arrays.penalty[row]
            for name, value in expected.items():
                assert metrics[name][replicate, row] == pytest.approx(value, rel=1e-9, abs=1e-12), \
                    (name, replicate, row)


def test_every_trial_and_epoch_of_a_study_is_scored_on_the_same_draw():
    rng = np.random.default_rng(5)
    study = _mixed_study(rng, trials=1, epochs=1)
    twin = StudyOutcomes("mixed", {"0": study.trials["0"], "1": study.trials["0"]}, {})
    arrays = vn.stack_study(twin)
    counts = vn.resample_counts(len(arrays.labels), 50, rng)
    for values in vn.replicate_metrics(arrays, counts).values():
        np.testing.assert_array_equal(values[:, 0], values[:, 1])


def test_replicates_are_seeded_per_study_whatever_studies_come_with_it():
    alone = vn.validation_noise([two_trials("a", 60, 62)], RULES, loss_rule=LOSS.name,
                                accuracy_rule=ACCURACY.name, replicates=300, seed=7)
    again = vn.validation_noise([two_trials("b", 50, 51), two_trials("a", 60, 62)], RULES,
                                loss_rule=LOSS.name, accuracy_rule=ACCURACY.name,
                                replicates=300, seed=7)
    other_seed = vn.validation_noise([two_trials("a", 60, 62)], RULES, loss_rule=LOSS.name,
                                     accuracy_rule=ACCURACY.name, replicates=300, seed=8)
    in_both = again.stability[again.stability["study"] == "a"].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone.stability, in_both)
    assert alone.margins["se"].iloc[0] == again.margins.set_index("study").loc["a", "se"]
    assert alone.margins["se"].iloc[0] != other_seed.margins["se"].iloc[0]


def test_batches_of_studies_give_what_one_batch_gives(monkeypatch):
    studies = [two_trials(f"s{i}", 50 + i, 52 + 2 * i) for i in range(5)]
    whole = vn.validation_noise(studies, RULES, loss_rule=LOSS.name,
                                accuracy_rule=ACCURACY.name, replicates=100)
    monkeypatch.setattr(vn, "BATCH_ROWS", 250)  # 101 replicates x 2 rows: a batch per 2 studies
    batched = vn.validation_noise(studies, RULES, loss_rule=LOSS.name,
                                  accuracy_rule=ACCURACY.name, replicates=100)
    pd.testing.assert_frame_equal(whole.stability, batched.stability)
    pd.testing.assert_frame_equal(whole.margins, batched.margins)
    # five studies: the mean pick-change rate has a bootstrap interval over studies
    accuracy = whole.rules.set_index("rule").loc[ACCURACY.name]
    assert accuracy["studies"] == 5 and pd.isna(accuracy["rate_ci_missing"])
    assert accuracy["rate_lo"] <= accuracy["rate"] <= accuracy["rate_hi"]
    assert accuracy["rate"] == pytest.approx(whole.stability.loc[
        whole.stability["rule"] == ACCURACY.name, "rate"].mean())


def test_epochs_of_unequal_length_are_rows_of_their_own_trial():
    labels = np.arange(30) % 3
    early = outcomes(labels, [right_on(30, 0, 10), right_on(30, 0, 20), right_on(30, 0, 28)],
                     [-0.9, -0.5, -0.7])
    short = outcomes(labels, [right_on(30, 0, 15), right_on(30, 0, 25)], [-0.6, -0.4])
    result = vn.validation_noise([StudyOutcomes("s", {"7": early, "12": short}, {})], RULES,
                                 loss_rule=LOSS.name, accuracy_rule=ACCURACY.name, replicates=50)
    picks = result.stability.set_index("rule")
    assert (picks.loc[ACCURACY.name, "trial"], picks.loc[ACCURACY.name, "epoch"]) == ("7", 2)
    assert (picks.loc[LOSS.name, "trial"], picks.loc[LOSS.name, "epoch"]) == ("12", 1)
    assert picks.loc[LOSS.name, "rows"] == 5
    assert result.margins["margin"].iloc[0] == 28 - 25


def test_what_cannot_be_resampled_is_listed_with_its_reason():
    labels = np.arange(20) % 3
    one = outcomes(labels, [right_on(20, 0, 10)], [-0.3])
    other_set = outcomes(np.arange(20) % 2, [right_on(20, 0, 10)], [-0.3], classes=2)
    studies = [StudyOutcomes("gap", {"0": one}, {"1": "no outcomes.npz artifact"}),
               StudyOutcomes("split", {"0": one, "1": other_set}, {}),
               two_trials("fine", 40, 45)]
    result = vn.validation_noise(studies, (*RULES, CALIBRATED), loss_rule=LOSS.name,
                                 accuracy_rule=ACCURACY.name, replicates=20)
    excluded = {(row.what, row.name): row.reason for row in result.excluded.itertuples()}
    assert excluded[("study", "gap")].startswith("1 of 2 trials without usable outcomes "
                                                 "(trial 1: no outcomes.npz artifact)")
    assert "val_labels differ" in excluded[("study", "split")]
    assert "needs val_calibrated_nll" in excluded[("rule", CALIBRATED.name)]
    assert set(result.stability["study"]) == {"fine"}
    assert set(result.stability["rule"]) == {LOSS.name, ACCURACY.name}
    missing_pair = vn.validation_noise([two_trials("fine", 40, 45)], (LOSS,),
                                       loss_rule=LOSS.name, accuracy_rule=ACCURACY.name,
                                       replicates=20)
    assert missing_pair.margins.empty
    assert "not among the usable rules" in missing_pair.excluded["reason"].iloc[0]
    with pytest.raises(ValueError, match="replicates=1"):
        vn.validation_noise(studies, RULES, loss_rule=LOSS.name, accuracy_rule=ACCURACY.name,
                            replicates=1)


def test_the_section_and_the_summary_state_the_margin_against_the_noise():
    result = vn.validation_noise([two_trials("s", 25, 75), two_trials("t", 60, 60)], RULES,
                                 loss_rule=LOSS.name, accuracy_rule=ACCURACY.name,
                                 replicates=400)
    text = vn.markdown(result)
    assert text.startswith("## Validation noise\n")
    assert "the picks differ in 1 of 2 studies" in text
    assert "a median 50 more images right" in text
    assert "The lead exceeds 2 SE in 1 of 1 studies" in text
    assert "| s | 100 | 0, 0 | 1, 0 | +50 |" in text
    block = json.loads(json.dumps(vn.summary(result)))  # JSON as summary.json stores it
    assert block["settings"]["replicates"] == 400
    assert block["margin"]["picks_differ"] == 1
    assert [m["margin"] for m in block["margins"]] == [50, 0]
    assert block["margins"][1]["margin_over_se"] is None  # same model: no noise, no ratio
    assert {r["rule"] for r in block["rules"]} == {LOSS.name, ACCURACY.name}
    assert {(r["study"], r["rule"], r["trial"], r["rate"]) for r in block["stability"]} == {
        ("s", LOSS.name, "0", 0.0), ("s", ACCURACY.name, "1", 0.0),
        ("t", LOSS.name, "0", 0.0), ("t", ACCURACY.name, "0", 0.0)}  # t: tied, trial 0 first
    assert "n/a (2 studies, fewer than 4" in text  # no interval over 2 studies, and why


def test_the_cost_benchmark_measures_a_tiny_study():
    """`benchmarks.validation_noise_cost` on the smallest shape: the figures it states are
    there and positive (never judged: timings belong to `make bench`)."""
    from benchmarks.validation_noise_cost import measure, rules

    assert {rule.name for rule in rules()} >= {"min val_loss", "max val_accuracy"}
    measured = measure({"trials": 2, "epochs": 2, "images": 50, "replicates": 5, "classes": 3})
    assert (measured["trials"], measured["replicates"]) == (2, 5)
    for figure in ("seconds", "peak_traced_mb", "parse_seconds", "artifact_kb_per_trial"):
        assert measured[figure] > 0, figure


def test_with_many_studies_the_section_shows_those_closest_to_the_noise(monkeypatch):
    monkeypatch.setattr(vn, "SHOWN_STUDIES", 1)
    # "far": 50 images ahead, SE 5 (10 SE); "near": 3 images ahead, SE sqrt(100 * 0.03 * 0.97)
    result = vn.validation_noise([two_trials("far", 25, 75), two_trials("near", 60, 63)], RULES,
                                 loss_rule=LOSS.name, accuracy_rule=ACCURACY.name, replicates=400)
    text = vn.markdown(result)
    assert "| near | 100 | 0, 0 | 1, 0 | +3 |" in text and "| far |" not in text
    assert "all 2 in summary.json" in text
