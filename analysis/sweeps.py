"""Paired sweeps (issue 11): what turning one knob does to the loss/accuracy disagreement.

A sweep turns one factor at a time. Each *pair* of a factor is one base configuration trained
once per arm: the reference (the factor's first level), a treatment per other level, and a
replicate (the reference again with the same seed: the A/A control). The arms of a pair share
their seed, data order and shared initial weights, so an arm's difference from the reference
within a pair is the factor's effect on that configuration; the replicate's difference is
what running the same thing again changes (the A/A floor: training's own non-determinism).

Per factor, non-reference level and loss rule (val_loss, val_crossentropy), level minus
reference over pairs, and beside it the replicate minus the reference:

- `epoch_disagree`: the epoch-level verdict of `analysis.picks.pick` (the earliest epoch of
  minimal loss is not among the epochs tied at maximal val_accuracy), with an exact McNemar
  test on the pairs' verdicts;
- `disagree_at_k`: P(disagree | a study of k trials) from each arm's pool of trials, exact
  over all k-subsets (`analysis.size`), trials scored by their best epoch;
- `val_ece_loss_pick`, `val_ece_accuracy_pick`: validation ECE at each rule's epoch;
- `epoch_gap`: |loss-picked epoch − accuracy-picked epoch|;
- `test_accuracy_cost`, `test_nll_cost`: test accuracy and test NLL at the loss pick minus
  at the accuracy pick (the cost of choosing by loss).

Every interval is a 95% percentile bootstrap over pairs (the same resampled pairs for both
arms, so the difference stays paired). An effect is *clear* when its interval excludes 0 and
does not overlap the A/A floor's interval (the floor's mean where every pair gives the same
difference). Guo et al. 2017's two calibration claims are checked on the same pair tables
(analysis/calibration_claims.py). Pure: plain tables and dicts in, a dict out; the report
renders it.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import binomtest

from analysis.errors import AnalysisInputError
from analysis.intervals import bootstrap_mean, min_clusters
from analysis.picks import MIN_EPOCHS, pick
from analysis.size import disagreement_at_k_by_group
from analysis.sources import KEY
from study.contract import (ARM_REFERENCE, ARM_REPLICATE, ARM_TREATMENT, SWEEP_ARM, SWEEP_ARMS, SWEEP_COLUMNS,
                            SWEEP_FACTOR, SWEEP_LEVEL, SWEEP_PAIR)

FACTOR, LEVEL, PAIR, ARM = (SWEEP_COLUMNS[p] for p in (SWEEP_FACTOR, SWEEP_LEVEL, SWEEP_PAIR, SWEEP_ARM))
ARM_COLUMNS = [FACTOR, LEVEL, PAIR, ARM]
K = 10  # the study size P(disagree | k) is quoted at (issue 10's 10-trial study)
LOSSES = ("val_loss", "val_crossentropy")


class Outcome(NamedTuple):
    name: str
    label: str
    unit: str          # "share" (a rate or accuracy: differences in pp), "epochs" or "value"
    needs: str         # the per-epoch column it is computed from (besides the rules' own)


OUTCOMES = (
    Outcome("epoch_disagree", "epoch-level disagreement", "share", "val_accuracy"),
    Outcome("disagree_at_k", "trial-level P(disagree | k)", "share", "val_accuracy"),
    Outcome("val_ece_loss_pick", "val ECE at the loss pick", "value", "val_ece"),
    Outcome("val_ece_accuracy_pick", "val ECE at the accuracy pick", "value", "val_ece"),
    Outcome("epoch_gap", "epoch gap |loss epoch − accuracy epoch|", "epochs", "val_accuracy"),
    Outcome("test_accuracy_cost", "test accuracy cost (loss pick − accuracy pick)", "share", "test_accuracy"),
    Outcome("test_nll_cost", "test NLL cost (loss pick − accuracy pick)", "value", "test_crossentropy"),
)
# What the dose-response figure shows at each level of a factor (means over pairs).
LEVEL_METRICS = ("epoch_disagree", "val_ece_loss_pick", "val_ece_accuracy_pick",
                 "val_accuracy_loss_pick", "val_accuracy_accuracy_pick")


# ------------------------------------------------------------------ the arms

def is_sweep(columns) -> bool:
    """A table is a sweep when it has all four arm columns (a table of trials from elsewhere
    may well have a `level` or a `pair` column of its own)."""
    return set(ARM_COLUMNS) <= set(columns)


def drop_superseded(raw: pd.DataFrame, study_col: str = "study", trial_col: str = "trial",
                    state_col: str = "state") -> tuple[pd.DataFrame, list[dict]]:
    """The table without the trials a sweep trained again, and those trials. A sweep re-queues
    an arm that was cut (FAIL `interrupted` or `worker_lost`), so its pair holds the cut trial
    and a later one of the same arm and level: the slot's last trial stands, and an earlier
    one that FAILed is superseded. Any other repeat stays, for `arms_table` to refuse; without
    a state column nothing is dropped."""
    if state_col not in raw or any(c not in raw for c in ARM_COLUMNS):
        return raw, []
    trials = raw[[study_col, trial_col, state_col, *ARM_COLUMNS]].drop_duplicates([study_col, trial_col])
    trials = trials.assign(number=pd.to_numeric(trials[trial_col], errors="coerce"))
    last = trials.groupby([study_col, *ARM_COLUMNS], dropna=False)["number"].transform("max")
    superseded = trials[(trials["number"] < last) & (trials[state_col].astype(str) == "FAIL")]
    if superseded.empty:
        return raw, []
    dropped = set(zip(superseded[study_col].astype(str), superseded[trial_col].astype(str)))
    keep = [key not in dropped for key in zip(raw[study_col].astype(str), raw[trial_col].astype(str))]
    records = [{"study": str(row[study_col]), "trial": str(row[trial_col]),
                **{c: str(row[c]) for c in ARM_COLUMNS}} for _, row in superseded.iterrows()]
    return raw[keep], records


def arms_table(raw: pd.DataFrame, study_col: str = "study", trial_col: str = "trial") -> pd.DataFrame:
    """One row per trial: `study`, `trial` (as strings, as `analysis.sources` keys them),
    `factor`, `level`, `pair`, `arm`. Raises AnalysisInputError, one line, unless every trial
    names one arm and every pair of a factor has the reference and the same arms."""
    missing = [c for c in ARM_COLUMNS if c not in raw]
    if missing:
        raise AnalysisInputError(f"a sweep table needs columns {', '.join(ARM_COLUMNS)}; missing "
                                 f"{', '.join(missing)}")
    keyed = raw[raw[study_col].notna() & raw[trial_col].notna()]
    table = pd.DataFrame({"study": keyed[study_col].astype(str), "trial": keyed[trial_col].astype(str),
                          **{c: keyed[c].astype("string").str.strip() for c in ARM_COLUMNS}})
    blank = table[ARM_COLUMNS].isna().any(axis=1) | (table[ARM_COLUMNS] == "").any(axis=1)
    if blank.any():
        raise AnalysisInputError(f"{int(blank.sum())} rows name no {'/'.join(ARM_COLUMNS)}: every "
                                 "row of a sweep table belongs to one arm of one pair")
    table = table.drop_duplicates()
    several = table.duplicated(KEY, keep=False)
    if several.any():
        row = table[several].iloc[0]
        raise AnalysisInputError(f"study {row['study']!r} trial {row['trial']!r} names more than one "
                                 "arm (factor, level, pair, arm)")
    unknown = sorted(set(table[ARM]) - set(SWEEP_ARMS))
    if unknown:
        raise AnalysisInputError(f"unknown arm {unknown[0]!r}: arms are {', '.join(SWEEP_ARMS)}")
    table[FACTOR] = sweeps_apart(table)
    # Pair ids count within a sweep study (one per factor and levels): a factor swept by two
    # studies (another seed) has a pair 0 in each, two bases, so its pairs are named study/pair.
    shared = table.groupby(FACTOR)["study"].transform("nunique") > 1
    table[PAIR] = table[PAIR].where(~shared, table["study"] + "/" + table[PAIR])
    for factor, rows in table.groupby(FACTOR, sort=True):
        _check_factor(str(factor), rows)
    return table.reset_index(drop=True)


# The name `python -m study sweep` gives a factor's study (study.sweep.study_name): the
# factor, its levels as given, and the seed.
SWEEP_STUDY = re.compile(r"sweep-(?P<factor>[^=]+)=(?P<levels>[^=]+)-seed\d+")


def sweeps_apart(table: pd.DataFrame) -> pd.Series:
    """Each row's factor as the analysis names it. A factor swept at two sets of levels (`make
    sweep`'s l2 0 vs 1e-3, then its dose-response 0, 1e-5, ..., 1e-2) is two experiments with
    bases of their own: each is named as its studies are (`l2=0,1e-3`), and the seeds of one
    pool. Studies named otherwise (a hand-made table) keep the factor's name and pool."""
    def swept(study: str, factor: str) -> str | None:
        match = SWEEP_STUDY.fullmatch(study)
        return f"{factor}={match['levels']}" if match and match["factor"] == factor else None

    names = pd.Series([swept(study, factor) for study, factor in zip(table["study"], table[FACTOR])],
                      index=table.index, dtype="object")
    apart = names.notna() & (names.groupby(table[FACTOR]).transform("nunique") > 1)
    return table[FACTOR].where(~apart, names).astype("string")


def _check_factor(factor: str, rows: pd.DataFrame) -> None:
    """Every pair has one reference at the factor's one reference level, the replicate (if any
    pair has it) at that level, and one treatment at every other level; every study of the
    factor has every arm (a pair lacking some is a pair still running: `split_running_pairs`)."""
    slots = rows.groupby([PAIR, ARM, LEVEL]).size()
    if (slots > 1).any():
        pair, arm, level = slots[slots > 1].index[0]
        raise AnalysisInputError(f"factor {factor!r} pair {pair}: {slots.max()} trials of arm {arm} "
                                 f"level {level} (a pair has one trial per arm)")
    # A pair without its reference (a trial that failed before its first epoch has no rows)
    # is one that lacks an arm: `split_running_pairs` leaves it out and names it.
    references = rows[rows[ARM] == ARM_REFERENCE]
    if references.empty:
        raise AnalysisInputError(f"factor {factor!r} has no reference arm in any pair")
    levels = references[LEVEL].unique()
    if len(levels) > 1:
        raise AnalysisInputError(f"factor {factor!r}: the reference arms have levels "
                                 f"{', '.join(sorted(levels))}; a factor has one reference level")
    reference = levels[0]
    off = rows[((rows[ARM] == ARM_REPLICATE) & (rows[LEVEL] != reference))
               | ((rows[ARM] == ARM_TREATMENT) & (rows[LEVEL] == reference))]
    if len(off):
        raise AnalysisInputError(f"factor {factor!r} pair {off[PAIR].iloc[0]}: arm {off[ARM].iloc[0]} at "
                                 f"level {off[LEVEL].iloc[0]} (the replicate repeats the reference level "
                                 f"{reference}, a treatment does not)")
    if not (rows[ARM] == ARM_TREATMENT).any():
        raise AnalysisInputError(f"factor {factor!r} has no treatment arm: nothing to compare")
    expected = set(zip(rows[ARM], rows[LEVEL]))
    for study, group in rows.groupby("study", sort=True):
        absent = expected - set(zip(group[ARM], group[LEVEL]))
        if absent:
            names = ", ".join(f"{arm} {level}" for arm, level in sorted(absent))
            raise AnalysisInputError(f"factor {factor!r} study {study!r} has no arm {names}: every study "
                                     "of a factor needs the same arms")


def _lacking_arms(rows: pd.DataFrame) -> dict[str, set[tuple[str, str]]]:
    """One factor's pairs that lack some (arm, level) another pair has, with what they lack."""
    expected = set(zip(rows[ARM], rows[LEVEL]))
    lacking = {pair: expected - set(zip(arms[ARM], arms[LEVEL])) for pair, arms in rows.groupby(PAIR)}
    return {pair: missing for pair, missing in lacking.items() if missing}


def split_running_pairs(arms: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """The checked `arms_table` without the pairs that lack arms, and those pairs with the
    arms they lack, for the report to name. A running sweep has them: the pair it is
    training, and pairs whose arm was cut before it logged (the sweep re-queues that arm
    after its other pairs)."""
    running = []
    for factor, rows in arms.groupby(FACTOR, sort=True):
        for pair, lacking in sorted(_lacking_arms(rows).items(), key=lambda item: _pair_order(item[0])):
            running.append({"factor": str(factor), "pair": str(pair),
                            "lacking": [f"{arm} {level}" for arm, level in sorted(lacking)]})
    dropped = {(r["factor"], r["pair"]) for r in running}
    keep = [(factor, pair) not in dropped for factor, pair in zip(arms[FACTOR], arms[PAIR])]
    return arms[keep].reset_index(drop=True), running


def _pair_order(pair: str) -> tuple:
    """Pairs by study, then by number (a pooled pair is named study/pair)."""
    study, _, number = pair.rpartition("/")
    return study, _natural(number)


def _natural(value: str):
    """Numbers in numeric order, before any text (pair ids and levels are strings)."""
    try:
        return (0, float(value), "")
    except ValueError:
        return (1, math.inf, value)


def ordered_levels(levels) -> list[str]:
    """Levels in numeric order when they are numbers, else as they come."""
    levels = list(dict.fromkeys(levels))
    return sorted(levels, key=_natural) if all(_natural(v)[0] == 0 for v in levels) else levels


# ------------------------------------------------------------------ per trial

def trial_outcomes(epochs: pd.DataFrame, loss: str) -> pd.DataFrame:
    """One row per trial (index study, trial) with a value of `loss`: its best `loss` and
    best val_accuracy (the trial-level scores), and, for a trial with MIN_EPOCHS epochs or
    more, the epoch-level picks of `analysis.picks.pick` and what they give."""
    e = epochs[epochs[loss].notna() & epochs["val_accuracy"].notna()]
    out = e.groupby(KEY).agg(best_loss=(loss, "min"), best_accuracy=("val_accuracy", "max"))
    curves = e[e.groupby(KEY)["epoch"].transform("size") >= MIN_EPOCHS]
    if curves.empty:
        return out
    picked = pick(curves, KEY, "epoch", loss, "val_accuracy")
    at_loss, at_accuracy = curves.loc[picked["loss_pick"]], curves.loc[picked["accuracy_pick"]]
    verdict = pd.DataFrame({"epoch_disagree": (~picked["agree"].to_numpy(bool)).astype(float),
                            "loss_epoch": at_loss["epoch"].to_numpy(),
                            "accuracy_epoch": at_accuracy["epoch"].to_numpy()}, index=picked.index)
    verdict["epoch_gap"] = (verdict["accuracy_epoch"] - verdict["loss_epoch"]).abs().astype(float)
    for metric in ("val_ece", "val_accuracy"):
        if metric in curves:
            verdict[f"{metric}_loss_pick"] = at_loss[metric].to_numpy(float)
            verdict[f"{metric}_accuracy_pick"] = at_accuracy[metric].to_numpy(float)
    for metric, name in (("test_accuracy", "test_accuracy_cost"), ("test_crossentropy", "test_nll_cost")):
        if metric in curves:
            verdict[name] = at_loss[metric].to_numpy(float) - at_accuracy[metric].to_numpy(float)
    return out.join(verdict)


def pair_values(outcomes: pd.DataFrame, arms: pd.DataFrame, factor: str) -> pd.DataFrame:
    """One factor's trials as pairs × (outcome, arm, level): each cell one trial's value, NaN
    where the trial has none (excluded, failed, or too short for an epoch verdict)."""
    rows = arms[arms[FACTOR] == factor].join(outcomes, on=KEY)
    columns = [c for c in outcomes.columns if c in rows]
    wide = rows.pivot(index=PAIR, columns=[ARM, LEVEL], values=columns)
    return wide.reindex(sorted(wide.index, key=_natural))


# ------------------------------------------------------------------ statistics

def no_interval(values: np.ndarray, n_boot: int) -> str | None:
    """Why the bootstrap over pairs gives no 95% interval, or None (the conditions of
    `analysis.intervals.bootstrap_gap`, worded for pairs)."""
    if n_boot <= 0:
        return "no resamples (--bootstrap 0)"
    needed = min_clusters()
    if len(values) < needed:
        return (f"{len(values)} pairs, fewer than {needed}: too many resamples repeat a single "
                "pair for a percentile interval")
    if np.ptp(values) == 0:
        return f"every pair has the same difference ({values[0]:.3g}), so every resample does"
    return None


def paired_difference(arm: pd.Series, reference: pd.Series, *, n_boot: int, seed: int) -> dict:
    """Mean over pairs of arm − reference, with its 95% bootstrap interval over pairs."""
    both = arm.notna() & reference.notna()
    difference = (arm[both] - reference[both]).to_numpy(float)
    lo, hi = bootstrap_mean(difference, n_boot=n_boot, seed=seed)
    return {"pairs": int(both.sum()), "arm_mean": _mean(arm[both]), "reference_mean": _mean(reference[both]),
            "difference": _mean(difference), "ci95": [lo, hi],
            "ci95_missing": no_interval(difference, n_boot),
            "constant": bool(len(difference) and np.ptp(difference) == 0)}


def mcnemar_exact(arm: pd.Series, reference: pd.Series) -> dict:
    """Exact McNemar test on paired 0/1 verdicts: `b` pairs where only the reference
    disagrees, `c` where only the arm does; two-sided binomial test of c in b + c at 1/2
    (p = 1 without a discordant pair)."""
    both = arm.notna() & reference.notna()
    arm_says, reference_says = arm[both].to_numpy() == 1, reference[both].to_numpy() == 1
    b = int((reference_says & ~arm_says).sum())
    c = int((arm_says & ~reference_says).sum())
    return {"b": b, "c": c, "pairs": int(both.sum()),
            "p_value": float(binomtest(c, b + c, 0.5).pvalue) if b + c else 1.0}


def disagree_at_k_difference(arm: pd.DataFrame, reference: pd.DataFrame, *, k: int, n_boot: int,
                             seed: int) -> dict:
    """P(disagree | k) of the arm's pool minus the reference's, each pool one trial per pair
    (rows aligned on the pairs; columns: the best loss, then the best accuracy), exact over
    all k-subsets; the bootstrap draws pairs with replacement and rebuilds both pools from
    the same drawn pairs."""
    both = arm.notna().all(axis=1) & reference.notna().all(axis=1)
    n = int(both.sum())
    out = {"pairs": n, "arm_mean": math.nan, "reference_mean": math.nan, "difference": math.nan,
           "ci95": [math.nan, math.nan], "ci95_missing": f"{n} pairs, fewer than k = {k}", "constant": False}
    if n < k:
        return out
    pools = [frame[both].to_numpy(float) for frame in (arm, reference)]
    rates = [_at_k(pool[None], k)[0] for pool in pools]
    out.update(arm_mean=rates[0], reference_mean=rates[1], difference=rates[0] - rates[1],
               ci95_missing=None if n_boot > 0 else "no resamples (--bootstrap 0)")
    if n_boot > 0:
        draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
        differences = _at_k(pools[0][draws], k) - _at_k(pools[1][draws], k)
        if np.ptp(differences) == 0:
            out["ci95_missing"] = f"every resample gives the same difference ({differences[0]:.3g})"
            out["constant"] = True
        else:
            out["ci95"] = np.quantile(differences, [0.025, 0.975]).tolist()
    return out


def _at_k(pools: np.ndarray, k: int) -> np.ndarray:
    """P(disagree | k) of each pool (pools × trials × (loss, accuracy)), all in one call."""
    groups = np.repeat(np.arange(len(pools)), pools.shape[1])
    flat = pools.reshape(-1, 2)
    _, exact = disagreement_at_k_by_group(flat[:, 0], flat[:, 1], groups, [k])
    return exact.share[:, 0]


def is_clear(effect: dict, floor: dict | None) -> bool:
    """The effect's interval excludes 0 and lies beyond the A/A floor's interval (its mean,
    where every pair gives the same difference); no floor, no clear effect."""
    lo, hi = effect["ci95"]
    if floor is None or _nan(lo) or _nan(hi) or lo <= 0 <= hi:
        return False
    floor_lo, floor_hi = floor["ci95"]
    if _nan(floor_lo) or _nan(floor_hi):
        if not floor["constant"]:
            return False  # too few pairs: the floor is not known well enough to be exceeded
        floor_lo = floor_hi = floor["difference"]
    return bool(hi < floor_lo or lo > floor_hi)


def _nan(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _mean(values) -> float:
    values = np.asarray(values, float)
    return float(values.mean()) if len(values) else math.nan


# ------------------------------------------------------------------ the sweep

class Arms(NamedTuple):
    """One factor's arms: the (arm, level) column of each in `pair_values`' tables."""

    reference: tuple[str, str]
    treatments: list[tuple[str, str]]    # in level order
    replicate: tuple[str, str] | None    # None: the sweep ran no A/A control


def factor_arms(arms: pd.DataFrame, factor: str) -> Arms:
    """A factor's arms from the (checked) `arms_table`."""
    rows = arms[arms[FACTOR] == factor]
    reference = rows.loc[rows[ARM] == ARM_REFERENCE, LEVEL].iloc[0]
    treated = ordered_levels(rows.loc[rows[ARM] == ARM_TREATMENT, LEVEL])
    replicated = (rows[ARM] == ARM_REPLICATE).any()
    return Arms((ARM_REFERENCE, reference), [(ARM_TREATMENT, level) for level in treated],
                (ARM_REPLICATE, reference) if replicated else None)


def compare_arm(values: pd.DataFrame, arm: tuple[str, str], reference: tuple[str, str], *,
                k: int, n_boot: int, seed: int) -> dict[str, dict]:
    """Every outcome of one arm against the reference, paired over the factor's pairs."""
    out = {}
    for outcome in OUTCOMES:
        if outcome.name == "disagree_at_k":
            pools = [values.xs(slot, axis=1, level=[1, 2])[["best_loss", "best_accuracy"]]
                     for slot in (arm, reference)]
            out[outcome.name] = disagree_at_k_difference(*pools, k=k, n_boot=n_boot, seed=seed)
        elif outcome.name in values.columns.get_level_values(0):
            out[outcome.name] = paired_difference(values[(outcome.name, *arm)], values[(outcome.name, *reference)],
                                                  n_boot=n_boot, seed=seed)
    if "epoch_disagree" in out:
        out["epoch_disagree"]["mcnemar"] = mcnemar_exact(values[("epoch_disagree", *arm)],
                                                        values[("epoch_disagree", *reference)])
    return out


def factor_rows(values: pd.DataFrame, factor: str, arms: Arms, loss: str, *, k: int, n_boot: int,
                seed: int) -> list[dict]:
    """One row per treatment level and outcome: the effect, the A/A floor beside it, clear or not."""
    floor = (compare_arm(values, arms.replicate, arms.reference, k=k, n_boot=n_boot, seed=seed)
             if arms.replicate is not None else {})
    rows = []
    for arm in arms.treatments:
        effects = compare_arm(values, arm, arms.reference, k=k, n_boot=n_boot, seed=seed)
        for outcome in OUTCOMES:
            if outcome.name not in effects:
                continue
            effect, aa = effects[outcome.name], floor.get(outcome.name)
            rows.append({"factor": factor, "level": arm[1], "reference_level": arms.reference[1],
                         "loss": loss, "outcome": outcome.name, "effect": effect, "floor": aa,
                         "clear": is_clear(effect, aa)})
    return rows


def level_rows(values: pd.DataFrame, factor: str, arms: Arms, loss: str, *, n_boot: int,
               seed: int) -> list[dict]:
    """Per level (the reference and each treatment): the mean over pairs of each of
    LEVEL_METRICS with its 95% bootstrap interval over pairs, for the dose-response figure."""
    rows = []
    for position, arm in enumerate([arms.reference, *arms.treatments]):
        row = {"factor": factor, "level": arm[1], "position": position, "loss": loss}
        for metric in LEVEL_METRICS:
            if (metric, *arm) not in values.columns:
                continue
            present = values[(metric, *arm)].dropna().to_numpy(float)
            lo, hi = bootstrap_mean(present, n_boot=n_boot, seed=seed)
            row[metric] = {"pairs": len(present), "mean": _mean(present), "ci95": [lo, hi]}
        rows.append(row)
    return rows


def complete_pairs(arms: pd.DataFrame, unused: pd.DataFrame, factor: str) -> int:
    """A factor's pairs whose every arm is analysed: a pair with a failed (or otherwise
    unusable) arm still serves the comparisons it has both arms of, but is not complete."""
    pairs = set(arms.loc[arms[FACTOR] == factor, PAIR])
    return len(pairs - set(unused.loc[unused[FACTOR] == factor, PAIR]))


def mixed_pairs(arms: pd.DataFrame, raw: pd.DataFrame, columns: list[str], study_col: str = "study",
                trial_col: str = "trial") -> list[dict]:
    """Pairs whose arms logged different values of `columns` (the TF thread counts and the CPU,
    which move a trial's last bits), each with the values it mixes. An arm that did not log a
    column is not compared on it (trials before 2026-11-28 lack the CPU; a pair half before,
    half after would otherwise look mixed on one machine). The A/A floor's two arms train in
    one study too, so it holds such a difference only where it happened to strike them."""
    present = [c for c in columns if c in raw]
    if not present:
        return []
    machine = pd.DataFrame({"study": raw[study_col].astype(str), "trial": raw[trial_col].astype(str),
                            **{c: raw[c].astype("string") for c in present}})
    rows = arms.merge(machine.drop_duplicates(KEY), on=KEY, how="left")
    mixed = []
    for (factor, pair), group in rows.groupby([FACTOR, PAIR], sort=False):
        differs = {c: sorted(group[c].dropna().unique()) for c in present if group[c].dropna().nunique() > 1}
        if differs:
            mixed.append({"factor": str(factor), "pair": str(pair), "differs": differs})
    return sorted(mixed, key=lambda m: (m["factor"], _pair_order(m["pair"])))


def mixed_text(mixed: dict) -> str:
    """One `mixed_pairs` entry as the report and the README name it:
    'l2 pair 5 (tf_intra_op_threads: 1 / 2)'."""
    differs = ", ".join(f"{column}: {' / '.join(values)}" for column, values in mixed["differs"].items())
    return f"{mixed['factor']} pair {mixed['pair']} ({differs})"


def replicate_agreement(arms: pd.DataFrame, epochs: pd.DataFrame, factor: str, loss: str) -> dict | None:
    """How far the A/A replicate lands from its reference, over the pairs with both curves:
    a pair is *identical* when the two have the same epochs and the same `loss` at each (bit
    for bit, as the table holds it; a NaN loss is not equal); its gap is the largest
    |replicate − reference| over the epochs both have. None without replicates."""
    rows = arms[(arms[FACTOR] == factor) & arms[ARM].isin([ARM_REFERENCE, ARM_REPLICATE])]
    if not (rows[ARM] == ARM_REPLICATE).any():
        return None
    curves = rows.merge(epochs[[*KEY, "epoch", loss]], on=KEY)
    identical, gaps = 0, []
    for _, pair in curves.groupby(PAIR):
        by_arm = {arm: group.set_index("epoch")[loss].sort_index() for arm, group in pair.groupby(ARM)}
        if len(by_arm) < 2:
            continue
        reference, replicate = by_arm[ARM_REFERENCE], by_arm[ARM_REPLICATE]
        shared = (replicate - reference).dropna()
        gaps.append(float(shared.abs().max()) if len(shared) else math.nan)
        identical += bool(reference.index.equals(replicate.index) and len(shared) == len(reference)
                          and (shared == 0).all())
    return {"loss": loss, "pairs": len(gaps), "identical": identical,
            "median_max_gap": float(np.nanmedian(gaps)) if any(not math.isnan(g) for g in gaps) else math.nan}


def analyse_sweep(arms: pd.DataFrame, epochs: pd.DataFrame, *, n_boot: int, seed: int,
                  k: int = K, running: list[dict] = (), mixed: list[dict] = (),
                  superseded: list[dict] = ()) -> dict:
    """The `sweep` block of summary.json: the factors, every effect beside its A/A floor,
    the per-level means, the trials the analysis could not use, the pairs left out because
    the sweep is still training them (`running`, from `split_running_pairs`), the pairs
    whose arms trained on different threads or CPUs (`mixed`, from `mixed_pairs`), and the
    cut trials whose arm was trained again (`superseded`, from `drop_superseded`)."""
    losses = [loss for loss in LOSSES if loss in epochs and epochs[loss].notna().any()]
    usable = epochs[KEY].drop_duplicates()
    unused = arms.merge(usable, on=KEY, how="left", indicator=True)
    unused = unused[unused["_merge"] == "left_only"]
    from analysis.calibration_claims import calibration_claims  # it builds on this module

    factors, comparisons, levels, claims = [], [], [], []
    for loss in losses:
        outcomes = trial_outcomes(epochs, loss)
        for factor in sorted(arms[FACTOR].unique()):
            values, factor_arm = pair_values(outcomes, arms, factor), factor_arms(arms, factor)
            comparisons += factor_rows(values, factor, factor_arm, loss, k=k, n_boot=n_boot, seed=seed)
            levels += level_rows(values, factor, factor_arm, loss, n_boot=n_boot, seed=seed)
            if loss == losses[0]:
                factors.append({"factor": factor, "reference_level": factor_arm.reference[1],
                                "levels": [level for _, level in factor_arm.treatments],
                                "pairs": complete_pairs(arms, unused, factor),
                                "replicate": factor_arm.replicate is not None,
                                "replicate_agreement": replicate_agreement(arms, epochs, factor, loss)})
                # the accuracy rule's picks, which the loss rule does not change
                claims += calibration_claims(values, factor, factor_arm, n_boot=n_boot, seed=seed)
    absent = sorted({o.needs for o in OUTCOMES} - set(epochs.columns))
    return {"factors": factors, "losses": losses, "k": k,
            "bootstrap": {"resamples": n_boot, "seed": seed, "unit": "pair"},
            "comparisons": comparisons, "levels": levels, "calibration_claims": claims,
            "trials_not_analysed": unused[[*KEY, *ARM_COLUMNS]].to_dict(orient="records"),
            "pairs_running": list(running), "pairs_mixed": list(mixed), "trials_superseded": list(superseded),
            "columns_missing": absent}


def with_epoch_metric(epochs: pd.DataFrame, raw: pd.DataFrame, metric: str, *, study_col: str,
                      trial_col: str, epoch_col: str, epoch_base: int) -> pd.DataFrame:
    """`epochs` (the loader's cleaned rows) with a per-epoch fraction `metric` (val_ece) from
    the raw table, which the table loader does not carry; matched on (study, trial, epoch),
    a value outside [0, 1] left out. `epochs` itself when it has the column or `raw` lacks it."""
    if metric in epochs or metric not in raw:
        return epochs
    values = pd.DataFrame({"study": raw[study_col].astype(str), "trial": raw[trial_col].astype(str),
                           "epoch": pd.to_numeric(raw[epoch_col], errors="coerce") - epoch_base,
                           metric: pd.to_numeric(raw[metric], errors="coerce")})
    values[metric] = values[metric].where(values[metric].between(0.0, 1.0))
    values = values[values["epoch"].notna() & (values["epoch"] % 1 == 0)]
    values = values.astype({"epoch": epochs["epoch"].dtype}).drop_duplicates([*KEY, "epoch"])
    return epochs.merge(values, on=[*KEY, "epoch"], how="left")
