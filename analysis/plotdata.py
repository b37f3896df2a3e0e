"""Info for the figures: pure functions that turn analysis tables into exactly what each
figure draws, so what a figure shows is unit-testable without drawing it."""

from __future__ import annotations

import math
from typing import NamedTuple

import pandas as pd

from analysis.calibration_claims import DOSE_LEVELS
from analysis.sources import KEY

ROLE_ORDER = ["other", "loss pick", "accuracy pick", "both picks"]


def scatter_table(scored: pd.DataFrame, picks: pd.DataFrame, loss: str = "val_loss") -> pd.DataFrame:
    """Every trial's two scores, labelled with the pick role it plays in its study."""
    t = scored[["study", "trial", loss, "val_accuracy"]].copy()
    roles = picks.set_index("study")
    is_loss = t["trial"].to_numpy() == roles.loc[t["study"], "loss_pick"].to_numpy()
    is_acc = t["trial"].to_numpy() == roles.loc[t["study"], "accuracy_pick"].to_numpy()
    t["role"] = "other"
    t.loc[is_loss, "role"] = "loss pick"
    t.loc[is_acc, "role"] = "accuracy pick"
    t.loc[is_loss & is_acc, "role"] = "both picks"
    # Studies that disagree first: they are the ones worth a panel.
    order = picks.sort_values(["agree", "study"])["study"].tolist()
    t["study"] = pd.Categorical(t["study"], categories=order, ordered=True)
    # Picks sort last so they are drawn on top of the other trials.
    rank = t["role"].map(ROLE_ORDER.index)
    return t.assign(_rank=rank).sort_values(["study", "_rank"]).drop(columns="_rank")


def curves_table(epochs: pd.DataFrame, picks: pd.DataFrame, max_studies: int = 4) -> pd.DataFrame:
    """Long table of val_loss and val_accuracy curves of both picks in up to `max_studies`
    studies (disagreeing ones first), with each curve's optimal epochs."""
    chosen = picks.sort_values(["agree", "study"]).head(max_studies)
    rows = []
    for r in chosen.itertuples(index=False):
        for role, trial in (("loss pick", r.loss_pick), ("accuracy pick", r.accuracy_pick)):
            if role == "accuracy pick" and r.agree:
                continue
            e = epochs[(epochs["study"] == r.study) & (epochs["trial"] == trial)].sort_values("epoch")
            long = e.melt(id_vars=[*KEY, "epoch"], value_vars=["val_loss", "val_accuracy"],
                          var_name="metric")
            long["role"] = role
            long["panel"] = (f"{r.study} · loss pick #{r.loss_pick}"
                             + ("" if r.agree else f", accuracy pick #{r.accuracy_pick}"))
            long["min_loss_epoch"] = int(e.loc[e["val_loss"].idxmin(), "epoch"])
            long["max_accuracy_epoch"] = int(e.loc[e["val_accuracy"].idxmax(), "epoch"])
            rows.append(long)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def rates_table(summary: dict) -> pd.DataFrame:
    """Rate and CI per level, for all experiments pooled and for each one: Wilson at trial
    level (one independent unit per study), the cluster bootstrap over studies at epoch
    level (trials of a study are not independent); NaN bounds where it has no interval."""
    rows = []
    blocks = {"all": summary, **summary.get("by_experiment", {})}
    if len(blocks) == 2:  # one experiment: its block repeats the pooled one
        blocks.pop(next(k for k in blocks if k != "all"))
    for name, block in blocks.items():
        for level in ("trial_level", "epoch_level"):
            if level in block:
                b = block[level]
                interval = "ci95_wilson" if level == "trial_level" else "ci95_bootstrap"
                lo, hi = (math.nan if v is None else v for v in b[interval])
                rows.append({"experiment": name, "level": level.replace("_", " "), "rate": b["rate"],
                             "lo": lo, "hi": hi, "interval": "Wilson" if level == "trial_level"
                             else "cluster bootstrap", "n": b.get("studies", b.get("trials"))})
    return pd.DataFrame(rows)


def axis_table(scored: pd.DataFrame, picks: pd.DataFrame, hp: str) -> pd.DataFrame:
    """One varied hyperparameter against the trial's validation accuracy, with pick roles."""
    t = scatter_table(scored, picks)
    t = t.merge(scored[[*KEY, hp]], on=KEY)
    return t.rename(columns={hp: "value"})


def ranks_table(ranks: pd.DataFrame) -> pd.DataFrame:
    long = ranks.melt(id_vars=["experiment", "study"], value_vars=["tau_b", "rho"],
                      var_name="statistic").dropna()
    long["statistic"] = long["statistic"].map({"tau_b": "Kendall τ-b", "rho": "Spearman ρ"})
    return long


def calibration_table(picks: pd.DataFrame) -> pd.DataFrame:
    """ECE of each pick per study, long form, for a paired plot."""
    if "val_ece_loss_pick" not in picks:
        return pd.DataFrame()
    long = picks.melt(id_vars=["study", "agree"],
                      value_vars=["val_ece_loss_pick", "val_ece_accuracy_pick"],
                      var_name="pick", value_name="val_ece").dropna()
    long["pick"] = long["pick"].map({"val_ece_loss_pick": "loss pick",
                                     "val_ece_accuracy_pick": "accuracy pick"})
    return long


