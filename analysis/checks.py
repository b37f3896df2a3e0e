"""Value checks on input tables: blank ids, impossible metric values, percent columns and
epochs that are not whole numbers.

Pure functions over one column each, so the CSV loader (and, later, the MLflow loader)
can say exactly which rows it leaves out and why, and the checks are testable alone.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# A column is read as percent when at least this share of its values lies in (1, 100]:
# a stray 1.5 among fractions is an impossible value, a column of 85s is a unit mistake.
PERCENT_SHARE = 0.5


def blank_ids(values: pd.Series) -> pd.Series:
    """True where an id is missing: NaN/None or an empty or whitespace-only string."""
    missing = values.isna()
    as_text = values[~missing].astype(str).str.strip()
    return missing | (as_text == "").reindex(values.index, fill_value=False)


def impossible_accuracy(values: pd.Series) -> pd.Series:
    """True where a (numeric) accuracy lies outside [0, 1]; NaN is not flagged here."""
    return values.notna() & ~values.between(0.0, 1.0)


def impossible_loss(values: pd.Series) -> pd.Series:
    """True where a (numeric) loss is infinite or negative: a cross-entropy is >= 0 and finite.
    NaN is not flagged here."""
    return values.notna() & (~np.isfinite(values.astype(float)) | (values < 0))


def looks_like_percent(values: pd.Series) -> bool:
    """Every finite value in [0, 100] and most of them above 1: accuracies in percent."""
    finite = values[np.isfinite(values.astype(float))]
    if finite.empty or finite.max() <= 1:
        return False
    return bool(finite.between(0, 100).all() and (finite > 1).mean() >= PERCENT_SHARE)


def not_whole_epochs(values: pd.Series) -> pd.Series:
    """True where an epoch is not a whole number >= 0 (1.7, -1); NaN is not flagged here."""
    v = values.astype(float)
    return values.notna() & ((v != np.floor(v)) | (v < 0) | ~np.isfinite(v))
