"""Guo et al. 2017 ("On calibration of modern neural networks", Fig. 2), checked on the
paired sweeps: does each of its two claims keep its sign on Fashion-MNIST, and how surely?

1. **Batch normalisation raises ECE while accuracy barely moves**: the `batch_norm` factor,
   on − off, paired: the val ECE difference (the claim), the val accuracy one beside it.
2. **ECE keeps falling with more weight decay past the accuracy optimum**: an `l2` factor
   with at least DOSE_LEVELS levels (the dose-response). The optimum is the level of highest
   mean val accuracy over pairs; each larger level's ECE minus the optimum's, paired. How
   sure the optimum itself is: the share of bootstrap resamples of pairs whose optimum is the
   same level.

Both read the model the accuracy rule picks (each trial's epoch of best val accuracy), as
Guo et al. read a trained network: its val ECE and val accuracy. A verdict is *reproduces*
where every difference the claim needs is clear in its direction (`sweeps.is_clear`: the 95%
interval excludes 0 and lies beyond the A/A floor's), *reversed* where one is clear the
other way, *not clear* otherwise, and *not testable* where the optimum is the largest level
(nothing lies past it). Pure: `sweeps.pair_values` tables in, dicts out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.sweeps import Arms, is_clear, ordered_levels, paired_difference

ECE, ACCURACY = "val_ece_accuracy_pick", "val_accuracy_accuracy_pick"
# The reference and three more: a rise, an optimum and a fall can all show (and the dose
# figure's threshold, analysis/plotdata.py).
DOSE_LEVELS = 4
ON_LEVELS = {"true", "1", "on", "yes"}


def base_name(factor: str) -> str:
    """The knob a sweep factor turns: `l2=0,1e-5,...` (a factor swept at two sets of levels,
    `sweeps.sweeps_apart`) is still l2."""
    return factor.split("=", 1)[0]


def calibration_claims(values: pd.DataFrame, factor: str, arms: Arms, *, n_boot: int, seed: int) -> list[dict]:
    """The claims this factor tests (none, or one), from its pair table."""
    needed = {ECE, ACCURACY} <= set(values.columns.get_level_values(0))
    if not needed or arms.replicate is None:
        return []
    if base_name(factor) == "batch_norm" and len(arms.treatments) == 1:
        return [batch_norm_claim(values, factor, arms, n_boot=n_boot, seed=seed)]
    if base_name(factor) == "l2" and 1 + len(arms.treatments) >= DOSE_LEVELS:
        return [weight_decay_claim(values, factor, arms, n_boot=n_boot, seed=seed)]
    return []


def _verdict(effects: list[dict], floor: dict, direction: int) -> str:
    """'reproduces' when every effect is clear in `direction` (+1 up, −1 down), 'reversed'
    when one is clear the other way, else 'not clear'."""
    signs = [np.sign(effect["difference"]) if is_clear(effect, floor) else 0 for effect in effects]
    if any(sign == -direction for sign in signs):
        return "reversed"
    return "reproduces" if all(sign == direction for sign in signs) else "not clear"


def batch_norm_claim(values: pd.DataFrame, factor: str, arms: Arms, *, n_boot: int, seed: int) -> dict:
    """Claim 1: batch norm on − off in val ECE (up, says the claim) and in val accuracy."""
    on, off = arms.treatments[0], arms.reference
    if str(off[1]).lower() in ON_LEVELS:  # a sweep with batch norm on as its reference
        on, off = off, on

    def difference(metric: str, arm: tuple[str, str], reference: tuple[str, str]) -> dict:
        return paired_difference(values[(metric, *arm)], values[(metric, *reference)], n_boot=n_boot, seed=seed)

    ece, floor = difference(ECE, on, off), difference(ECE, arms.replicate, arms.reference)
    return {"claim": "batch_norm_raises_ece", "factor": factor, "on": on[1], "off": off[1],
            "ece": ece, "accuracy": difference(ACCURACY, on, off), "floor": floor,
            "verdict": _verdict([ece], floor, +1)}


def optimum_share(accuracy: pd.DataFrame, *, n_boot: int, seed: int) -> tuple[int, float]:
    """The column of highest mean (pairs × levels, pairs with every level only), and the share
    of bootstrap resamples of pairs whose highest mean is that column (nan without resamples)."""
    table = accuracy.dropna().to_numpy(float)
    best = int(np.argmax(table.mean(axis=0)))
    if n_boot <= 0 or len(table) == 0:
        return best, float("nan")
    draws = np.random.default_rng(seed).integers(0, len(table), size=(n_boot, len(table)))
    return best, float(np.mean(table[draws].mean(axis=1).argmax(axis=1) == best))


def weight_decay_claim(values: pd.DataFrame, factor: str, arms: Arms, *, n_boot: int, seed: int) -> dict:
    """Claim 2: past the level of best mean val accuracy, each larger level's val ECE minus the
    optimum's (down, says the claim)."""
    slots = {arm[1]: arm for arm in (arms.reference, *arms.treatments)}
    ladder = [slots[level] for level in ordered_levels(slots)]  # every level, in numeric order
    accuracy = pd.concat({arm[1]: values[(ACCURACY, *arm)] for arm in ladder}, axis=1)
    best, share = optimum_share(accuracy, n_boot=n_boot, seed=seed)
    optimum = ladder[best]
    floor = paired_difference(values[(ECE, *arms.replicate)], values[(ECE, *arms.reference)],
                              n_boot=n_boot, seed=seed)
    beyond = [{"level": arm[1], "ece": paired_difference(values[(ECE, *arm)], values[(ECE, *optimum)],
                                                         n_boot=n_boot, seed=seed)}
              for arm in ladder[best + 1:]]
    verdict = (_verdict([step["ece"] for step in beyond], floor, -1) if beyond else "not testable")
    return {"claim": "ece_falls_past_the_accuracy_optimum", "factor": factor, "levels": [arm[1] for arm in ladder],
            "accuracy_means": [float(v) for v in accuracy.dropna().mean()], "optimum": optimum[1],
            "optimum_share": share, "pairs_with_every_level": int(len(accuracy.dropna())),
            "beyond": beyond, "floor": floor, "verdict": verdict}
