"""Several experiments side by side, with a test for a difference in their rates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, fisher_exact


def compare_rates(units: pd.DataFrame, by: str = "experiment", outcome: str = "disagree") -> dict:
    """Fisher's exact test for two groups, a chi-square test of homogeneity for more."""
    counts = units.groupby(by)[outcome].agg(["sum", "size"])
    if len(counts) < 2:
        return {}
    table = np.column_stack([counts["sum"], counts["size"] - counts["sum"]]).astype(int)
    if len(counts) == 2:
        test, p = "fisher_exact", float(fisher_exact(table).pvalue)
    elif (table.sum(axis=0) == 0).any():
        test, p = "chi2_contingency", math.nan
    else:
        test, p = "chi2_contingency", float(chi2_contingency(table).pvalue)
    return {"test": test, "p_value": p, "groups": list(map(str, counts.index)),
            "disagreements": counts["sum"].astype(int).tolist(), "units": counts["size"].astype(int).tolist()}