def pick_gaps_table(scored: pd.DataFrame, picks: pd.DataFrame, loss: str = "val_loss") -> pd.DataFrame:
    """One row per study: how much validation accuracy the loss pick gives up against the
    study's best, and how much loss the accuracy pick gives up against the study's minimum.
    Agreeing studies sit at (0, 0); every study is one point, so the figure stays one panel
    however many studies there are."""
    by_trial = scored.set_index(["study", "trial"])
    best = scored.groupby("study").agg(best_accuracy=("val_accuracy", "max"), best_loss=(loss, "min"))
    loss_pick = by_trial.loc[list(zip(picks["study"], picks["loss_pick"]))]
    accuracy_pick = by_trial.loc[list(zip(picks["study"], picks["accuracy_pick"]))]
    reference = best.loc[picks["study"]]
    return pd.DataFrame({
        "study": picks["study"].to_numpy(),
        "accuracy_given_up": reference["best_accuracy"].to_numpy() - loss_pick["val_accuracy"].to_numpy(),
        "loss_given_up": accuracy_pick[loss].to_numpy() - reference["best_loss"].to_numpy(),
        "agree": picks["agree"].to_numpy(bool)})


class AxisInfo(NamedTuple):
    """What one Playbook axis plot shows, decided before drawing."""

    hp: str                                   # the column, `hp.<name>`
    name: str                                 # the knob's name as the search space has it
    table: pd.DataFrame                       # axis_table: value, val_accuracy, role per trial
    log: bool                                 # log x axis: the check's range, else ≥ 10x positive spread
    range_source: str                         # "searched" or "explored" (the check's range)
    bounds: tuple[float, float] | None        # ends of a single searched interval, drawn dashed
    at_edge: bool                             # most picks in the range's outer 10%: title in red
    edge_note: str                            # the caption's clause about the edge check


def _merged_checks(boundary_checks: list[dict]) -> dict[str, dict]:
    """One check per knob (a check per pick rule comes in): at the edge for either rule."""
    merged: dict[str, dict] = {}
    for check in boundary_checks:
        one = merged.setdefault(check["param"], {**check, "at_edge": False})
        one["at_edge"] = one["at_edge"] or check["at_edge"]
    return merged


def axis_infos(scored: pd.DataFrame, picks: pd.DataFrame, hyperparams: list[str],
               boundary_checks: list[dict]) -> list[AxisInfo]:
    """An AxisInfo per varied hyperparameter, in the order given."""
    checks = _merged_checks(boundary_checks)
    infos = []
    for hp in hyperparams:
        table = axis_table(scored, picks, hp)
        name = hp[3:] if hp.startswith("hp.") else hp
        check = checks.get(name)
        if check is None:
            x = pd.to_numeric(table["value"], errors="coerce")
            infos.append(AxisInfo(hp, name, table, bool(x.notna().all() and x.min() > 0 and x.max() / x.min() >= 10),
                                  "explored", None, False,
                                  "no edge check (categorical, or fewer than three values)"))
            continue
        ranges, source = check["ranges"], check["range_source"]
        bounds = ((ranges[0]["low"], ranges[0]["high"])
                  if source == "searched" and len(ranges) == 1 and ranges[0]["kind"] == "interval" else None)
        infos.append(AxisInfo(hp, name, table, check["log_scale"], source, bounds, bool(check["at_edge"]),
                              f"the edge check uses the {source} range {check['range']}; a red title "
                              "means most picks sit in its outer 10% (first or last choice), so the "
                              "range should widen"))
    return infos


def scatter_panels(table: pd.DataFrame, panels: int) -> list[tuple[str, pd.DataFrame]]:
    """The first `panels` studies of a scatter_table (disagreeing first), each with its trials."""
    studies = list(table["study"].cat.categories)[:panels]
    grouped = dict(tuple(table[table["study"].isin(studies)].groupby("study", observed=True)))
    return [(str(study), grouped[study]) for study in studies if study in grouped]


class FigureTables(NamedTuple):
    """Every figure's table, None for a figure the data does not support (not drawn)."""

    scatter: pd.DataFrame                     # always: a panel per study, the first few
    n_studies: int
    pick_gaps: pd.DataFrame | None            # only with more studies than scatter panels
    curves: pd.DataFrame | None               # needs epochs
    rates: pd.DataFrame
    epoch_gap: pd.DataFrame | None            # needs epoch-level picks
    size: pd.DataFrame | None                 # the k-curve, when any study has k >= 2 trials
    axes: list[AxisInfo]
    ranks: pd.DataFrame | None
    calibration: pd.DataFrame | None          # needs val_ece at the picks


def _or_none(table: pd.DataFrame | None) -> pd.DataFrame | None:
    return None if table is None or table.empty else table


