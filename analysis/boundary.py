"""The boundary check: flags a picked value at the edge of its range (the Tuning
Playbook's sign that the search space should be widened), and blanks inactive conditional
knobs so that their logged defaults never count as picks at an edge.

The range is the *searched* one when the study run logged `space/effective_space.json`
(the search space's `params`: type, role, low, high, log, choices, ...), and the *explored*
one (min to max over the analysed trials) otherwise, e.g. in CSV mode. Every check says
which range it used.
"""

from __future__ import annotations

import math
from numbers import Real

import numpy as np
import pandas as pd

EDGE_FRACTION = 0.1


def searched_range(spec: dict | None) -> dict | None:
    """The checkable range of one knob of the searched space, or None when an edge means
    nothing: fixed knobs, booleans, unordered (non-numeric) choices, and ranges with fewer
    than three values (where every value is an edge).

    Numeric knobs give `{"kind": "interval", "low", "high", "log"}`; categorical knobs whose
    choices are all numbers give `{"kind": "choices", "choices": sorted}`.
    """
    if not isinstance(spec, dict) or spec.get("role") == "fixed":
        return None
    kind = spec.get("type")
    if kind in ("int", "float"):
        low, high = spec.get("low"), spec.get("high")
        if not _number(low) or not _number(high) or not high > low:
            return None
        if kind == "int" and high - low < 2:
            return None
        log = bool(spec.get("log")) and low > 0
        return {"kind": "interval", "low": float(low), "high": float(high), "log": log}
    if kind == "categorical":
        choices = spec.get("choices") or []
        if not all(_number(c) for c in choices):
            return None
        ordered = sorted({float(c) for c in choices})
        return {"kind": "choices", "choices": ordered} if len(ordered) >= 3 else None
    return None


def _same_value(logged, allowed) -> bool:
    """A logged param (a string from MLflow, or its parsed number) against a YAML value."""
    if isinstance(allowed, bool) or isinstance(logged, bool):
        return str(logged).strip().lower() == str(allowed).lower()
    if _number(allowed):
        try:
            return math.isclose(float(logged), float(allowed))
        except (TypeError, ValueError):
            return False
    return str(logged) == str(allowed)


def blank_inactive(trials: pd.DataFrame, spaces: dict[str, dict]) -> pd.DataFrame:
    """NaN where a conditional knob was inactive in a trial (e.g. `l2` when `use_l2` is off).

    The search logs an inactive knob with its default so that every run has every param;
    read as data, that default (an `l2` of 0, a `momentum` of 0 under adam) would be a fake
    sample at the edge of the range, in the boundary check, the axis plots and the
    explanations alike. Studies without a searched space are left as they are.
    """
    out = trials.copy()
    for study, params in spaces.items():
        rows = out.index[out["study"] == study]
        for name, spec in params.items():
            condition = spec.get("condition") if isinstance(spec, dict) else None
            column = f"hp.{name}"
            if not condition or column not in out or rows.empty:
                continue
            active = pd.Series(True, index=rows)
            for parent, allowed in condition.items():
                allowed = allowed if isinstance(allowed, list) else [allowed]
                parent_values = out.loc[rows, f"hp.{parent}"] if f"hp.{parent}" in out else pd.Series(None, index=rows)
                active &= parent_values.map(lambda v: any(_same_value(v, a) for a in allowed))
            out.loc[active.index[~active], column] = np.nan
    return out


def explored_range(values: pd.Series) -> dict | None:
    """The fallback: min to max of the values the trials took, log scale when it spans
    ≥ 10× on positive values; None with fewer than three distinct values."""
    x = pd.to_numeric(values, errors="coerce").dropna()
    if x.nunique() < 3:
        return None
    lo, hi = float(x.min()), float(x.max())
    return {"kind": "interval", "low": lo, "high": hi, "log": bool(lo > 0 and hi / lo >= 10)}


def position(value: float, rng: dict) -> float:
    """Where `value` sits in `rng`, from 0 (low end) to 1 (high end); log scale when the
    range is logarithmic; for choices, the choice's index over the last index."""
    if rng["kind"] == "choices":
        choices = np.asarray(rng["choices"])
        hit = np.flatnonzero(np.isclose(choices, value))
        if not len(hit):  # a value outside the list: place it by interpolation
            return float(np.interp(value, choices, np.linspace(0, 1, len(choices)),
                                   left=0.0, right=1.0))
        return float(hit[0] / (len(choices) - 1))
    lo, hi, v = rng["low"], rng["high"], float(value)
    if rng["log"]:
        if v <= 0:
            return 0.0
        lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
    return (v - lo) / (hi - lo)


def at_edge(value: float, rng: dict, fraction: float = EDGE_FRACTION) -> bool:
    """In the outer `fraction` of the range at either end (for choices: the first or last
    choice)."""
    pos = position(value, rng)
    if rng["kind"] == "choices":
        return bool(pos <= 0 or pos >= 1)
    return bool(pos <= fraction or pos >= 1 - fraction)


def describe(rng: dict) -> str:
    if rng["kind"] == "choices":
        return "{" + ", ".join(f"{c:g}" for c in rng["choices"]) + "}"
    return f"[{rng['low']:g}, {rng['high']:g}]" + (" (log scale)" if rng["log"] else "")


def boundary_checks(scored: pd.DataFrame, picks: pd.DataFrame, hyperparams: list[str],
                    spaces: dict[str, dict] | None = None) -> list[dict]:
    """Per numeric hyperparameter and pick rule: how many picks sit at the edge of the range
    (see `at_edge`); `at_edge` is True when more than half of them do.

    `spaces` maps a study to its searched `params`. A study with a searched space is checked
    against it (a knob that is fixed or has no meaningful edge there is not checked); a study
    without one falls back to the range all analysed trials explored.
    """
    spaces = spaces or {}
    out = []
    for hp in hyperparams:
        name = hp[3:] if hp.startswith("hp.") else hp
        explored = explored_range(scored[hp])
        for rule in ("loss_pick", "accuracy_pick"):
            chosen = picks[["study", rule]].rename(columns={rule: "trial"}).merge(
                scored[["study", "trial", hp]], on=["study", "trial"])
            edges, sources, ranges = [], set(), []
            for study, value in zip(chosen["study"], pd.to_numeric(chosen[hp], errors="coerce")):
                if pd.isna(value):
                    continue  # a categorical knob, or a conditional knob that was inactive
                if study in spaces and name in spaces[study]:
                    rng, source = searched_range(spaces[study][name]), "searched"
                else:
                    rng, source = explored, "explored"
                if rng is None:
                    continue
                edges.append(at_edge(value, rng))
                sources.add(source)
                if rng not in ranges:
                    ranges.append(rng)
            if not edges:
                continue
            source = sources.pop() if len(sources) == 1 else "searched where logged, else explored"
            out.append({"param": name, "pick": rule, "range_source": source,
                        "range": describe(ranges[0]) if len(ranges) == 1
                        else "; ".join(describe(r) for r in ranges),
                        "ranges": ranges,
                        "explored_range": [explored["low"], explored["high"]] if explored else None,
                        "log_scale": bool(ranges[0].get("log", False)),
                        "edge_fraction": EDGE_FRACTION,
                        "picks_at_edge": int(sum(edges)), "picks": len(edges),
                        "at_edge": bool(np.mean(edges) > 0.5)})
    return out


def _number(x) -> bool:
    return isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(float(x))
