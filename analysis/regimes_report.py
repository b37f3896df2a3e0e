"""`python -m analysis compare`: published campaigns (their `epochs.csv.gz`) side by side.

Reads each campaign's export as `analysis report --csv` does, so the comparison runs from the
committed files alone; writes `summary.json`, `report.md` and `regimes_vs_k.png`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from analysis import regimes
from analysis.errors import AnalysisInputError

SUMMARY = "summary.json"
REPORT = "report.md"
README = "README.md"
# What each regime changes (study/campaign.py); the report says it beside the numbers.
REGIME_NOTES = {
    "campaign-balanced": "all ten classes equally often",
    "campaign-imbalance": ("class sizes fall geometrically to 1/10 (rho = 10) in the training, "
                           "validation and test sets alike: accuracy itself weighs the large classes"),
    "campaign-label_noise": "20% of the training labels flipped; validation and test labels clean",
}


def load_regime(path: Path) -> tuple[regimes.RegimePool, dict]:
    """One campaign's pool from its export, and where it came from. A pool continued on
    several stores has a study per store (analysis/publish.py): their trials are one pool."""
    from analysis.picks import epoch_picks, scored_trials
    from analysis.sources import load_table

    dataset = load_table(path, study_col="study", trial_col="trial", loss_col="val_loss",
                         accuracy_col="val_accuracy", test_accuracy_col="test_accuracy", epoch_col="epoch",
                         state_col="state", crossentropy_col="val_crossentropy", one_pool=True)
    studies = sorted(map(str, pd.read_csv(path, usecols=["study"])["study"].unique()))
    scored = scored_trials(dataset, "best")
    if len(scored) < 2:
        raise AnalysisInputError(f"--csv {path}: {len(scored)} scored trial(s); a pool needs at least 2")
    raw = pd.read_csv(path, usecols=lambda column: column in {"experiment", "git_commit"})
    name = str(raw["experiment"].iloc[0]) if "experiment" in raw and len(raw) else Path(path).parent.name
    source = {"regime": name, "file": str(path), "study": ", ".join(studies),
              "commits": sorted(map(str, raw["git_commit"].dropna().unique())) if "git_commit" in raw else []}
    return regimes.regime_pool(name, scored, epoch_picks(dataset.epochs, scored, "val_loss")), source


def run(paths: Sequence[Path], out: Path, *, n_boot: int, n_perm: int, seed: int,
        ks: Sequence[int] = regimes.QUOTED_KS) -> list[str]:
    """Load, compare, draw and write; returns the files written."""
    from analysis import figures
    from analysis.summary import jsonable

    loaded = [load_regime(Path(path)) for path in paths]
    pools, sources = [pool for pool, _ in loaded], [source for _, source in loaded]
    names = [pool.name for pool in pools]
    if len(set(names)) != len(names):
        raise AnalysisInputError(f"--csv: the same regime twice ({', '.join(names)})")
    comparison = regimes.compare(pools, n_boot=n_boot, n_perm=n_perm, seed=seed, ks=ks)
    out.mkdir(parents=True, exist_ok=True)
    figure = figures.regime_curves(regimes.curves(pools), comparison.regimes, out)
    summary = {"sources": sources, "ks": comparison.ks, "bootstrap": n_boot, "permutations": n_perm,
               "seed": seed, "regimes": comparison.regimes.to_dict(orient="records"),
               "differences": comparison.differences.to_dict(orient="records")}
    (out / SUMMARY).write_text(json.dumps(jsonable(summary), indent=1))
    (out / REPORT).write_text(markdown(comparison, sources, figure))
    (out / README).write_text(readme(paths, out, comparison, n_boot, n_perm, seed))
    return [SUMMARY, REPORT, figure, README]


def readme(paths: Sequence[Path], out: Path, comparison: regimes.Comparison, n_boot: int, n_perm: int,
           seed: int) -> str:
    """How this folder was made: the command, the commit, the machine and the counts; each
    campaign's own README holds its wall time."""
    from datetime import datetime, timezone

    from analysis.publish import git_commit, machine

    trials = comparison.regimes.drop_duplicates("regime")[["regime", "trials"]].itertuples(index=False)
    csvs = " ".join(f"--csv {path}" for path in paths)
    return "\n".join([
        "# Campaign regimes compared", "",
        f"Written {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from commit `{git_commit()}` on {machine()}; "
        "every file here, this one too, is written by the command below, none by hand.", "",
        "```", "make compare", f"# = python -m analysis compare {csvs} --out {out} --bootstrap {n_boot} "
        f"--permutations {n_perm} --seed {seed}", "```", "",
        "Trials per regime (each campaign's README, beside its epochs.csv.gz, has its wall time): "
        + ", ".join(f"{row.regime} {int(row.trials)}" for row in trials) + ".", "",
        "Read `report.md` for the rates, the differences and their tests."]) + "\n"


