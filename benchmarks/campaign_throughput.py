"""Benchmark (issue 10, goal 4): completed trials per hour at the campaign set-up.

Runs the real `python -m study campaign --regime balanced` (Fashion-MNIST at the floors:
3,000 train / 2,000 val / 2,000 test images, 5 epochs, random sampling, no pruning) into a
temporary store for a fixed wall-clock budget per variant, then reads the Optuna study:

- `trials_per_hour` = COMPLETE trials x 3600 / (last completion - first start), of the
  headline variant (lean artifacts, two 1-thread workers: what `make campaign` runs), so
  process start-up and data loading, paid once per run, are not counted against the trials;
- `mean_cost_baseline_flops` = the mean over those trials of their training FLOPs per image
  in units of the baseline net's (the `relative_cost` each trial records, study/cost.py).

The campaign skips draws above its cost cap (`train.max_cost`, study/campaign.py) in
milliseconds, without training them: they are counted apart (`skipped_over_cap`), not as trials.

The levers, each a variant measured the same way (`--variants`): `lean` (no learning-curve
PNG, no model upload; the campaign's default) against `full` artifacts; two 1-thread workers
against one 2-thread worker (`lean_1x2`). Variants run one after another, not
interleaved (each is a run of minutes); every variant starts a fresh study with the same
seed, so one worker replays the same draws, and two workers draw others.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, Options, Row, environment, markdown_table, verdict, write_results

NAME = "campaign_throughput"
GOAL_PER_HOUR = 200
GOAL = f"trials_per_hour >= {GOAL_PER_HOUR} completed campaign trials per hour on this machine, within the floors"
# name -> (trial artifacts, worker processes); threads split as the supervisor does.
VARIANTS = {"lean_1x2": ("lean", 1), "lean_2x1": ("lean", 2), "full_1x2": ("full", 1)}
HEADLINE = "lean_2x1"  # `make campaign`'s default (Makefile: campaign_workers)


def campaign_command(folder: Path, seconds: float, variant: str) -> list[str]:
    """Exactly the search `python -m study campaign --regime balanced` runs (study/campaign.py),
    with this variant's artifacts and workers, a time budget and a temporary store."""
    from study.campaign import search_argv

    artifacts, workers = VARIANTS[variant]
    argv = search_argv("balanced", "fashion_mnist", 10000, [], [])
    argv[argv.index("--trial-artifacts") + 1] = artifacts
    return [sys.executable, "-m", "study", *argv, "--workers", str(workers), "--timeout", str(seconds),
            "--storage", str(folder / "optuna.journal"), "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]


def read_study(folder: Path) -> dict[str, Any]:
    import optuna

    from study.storage import open_storage

    storage = open_storage(str(folder / "optuna.journal"))
    trials = optuna.load_study(study_name="campaign-balanced-seed0", storage=storage).trials
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return {"complete": 0, "finished": len(trials), "trials_per_hour": 0.0}
    span = (max(t.datetime_complete for t in complete) - min(t.datetime_start for t in trials)).total_seconds()
    from study.contract import RELATIVE_COST
    from study.cost import skipped_over_cap

    costs = [t.user_attrs[RELATIVE_COST] for t in complete]
    skipped = sum(skipped_over_cap(t.user_attrs) for t in trials)
    return {"complete": len(complete), "finished": sum(t.state.is_finished() for t in trials) - skipped,
            "skipped_over_cap": skipped,
            "span_seconds": round(span, 1), "trials_per_hour": round(len(complete) * 3600 / span, 1),
            "mean_cost_baseline_flops": round(sum(costs) / len(costs), 3),
            "median_trial_seconds": round(sorted((t.datetime_complete - t.datetime_start).total_seconds()
                                                 for t in complete)[len(complete) // 2], 1)}


def measure(seconds: float, variants: list[str], results_dir: Path | None = None, mode: str = "full") -> dict:
    results = {}
    for name in variants:
        with tempfile.TemporaryDirectory(prefix="bench-campaign-") as folder:
            started = time.monotonic()
            proc = subprocess.run(campaign_command(Path(folder), seconds, name), cwd=ROOT,
                                  capture_output=True, text=True)
            if proc.returncode not in (0,):
                raise RuntimeError(f"{name}: exit {proc.returncode}: {proc.stderr[-2000:]}")
            results[name] = {**read_study(Path(folder)), "wall_seconds": round(time.monotonic() - started, 1)}
    headline = results.get(HEADLINE) or next(iter(results.values()))
    payload = {"name": NAME, "mode": mode, "seconds_per_variant": seconds, "variants": results,
               "trials_per_hour": headline["trials_per_hour"],
               "mean_cost_baseline_flops": headline.get("mean_cost_baseline_flops"),
               "goal": GOAL_PER_HOUR, "meets_goal": headline["trials_per_hour"] >= GOAL_PER_HOUR,
               "set_up": ("campaign balanced: 3000/2000/2000 Fashion-MNIST images, 5 epochs, random, no pruning, "
                          "nets up to 6 baseline nets' training FLOPs (54% of cnn.yaml's draws)"),
               "environment": environment()}
    table = markdown_table(["variant", "complete", "trials/h", "mean cost (baseline FLOPs)", "median trial s"],
                           [[n, r["complete"], r["trials_per_hour"], r.get("mean_cost_baseline_flops"),
                             r.get("median_trial_seconds")] for n, r in results.items()])
    return write_results(NAME, payload, table, results_dir)


def run(options: Options) -> dict[str, Any]:
    if options.quick:
        return measure(600, [HEADLINE], options.results_dir, mode="quick")
    return measure(1800, list(VARIANTS), options.results_dir)


def summary_rows(result: dict[str, Any]) -> list[Row]:
    return [Row(f"trials_per_hour ({HEADLINE}; mean cost {result.get('mean_cost_baseline_flops')} x baseline FLOPs)",
                result["trials_per_hour"], f">= {GOAL_PER_HOUR}", verdict(result["meets_goal"]))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=[HEADLINE])
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args()
    print(measure(args.seconds, args.variants, args.results, mode="custom")["variants"])
