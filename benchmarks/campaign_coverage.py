"""Benchmark (issue 10, goal 2): are a campaign's 95% intervals honest? Coverage by simulation.

Each named synthetic model makes trials with `EPOCHS` epochs of (val_loss, val_accuracy);
accuracy is a binomial count over `n_val` images, so it moves in 1/n_val steps and ties.
A trial's latent quality q ~ N(0, 1) drives both curves; an overfitting strength o >= 0
turns its loss up after the middle epoch while accuracy holds; noise separates the two.

- trial level: the pool's P(disagree | k) from `analysis.size.pooled_disagreement` (the
  exact U-statistic over k-subsets, with its percentile bootstrap over trials);
- epoch level: the share of trials whose minimal-loss epoch is not at maximal accuracy,
  with the Wilson interval (`analysis.intervals.wilson`): a campaign is one pool of i.i.d.
  trials, so the trials are the independent units.

The truth is not computed by the code under test: it is a Monte Carlo over `TRUTH_DRAWS`
fresh k-subsets (trial level) or trials (epoch level) drawn from the model itself, with the
same rule (the loss pick agrees when its accuracy equals the maximum: ties are agreement).
Coverage = share of simulated campaigns whose interval holds the truth; goal >= 0.93.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from benchmarks.common import Options, Row, markdown_table, verdict, write_results

NAME = "campaign_coverage"
GOAL_COVERAGE = 0.93
GOAL = f"95% intervals of P(disagree | k) and of the epoch-level rate cover the truth >= {GOAL_COVERAGE:.0%}"
EPOCHS = 5
KS = (10, 20)
TRUTH_DRAWS = 200_000


class Model(NamedTuple):
    """A named synthetic campaign: how strongly loss and accuracy follow one quality."""

    name: str
    n_val: int            # accuracy steps of 1/n_val: ties
    loss_noise: float     # per-epoch loss noise, independent of accuracy
    overfit: float        # mean overfitting strength (exponential across trials)


MODELS = (Model("aligned", 2000, 0.01, 0.02),     # loss and accuracy mostly agree
          Model("overfitting", 2000, 0.02, 0.15),  # loss turns up late while accuracy holds
          Model("coarse_ties", 200, 0.03, 0.08))   # 200 validation images: many accuracy ties


def draw_trials(model: Model, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(val_loss, val_accuracy), each trials x epochs."""
    quality = rng.normal(size=(n, 1))
    overfit = rng.exponential(model.overfit, size=(n, 1))
    epoch = np.arange(EPOCHS)[None, :]
    progress = np.log1p(epoch) / np.log1p(EPOCHS - 1)
    p_correct = np.clip(0.62 + 0.06 * quality + 0.18 * progress, 0.01, 0.99)
    accuracy = rng.binomial(model.n_val, np.broadcast_to(p_correct, (n, EPOCHS))) / model.n_val
    late = np.maximum(0, epoch - EPOCHS // 2)
    loss = (1.1 - 0.15 * quality - 0.5 * progress + overfit * late
            + rng.normal(0, model.loss_noise, size=(n, EPOCHS)))
    return loss, accuracy


def trial_scores(loss: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best-over-epochs scoring, as the analysis's default: min loss, max accuracy."""
    return loss.min(axis=1), accuracy.max(axis=1)


def epoch_disagrees(loss: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
    at_loss_pick = accuracy[np.arange(len(loss)), loss.argmin(axis=1)]
    return at_loss_pick < accuracy.max(axis=1)


def true_rates(model: Model, rng: np.random.Generator, draws: int = TRUTH_DRAWS) -> dict[str, float]:
    """Monte Carlo truth: fresh k-subsets for P(disagree | k), fresh trials for the epoch rate."""
    truth = {}
    for k in KS:
        subsets = max(1, draws // k)
        loss, accuracy = trial_scores(*draw_trials(model, subsets * k, rng))
        loss, accuracy = loss.reshape(subsets, k), accuracy.reshape(subsets, k)
        picked = accuracy[np.arange(subsets), loss.argmin(axis=1)]  # continuous loss: no loss ties
        truth[f"k{k}"] = float(np.mean(picked < accuracy.max(axis=1)))
    truth["epoch"] = float(np.mean(epoch_disagrees(*draw_trials(model, draws, rng))))
    return truth


def one_campaign(model: Model, trials: int, n_boot: int, rng: np.random.Generator) -> dict[str, tuple]:
    """The intervals one simulated campaign of `trials` trials reports."""
    from analysis.intervals import wilson
    from analysis.size import pooled_disagreement

    loss, accuracy = draw_trials(model, trials, rng)
    pooled = pooled_disagreement(*trial_scores(loss, accuracy), list(KS), n_boot=n_boot,
                                 seed=int(rng.integers(2**31)))
    intervals = {f"k{row.k}": (row.rate, row.lo, row.hi) for row in pooled.itertuples(index=False)}
    disagree = epoch_disagrees(loss, accuracy)
    intervals["epoch"] = (float(disagree.mean()), *wilson(int(disagree.sum()), trials))
    return intervals


def coverage(model: Model, campaigns: int, trials: int, n_boot: int, seed: int) -> dict[str, Any]:
    """Share of campaigns whose 95% interval holds the truth, per statistic; mean half-width."""
    rng = np.random.default_rng([seed, MODELS.index(model) if model in MODELS else 99])
    truth = true_rates(model, rng)
    runs = [one_campaign(model, trials, n_boot, rng) for _ in range(campaigns)]
    out: dict[str, Any] = {"model": model._asdict(), "truth": {k: round(v, 4) for k, v in truth.items()}}
    for key, value in truth.items():
        lows = np.array([run[key][1] for run in runs])
        highs = np.array([run[key][2] for run in runs])
        out[key] = {"coverage": round(float(np.mean((lows <= value) & (value <= highs))), 4),
                    "mean_half_width": round(float(np.mean(highs - lows) / 2), 4),
                    "mean_estimate": round(float(np.mean([run[key][0] for run in runs])), 4)}
    return out


def measure(campaigns: int, trials: int, n_boot: int, seed: int = 0, results_dir: Path | None = None,
            mode: str = "full") -> dict[str, Any]:
    results = [coverage(model, campaigns, trials, n_boot, seed) for model in MODELS]
    worst = min(result[key]["coverage"] for result in results for key in result["truth"])
    payload = {"name": NAME, "mode": mode, "campaigns_per_model": campaigns, "trials_per_campaign": trials,
               "n_boot": n_boot, "seed": seed, "truth_draws": TRUTH_DRAWS, "models": results,
               "worst_coverage": worst, "goal": GOAL_COVERAGE, "meets_goal": worst >= GOAL_COVERAGE}
    rows = [[r["model"]["name"], key, r["truth"][key], r[key]["coverage"], r[key]["mean_half_width"]]
            for r in results for key in r["truth"]]
    table = markdown_table(["model", "statistic", "truth", "coverage of 95% CI", "mean half-width"], rows)
    return write_results(NAME, payload, table, results_dir)


def run(options: Options) -> dict[str, Any]:
    if options.quick:
        return measure(200, 300, 100, results_dir=options.results_dir, mode="quick")
    return measure(1000, 500, 200, results_dir=options.results_dir)


def summary_rows(result: dict[str, Any]) -> list[Row]:
    return [Row(f"worst coverage over {len(result['models'])} models x (k={', '.join(map(str, KS))}, epoch); "
                f"{result['campaigns_per_model']} campaigns of {result['trials_per_campaign']} trials",
                result["worst_coverage"], f">= {GOAL_COVERAGE}", verdict(result["meets_goal"]))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--campaigns", type=int, default=1000)
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    result = measure(args.campaigns, args.trials, args.bootstrap, results_dir=args.results, mode="custom")
    print(markdown_table(["model", "truth", "coverage"], [[m["model"]["name"], m["truth"],
                                                          {k: m[k]["coverage"] for k in m["truth"]}]
                                                         for m in result["models"]]))