def _interval(value: float, low: float, high: float, scale: float = 100.0) -> str:
    if pd.isna(value):
        return "n/a"
    if pd.isna(low):
        return f"{value * scale:+.1f}" if value < 0 else f"{value * scale:.1f}"
    return f"{value * scale:.1f} [{low * scale:.1f}, {high * scale:.1f}]"


def _label(statistic: str) -> str:
    name, _, k = statistic.partition("@")
    words = {"disagree_val_loss": "P(disagree) by val_loss", "disagree_val_crossentropy":
             "P(disagree) by val_crossentropy", "l2_effect": "L2 effect (val_loss − val_crossentropy)",
             "gain_over_val_loss": "test acc., acc. pick − val_loss pick",
             "gain_over_val_crossentropy": "test acc., acc. pick − val_crossentropy pick",
             regimes.EPOCH_RATE: "epoch level: P(disagree) within a trial"}
    return words.get(name, name) + (f", k = {k}" if k else "")


def quoted_statistics(ks: Sequence[int]) -> list[str]:
    return [f"{name}@{k}" for name in regimes.QUOTED for k in ks] + [regimes.EPOCH_RATE]


def markdown(comparison: regimes.Comparison, sources: list[dict], figure: str) -> str:
    names = [source["regime"] for source in sources]
    trials = comparison.regimes.drop_duplicates("regime").set_index("regime")["trials"]
    lines = ["# Campaign regimes compared", "",
             "Each regime is one campaign: one pool of i.i.d. trials (random sampling, no pruning) at the "
             "same floors, space and cost cap; only the data differ. Rates are exact averages over all "
             "k-subsets of a pool; 95% intervals bootstrap its trials. A difference's interval resamples "
             "both pools; its p-value is a two-sided permutation test of the regime labels, and Holm's "
             "adjustment runs over the pairs of regimes. Rates and differences in % and pp.", "",
             "| regime | trials | study | commits | data |", "|---|---|---|---|---|"]
    for source in sources:
        lines.append(f"| {source['regime']} | {int(trials[source['regime']])} | {source['study']} | "
                     f"{', '.join(commit[:7] for commit in source['commits'])} | "
                     f"{REGIME_NOTES.get(source['regime'], '')} |")
    lines += ["", "## Each regime", "", "| statistic | " + " | ".join(names) + " |",
              "|---|" + "---|" * len(names)]
    table = comparison.regimes.set_index(["statistic", "regime"])
    for statistic in quoted_statistics(comparison.ks):
        cells = [_interval(*table.loc[(statistic, name), ["value", "lo", "hi"]]) for name in names]
        lines.append(f"| {_label(statistic)} | " + " | ".join(cells) + " |")
    lines += ["", "## Differences", "", "| statistic | regime − reference | difference | p | Holm p |",
              "|---|---|---|---|---|"]
    differences = comparison.differences.set_index("statistic")
    for statistic in quoted_statistics(comparison.ks):
        for row in differences.loc[[statistic]].itertuples():
            lines.append(f"| {_label(statistic)} | {row.regime} − {row.reference} | "
                         f"{_interval(row.difference, row.lo, row.hi)} | {_p(row.p_value)} | {_p(row.p_holm)} |")
    lines += ["", f"![regimes]({figure})", "",
              "*Each regime's chance that a study of k trials picks different models by val_loss and by "
              "val_accuracy (left) and what the val_loss pick costs in test accuracy (right), with 95% "
              "intervals at the quoted k.*", "",
              f"Study sizes quoted: k = {', '.join(map(str, comparison.ks))} (a k above the smallest pool "
              "is left out: every regime must answer it)."]
    return "\n".join(lines) + "\n"


def _p(value: float) -> str:
    return "n/a" if pd.isna(value) else f"{value:.3g}"
