"""Rank agreement between the two rules across the trials of each study.

Correlating −loss with accuracy makes +1 mean "both rules order trials identically"; a
low τ says the disagreement is not just about the top trial.

Both coefficients are computed for every study at once (no per-study scipy call: 10,000
studies took minutes that way). Kendall's τ-b is Σ sign(Δx)·sign(Δy) over pairs divided by
√(pairs untied in x · pairs untied in y), counted on a studies × trials × trials sign
table in chunks; Spearman's ρ is Pearson's r of the within-study average ranks.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

PAIR_CELLS = 4_000_000  # studies × width × width cells per chunk (≈32 MB per float array)
BROADCAST_LIMIT = 2048   # a larger study is counted by scipy's O(n log n) τ-b on its own


def _padded(codes: np.ndarray, x: np.ndarray, y: np.ndarray, sizes: np.ndarray):
    """The values as (studies × width) matrices, NaN past a study's own trials."""
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    width = int(sizes.max())
    slot = np.arange(len(codes)) - np.repeat(starts, sizes)
    xm, ym = np.full((len(sizes), width), np.nan), np.full((len(sizes), width), np.nan)
    xm[codes, slot], ym[codes, slot] = x, y
    return xm, ym


def kendall_tau_b(codes: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """τ-b of x and y within each group; `codes` are 0..G−1 and sorted (groups contiguous).
    NaN where a group has fewer than 2 values or is constant in x or y."""
    sizes = np.bincount(codes)
    out = np.full(len(sizes), np.nan)
    small = sizes <= BROADCAST_LIMIT
    keep = small[codes]
    if keep.any():
        remap = np.cumsum(small) - 1  # codes of the small groups, still contiguous
        xm, ym = _padded(remap[codes[keep]], x[keep], y[keep], sizes[small])
        width = xm.shape[1]
        concordance, untied_x, untied_y = (np.zeros(len(xm)) for _ in range(3))
        step = max(1, PAIR_CELLS // (width * width))
        for a in range(0, len(xm), step):
            # sign(NaN) is NaN: nansum leaves the padding's pairs out of every count.
            sx = np.sign(xm[a:a + step, :, None] - xm[a:a + step, None, :])
            sy = np.sign(ym[a:a + step, :, None] - ym[a:a + step, None, :])
            concordance[a:a + step] = np.nansum(sx * sy, axis=(1, 2))
            untied_x[a:a + step] = np.nansum(np.abs(sx), axis=(1, 2))
            untied_y[a:a + step] = np.nansum(np.abs(sy), axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            tau = concordance / np.sqrt(untied_x * untied_y)
        out[small] = np.where((untied_x > 0) & (untied_y > 0), tau, np.nan)
    for g in np.flatnonzero(~small):
        member = codes == g
        out[g] = _scipy_tau(x[member], y[member])
    return np.clip(out, -1.0, 1.0)


def _scipy_tau(x: np.ndarray, y: np.ndarray) -> float:
    if np.unique(x).size < 2 or np.unique(y).size < 2:
        return math.nan
    return float(kendalltau(x, y, variant="b").statistic)


def spearman_rho(codes: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's ρ within each group (average ranks for ties); NaN where undefined."""
    frame = pd.DataFrame({"g": codes, "x": x, "y": y})
    ranked = frame.groupby("g")[["x", "y"]].rank(method="average")
    rx = ranked["x"] - ranked["x"].groupby(codes).transform("mean")
    ry = ranked["y"] - ranked["y"].groupby(codes).transform("mean")
    sums = pd.DataFrame({"xy": rx * ry, "xx": rx * rx, "yy": ry * ry}).groupby(codes).sum()
    sums = sums.reindex(range(int(codes.max()) + 1 if len(codes) else 0), fill_value=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = sums["xy"].to_numpy() / np.sqrt(sums["xx"].to_numpy() * sums["yy"].to_numpy())
    # A constant column has zero spread in floating point only up to rounding: test exactly.
    defined = (sums["xx"].to_numpy() > 1e-12) & (sums["yy"].to_numpy() > 1e-12)
    return np.clip(np.where(defined, rho, np.nan), -1.0, 1.0)


def rank_agreement(scored: pd.DataFrame, loss: str = "val_loss") -> pd.DataFrame:
    """Per study: `n`, Kendall `tau_b` and Spearman `rho` between −loss and accuracy.

    A study whose scores are constant in either metric has no ranking; it gets NaN.
    """
    columns = ["experiment", "study", "n", "tau_b", "rho"]
    studies = scored[["experiment", "study"]].drop_duplicates().reset_index(drop=True)
    usable = scored[scored[loss].notna() & scored["val_accuracy"].notna()]
    key = pd.MultiIndex.from_frame(studies)
    codes_all = key.get_indexer(pd.MultiIndex.from_frame(usable[["experiment", "study"]]))
    order = np.argsort(codes_all, kind="stable")
    codes = codes_all[order]
    x = -usable[loss].to_numpy(float)[order]
    y = usable["val_accuracy"].to_numpy(float)[order]
    n = np.bincount(codes, minlength=len(studies))
    tau, rho = np.full(len(studies), np.nan), np.full(len(studies), np.nan)
    present = np.flatnonzero(n > 0)
    if len(present):
        dense = np.searchsorted(present, codes)  # only studies with rows, numbered 0..P−1
        tau[present] = kendall_tau_b(dense, x, y)
        rho[present] = spearman_rho(dense, x, y)
    tau[n < 2], rho[n < 2] = np.nan, np.nan
    out = studies.assign(n=n, tau_b=tau, rho=rho)
    return out[columns]


def distribution(values: pd.Series) -> dict:
    """Median and quartiles over studies, NaN studies left out but counted."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return {"median": math.nan, "q25": math.nan, "q75": math.nan, "studies": 0}
    q25, med, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"median": float(med), "q25": float(q25), "q75": float(q75), "studies": int(len(v))}
