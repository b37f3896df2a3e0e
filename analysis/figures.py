"""Drawing only: each function takes a table from `plotdata` and writes one PNG.

Every figure returns a `Figure` with a one-sentence caption that says what to look for;
the report prints the caption under the image.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are built on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from analysis import plotdata  # noqa: E402

PALETTE = {"other": "#b0b0b0", "loss pick": "#1f77b4", "accuracy pick": "#d62728",
           "both picks": "#7b3294"}
MAX_PANELS = 12
DPI = 100


@dataclass
class Figure:
    file: str
    title: str
    caption: str


def _save(grid_or_fig, out: Path, name: str) -> str:
    fig = getattr(grid_or_fig, "figure", grid_or_fig)
    fig.savefig(out / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return name


def _role_legend(fig, roles: list[str]) -> None:
    """One legend for the whole figure, right of the panels (as seaborn's figure-level plots)."""
    handles = [Line2D([], [], color=PALETTE[role], marker="o", ls="", label=role) for role in roles]
    fig.legend(handles=handles, title="role", loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)


def _scatter_roles(ax, table: pd.DataFrame, x: str, y: str, size: float) -> None:
    """Each role in its colour, picks drawn last (on top): the table is sorted that way."""
    for role, points in table.groupby("role", sort=False):
        ax.scatter(points[x], points[y], s=size, color=PALETTE[role], label=role, edgecolors="white",
                   linewidths=0.5)


def picks_scatter(panels: list[tuple[str, pd.DataFrame]], out: Path, loss: str, name: str) -> str:
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False)
    for ax, (study, table) in zip(axes.flat, panels):
        _scatter_roles(ax, table, loss, "val_accuracy", 45)
        ax.set_title(study, size=8)
        ax.set_xlabel(loss)
        ax.set_ylabel("val_accuracy")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    _role_legend(fig, list(PALETTE))
    return _save(fig, out, name)


def pick_gaps(table: pd.DataFrame, out: Path, loss: str) -> str:
    fig, ax = plt.subplots(figsize=(6, 4.5))
    agree = table["agree"]
    ax.scatter(table.loc[~agree, "accuracy_given_up"], table.loc[~agree, "loss_given_up"], s=12,
               alpha=0.6, color=PALETTE["accuracy pick"], label=f"disagree ({int((~agree).sum())})")
    ax.scatter(table.loc[agree, "accuracy_given_up"], table.loc[agree, "loss_given_up"], s=12,
               alpha=0.6, color=PALETTE["both picks"], label=f"agree ({int(agree.sum())})")
    ax.set_xlabel("val_accuracy the loss pick gives up")
    ax.set_ylabel(f"{loss} the accuracy pick gives up")
    ax.legend(fontsize=8)
    return _save(fig, out, "pick_gaps.png")


def learning_curves(table: pd.DataFrame, out: Path) -> str:
    panels = list(dict.fromkeys(table["panel"]))
    metrics = list(dict.fromkeys(table["metric"]))
    fig, axes = plt.subplots(len(panels), len(metrics), figsize=(3.6 * len(metrics), 2.4 * len(panels)),
                             sharex=True, squeeze=False)
    for (panel, metric, role), curve in table.groupby(["panel", "metric", "role"], sort=False):
        ax = axes[panels.index(panel), metrics.index(metric)]
        ax.plot(curve["epoch"], curve["value"], marker="o", color=PALETTE[role])
        ax.axvline(curve["min_loss_epoch"].iloc[0], color=PALETTE[role], ls="--", lw=1)
        ax.axvline(curve["max_accuracy_epoch"].iloc[0], color=PALETTE[role], ls=":", lw=1.4)
    for (row, panel), (col, metric) in ((r, c) for r in enumerate(panels) for c in enumerate(metrics)):
        # Study and picks on one line, the metric on the next: long study names stay
        # inside their own column instead of running into the neighbouring title.
        axes[row, col].set_title(f"{panel}\n{metric}", size=8)
        axes[row, col].set_ylabel(metric)
        axes[row, col].set_xlabel("epoch" if row == len(panels) - 1 else "")
    # One legend for the whole figure, below the axes, so it covers no panel or title.
    handles = [Line2D([], [], color=PALETTE["loss pick"], marker="o", label="loss pick"),
               Line2D([], [], color=PALETTE["accuracy pick"], marker="o", label="accuracy pick"),
               Line2D([], [], color="black", ls="--", lw=1, label="epoch of minimal val_loss"),
               Line2D([], [], color="black", ls=":", lw=1.4, label="epoch of maximal val_accuracy")]
    fig.tight_layout()
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2,
               frameon=False, fontsize=8)
    return _save(fig, out, "learning_curves.png")


