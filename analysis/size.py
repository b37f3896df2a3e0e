"""Study size: how P(disagree) grows with the number of trials k in a study.

Each study is subsampled without replacement to k of its trials many times; the pick
rules are applied to each subset, so the curve uses the same tie rules as the rate.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def disagreement_vs_k(scored: pd.DataFrame, loss: str = "val_loss", *, n_boot: int = 200,
                      seed: int = 0, max_points: int = 25) -> pd.DataFrame:
    """Columns `k`, `rate` (mean over studies with ≥ k trials), `studies`."""
    rng = np.random.default_rng(seed)
    per_study: dict[int, list[float]] = {}
    usable = scored[scored[loss].notna()]
    sizes = usable.groupby("study").size()
    if sizes.empty or sizes.max() < 2:
        return pd.DataFrame(columns=["k", "rate", "studies"])
    # One grid for all studies, so each point averages the same k across studies.
    grid = _grid(int(sizes.max()), max_points)
    for _, g in usable.groupby("study", sort=False):
        g = g.sort_values("order")
        n = len(g)
        if n < 2:
            continue
        # A unique rank that encodes "lowest loss, then first in order" makes the loss pick
        # of any subset its minimum rank.
        loss_rank = np.empty(n, int)
        loss_rank[np.lexsort((np.arange(n), g[loss].to_numpy()))] = np.arange(n)
        acc = g["val_accuracy"].to_numpy()
        for k in (k for k in grid if k <= n):
            idx = rng.random((n_boot, n)).argsort(axis=1)[:, :k]
            choice = idx[np.arange(n_boot), loss_rank[idx].argmin(axis=1)]
            disagree = acc[choice] < acc[idx].max(axis=1)
            per_study.setdefault(k, []).append(float(disagree.mean()))
    rows = [{"k": k, "rate": float(np.mean(v)), "studies": len(v)} for k, v in sorted(per_study.items())]
    return pd.DataFrame(rows, columns=["k", "rate", "studies"])


def _grid(n: int, max_points: int) -> list[int]:
    return sorted(set(np.linspace(2, n, min(max_points, n - 1)).round().astype(int).tolist()))
