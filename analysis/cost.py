"""What the choice of rule costs on held-out data: gain, regret, and McNemar's test."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar

from analysis.intervals import bootstrap_gap, bootstrap_mean, wilson


def gain_summary(picks: pd.DataFrame, *, clusters: str | None = None, n_boot: int = 2000,
                 seed: int = 0) -> dict:
    """Mean gain of the accuracy pick over all units and over disagreeing units, each with a
    paired bootstrap CI (resampling `clusters` if given) or the reason it has none."""
    g = picks["gain"]
    cl = picks[clusters] if clusters else None
    dis = picks["disagree"]
    cl_dis = cl[dis] if cl is not None else None
    return {"mean": _mean(g), "ci95": list(bootstrap_mean(g, cl, n_boot=n_boot, seed=seed)),
            "ci95_missing": bootstrap_gap(g, cl, n_boot=n_boot),
            "mean_when_disagree": _mean(g[dis]),
            "ci95_when_disagree": list(bootstrap_mean(g[dis], cl_dis, n_boot=n_boot, seed=seed)),
            "ci95_when_disagree_missing": bootstrap_gap(g[dis], cl_dis, n_boot=n_boot)}


def regret_summary(picks: pd.DataFrame) -> dict:
    """Mean shortfall of each pick from the study's test-optimal trial."""
    return {"loss_pick": _mean(picks["regret_loss_pick"]),
            "accuracy_pick": _mean(picks["regret_accuracy_pick"]),
            "reference": "best test accuracy of any trial in the study at its scored epochs"}