def rates(table: pd.DataFrame, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(table)))
    labels = [f"{r.experiment} · {r.level} (n={r.n})"
              + (", no interval" if pd.isna(r.lo) else f", {r.interval}") for r in table.itertuples()]
    y = range(len(table))
    # A bootstrap with no interval (NaN bounds) draws a bare point; clipping guards float noise.
    xerr = [(table["rate"] - table["lo"]).clip(lower=0).fillna(0),
            (table["hi"] - table["rate"]).clip(lower=0).fillna(0)]
    ax.errorbar(table["rate"], y, xerr=xerr,
                fmt="o", color="black", capsize=4)
    ax.set_yticks(list(y), labels)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("disagreement rate (95% CI: trial level Wilson, epoch level cluster bootstrap)")
    ax.invert_yaxis()
    return _save(fig, out, "rates.png")


def epoch_gap(ep: pd.DataFrame, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.histplot(ep["epoch_gap"], discrete=True, ax=ax, color="#4c72b0")
    ax.axvline(0, color="black", lw=1)
    ax.set_xlabel("epoch of max val_accuracy − epoch of min val_loss")
    ax.set_ylabel("trials")
    return _save(fig, out, "epoch_gap.png")


def disagreement_vs_k(size: pd.DataFrame, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.fill_between(size["k"], size["lo"].astype(float), size["hi"].astype(float), color="#1f77b4",
                    alpha=0.2, lw=0, label="95% bootstrap over studies")
    ax.plot(size["k"], size["lenient"], ls=":", color="#555555", label="lenient / strict tie bounds")
    ax.plot(size["k"], size["strict"], ls=":", color="#555555")
    ax.plot(size["k"], size["rate"], marker="o", color="#1f77b4", label="P(disagree), exact")
    ax.legend(fontsize=7)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("trials per study (k)")
    ax.set_ylabel("P(loss and accuracy picks differ)")
    return _save(fig, out, "disagreement_vs_k.png")


def pool_curve(table: pd.DataFrame, out: Path) -> str:
    """P(disagree | k) by both losses, and the accuracy pick's test gain, from one pool."""
    fig, (rate_ax, gain_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, colour, label in (("disagree_val_loss", "#1f77b4", "val_loss"),
                                ("disagree_val_crossentropy", "#ff7f0e", "val_crossentropy")):
        if name not in table:
            continue
        rate_ax.plot(table["k"], table[name], color=colour, label=f"minimal {label}")
        _error_bars(rate_ax, table, name, colour, 1.0)
    rate_ax.set_ylim(-0.02, 1.02)
    rate_ax.set_xlabel("trials per study (k)")
    rate_ax.set_ylabel("P(loss pick is not an accuracy pick)")
    rate_ax.legend(fontsize=7)
    if "gain_over_val_loss" in table:
        gain_ax.axhline(0, color="#888888", lw=0.8)
        gain_ax.plot(table["k"], table["gain_over_val_loss"] * 100, color="#d62728")
        _error_bars(gain_ax, table, "gain_over_val_loss", "#d62728", 100.0)
    gain_ax.set_xlabel("trials per study (k)")
    gain_ax.set_ylabel("test accuracy, accuracy pick\nminus val_loss pick (pp)")
    fig.tight_layout()
    return _save(fig, out, "pool_vs_k.png")


def _error_bars(ax, table: pd.DataFrame, name: str, colour: str, scale: float) -> None:
    """95% bootstrap intervals where the pool computed them (analysis.pool.CI_KS)."""
    rows = table[table[f"{name}_lo"].notna()]
    centre = rows[name] * scale
    ax.errorbar(rows["k"], centre, yerr=[centre - rows[f"{name}_lo"] * scale, rows[f"{name}_hi"] * scale - centre],
                fmt="o", color=colour, ms=3, capsize=2)


def axis_plot(info: plotdata.AxisInfo, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    table = info.table
    if pd.api.types.is_numeric_dtype(table["value"]):
        _scatter_roles(ax, table, "value", "val_accuracy", 40)
        if info.log:
            ax.set_xscale("log")
        if info.bounds is not None:  # the searched range's ends, so its edges are visible
            for b in info.bounds:
                ax.axvline(b, color="#555555", ls="--", lw=0.8)
    else:
        with _seeded():
            sns.stripplot(data=table, x="value", y="val_accuracy", hue="role", palette=PALETTE,
                          hue_order=list(PALETTE), ax=ax)
    ax.set_ylabel("val_accuracy")
    ax.set_xlabel(info.name + (" (dashed: ends of the searched range)" if info.bounds is not None else ""))
    ax.set_title(info.name + (f"  ⚠ picks at the edge of the {info.range_source} range" if info.at_edge else ""),
                 size=9, color="#b00000" if info.at_edge else "black")
    ax.legend(fontsize=7)
    name = f"axis_{''.join(c if c.isalnum() else '_' for c in info.name)}.png"
    return _save(fig, out, name)


@contextmanager
def _seeded(seed: int = 0):
    """Seaborn's strip plots jitter with NumPy's global generator: seed it for one plot (and
    restore it), so the same input draws the same PNG."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def rank_distribution(table: pd.DataFrame, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sns.boxplot(data=table, x="value", y="statistic", ax=ax, color="#dddddd", fliersize=0)
    with _seeded():
        sns.stripplot(data=table, x="value", y="statistic", ax=ax, color="#1f77b4", size=5)
    ax.axvline(0, color="black", lw=1)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel("rank correlation of −loss and accuracy across a study's trials")
    ax.set_ylabel("")
    return _save(fig, out, "rank_correlation.png")


def calibration(table: pd.DataFrame, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    sns.pointplot(data=table, x="pick", y="val_ece", hue="study", ax=ax, palette="tab20", legend=False)
    ax.set_ylabel("val_ECE at the picked epoch")
    ax.set_xlabel("")
    return _save(fig, out, "calibration.png")


# ------------------------------------------------------------------ paired sweeps (issue 11)

LOSS_COLOURS = {"val_loss": "#1f77b4", "val_crossentropy": "#ff7f0e"}


def sweep_forest(info: plotdata.ForestInfo, out: Path) -> str:
    """Each row a factor's level (or its A/A floor, grey), a point and 95% bar per loss rule."""
    table = info.table
    rows = table.drop_duplicates("position").sort_values("position")
    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.42 * len(rows)))
    losses = list(dict.fromkeys(table["loss"]))
    for i, loss in enumerate(losses):
        lines = table[table["loss"] == loss]
        y = lines["position"] + (i - (len(losses) - 1) / 2) * 0.22
        centre, lo, hi = (lines[c] * info.scale for c in ("difference", "lo", "hi"))
        for kind, points in pd.DataFrame({"y": y, "centre": centre, "lo": lo, "hi": hi, "kind": lines["kind"],
                                          "clear": lines["clear"]}).groupby("kind"):
            colour = "#888888" if kind == "floor" else LOSS_COLOURS.get(loss, "black")
            # A bare point where the bootstrap gives no interval (NaN bounds).
            ax.errorbar(points["centre"], points["y"], fmt="none", ecolor=colour, capsize=3,
                        xerr=[(points["centre"] - points["lo"]).clip(lower=0).fillna(0),
                              (points["hi"] - points["centre"]).clip(lower=0).fillna(0)])
            ax.scatter(points["centre"], points["y"], color=colour, marker="o", zorder=3,
                       edgecolors=["black" if clear else colour for clear in points["clear"]], linewidths=1.2)
    ax.axvline(0, color="black", lw=0.8)
    for position in table.groupby("position")["difference"].count().loc[lambda count: count == 0].index:
        ax.text(0, position, "  n/a (see the report)", va="center", fontsize=7, color="#555555")
    ax.set_yticks(rows["position"].tolist(), rows["row"].tolist(), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"{info.label}: arm − reference, mean over pairs" + (" (pp)" if info.scale == 100 else ""))
    handles = [Line2D([], [], color=LOSS_COLOURS.get(loss, "black"), marker="o", ls="", label=f"rule: min {loss}")
               for loss in losses]
    handles += [Line2D([], [], color="#888888", marker="o", ls="", label=plotdata.FLOOR_LABEL),
                Line2D([], [], color="white", marker="o", markeredgecolor="black", ls="", label="clear effect")]
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _save(fig, out, f"sweep_forest_{info.outcome}.png")


DOSE_PANELS = (("epoch_disagree", "epoch-level disagreement", 100.0),
               ("val_ece", "val ECE at the pick", 1.0),
               ("val_accuracy", "val accuracy at the pick", 100.0))


def sweep_dose(info: plotdata.DoseInfo, out: Path) -> str:
    """Per level of one factor: disagreement, val ECE and val accuracy at each rule's pick."""
    fig, axes = plt.subplots(1, len(DOSE_PANELS), figsize=(4.2 * len(DOSE_PANELS), 3.4))
    table = info.table
    for ax, (stem, label, scale) in zip(axes, DOSE_PANELS):
        first_loss = table["loss"].iloc[0]
        for (loss, metric), line in table[table["metric"].str.startswith(stem)].groupby(["loss", "metric"], sort=False):
            at_accuracy = metric.endswith("accuracy_pick")
            if at_accuracy and loss != first_loss:
                continue  # the accuracy pick is one epoch whatever the loss (bar a tie): drawn once
            legend = ("max val_accuracy pick" if at_accuracy else f"min {loss} pick" if stem != "epoch_disagree"
                      else f"rule: min {loss}")
            centre = line["mean"] * scale
            ax.errorbar(line["position"], centre, yerr=[(centre - line["lo"] * scale).clip(lower=0).fillna(0),
                                                        (line["hi"] * scale - centre).clip(lower=0).fillna(0)],
                        ls="--" if at_accuracy else "-", marker="o", capsize=3, label=legend,
                        color=PALETTE["accuracy pick"] if at_accuracy else LOSS_COLOURS.get(loss, "black"))
        ax.set_xticks(range(len(info.levels)), info.levels, fontsize=8)
        ax.set_xlabel(f"{info.factor} (first: the reference)")
        ax.set_ylabel(label + (" (%)" if scale == 100 else ""))
        ax.legend(fontsize=6)
    fig.tight_layout()
    name = f"sweep_dose_{''.join(c if c.isalnum() else '_' for c in info.factor)}.png"
    return _save(fig, out, name)


def sweep_figures(sweep: dict, out: Path) -> list[Figure]:
    """The sweep's forest plots (one per outcome) and dose-response plots, in report order."""
    figs = [Figure(sweep_forest(info, out), f"Sweep forest: {info.label}",
                   f"Each row is one level of a factor minus its reference, the mean over pairs with a "
                   f"95% bootstrap interval over pairs, blue by min val_loss and orange by min "
                   f"val_crossentropy; the grey row is the factor's A/A floor (the same-seed replicate minus "
                   f"the reference); an outlined point is a clear effect (its interval excludes 0 and the "
                   f"floor's interval).") for info in plotdata.sweep_forests(sweep)]
    figs += [Figure(sweep_dose(info, out), f"Sweep dose response: {info.factor}",
                    f"Per level of {info.factor} (the reference first), the mean over pairs with a 95% "
                    f"bootstrap interval: how often the rules' epochs disagree, and the validation ECE and "
                    f"accuracy at each rule's pick (solid: a loss rule's pick, dashed red: the val_accuracy "
                    f"pick); look for a trend across levels.") for info in plotdata.sweep_doses(sweep)]
    return figs


def draw_all(analysis, out: Path) -> list[Figure]:
    """Draw every figure the data supports (`plotdata.figure_tables` decides); returns them
    in report order."""
    out.mkdir(parents=True, exist_ok=True)
    tables = plotdata.figure_tables(analysis, MAX_PANELS)
    loss = analysis.loss_label
    figs = []
    if analysis.pool is not None and not analysis.pool.empty:
        figs.append(Figure(pool_curve(analysis.pool, out), "The pool: disagreement and its cost against study size",
                           f"From one pool of {int(analysis.pool['trials'].iloc[0])} trials, exact over all "
                           "k-subsets: left, how often the loss rule's pick is not an accuracy pick; right, "
                           "what choosing by val_accuracy instead of val_loss gains on the test set; "
                           "bars are 95% bootstrap intervals over the pool's trials."))
    figs += [Figure(picks_scatter(plotdata.scatter_panels(tables.scatter, MAX_PANELS), out, "val_loss",
                                 "picks_scatter.png"),
                   "Loss against accuracy per trial",
                   f"Each panel is a study (disagreeing ones first); where the blue loss pick and "
                   f"the red accuracy pick are different points, minimal {loss} and maximal "
                   "val_accuracy chose different trials.")]
    if tables.pick_gaps is not None:
        figs.append(Figure(pick_gaps(tables.pick_gaps, out, loss), "How far apart the picks are, all studies",
                           f"Each point is one of the {tables.n_studies} studies: how much val_accuracy "
                           f"its loss pick gives up against the study's best (x) and how much "
                           f"{loss} its accuracy pick gives up against the study's minimum (y); "
                           "agreeing studies sit at the origin, far points are studies where "
                           "the choice of rule matters most."))
    if tables.curves is not None:
        figs.append(Figure(learning_curves(tables.curves, out), "Learning curves of the picks",
                           "Dashed lines mark each curve's epoch of minimal val_loss and dotted "
                           "lines its epoch of maximal val_accuracy, in the curve's colour; "
                           "look for accuracy still rising after the loss has turned."))
    figs.append(Figure(rates(tables.rates, out), "Disagreement rates",
                       "Points are the share of studies (trial level) or trials (epoch level) whose "
                       "two picks differ, with 95% intervals: Wilson at trial level, the cluster "
                       "bootstrap over studies at epoch level (trials of a study are not "
                       "independent); a bare point has no interval; wide bars mean more "
                       "replicates are needed."))
    if tables.epoch_gap is not None:
        figs.append(Figure(epoch_gap(tables.epoch_gap, out), "Epoch gap",
                           "Bars right of zero are trials whose accuracy peaked after their loss "
                           "minimum, the usual overfitting shape; mass at zero means the epochs agree."))
    if tables.size is not None:
        figs.append(Figure(disagreement_vs_k(tables.size, out), "Disagreement against study size",
                           size_caption(tables.size)))
    figs += [Figure(axis_plot(info, out), f"Playbook axis plot: {info.name}",
                    f"Validation accuracy of every trial against {info.name}, with both "
                    f"picks coloured; {info.edge_note}.") for info in tables.axes]
    if tables.ranks is not None:
        figs.append(Figure(rank_distribution(tables.ranks, out), "Rank agreement",
                           "Each point is a study; values near +1 mean loss and accuracy rank its "
                           "trials the same way, values near 0 or below mean they do not."))
    if tables.calibration is not None:
        figs.append(Figure(calibration(tables.calibration, out), "Calibration of the picks",
                           "Lines join the two picks of a study (disagreeing studies only when any); "
                           "a higher ECE for the accuracy pick means it is the more overconfident model."))
    if "sweep" in analysis.summary:
        figs = sweep_figures(analysis.summary["sweep"], out) + figs
    return figs


def size_caption(size: pd.DataFrame) -> str:
    """What the k-curve shows: which studies, how computed, and its band (or why none)."""
    first = size.iloc[0]
    top = int(size["k"].max())
    band = ("the band is a 95% bootstrap over these studies" if pd.notna(first["lo"])
            else f"no interval ({first['ci_missing']})")
    return (f"Exact P(loss and accuracy picks differ) for a study of k trials, averaged over "
            f"all k-subsets of each of the same {int(first['studies'])} studies at every k "
            f"(those with at least {top} trials; {int(first['left_out'])} smaller studies left "
            f"out); dotted lines are the lenient and strict tie bounds; {band}.")


REGIME_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b")


def regime_curves(curve_table: pd.DataFrame, intervals: pd.DataFrame, out: Path) -> str:
    """Each regime's P(disagree | k) by val_loss and its test-accuracy cost, with 95% intervals
    at the quoted ks (`analysis.regimes.compare`)."""
    fig, (rate_ax, gain_ax) = plt.subplots(1, 2, figsize=(10, 3.4))
    groups = list(curve_table.groupby("regime", sort=False))
    for index, (colour, (regime, curve)) in enumerate(zip(REGIME_COLOURS * 4, groups)):
        dodge = (index - (len(groups) - 1) / 2) * 0.35  # the intervals at one k side by side
        for ax, name, scale in ((rate_ax, "disagree_val_loss", 1.0), (gain_ax, "gain_over_val_loss", 100.0)):
            if name not in curve:
                continue
            ax.plot(curve["k"], curve[name] * scale, color=colour, label=regime)
            quoted = intervals[(intervals["regime"] == regime) & intervals["statistic"].str.startswith(f"{name}@")]
            ks = quoted["statistic"].str.split("@").str[1].astype(int)
            centre = quoted["value"] * scale
            ax.errorbar(ks + dodge, centre, yerr=[centre - quoted["lo"] * scale, quoted["hi"] * scale - centre],
                        fmt="o", color=colour, ms=3, capsize=2)
    rate_ax.set_ylim(-0.02, 1.02)
    rate_ax.set_ylabel("P(val_loss pick is not an accuracy pick)")
    gain_ax.axhline(0, color="#888888", lw=0.8)
    gain_ax.set_ylabel("test accuracy, accuracy pick\nminus val_loss pick (pp)")
    for ax in (rate_ax, gain_ax):
        ax.set_xlabel("trials per study (k)")
    rate_ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out, "regimes_vs_k.png")
