"""Assemble every computed table and statistic into `summary.json`'s dict.

`analyse` is the one entry point: it turns a `Dataset` into an `Analysis` holding the
summary dict and the tidy tables the figures and the report draw from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import (boundary, compare, cost, design, explain, pool, ranks, rule_comparison, size,
                      validation_noise)
from analysis.outcomes import StudyOutcomes
from analysis.rules import ALL_RULES, REFERENCE
from analysis.intervals import bootstrap_gap, bootstrap_mean, wilson
from analysis.picks import epoch_picks, scored_trials, trial_picks
from analysis.sources import KEY, Dataset

EARLY, LATE = 0.10, 0.25  # the Playbook's first 10% and last 25% of the budget
WARN_SHARE = 0.2


def budget_windows(epoch: pd.Series, budget: pd.Series) -> tuple[pd.Series, pd.Series]:
    """How much of an epoch (from 0) lies in the first 10% / the last 25% of its budget.

    Epoch e spans [e, e + 1) of a budget of B epochs; the first 10% is [0, 0.1·B) and the
    last 25% is [0.75·B, B), so each window is exactly what it says: of 10 epochs, epochs
    8 and 9 count fully for the last 25% and epoch 7 counts half. The mean over trials is
    the share of optima in the window (an optimum counts for the part of its epoch inside).
    """
    e, b = epoch.astype(float), budget.astype(float)
    early = (np.minimum(e + 1, EARLY * b) - e).clip(0, 1)
    late = (e + 1 - np.maximum(e, (1 - LATE) * b)).clip(0, 1)
    return early, late


@dataclass
class Analysis:
    summary: dict
    scored: pd.DataFrame
    trial: pd.DataFrame
    epoch: pd.DataFrame | None
    ranks: pd.DataFrame
    size: pd.DataFrame
    epochs: pd.DataFrame | None
    loss_label: str
    hyperparams: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Validation noise (MLflow input only: it resamples the stored per-image outcomes).
    noise: validation_noise.NoiseResult | None = None
    # One study's pool at every study size k (analysis/pool.py); None for several studies.
    pool: pd.DataFrame | None = None


def _rate_block(disagree: pd.Series, clusters: pd.Series | None, unit: str, n_boot: int,
                seed: int) -> dict:
    """`disagree` is 0/1, or a share per unit (a study whose loss rule ties): the count of
    disagreements is then the sum of shares, and Wilson takes it as it is."""
    n, total = int(len(disagree)), float(disagree.sum())
    k = int(total) if total.is_integer() else total
    values = disagree.astype(float)
    return {unit: n, "disagreements": k, "rate": total / n if n else math.nan,
            "ci95_wilson": list(wilson(total, n)),
            "ci95_bootstrap": list(bootstrap_mean(values, clusters, n_boot=n_boot, seed=seed)),
            "ci95_bootstrap_missing": bootstrap_gap(values, clusters, n_boot=n_boot)}


def trial_level(picks: pd.DataFrame, rank_table: pd.DataFrame, mcnemar: pd.DataFrame | None,
                n_boot: int, seed: int) -> dict:
    """Trial-level statistics; each study is one unit, so the bootstrap resamples studies."""
    # Order-free primary rate: a study whose loss rule ties counts the share of its tied
    # trials that are not at maximal accuracy; the bounds treat ties leniently / strictly.
    out = _rate_block(picks["disagree_share"], None, "studies", n_boot, seed)
    out["rate_lenient"] = _f(picks["disagree_lenient"].mean())
    out["rate_strict"] = _f(picks["disagree_strict"].mean())
    out["trials"] = int(picks["n"].sum())
    out["accuracy_tie_studies"] = int((picks["accuracy_ties"] > 1).sum())
    out["loss_tie_studies"] = int((picks["loss_ties"] > 1).sum())
    out["kendall_tau_b"] = ranks.distribution(rank_table["tau_b"])
    out["spearman_rho"] = ranks.distribution(rank_table["rho"])
    if "gain" in picks:
        out["test_accuracy_gain_of_accuracy_pick"] = cost.gain_summary(picks, n_boot=n_boot, seed=seed)
        out["test_regret"] = cost.regret_summary(picks)
    if mcnemar is not None and len(mcnemar):
        out["mcnemar"] = {**cost.mcnemar_summary(mcnemar),
                          "per_study": mcnemar.to_dict(orient="records")}
    return out


def epoch_level(ep: pd.DataFrame, n_boot: int, seed: int,
                mcnemar: pd.DataFrame | None = None) -> dict:
    """Epoch-level statistics; trials cluster in studies, so the bootstrap resamples studies."""
    out = _rate_block(ep["disagree"], ep["study"], "trials", n_boot, seed)
    out["accuracy_tie_trials"] = int((ep["accuracy_ties"] > 1).sum())
    gap = ep["epoch_gap"]
    out["epoch_gap"] = {"mean": _f(gap.mean()), "median": _f(gap.median()),
                        "mean_abs": _f(gap.abs().mean()),
                        "mean_when_disagree": _f(gap[ep["disagree"]].mean())}
    positions = {}
    for rule in ("loss", "accuracy"):
        early, late = budget_windows(ep[f"{rule}_epoch"], ep["budget"])
        positions[rule] = {"first_10pct": _f(early.mean()), "last_25pct": _f(late.mean()),
                           "median_fraction_of_budget": _f(ep[f"{rule}_position"].median())}
    out["optimum_position"] = positions
    if "gain" in ep:
        out["test_accuracy_gain_of_accuracy_pick"] = cost.gain_summary(
            ep, clusters="study", n_boot=n_boot, seed=seed)
    if mcnemar is not None and len(mcnemar):
        out["mcnemar"] = {**cost.mcnemar_epoch_summary(mcnemar, int(ep["disagree"].sum())),
                          "per_trial": mcnemar.to_dict(orient="records")}
    return out


def _f(x) -> float:
    return float(x) if x is not None and not pd.isna(x) else math.nan


def playbook_warnings(level: dict, loss_label: str) -> list[str]:
    out = []
    pos = level.get("optimum_position", {})
    for rule, name in (("loss", f"minimal {loss_label}"), ("accuracy", "maximal val_accuracy")):
        share_early = pos.get(rule, {}).get("first_10pct", math.nan)
        share_late = pos.get(rule, {}).get("last_25pct", math.nan)
        if share_early > WARN_SHARE:
            out.append(f"{share_early:.0%} of trials reach {name} in the first 10% of the epoch "
                       "budget: the Playbook reads this as a learning rate too high or a budget "
                       "far longer than needed.")
        if share_late > WARN_SHARE:
            out.append(f"{share_late:.0%} of trials reach {name} in the last 25% of the epoch "
                       "budget: the Playbook reads this as a budget too short, so the optimum "
                       "may lie beyond it.")
    return out


def _levels(scored: pd.DataFrame, epochs: pd.DataFrame | None, loss: str, ds: Dataset,
            scoring: str, n_boot: int, seed: int, with_mcnemar: bool):
    picks = trial_picks(scored, loss)
    rank_table = ranks.rank_agreement(scored, loss)
    mcn = cost.mcnemar_picks(picks, ds.predictions, scoring) if with_mcnemar else None
    out = {"trial_level": trial_level(picks, rank_table, mcn, n_boot, seed)}
    ep = None
    if epochs is not None and loss in epochs:
        ep = epoch_picks(epochs, scored, loss)
        ep_mcn = cost.mcnemar_epochs(ep, ds.predictions) if with_mcnemar else None
        out["epoch_level"] = epoch_level(ep, n_boot, seed, ep_mcn)
    return out, picks, ep, rank_table


def analyse(ds: Dataset, *, scoring: str = "best", include_pruned: bool = False,
            n_boot: int = 2000, seed: int = 0, val_size: int | None = None) -> Analysis:
    """Every statistic of the report. `val_size`: validation images per trial where the
    runs do not say (CSV mode), for the rule that needs it."""
    scored = scored_trials(ds, scoring)
    if scored.empty:
        from analysis.errors import AnalysisInputError
        raise AnalysisInputError("no study has two or more usable trials "
                                 f"(exclusions: {ds.exclusions})")
    loss_label = ds.loss_metric
    main, picks, ep, rank_table = _levels(scored, ds.epochs, "val_loss", ds, scoring, n_boot, seed,
                                          with_mcnemar=ds.predictions is not None)
    studies = ds.studies[ds.studies["study"].isin(picks["study"])]
    summary: dict = {**main, "loss_metric": loss_label, "scoring": scoring,
                     "include_pruned": include_pruned}

    summary.update(_l2_variant(scored, picks, ds, scoring, n_boot, seed))

    summary["by_experiment"] = _by_experiment(scored, ds, main, scoring, n_boot, seed)
    if len(summary["by_experiment"]) > 1:
        summary["experiment_comparison"] = {"trial_level": compare.compare_rates(picks)}
        if ep is not None:
            summary["experiment_comparison"]["epoch_level"] = compare.compare_rates(ep)

    summary["study_design"] = design.design(studies)
    warnings = design.bias_warnings(studies, include_pruned)
    if "epoch_level" in summary:
        warnings += playbook_warnings(summary["epoch_level"], loss_label)
    summary["warnings"] = warnings

    if {"val_ece_loss_pick", "val_ece_accuracy_pick"} <= set(picks):
        summary["calibration_of_picks"] = _calibration_of_picks(picks, n_boot, seed)

    # Every selection rule on the same trials: pairwise disagreement and held-out cost.
    summary.update(rule_comparison.compare(
        rule_comparison.rule_input(ds.epochs, scored, ds.source.get("kind", ""), val_size),
        n_boot, seed))

    summary["explanations"] = _explanations(scored, picks, ep, studies, ds)
    summary["boundary_checks"] = boundary.boundary_checks(scored, picks, ds.hyperparams, ds.spaces)
    size_table = size.disagreement_vs_k(scored, "val_loss", n_boot=n_boot, seed=seed)
    summary["study_size"] = size_table.to_dict(orient="records")
    pool_table = None
    if len(picks) == 1:  # one study: a campaign is one pool of i.i.d. trials
        pool_table = pool.pool_table(scored, n_boot=n_boot, seed=seed)
        summary["pool"] = pool.pool_summary(pool_table, n_boot)

    notes = _study_count_notes(len(picks))
    summary["notes"] = notes
    summary["exclusions"] = ds.exclusions
    summary["source"] = {**ds.source, "studies_analysed": int(len(picks)),
                         "trials_analysed": int(len(scored)),
                         "bootstrap": {"resamples": n_boot, "seed": seed},
                         **({"val_size": val_size} if val_size is not None else {})}
    return Analysis(summary=summary, scored=scored, trial=picks, epoch=ep, ranks=rank_table,
                    size=size_table, epochs=ds.epochs, loss_label=loss_label,
                    hyperparams=ds.hyperparams, notes=notes, warnings=warnings, pool=pool_table)


def _l2_variant(scored: pd.DataFrame, picks: pd.DataFrame, ds: Dataset, scoring: str, n_boot: int,
                seed: int) -> dict:
    """`variants` (the val_crossentropy levels: the same statistics without the L2 term in
    the loss) and `l2_changes_loss_pick`. Only where val_loss is known to be Keras's, with the
    penalty: from MLflow, or a table whose --crossentropy-col says which column is the loss
    without it (an export of our store does); otherwise a table's val_crossentropy column
    still feeds its selection rule."""
    l2_known = ds.source.get("kind") == "mlflow" or bool(ds.source.get("columns", {}).get("crossentropy-col"))
    if not (l2_known and ds.epochs is not None and "val_crossentropy" in ds.epochs
            and ds.epochs["val_crossentropy"].notna().any()):
        return {"variants": {}}
    variant, xpicks, _, _ = _levels(scored, ds.epochs, "val_crossentropy", ds, scoring, n_boot,
                                    seed, with_mcnemar=False)
    both = picks.merge(xpicks[["study", "loss_pick"]], on="study", suffixes=("", "_xent"))
    changed = int((both["loss_pick"] != both["loss_pick_xent"]).sum())
    return {"variants": {"val_crossentropy": variant},
            "l2_changes_loss_pick": {
                "studies": int(len(both)), "changed": changed,
                "rate": changed / len(both) if len(both) else math.nan,
                "ci95_wilson": list(wilson(changed, len(both))),
                "meaning": "studies whose minimal-val_loss trial differs from their "
                           "minimal-val_crossentropy trial: the L2 penalty alone moved the loss pick"}}


def _calibration_of_picks(picks: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Validation ECE and confidence at each rule's pick, and the paired difference per study:
    is the accuracy pick worse calibrated (or more confident)?"""
    calibration = {}
    for metric in ("val_ece", "val_confidence"):
        if f"{metric}_loss_pick" not in picks:
            continue
        loss_side, accuracy_side = picks[f"{metric}_loss_pick"], picks[f"{metric}_accuracy_pick"]
        calibration[f"{metric}_loss_pick_mean"] = _f(loss_side.mean())
        calibration[f"{metric}_accuracy_pick_mean"] = _f(accuracy_side.mean())
        difference = (accuracy_side - loss_side).dropna()
        calibration[f"{metric}_accuracy_minus_loss_pick"] = {
            "mean": _f(difference.mean()),
            "ci95_bootstrap": list(bootstrap_mean(difference, n_boot=n_boot, seed=seed)),
            "ci95_bootstrap_missing": bootstrap_gap(difference, n_boot=n_boot)}
    return calibration


