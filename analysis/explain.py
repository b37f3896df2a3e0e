"""Explanations: relate disagreement to calibration, overfitting, imbalance and hyperparameters.

Two views, each with CIs: grouped rates (Wilson) per feature bin, which need no model, and
one logistic regression of epoch-level disagreement on standardised features, with
standard errors clustered by study because trials of a study are not independent.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from analysis.intervals import wilson

# The usual rule for a stable logistic fit: ≥ 10 of the rarer outcome per feature.
EVENTS_PER_FEATURE = 10
# Cluster-robust standard errors are too small with few clusters; below this, no model.
MIN_CLUSTERS = 20

# Features the issue names as the seeds' causes, looked up on the scored trial table.
CAUSES = {"val_ece_at_val_accuracy": "calibration: val_ece at the accuracy-best epoch",
          "val_confidence_at_val_accuracy": "calibration: val_confidence at the accuracy-best epoch",
          "overfit_gap": "overfitting: train − validation accuracy at the last epoch",
          "class_imbalance": "data.class_imbalance (n_max/n_min)"}


def features(scored: pd.DataFrame, hyperparams: list[str], explanatory: list[str]) -> dict[str, str]:
    """Candidate explanatory columns present and varying, with a description each."""
    out = {c: d for c, d in CAUSES.items() if c in scored}
    out.update({c: f"hyperparameter {c[3:]}" for c in hyperparams})
    out.update({c: f"column {c[2:]}" for c in explanatory})
    return {c: d for c, d in out.items() if scored[c].nunique(dropna=True) > 1}


def grouped_rates(units: pd.DataFrame, feature: str, outcome: str = "disagree",
                  bins: int = 3) -> pd.DataFrame:
    """Disagreement rate per value (categorical or few values) or per quantile bin."""
    x = units[feature]
    if pd.api.types.is_numeric_dtype(x) and x.nunique() > 4:
        codes, edges = pd.qcut(x, bins, labels=False, retbins=True, duplicates="drop")
        # Readable, sortable bin names instead of pandas' float-noise interval labels.
        names = {i: f"{i + 1}: {edges[i]:.3g} to {edges[i + 1]:.3g}" for i in range(len(edges) - 1)}
        groups = codes.map(names)
    else:
        groups = x.astype(str)
    rows = []
    for value, g in units.groupby(groups, sort=True, observed=True):
        k, n = int(g[outcome].sum()), len(g)
        lo, hi = wilson(k, n)
        rows.append({"feature": feature, "group": str(value), "n": n, "disagreements": k,
                     "rate": k / n if n else math.nan, "ci95_wilson": [lo, hi]})
    return pd.DataFrame(rows)


def _design_column(x: pd.Series) -> pd.Series:
    x = pd.to_numeric(x, errors="coerce")
    # Rates and penalties are searched on a log scale; compare them on that scale too.
    if x.min() > 0 and x.max() / x.min() >= 10:
        x = np.log10(x)
    return (x - x.mean()) / x.std()


def logistic(units: pd.DataFrame, columns: list[str], outcome: str = "disagree",
             cluster: str = "study") -> dict:
    """Odds ratio per standard deviation of each numeric feature, with 95% CI and p.

    Returns `{"error": ...}` instead of raising when the data cannot support a model: fewer
    than `EVENTS_PER_FEATURE` of the rarer outcome per feature, fewer than `MIN_CLUSTERS`
    studies for clustered standard errors, or a failed fit (perfect separation).
    """
    import statsmodels.api as sm

    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(units[c])]
    data = units[[outcome, cluster, *numeric]].dropna()
    data = data.loc[:, [c for c in data.columns if c in (outcome, cluster) or data[c].nunique() > 1]]
    numeric = [c for c in numeric if c in data]
    events = int(data[outcome].sum()) if len(data) else 0
    rarer = min(events, len(data) - events)
    n_clusters = int(data[cluster].nunique())
    if not numeric:
        return {"error": "no numeric feature varies", "n": int(len(data))}
    if rarer < EVENTS_PER_FEATURE * len(numeric):
        return {"error": f"too few events for a model: {events} disagreements and "
                         f"{len(data) - events} agreements in {len(data)} units; {len(numeric)} "
                         f"features need at least {EVENTS_PER_FEATURE * len(numeric)} of the rarer "
                         f"outcome ({EVENTS_PER_FEATURE} per feature)", "n": int(len(data))}
    if n_clusters < MIN_CLUSTERS:
        return {"error": f"too few studies for a model: {n_clusters} clusters; standard errors "
                         f"clustered by study need at least {MIN_CLUSTERS}, and model-based ones "
                         "would ignore that trials of a study are not independent",
                "n": int(len(data))}
    X = sm.add_constant(pd.DataFrame({c: _design_column(data[c]) for c in numeric}))
    y = data[outcome].astype(float)
    groups = pd.factorize(data[cluster])[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = sm.Logit(y, X)
            fit = model.fit(disp=0, maxiter=200, cov_type="cluster", cov_kwds={"groups": groups})
    except Exception as exc:  # noqa: BLE001 - separation/singular designs are reported
        return {"error": f"logistic regression failed: {type(exc).__name__}", "n": int(len(data))}
    ci = fit.conf_int()
    terms = {c: {"odds_ratio_per_sd": float(np.exp(fit.params[c])),
                 "ci95": [float(np.exp(ci.loc[c, 0])), float(np.exp(ci.loc[c, 1]))],
                 "p_value": float(fit.pvalues[c])} for c in numeric}
    return {"n": int(len(data)), "events": events, "terms": terms,
            "clusters": n_clusters, "standard_errors": "clustered by study"}
