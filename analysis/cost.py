"""What the choice of rule costs on held-out data: gain, regret, and McNemar's test."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar

from analysis.intervals import bootstrap_mean


def gain_summary(picks: pd.DataFrame, *, clusters: str | None = None, n_boot: int = 2000,
                 seed: int = 0) -> dict:
    """Mean gain of the accuracy pick over all units (0 where the picks agree) and over
    disagreeing units, each with a paired bootstrap CI (resampling `clusters` if given)."""
    g = picks["gain"]
    cl = picks[clusters] if clusters else None
    dis = picks["disagree"]
    return {"mean": _mean(g), "ci95": list(bootstrap_mean(g, cl, n_boot=n_boot, seed=seed)),
            "mean_when_disagree": _mean(g[dis]),
            "ci95_when_disagree": list(bootstrap_mean(g[dis], cl[dis] if cl is not None else None,
                                                      n_boot=n_boot, seed=seed))}


def regret_summary(picks: pd.DataFrame) -> dict:
    """Mean shortfall of each pick from the study's test-optimal trial."""
    return {"loss_pick": _mean(picks["regret_loss_pick"]),
            "accuracy_pick": _mean(picks["regret_accuracy_pick"]),
            "reference": "best test accuracy of any trial in the study at its scored epochs"}


def _mean(values: pd.Series) -> float:
    v = pd.to_numeric(values, errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def mcnemar_picks(picks: pd.DataFrame, predictions: Callable | None, scoring: str) -> pd.DataFrame:
    """Exact McNemar per disagreeing study, on the two picks' test predictions.

    Only the two pick trials are read per study, so the cost stays two artifact reads.
    """
    rows = []
    if predictions is None:
        return pd.DataFrame(columns=["study", "b", "c", "p_value"])
    for r in picks[picks["disagree"]].itertuples(index=False):
        a, b = predictions(r.study, r.loss_pick), predictions(r.study, r.accuracy_pick)
        if not a or not b:
            continue
        la = _labels(a, "best_val_loss", scoring)
        lb = _labels(b, "best_val_accuracy", scoring)
        if la is None or lb is None or len(la) != len(lb) or len(a["y_true"]) != len(la):
            continue
        right_l, right_a = la == a["y_true"], lb == b["y_true"]
        table = [[int(np.sum(right_l & right_a)), int(np.sum(right_l & ~right_a))],
                 [int(np.sum(~right_l & right_a)), int(np.sum(~right_l & ~right_a))]]
        rows.append({"study": r.study, "b": table[0][1], "c": table[1][0],
                     "p_value": float(mcnemar(table, exact=True).pvalue)})
    return pd.DataFrame(rows, columns=["study", "b", "c", "p_value"])


def _labels(npz: dict, key: str, scoring: str) -> np.ndarray | None:
    # Under final scoring both picks are judged at their last epoch.
    if scoring == "final" and "per_epoch" in npz and len(npz["per_epoch"]):
        return np.asarray(npz["per_epoch"])[-1]
    return np.asarray(npz[key]) if key in npz else None


def mcnemar_summary(tests: pd.DataFrame) -> dict:
    p = tests["p_value"]
    return {"studies_tested": int(len(tests)),
            "significant_at_0.05": int((p < 0.05).sum()),
            "median_p": float(p.median()) if len(p) else math.nan,
            "accuracy_pick_better": int((tests["c"] > tests["b"]).sum())}
