"""Hand-made tables with known answers, shared by the unit and CLI tests."""

from __future__ import annotations

import math

import pandas as pd

NAN = math.nan

# study, trial, val_loss, val_accuracy, test_accuracy, state
TRIAL_ROWS = [
    ("A", "t0", 0.5, 0.80, 0.78, "COMPLETE"),
    ("A", "t1", 0.4, 0.90, 0.88, "COMPLETE"),  # A agrees: t1 is best on both
    ("A", "tp", 0.1, 0.85, 0.84, "PRUNED"),    # with --include-pruned, A disagrees
    ("B", "t0", 0.3, 0.85, 0.80, "COMPLETE"),
    ("B", "t1", 0.4, 0.90, 0.86, "COMPLETE"),  # B disagrees, gain 0.06
    ("B", "t2", NAN, 0.99, 0.99, "COMPLETE"),  # NaN loss: excluded, else it would win accuracy
    ("B", "t3", "abc", 0.99, 0.99, "COMPLETE"),  # non-numeric: excluded
    ("C", "t0", 0.3, 0.90, 0.90, "COMPLETE"),
    ("C", "t1", 0.3, 0.90, 0.91, "COMPLETE"),  # ties in both metrics: pick t0, agrees
    ("C", "t2", 0.5, 0.70, 0.70, "COMPLETE"),
    ("D", "t0", 0.3, 0.80, 0.75, "COMPLETE"),  # loss tie, first in file order is the loss pick
    ("D", "t1", 0.3, 0.90, 0.85, "COMPLETE"),  # ... so D disagrees, gain 0.10
    ("E", "t0", 0.5, 0.90, 0.80, "COMPLETE"),
    ("E", "t1", 0.2, 0.90, 0.82, "COMPLETE"),  # accuracy tie containing the loss pick: agrees
    ("F", "t0", 0.2, 0.90, 0.80, "COMPLETE"),  # single-trial study: excluded
    ("G", "t0", 0.1, 0.99, 0.99, "FAIL"),      # FAIL: excluded
]


def trial_table() -> pd.DataFrame:
    return pd.DataFrame(TRIAL_ROWS, columns=["study", "trial", "val_loss", "val_accuracy",
                                             "test_accuracy", "state"])


def epoch_table() -> pd.DataFrame:
    """Per-epoch rows: trial x0 disagrees at epoch level (loss tie at 1 and 2, accuracy
    peaks at 2 and 3 -> loss epoch 1 not among {2, 3}); trial x1 agrees (loss epoch 1 is in
    the accuracy tie {1, 2}). Study S2 is a plain second study."""
    rows = []
    curves = {("S1", "x0"): ([1.0, 0.5, 0.5, 0.7], [0.5, 0.7, 0.8, 0.8], [0.5, 0.6, 0.75, 0.7]),
              ("S1", "x1"): ([1.0, 0.4, 0.6, 0.7], [0.5, 0.8, 0.8, 0.7], [0.5, 0.8, 0.7, 0.6]),
              ("S2", "y0"): ([0.9, 0.6, 0.8, 0.9], [0.6, 0.7, 0.9, 0.7], [0.6, 0.7, 0.8, 0.7]),
              ("S2", "y1"): ([0.9, 0.3, 0.4, 0.5], [0.6, 0.85, 0.8, 0.8], [0.6, 0.8, 0.8, 0.8])}
    for (study, trial), (loss, acc, test) in curves.items():
        for epoch, (l, a, t) in enumerate(zip(loss, acc, test)):
            rows.append({"study": study, "trial": trial, "epoch": epoch, "val_loss": l,
                         "val_accuracy": a, "test_accuracy": t})
    return pd.DataFrame(rows)
