"""Info for the figures: pure functions that turn analysis tables into exactly what each
figure draws, so what a figure shows is unit-testable without drawing it."""

from __future__ import annotations

import math

import pandas as pd

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
