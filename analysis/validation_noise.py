"""Validation noise: would a rule's pick survive another draw of the validation set?

A bootstrap over validation images, from each trial's per-image outcomes
(`analysis.outcomes`). One replicate draws n images with replacement; every trial and epoch
of a study is scored on the *same* draw, because they share one validation set. A
replicate is a vector of multinomial counts over the images, so each epoch's accuracy is
`counts @ correct / n` and its cross-entropy `-counts @ log p(true) / n`: matrix products
over replicates × (trial, epoch) rows, no loop over images. From the recomputed
val_accuracy, val_crossentropy, val_loss (+ the logged L2 penalty), val_balanced_accuracy
and val_macro_f1, each rule (`Rule.pick`, the interface of `analysis.rules`) picks a
(trial, epoch) per replicate; its *pick stability* is how often that differs from its pick
on the full validation set.

The *margin* of a study is how many more validation images the accuracy rule's pick gets
right than the loss rule's, with the bootstrap SE of that paired count difference (the two
picks held fixed): a margin inside ±2 SE is a dip a new validation draw could undo.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import sparse

from analysis.intervals import bootstrap_gap, bootstrap_mean, wilson
from analysis.outcomes import Outcomes, StudyOutcomes

RECOMPUTED = ("val_accuracy", "val_crossentropy", "val_loss", "val_balanced_accuracy",
              "val_macro_f1")
PER_CLASS = ("val_balanced_accuracy", "val_macro_f1")  # cost a matrix product per class
# Columns of the replicate table besides the metrics: `order` is the trial's position
# (trial-number order), `n_val` the validation-set size a rule may use for its noise band.
KEY_COLUMNS = ("study", "trial", "epoch", "order", "n_val")
REPLICATES = 200
# Rows of replicate tables handed to one `pick` call: large enough that a rule's per-call
# overhead is paid rarely, small enough to bound memory (~100 MB at 8 metric columns).
BATCH_ROWS = 500_000


class StudyArrays(NamedTuple):
    """One study's validation outcomes, one row per (trial, epoch)."""

    study: str
    trials: tuple[str, ...]   # in trial order
    labels: np.ndarray        # (n,)
    predicted: np.ndarray     # (rows, n)
    true_logprob: np.ndarray  # (rows, n)
    penalty: np.ndarray       # (rows,)
    row_trial: np.ndarray     # (rows,) position in `trials`
    row_epoch: np.ndarray     # (rows,) 0-based epoch


class NoiseResult(NamedTuple):
    """What `validation_noise` measured; `summary` and `render` present it."""

    stability: pd.DataFrame   # one row per (study, rule)
    rules: pd.DataFrame       # one row per rule, means over studies with intervals
    margins: pd.DataFrame     # one row per study: accuracy pick vs loss pick, in images
    margin_summary: dict      # their distribution over studies
    excluded: pd.DataFrame    # what, name, reason: studies and rules left out
    settings: dict


def _trial_order(trials: Iterable[str]) -> list[str]:
    """Trial-number order when every id is a number (MLflow), else as given (file order)."""
    trials = list(trials)
    try:
        return sorted(trials, key=int)
    except ValueError:
        return trials


def stack_study(study: StudyOutcomes) -> StudyArrays | str:
    """The study's trials stacked row-wise, or why the study cannot be resampled."""
    if study.missing:
        trial, reason = next(iter(study.missing.items()))
        return (f"{len(study.missing)} of {len(study.missing) + len(study.trials)} trials "
                f"without usable outcomes (trial {trial}: {reason}); its picks would be "
                "among a subset of its trials")
    if not study.trials:
        return "no trials"
    trials = _trial_order(study.trials)
    first: Outcomes = study.trials[trials[0]]
    if any(not np.array_equal(study.trials[t].val_labels, first.val_labels) for t in trials):
        return "its trials do not share one validation set (val_labels differ)"
    epochs = [study.trials[t].epochs for t in trials]
    return StudyArrays(
        study=study.study, trials=tuple(trials), labels=first.val_labels.astype(np.int64),
        predicted=np.concatenate([study.trials[t].val_predicted for t in trials]),
        true_logprob=np.concatenate([study.trials[t].val_true_logprob for t in trials]),
        penalty=np.concatenate([study.trials[t].penalty for t in trials]).astype(np.float64),
        row_trial=np.repeat(np.arange(len(trials)), epochs),
        row_epoch=np.concatenate([np.arange(e) for e in epochs]))