def figure_tables(analysis, max_panels: int) -> FigureTables:
    """What every figure of `analysis` (an `analysis.summary.Analysis`) shows."""
    scatter = scatter_table(analysis.scored, analysis.trial)
    n_studies = len(scatter["study"].cat.categories)
    # One point per study instead of one panel per study (2,000 panels made 25 MB).
    gaps = pick_gaps_table(analysis.scored, analysis.trial) if n_studies > max_panels else None
    curves = curves_table(analysis.epochs, analysis.trial) if analysis.epochs is not None else None
    return FigureTables(
        scatter=scatter, n_studies=n_studies, pick_gaps=gaps, curves=_or_none(curves),
        rates=rates_table(analysis.summary), epoch_gap=analysis.epoch, size=_or_none(analysis.size),
        axes=axis_infos(analysis.scored, analysis.trial, analysis.hyperparams,
                        analysis.summary.get("boundary_checks", [])),
        ranks=_or_none(ranks_table(analysis.ranks)), calibration=_or_none(calibration_shown(analysis.trial)))


def calibration_shown(picks: pd.DataFrame) -> pd.DataFrame:
    """The calibration figure's pairs: the disagreeing studies' when any study disagrees
    (agreeing ones join a point to itself), else all."""
    long = calibration_table(picks)
    return long[~long["agree"]] if not long.empty and (~long["agree"]).any() else long


# ------------------------------------------------------------------ paired sweeps (issue 11)

MIN_DOSE_LEVELS = DOSE_LEVELS  # a factor with this many levels (the reference included) gets a dose-response plot
FLOOR_LABEL = "A/A floor (replicate − reference)"


class ForestInfo(NamedTuple):
    """One outcome's forest plot: every factor's levels on one axis, each factor's A/A floor."""

    outcome: str                              # the summary's outcome name
    label: str                                # what the x axis measures
    scale: float                              # 100 for shares (drawn in pp), else 1
    table: pd.DataFrame                       # factor, row, loss, difference, lo, hi, kind, clear, position


class DoseInfo(NamedTuple):
    """One factor's dose response: per level, means over pairs with their intervals."""

    factor: str
    levels: list[str]                         # in order; position i on the x axis is levels[i]
    table: pd.DataFrame                       # position, loss, metric, mean, lo, hi


def _interval(pair) -> tuple[float, float]:
    return tuple(math.nan if v is None else float(v) for v in pair)


def sweep_forests(sweep: dict) -> list[ForestInfo]:
    """A ForestInfo per outcome that some comparison has, in the analysis' outcome order."""
    from analysis.sweeps import OUTCOMES

    infos = []
    for outcome in OUTCOMES:
        rows = [c for c in sweep["comparisons"] if c["outcome"] == outcome.name]
        if not rows:
            continue
        lines = []
        for c in rows:
            if c["floor"] is not None:  # once per factor and loss: the same floor beside every level
                lines.append(_forest_line(c["factor"], f"{c['factor']}: {FLOOR_LABEL}", c["loss"],
                                          c["floor"], "floor", False))
            lines.append(_forest_line(c["factor"], f"{c['factor']} = {c['level']} (vs {c['reference_level']})",
                                      c["loss"], c["effect"], "effect", c["clear"]))
        table = pd.DataFrame(lines).drop_duplicates(["row", "loss"]).reset_index(drop=True)
        # Rows grouped by factor (first-seen order), each factor's floor above its levels.
        factors = list(dict.fromkeys(table["factor"]))
        ordered = table.assign(_f=table["factor"].map(factors.index), _k=table["kind"] != "floor")
        ordered = ordered.sort_values(["_f", "_k"], kind="stable")
        table["position"] = table["row"].map({row: i for i, row in enumerate(dict.fromkeys(ordered["row"]))})
        infos.append(ForestInfo(outcome.name, outcome.label, 100.0 if outcome.unit == "share" else 1.0, table))
    return infos


def _forest_line(factor: str, row: str, loss: str, block: dict, kind: str, clear: bool) -> dict:
    lo, hi = _interval(block["ci95"])
    value = block["difference"]
    return {"factor": factor, "row": row, "loss": loss,
            "difference": math.nan if value is None else float(value),
            "lo": lo, "hi": hi, "kind": kind, "clear": clear, "pairs": block["pairs"]}


def sweep_doses(sweep: dict, min_levels: int = MIN_DOSE_LEVELS) -> list[DoseInfo]:
    """A DoseInfo per factor with at least `min_levels` levels (the reference included)."""
    infos = []
    for factor in sweep["factors"]:
        levels = [factor["reference_level"], *factor["levels"]]
        if len(levels) < min_levels:
            continue
        lines = [{"position": row["position"], "loss": row["loss"], "metric": metric,
                  "mean": row[metric]["mean"], **dict(zip(("lo", "hi"), _interval(row[metric]["ci95"])))}
                 for row in sweep["levels"] if row["factor"] == factor["factor"]
                 for metric in row if isinstance(row[metric], dict)]
        infos.append(DoseInfo(factor["factor"], levels, pd.DataFrame(lines)))
    return infos
