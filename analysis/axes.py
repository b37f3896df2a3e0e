"""Playbook axis plots as data: each varied hyperparameter against the trial scores, and a
boundary check that flags a best value at the edge of the explored range (the Tuning
Playbook's sign that the search space should be widened)."""

from __future__ import annotations

import numpy as np
import pandas as pd

EDGE_FRACTION = 0.1


def boundary_checks(scored: pd.DataFrame, picks: pd.DataFrame, hyperparams: list[str]) -> list[dict]:
    """Per numeric hyperparameter and pick rule: does the picked value sit in the outer
    10% of the range the trials explored (log scale when the range spans ≥ 10×)?

    The searched range itself is not in the contract, so the explored range stands in;
    a value at the explored edge is still a reason to widen the space.
    """
    out = []
    for hp in hyperparams:
        x = pd.to_numeric(scored[hp], errors="coerce")
        if x.notna().sum() < 3 or x.nunique() < 3:
            continue
        lo, hi = float(x.min()), float(x.max())
        log = lo > 0 and hi / lo >= 10
        scale = np.log10 if log else (lambda v: v)
        for rule, col in (("loss_pick", "loss_pick"), ("accuracy_pick", "accuracy_pick")):
            chosen = scored.merge(picks[["study", col]].rename(columns={col: "trial"}),
                                  on=["study", "trial"])[hp]
            chosen = pd.to_numeric(chosen, errors="coerce").dropna()
            if chosen.empty:
                continue
            pos = (scale(chosen) - scale(lo)) / (scale(hi) - scale(lo))
            edge = (pos <= EDGE_FRACTION) | (pos >= 1 - EDGE_FRACTION)
            out.append({"param": hp[3:] if hp.startswith("hp.") else hp, "pick": rule,
                        "explored_range": [lo, hi], "log_scale": bool(log),
                        "picks_at_edge": int(edge.sum()), "picks": int(len(chosen)),
                        "at_edge": bool(edge.mean() > 0.5)})
    return out