def resample_counts(n_images: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """(replicates + 1, n) draw counts; row 0 is the full validation set (each image once)."""
    # n draws with replacement per replicate, counted per image: multinomial counts, drawn
    # as indices and one bincount (rng.multinomial over 10,000 categories is 20x slower).
    drawn = rng.integers(0, n_images, size=(replicates, n_images))
    drawn += np.arange(1, replicates + 1)[:, None] * n_images  # row r counts into block r
    counts = np.bincount(drawn.ravel(), minlength=(replicates + 1) * n_images)
    counts = counts.reshape(replicates + 1, n_images)
    counts[0] = 1
    return counts


def replicate_metrics(arrays: StudyArrays, counts: np.ndarray,
                      wanted: Sequence[str] = RECOMPUTED) -> dict[str, np.ndarray]:
    """Each wanted metric as a (replicates, rows) matrix, for image draw `counts` (R, n).

    Counts are integers below 2**24, so float32 products of 0/1 indicators are exact:
    a replicate's accuracy equals sklearn's `accuracy_score(..., sample_weight=counts)`.
    """
    n = counts.shape[1]
    weights = counts.astype(np.float32)
    correct = arrays.predicted == arrays.labels
    out: dict[str, np.ndarray] = {}
    if any(m in wanted for m in PER_CLASS):
        out.update(_per_class_metrics(arrays, correct, weights))
    else:
        out["hits"] = (correct.astype(np.float32) @ weights.T).T
    out["val_accuracy"] = out.pop("hits").astype(np.float64) / n
    crossentropy = -(arrays.true_logprob.astype(np.float64) @ counts.T.astype(np.float64)).T / n
    out["val_crossentropy"] = crossentropy
    out["val_loss"] = crossentropy + arrays.penalty
    return {m: out[m] for m in RECOMPUTED if m in wanted}


def _per_class_metrics(arrays: StudyArrays, correct: np.ndarray,
                       weights: np.ndarray) -> dict[str, np.ndarray]:
    """Balanced accuracy and macro-F1 from weighted per-class counts, as sklearn defines
    them with `sample_weight`: recall averaged over classes drawn at least once; F1 averaged
    over the classes present among the labels or that row's predictions (0 where a present
    class has no weighted support and no weighted prediction)."""
    classes = int(max(arrays.labels.max(), arrays.predicted.max())) + 1
    rows, reps = len(arrays.penalty), weights.shape[0]
    true_pos = np.zeros((classes, rows, reps), np.float32)
    support = np.zeros((classes, 1, reps), np.float32)
    for cls in range(classes):  # the images of one class at a time: one product per class
        of_class = arrays.labels == cls
        support[cls, 0] = weights[:, of_class].sum(axis=1)
        true_pos[cls] = correct[:, of_class].astype(np.float32) @ weights[:, of_class].T
    # Predicted counts = true positives + false positives; the wrong predictions are few,
    # so they go in a sparse (class, row) x image indicator and one sparse product.
    row, image = np.nonzero(~correct)
    wrong = sparse.csr_matrix((np.ones(len(row), np.float32),
                               (arrays.predicted[row, image].astype(np.int64) * rows + row, image)),
                              shape=(classes * rows, len(arrays.labels)))
    predicted = true_pos + (wrong @ weights.T).reshape(classes, rows, reps)
    # The counts are exact in float32; the ratios are taken in float64 so that rounding
    # never makes or breaks a tie between two epochs.
    true_pos, predicted, support = (a.astype(np.float64) for a in (true_pos, predicted, support))
    # sklearn's class set for F1: labels present in y_true or in that row's y_pred, unweighted.
    present = np.zeros((classes, rows, 1), bool)
    present[np.unique(arrays.labels)] = True
    present[arrays.predicted.astype(np.int64), np.arange(rows)[:, None], 0] = True
    drawn = support > 0
    recall = np.divide(true_pos, support, out=np.zeros_like(true_pos), where=drawn)
    balanced = recall.sum(axis=0) / drawn.sum(axis=0)
    denominator = support + predicted
    f1 = np.divide(2 * true_pos, denominator, out=np.zeros_like(true_pos), where=denominator > 0)
    macro_f1 = (f1 * present).sum(axis=0) / present.sum(axis=0)
    return {"hits": true_pos.sum(axis=0).T, "val_balanced_accuracy": balanced.T,
            "val_macro_f1": macro_f1.T}


def replicate_table(arrays: StudyArrays, metrics: Mapping[str, np.ndarray],
                    first_key: int) -> pd.DataFrame:
    """The long epoch table a rule's `pick` reads, one pseudo-study per replicate: its
    `study` is an integer key, `first_key + replicate` (replicate 0 = the full set)."""
    reps, rows = next(iter(metrics.values())).shape
    return pd.DataFrame({
        "study": np.repeat(np.arange(first_key, first_key + reps), rows),
        "trial": np.tile(np.asarray(arrays.trials, dtype=object)[arrays.row_trial], reps),
        "epoch": np.tile(arrays.row_epoch, reps), "order": np.tile(arrays.row_trial, reps),
        "n_val": len(arrays.labels), **{m: v.reshape(-1) for m, v in metrics.items()}})


class _Batch(NamedTuple):
    """Studies whose replicate tables go to one `pick` call per rule."""

    studies: list[tuple[StudyArrays, np.ndarray]]  # (arrays, counts)
    rows: int


def validation_noise(studies: Iterable[StudyOutcomes], rules: Sequence, *, loss_rule: str,
                     accuracy_rule: str, replicates: int = REPLICATES, seed: int = 0,
                     confidence: float = 0.95, n_boot: int = 2000) -> NoiseResult:
    """Pick stability of every rule that per-image outcomes can feed, and the margin between
    the picks of the rules named `loss_rule` and `accuracy_rule`, per study and over studies.

    `rules` follow `analysis.rules.Rule` (name, description, needs, pick). A rule that needs
    a column the outcomes cannot recompute (say a calibrated NLL) is listed in `excluded`,
    as is a study with a trial lacking outcomes. Each study draws its replicates from its
    own seed (`seed` and the study name), so its answer does not depend on the others.
    """
    if replicates < 2:
        raise ValueError(f"replicates={replicates}: need at least 2 for a standard error")
    usable, excluded = _usable_rules(rules)
    wanted = {m for rule in usable for m in rule.needs} | {"val_accuracy", "val_loss",
                                                           "val_crossentropy"}
    stability, margins = [], []
    batch = _Batch([], 0)
    for study in studies:
        arrays = stack_study(study)
        if isinstance(arrays, str):
            excluded.append({"what": "study", "name": study.study, "reason": arrays})
            continue
        rng = np.random.default_rng([seed, zlib.crc32(study.study.encode())])
        counts = resample_counts(len(arrays.labels), replicates, rng)
        batch = _Batch(batch.studies + [(arrays, counts)],
                       batch.rows + len(counts) * len(arrays.penalty))
        if batch.rows >= BATCH_ROWS:
            _run_batch(batch, usable, wanted, (loss_rule, accuracy_rule), stability, margins)
            batch = _Batch([], 0)
    _run_batch(batch, usable, wanted, (loss_rule, accuracy_rule), stability, margins)
    names = {rule.name for rule in usable}
    for role, name in (("loss", loss_rule), ("accuracy", accuracy_rule)):
        if name not in names:
            excluded.append({"what": "margin", "name": name,
                             "reason": f"the {role} rule {name!r} is not among the usable rules"})
    stability_frame = pd.DataFrame(stability, columns=STABILITY_COLUMNS)
    margin_frame = pd.DataFrame(margins, columns=MARGIN_COLUMNS)
    return NoiseResult(
        stability=stability_frame,
        rules=_rule_means(stability_frame, [r.name for r in usable], n_boot, seed, confidence),
        margins=margin_frame, margin_summary=_margin_summary(margin_frame),
        excluded=pd.DataFrame(excluded, columns=["what", "name", "reason"]),
        settings={"replicates": replicates, "seed": seed, "confidence": confidence,
                  "loss_rule": loss_rule, "accuracy_rule": accuracy_rule,
                  "metrics": [m for m in RECOMPUTED if m in wanted]})


STABILITY_COLUMNS = ["study", "rule", "n_val", "trials", "rows", "trial", "epoch", "replicates",
                     "changed", "trial_changed", "rate", "rate_lo", "rate_hi", "trial_rate"]
MARGIN_COLUMNS = ["study", "n_val", "loss_trial", "loss_epoch", "accuracy_trial",
                  "accuracy_epoch", "margin", "se", "margin_over_se"]


def _usable_rules(rules: Sequence) -> tuple[list, list[dict]]:
    available = set(RECOMPUTED) | set(KEY_COLUMNS)
    usable, excluded = [], []
    for rule in rules:
        lacking = [c for c in rule.needs if c not in available]
        if lacking:
            excluded.append({"what": "rule", "name": rule.name,
                             "reason": f"needs {', '.join(lacking)}, which per-image outcomes "
                                       "cannot recompute"})
        else:
            usable.append(rule)
    return usable, excluded


def _run_batch(batch: _Batch, rules: Sequence, wanted: set[str], pair: tuple[str, str],
               stability: list[dict], margins: list[dict]) -> None:
    """Each rule picks once over the batch's replicate tables; rows are appended."""
    if not batch.studies or not rules:
        return
    sizes = [len(counts) for _, counts in batch.studies]
    offsets = np.cumsum([0, *sizes])
    table = pd.concat([replicate_table(arrays, replicate_metrics(arrays, counts, wanted), offset)
                       for (arrays, counts), offset in zip(batch.studies, offsets)],
                      ignore_index=True)
    keys = int(offsets[-1])
    picks = {rule.name: _picks_by_key(rule.pick(table), keys) for rule in rules}
    for (arrays, counts), offset in zip(batch.studies, offsets):
        span = slice(offset, offset + len(counts))
        for name, (trial, epoch) in picks.items():
            stability.append(_stability_row(arrays, name, trial[span], epoch[span]))
        if all(name in picks for name in pair):
            margins.append(_margin_row(arrays, counts, *(
                (picks[name][0][offset], picks[name][1][offset]) for name in pair)))


def _picks_by_key(picked: pd.DataFrame, keys: int) -> tuple[np.ndarray, np.ndarray]:
    """(trial, epoch) per replicate key; None and -1 where the rule picked nothing."""
    trial, epoch = np.full(keys, None, dtype=object), np.full(keys, -1, dtype=np.int64)
    at = picked["study"].to_numpy(np.int64)
    trial[at] = picked["trial"].to_numpy(object)
    epoch[at] = picked["epoch"].to_numpy(np.int64)
    return trial, epoch


def _stability_row(arrays: StudyArrays, rule: str, trial: np.ndarray, epoch: np.ndarray) -> dict:
    """How often the replicates' pick (entries 1..R) differs from the full set's (entry 0)."""
    moved_trial = trial[1:] != trial[0]
    changed = int((moved_trial | (epoch[1:] != epoch[0])).sum())
    replicates = len(trial) - 1
    lo, hi = wilson(changed, replicates)
    return {"study": arrays.study, "rule": rule, "n_val": len(arrays.labels),
            "trials": len(arrays.trials), "rows": len(arrays.penalty), "trial": trial[0],
            "epoch": int(epoch[0]), "replicates": replicates, "changed": changed,
            "trial_changed": int(moved_trial.sum()), "rate": changed / replicates,
            "rate_lo": lo, "rate_hi": hi, "trial_rate": int(moved_trial.sum()) / replicates}


def _row_of(arrays: StudyArrays, trial: str, epoch: int) -> int:
    return int(np.flatnonzero((arrays.row_trial == arrays.trials.index(trial))
                              & (arrays.row_epoch == epoch))[0])


def _margin_row(arrays: StudyArrays, counts: np.ndarray, loss_pick: tuple,
                accuracy_pick: tuple) -> dict:
    """Images the accuracy pick gets right minus those the loss pick does, on the full set,
    and the bootstrap SE of that paired difference (both picks held fixed)."""
    correct = {name: arrays.predicted[_row_of(arrays, *pick)] == arrays.labels
               for name, pick in (("loss", loss_pick), ("accuracy", accuracy_pick))}
    difference = correct["accuracy"].astype(np.int64) - correct["loss"].astype(np.int64)
    per_replicate = counts[1:] @ difference
    se = float(per_replicate.std(ddof=1))
    margin = int(difference.sum())
    return {"study": arrays.study, "n_val": len(arrays.labels), "loss_trial": loss_pick[0],
            "loss_epoch": int(loss_pick[1]), "accuracy_trial": accuracy_pick[0],
            "accuracy_epoch": int(accuracy_pick[1]), "margin": margin, "se": se,
            "margin_over_se": margin / se if se > 0 else math.nan}


def _rule_means(stability: pd.DataFrame, order: list[str], n_boot: int, seed: int,
                confidence: float) -> pd.DataFrame:
    """Per rule: the mean over studies of its pick-change rate, with a bootstrap-over-studies
    interval (or the reason there is none)."""
    rows = []
    for name in order:
        rates = stability.loc[stability["rule"] == name]
        row = {"rule": name, "studies": len(rates)}
        for column in ("rate", "trial_rate"):
            values = rates[column].to_numpy(float)
            row[column] = float(values.mean()) if len(values) else math.nan
            why = bootstrap_gap(values, n_boot=n_boot, confidence=confidence) if len(values) else "no studies"
            lo, hi = (math.nan, math.nan) if why else bootstrap_mean(
                values, n_boot=n_boot, seed=seed, confidence=confidence)
            row.update({f"{column}_lo": lo, f"{column}_hi": hi, f"{column}_ci_missing": why})
        rows.append(row)
    return pd.DataFrame(rows, columns=["rule", "studies", "rate", "rate_lo", "rate_hi",
                                       "rate_ci_missing", "trial_rate", "trial_rate_lo",
                                       "trial_rate_hi", "trial_rate_ci_missing"])


def _margin_summary(margins: pd.DataFrame) -> dict:
    """The margin's distribution over the studies where the two picks differ."""
    differ = margins[(margins["loss_trial"] != margins["accuracy_trial"])
                     | (margins["loss_epoch"] != margins["accuracy_epoch"])]
    out = {"studies": int(len(margins)), "picks_differ": int(len(differ))}
    if differ.empty:
        return out
    margin, se = differ["margin"].to_numpy(float), differ["se"].to_numpy(float)
    quartiles = np.quantile(margin, [0.25, 0.5, 0.75])
    out.update({"margin_median": float(quartiles[1]), "margin_quartiles": [float(quartiles[0]),
                                                                           float(quartiles[2])],
                "se_median": float(np.median(se)),
                "within_1se": int((np.abs(margin) <= se).sum()),
                "within_2se": int((np.abs(margin) <= 2 * se).sum()),
                "beyond_2se": int((margin > 2 * se).sum())})
    return out


# --------------------------------------------------------------------------- presenting

def _plain_value(value: object) -> object:
    """A JSON-ready value: numpy scalars as Python numbers, NaN and None as null."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _records(frame: pd.DataFrame, columns: Sequence[str]) -> list[dict]:
    return [{c: _plain_value(v) for c, v in zip(columns, row)}
            for row in frame[list(columns)].itertuples(index=False)]


def summary(result: NoiseResult) -> dict:
    """The `validation_noise` block of summary.json."""
    return {"settings": result.settings,
            "rules": _records(result.rules, result.rules.columns),
            "margin": {k: _plain_value(v) if not isinstance(v, list) else v
                       for k, v in result.margin_summary.items()},
            "margins": _records(result.margins, MARGIN_COLUMNS),
            "stability": _records(result.stability, ["study", "rule", "trial", "epoch", "rate",
                                                     "trial_rate", "rate_lo", "rate_hi"]),
            "excluded": _records(result.excluded, ["what", "name", "reason"])}


SHOWN_STUDIES = 10


def _percent(share: float) -> str:
    return "n/a" if share is None or math.isnan(share) else f"{share:.1%}"


def render(doc, result: NoiseResult) -> None:
    """Append a "Validation noise" section to a report `Doc` (`analysis.report.Doc`)."""
    from analysis.report import literal  # the report imports this module's neighbours

    settings = result.settings
    doc.h(2, "Validation noise")
    sizes = result.stability.drop_duplicates("study")["n_val"]
    if sizes.empty:
        doc.p("No study could be resampled: per-image outcomes (`outcomes.npz`) are missing "
              "or unusable (see below).")
    else:
        size = (f"{sizes.iloc[0]}" if sizes.nunique() == 1
                else f"{sizes.min()}–{sizes.max()}")
        doc.p(f"Would each rule pick the same model on another draw of the validation set? "
              f"{settings['replicates']} bootstrap replicates over the {size} validation images "
              f"of each of {len(sizes)} studies (seed {settings['seed']}); a replicate scores "
              "every trial and epoch of a study on the same draw, with the metrics recomputed "
              "from the per-image outcomes.")
        doc.table(["Rule", "Studies", "Pick changes (trial, epoch)",
                   f"{settings['confidence']:.0%} CI (bootstrap over studies)", "Trial changes"],
                  [[literal(r.rule), str(r.studies), _percent(r.rate),
                    f"n/a ({r.rate_ci_missing})" if isinstance(r.rate_ci_missing, str)
                    else f"[{_percent(r.rate_lo)}, {_percent(r.rate_hi)}]", _percent(r.trial_rate)]
                   for r in result.rules.itertuples(index=False)])
    _render_margins(doc, result, literal)
    doc.bullets([f"Left out: {row.what} {literal(row.name)}: {literal(row.reason)}"
                 for row in result.excluded.itertuples(index=False)])


def _render_margins(doc, result: NoiseResult, literal) -> None:
    summary_ = result.margin_summary
    settings = result.settings
    names = f"{literal(settings['accuracy_rule'])} vs {literal(settings['loss_rule'])}"
    if not summary_.get("picks_differ"):
        if summary_.get("studies"):
            doc.p(f"Margin ({names}): the two picks are the same model in every study.")
        return
    differ, studies = summary_["picks_differ"], summary_["studies"]
    low, high = summary_["margin_quartiles"]
    doc.p(f"Margin ({names}), in validation images: the picks differ in {differ} of {studies} "
          f"studies. There the accuracy pick gets a median {summary_['margin_median']:g} more "
          f"images right (quartiles {low:g} to {high:g}); validation noise on that paired "
          f"difference is a median ±{summary_['se_median']:.1f} images (1 bootstrap SE). "
          f"The lead exceeds 2 SE in {summary_['beyond_2se']} of {differ} studies; in "
          f"{summary_['within_2se']} it is within 2 SE, a gap another validation draw could "
          "erase.")
    # With many studies, the ones whose margin is smallest against its noise come first.
    shown = result.margins.sort_values("margin_over_se", kind="stable", na_position="last")
    shown = shown.head(SHOWN_STUDIES) if len(shown) > SHOWN_STUDIES else result.margins
    doc.table(["Study", "Validation images", "Loss pick (trial, epoch from 0)",
               "Accuracy pick (trial, epoch from 0)", "Margin (images)", "±1 SE"],
              [[literal(m.study), str(m.n_val), f"{literal(m.loss_trial)}, {m.loss_epoch}",
                f"{literal(m.accuracy_trial)}, {m.accuracy_epoch}", f"{m.margin:+d}",
                f"{m.se:.1f}"] for m in shown.itertuples(index=False)])
    if len(result.margins) > SHOWN_STUDIES:
        doc.p(f"The {SHOWN_STUDIES} studies with the smallest margin against its SE; all "
              f"{len(result.margins)} in summary.json (`validation_noise.margins`).")


def markdown(result: NoiseResult) -> str:
    """The section as Markdown text, on its own."""
    from analysis.report import Doc

    doc = Doc()
    render(doc, result)
    return doc.markdown()