def _study_count_notes(studies: int) -> list[str]:
    """What the number of studies allows the trial-level rate to say."""
    if studies == 1:
        return ["Only one study: its trial-level rate is 0 or 1 and says nothing about how "
                "often the rules disagree; a rate needs replicates (e.g. --replicates 5), or a "
                "pool of i.i.d. trials (`make campaign`), read at every study size k in the "
                "pool section."]
    if studies < 10:
        return [f"Only {studies} studies: the trial-level intervals are wide; add replicates."]
    return []


def _by_experiment(scored: pd.DataFrame, ds: Dataset, main: dict, scoring: str, n_boot: int,
                   seed: int) -> dict:
    """Each experiment's levels (without McNemar). With one experiment its block is the
    main one, already computed: the same trials, seed and resamples give the same numbers."""
    present = [name for name in ds.experiments if (scored["experiment"] == name).any()]
    if len(present) == 1 and (scored["experiment"] == present[0]).all():
        return {present[0]: {level: {key: value for key, value in block.items() if key != "mcnemar"}
                             for level, block in main.items()}}
    out = {}
    for name in present:
        sub = scored[scored["experiment"] == name]
        sub_epochs = ds.epochs.merge(sub[KEY], on=KEY) if ds.epochs is not None else None
        out[name], _, _, _ = _levels(sub, sub_epochs, "val_loss", ds, scoring, n_boot, seed, False)
    return out