def _mean(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def mcnemar_counts(y_true, pred_loss, pred_accuracy) -> dict | None:
    """Exact McNemar test on one pair of predicted-label vectors for the same test images.

    `b` counts images only the loss rule's model got right, `c` those only the accuracy
    rule's model got right; the test asks whether b and c differ by more than chance.
    Returns None when the arrays do not line up (different lengths, empty).
    """
    y, a, b = (np.asarray(v).ravel() for v in (y_true, pred_loss, pred_accuracy))
    if not len(y) or len(a) != len(y) or len(b) != len(y):
        return None
    right_l, right_a = a == y, b == y
    table = [[int(np.sum(right_l & right_a)), int(np.sum(right_l & ~right_a))],
             [int(np.sum(~right_l & right_a)), int(np.sum(~right_l & ~right_a))]]
    return {"b": table[0][1], "c": table[1][0], "n": int(len(y)),
            "p_value": float(mcnemar(table, exact=True).pvalue)}


MCNEMAR_COLUMNS = ["study", "b", "c", "n", "p_value"]


def mcnemar_picks(picks: pd.DataFrame, predictions: Callable | None, scoring: str) -> pd.DataFrame:
    """Exact McNemar per disagreeing study, on the two picks' test predictions.

    Only the two pick trials are read per study, so the cost stays two artifact reads.
    """
    rows = []
    if predictions is None:
        return pd.DataFrame(columns=MCNEMAR_COLUMNS)
    for r in picks[picks["disagree"]].itertuples(index=False):
        a, b = predictions(r.study, r.loss_pick), predictions(r.study, r.accuracy_pick)
        if not a or not b or "y_true" not in a or "y_true" not in b:
            continue
        la = _labels(a, "best_val_loss", scoring)
        lb = _labels(b, "best_val_accuracy", scoring)
        if la is None or lb is None or not np.array_equal(a["y_true"], b["y_true"]):
            continue
        counts = mcnemar_counts(a["y_true"], la, lb)
        if counts is not None:
            rows.append({"study": r.study, **counts})
    return pd.DataFrame(rows, columns=MCNEMAR_COLUMNS)


def _labels(npz: dict, key: str, scoring: str) -> np.ndarray | None:
    # Under final scoring both picks are judged at their last epoch.
    if scoring == "final" and "per_epoch" in npz and len(npz["per_epoch"]):
        return np.asarray(npz["per_epoch"])[-1]
    return np.asarray(npz[key]) if key in npz else None


def mcnemar_summary(tests: pd.DataFrame) -> dict:
    """Trial level: one test per disagreeing study (loss pick vs accuracy pick)."""
    p = tests["p_value"]
    return {"studies_tested": int(len(tests)),
            "significant_at_0.05": int((p < 0.05).sum()),
            "median_p": float(p.median()) if len(p) else math.nan,
            "accuracy_pick_better": int((tests["c"] > tests["b"]).sum()),
            "loss_pick_better": int((tests["b"] > tests["c"]).sum()),
            "discordant_loss_pick_only_right": int(tests["b"].sum()),
            "discordant_accuracy_pick_only_right": int(tests["c"].sum())}


# ------------------------------------------------------------------ epoch level

EPOCH_MCNEMAR_COLUMNS = ["study", "trial", "loss_epoch", "accuracy_epoch", "b", "c", "n", "p_value"]


def mcnemar_epoch_rows(ep: pd.DataFrame, arrays: dict) -> pd.DataFrame:
    """Exact McNemar per disagreeing trial: its test predictions at the epoch of minimal
    loss against those at the epoch of maximal accuracy, both rows of `per_epoch`.

    `arrays` maps (study, trial) to the trial's `test_predictions.npz` contents (or None).
    Pure: no I/O, so it is tested on hand-made arrays.
    """
    rows = []
    for r in ep[ep["disagree"]].itertuples(index=False):
        npz = arrays.get((r.study, r.trial))
        if not npz or "per_epoch" not in npz or "y_true" not in npz:
            continue
        per_epoch = np.asarray(npz["per_epoch"])
        le, ae = int(r.loss_epoch), int(r.accuracy_epoch)
        if per_epoch.ndim != 2 or max(le, ae) >= len(per_epoch) or min(le, ae) < 0:
            continue
        counts = mcnemar_counts(npz["y_true"], per_epoch[le], per_epoch[ae])
        if counts is not None:
            rows.append({"study": r.study, "trial": r.trial, "loss_epoch": le,
                         "accuracy_epoch": ae, **counts})
    return pd.DataFrame(rows, columns=EPOCH_MCNEMAR_COLUMNS)


def mcnemar_epochs(ep: pd.DataFrame, predictions: Callable | None) -> pd.DataFrame:
    """Read `test_predictions.npz` of each disagreeing trial (one read per trial, in
    parallel for remote stores) and test its two epochs."""
    if predictions is None or ep is None or not ep["disagree"].any():
        return pd.DataFrame(columns=EPOCH_MCNEMAR_COLUMNS)
    keys = list(dict.fromkeys(zip(ep.loc[ep["disagree"], "study"], ep.loc[ep["disagree"], "trial"])))
    with ThreadPoolExecutor(max_workers=8) as pool:
        loaded = list(pool.map(lambda k: predictions(*k), keys))
    return mcnemar_epoch_rows(ep, dict(zip(keys, loaded)))


def mcnemar_epoch_summary(tests: pd.DataFrame, disagreeing_trials: int) -> dict:
    """Epoch level: how many disagreeing trials show a significant difference between their
    two epochs on the test set, and the discordant images pooled over the tested trials.

    No pooled p-value is given: the trials share one test set and cluster in studies, so
    summed counts are not independent pairs.
    """
    p = tests["p_value"]
    n, sig = int(len(tests)), int((p < 0.05).sum())
    b, c = int(tests["b"].sum()), int(tests["c"].sum())
    return {"disagreeing_trials": int(disagreeing_trials), "trials_tested": n,
            "significant_at_0.05": sig,
            "share_significant": sig / n if n else math.nan,
            "share_significant_ci95_wilson": list(wilson(sig, n)),
            "median_p": float(p.median()) if n else math.nan,
            "accuracy_epoch_better": int((tests["c"] > tests["b"]).sum()),
            "loss_epoch_better": int((tests["b"] > tests["c"]).sum()),
            "discordant_loss_epoch_only_right": b,
            "discordant_accuracy_epoch_only_right": c,
            "share_of_discordant_favouring_accuracy_epoch": c / (b + c) if b + c else math.nan,
            "test_images_per_trial": int(tests["n"].median()) if n else 0}
