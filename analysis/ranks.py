"""Rank agreement between the two rules across the trials of each study.

Correlating −loss with accuracy makes +1 mean "both rules order trials identically"; a
low τ says the disagreement is not just about the top trial.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau, spearmanr


def rank_agreement(scored: pd.DataFrame, loss: str = "val_loss") -> pd.DataFrame:
    """Per study: `n`, Kendall `tau_b` and Spearman `rho` between −loss and accuracy.

    A study whose scores are constant in either metric has no ranking; it gets NaN.
    """
    rows = []
    for (experiment, study), g in scored.groupby(["experiment", "study"], sort=False):
        g = g[[loss, "val_accuracy"]].dropna()
        tau = rho = math.nan
        if len(g) >= 2 and g[loss].nunique() > 1 and g["val_accuracy"].nunique() > 1:
            tau = float(kendalltau(-g[loss], g["val_accuracy"], variant="b").statistic)
            rho = float(spearmanr(-g[loss], g["val_accuracy"]).statistic)
        rows.append({"experiment": experiment, "study": study, "n": len(g),
                     "tau_b": tau, "rho": rho})
    return pd.DataFrame(rows, columns=["experiment", "study", "n", "tau_b", "rho"])


def distribution(values: pd.Series) -> dict:
    """Median and quartiles over studies, NaN studies left out but counted."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "studies": 0}
    q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "studies": int(len(v))}
