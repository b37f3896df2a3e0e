"""Guo et al. 2017 ("On calibration of modern neural networks", Fig. 2), checked on the
paired sweeps: does each of its two claims keep its sign on Fashion-MNIST, and how surely?

1. **Batch normalisation raises ECE while accuracy barely moves**: the `batch_norm` factor,
   on − off, paired. The verdict is on the ECE sign; the val accuracy difference is shown
   beside it, not tested ("barely" has no threshold to test against).
2. **ECE keeps falling with more weight decay past the accuracy optimum**: an `l2` factor
   with at least DOSE_LEVELS levels (the dose-response). The optimum is the level of highest
   mean val accuracy over the pairs that have every level (ties: the smallest level). From
   there on, each step to the next larger level must lower ECE (paired, on those pairs). How
   sure the optimum itself is: the share of bootstrap resamples of pairs with the same
   optimum, stated beside the verdict (the steps' intervals take the optimum as given).

Both read the model the accuracy rule picks (each trial's epoch of best val accuracy), as
Guo et al. read a trained network: its val ECE and val accuracy. A verdict is *reproduces*
where every difference the claim needs is clear in its direction (`sweeps.is_clear`: the 95%
interval excludes 0 and lies beyond the A/A floor's), *reversed* where one is clear the
other way, *not clear* otherwise, and *not testable* where the data cannot answer (nothing
past the optimum, too few pairs, levels that do not say on and off, no ECE), with the reason.
Pure: `sweeps.pair_values` tables in, dicts out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.intervals import min_clusters
from analysis.sweeps import Arms, is_clear, ordered_levels, paired_difference

ECE, ACCURACY = "val_ece_accuracy_pick", "val_accuracy_accuracy_pick"
BATCH_NORM, WEIGHT_DECAY = "batch_norm_raises_ece", "ece_falls_past_the_accuracy_optimum"
# The reference and three more: a rise, an optimum and a fall can all show (and the dose
# figure's threshold, analysis/plotdata.py).
DOSE_LEVELS = 4
# How a bool knob's level may be written (the CLI's words, and a float-parsed CSV's).
ON_LEVELS, OFF_LEVELS = {"true", "1", "1.0", "on", "yes"}, {"false", "0", "0.0", "off", "no"}


def base_name(factor: str) -> str:
    """The knob a sweep factor turns: `l2=0,1e-5,...` (a factor swept at two sets of levels,
    `sweeps.sweeps_apart`) is still l2."""
    return factor.split("=", 1)[0]


def calibration_claims(values: pd.DataFrame, factor: str, arms: Arms, *, n_boot: int, seed: int) -> list[dict]:
    """The claim this factor bears on ([] for most factors), tested or with why it is not."""
    if base_name(factor) == "batch_norm" and len(arms.treatments) == 1:
        claim, test = BATCH_NORM, batch_norm_claim
    elif base_name(factor) == "l2" and 1 + len(arms.treatments) >= DOSE_LEVELS:
        claim, test = WEIGHT_DECAY, weight_decay_claim
    else:
        return []
    missing = sorted({ECE, ACCURACY} - set(values.columns.get_level_values(0)))
    if missing:
        return [untestable(claim, factor, f"no {', '.join(missing)} (the table lacks val_ece or val_accuracy)")]
    if arms.replicate is None:
        return [untestable(claim, factor, "no A/A replicate, so no floor to read a difference against")]
    return [test(values, factor, arms, n_boot=n_boot, seed=seed)]


def untestable(claim: str, factor: str, reason: str) -> dict:
    return {"claim": claim, "factor": factor, "verdict": "not testable", "reason": reason}


def _verdict(effects: list[dict], floor: dict, direction: int) -> str:
    """'reproduces' when every effect is clear in `direction` (+1 up, −1 down), 'reversed'
    when one is clear the other way, else 'not clear'."""
    signs = [np.sign(effect["difference"]) if is_clear(effect, floor) else 0 for effect in effects]
    if any(sign == -direction for sign in signs):
        return "reversed"
    return "reproduces" if all(sign == direction for sign in signs) else "not clear"


def _difference(values: pd.DataFrame, metric: str, arm: tuple[str, str], minus: tuple[str, str], *,
                n_boot: int, seed: int) -> dict:
    return paired_difference(values[(metric, *arm)], values[(metric, *minus)], n_boot=n_boot, seed=seed)


def batch_norm_claim(values: pd.DataFrame, factor: str, arms: Arms, *, n_boot: int, seed: int) -> dict:
    """Claim 1: batch norm on − off in val ECE (up, says the claim), and in val accuracy."""
    reference, treatment = arms.reference[1].lower(), arms.treatments[0][1].lower()
    if {reference, treatment} <= OFF_LEVELS | ON_LEVELS and (reference in ON_LEVELS) != (treatment in ON_LEVELS):
        on_is_reference = reference in ON_LEVELS
    else:
        return untestable(BATCH_NORM, factor, f"levels {arms.reference[1]!r} and {arms.treatments[0][1]!r} "
                                              "are not one on and one off")
    on, off = (arms.reference, arms.treatments[0]) if on_is_reference else (arms.treatments[0], arms.reference)
    # the floor oriented as the effect is: replicate − reference, or its negative where the
    # reference is the "on" arm (the effect is then reference − treatment)
    floor = (_difference(values, ECE, arms.reference, arms.replicate, n_boot=n_boot, seed=seed) if on_is_reference
             else _difference(values, ECE, arms.replicate, arms.reference, n_boot=n_boot, seed=seed))
    ece = _difference(values, ECE, on, off, n_boot=n_boot, seed=seed)
    return {"claim": BATCH_NORM, "factor": factor, "on": on[1], "off": off[1], "ece": ece,
            "accuracy": _difference(values, ACCURACY, on, off, n_boot=n_boot, seed=seed), "floor": floor,
            "verdict": _verdict([ece], floor, +1)}


def optimum_share(accuracy: pd.DataFrame, *, n_boot: int, seed: int) -> tuple[int, float]:
    """The column of highest mean (pairs × levels, every cell present; ties: the first), and
    the share of bootstrap resamples of pairs whose highest mean is that column (nan without
    resamples)."""
    table = accuracy.to_numpy(float)
    best = int(np.argmax(table.mean(axis=0)))
    if n_boot <= 0:
        return best, float("nan")
    draws = np.random.default_rng(seed).integers(0, len(table), size=(n_boot, len(table)))
    return best, float(np.mean(table[draws].mean(axis=1).argmax(axis=1) == best))


def weight_decay_claim(values: pd.DataFrame, factor: str, arms: Arms, *, n_boot: int, seed: int) -> dict:
    """Claim 2: from the level of best mean val accuracy on, each next larger level's val ECE
    minus the one before (down at every step, says the claim), on the pairs with every level."""
    slots = {arm[1]: arm for arm in (arms.reference, *arms.treatments)}
    ladder = [slots[level] for level in ordered_levels(slots)]  # every level, in numeric order
    cells = [(metric, *arm) for metric in (ACCURACY, ECE) for arm in (*ladder, arms.replicate)]
    complete = values[cells].dropna()
    if len(complete) < min_clusters():
        return untestable(WEIGHT_DECAY, factor, f"{len(complete)} pairs with every level, fewer than "
                                                f"{min_clusters()}")
    accuracy = pd.concat({arm[1]: complete[(ACCURACY, *arm)] for arm in ladder}, axis=1)
    best, share = optimum_share(accuracy, n_boot=n_boot, seed=seed)
    steps = [{"level": later[1], "from": earlier[1],
              "ece": _difference(complete, ECE, later, earlier, n_boot=n_boot, seed=seed)}
             for earlier, later in zip(ladder[best:], ladder[best + 1:])]
    floor = _difference(complete, ECE, arms.replicate, arms.reference, n_boot=n_boot, seed=seed)
    claim = {"claim": WEIGHT_DECAY, "factor": factor, "levels": [arm[1] for arm in ladder],
             "accuracy_means": [float(v) for v in accuracy.mean()], "optimum": ladder[best][1],
             "optimum_share": share, "pairs": int(len(complete)), "steps": steps, "floor": floor}
    if not steps:
        return {**claim, "verdict": "not testable", "reason": "the optimum is the largest level: nothing lies past it"}
    return {**claim, "verdict": _verdict([step["ece"] for step in steps], floor, -1)}