def _explanations(scored, picks, ep, studies, ds: Dataset) -> dict:
    feats = explain.features(scored, ds.hyperparams, ds.explanatory)
    out: dict = {"features": feats}
    if ep is not None:
        units = ep[[*KEY, "disagree"]].merge(scored[[*KEY, *feats]], on=KEY)
        out["epoch_level"] = {
            "grouped_rates": [r for f in feats for r in explain.grouped_rates(units, f).to_dict("records")],
            "logistic": explain.logistic(units, list(feats))}
    # A study is the unit at trial level, so features are study means (or study tags).
    numeric = [f for f in feats if pd.api.types.is_numeric_dtype(scored[f])]
    study_units = picks[["study", "experiment", "disagree"]].merge(
        scored.groupby("study")[numeric].mean().reset_index(), on="study", how="left")
    study_units = study_units.merge(studies[["study", "sampler", "pruner"]], on="study", how="left")
    # The seeds' causes as study means (calibration, overfitting, imbalance); per-trial
    # hyperparameters averaged over a study say little, so they stay at epoch level.
    causes = [c for c in explain.CAUSES if c in numeric]
    columns = ["experiment", "sampler", "pruner", *causes]
    out["trial_level"] = {
        "grouped_rates": [r for c in columns if study_units[c].nunique(dropna=True) > 1
                          for r in explain.grouped_rates(study_units, c).to_dict("records")]}
    if causes:
        out["trial_level"]["logistic"] = explain.logistic(study_units, causes)
    return out


def jsonable(obj):
    """NaN and infinities become null; numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def add_validation_noise(analysis: Analysis, studies: Iterable[StudyOutcomes], *, replicates: int,
                         seed: int, n_boot: int) -> None:
    """How often each rule's pick would change on another draw of the validation set, and
    the accuracy pick's margin over the loss pick in images, from per-image outcomes."""
    analysis.noise = validation_noise.validation_noise(
        studies, ALL_RULES, loss_rule=REFERENCE, accuracy_rule="max_val_accuracy",
        replicates=replicates, seed=seed, n_boot=max(n_boot, 2))
    analysis.summary["validation_noise"] = validation_noise.summary(analysis.noise)
