"""Benchmark (issue 5, item 4): analysis time on a store of 1,000 trials x 50 epochs.

Builds a synthetic store per the search contract (20 studies x 50 trials x 50 epochs),
then times `python -m analysis report` stages in-process: loading from MLflow, computing,
drawing and writing. Goal: <= 30 s. Writes benchmarks/results/analysis_speed.{json,md}.

    .venv/bin/python benchmarks/analysis_speed.py [--studies 20 --trials 50 --epochs 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_SECONDS = 30.0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=20)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--bootstrap", type=int, default=2000)
    p.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()

    from analysis import figures, report
    from analysis.sources import load_mlflow
    from analysis.summary import analyse
    from analysis.synthetic_store import write_synthetic_store

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        t0 = time.perf_counter()
        write_synthetic_store(uri, "bench", studies=args.studies, trials=args.trials,
                              epochs=args.epochs, n_val=10000, n_test=1000)
        build = time.perf_counter() - t0
        stages = {}
        t = time.perf_counter()
        ds = load_mlflow(["bench"], uri)
        stages["load (MLflow search + history.csv)"] = time.perf_counter() - t
        t = time.perf_counter()
        result = analyse(ds, n_boot=args.bootstrap)
        stages["compute (picks, intervals, McNemar, models)"] = time.perf_counter() - t
        t = time.perf_counter()
        figs = figures.draw_all(result, Path(tmp) / "report")
        stages["draw figures"] = time.perf_counter() - t
        t = time.perf_counter()
        report.write(result, figs, Path(tmp) / "report", "benchmark")
        stages["write report"] = time.perf_counter() - t
    total = sum(stages.values())
    record = {"trials": args.studies * args.trials, "studies": args.studies,
              "epochs": args.epochs, "bootstrap": args.bootstrap,
              "store_build_seconds": round(build, 2),
              "stages_seconds": {k: round(v, 2) for k, v in stages.items()},
              "analysis_seconds": round(total, 2), "goal_seconds": GOAL_SECONDS,
              "meets_goal": total <= GOAL_SECONDS, "cpus": os.cpu_count(),
              "python": platform.python_version(), "machine": platform.machine(),
              "figures": len(figs)}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "analysis_speed.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [f"# Analysis speed: {record['trials']} trials x {args.epochs} epochs "
             f"({args.studies} studies)", "",
             "| stage | seconds |", "|---|---|",
             *[f"| {k} | {v:.2f} |" for k, v in record["stages_seconds"].items()],
             f"| **total analysis** | **{total:.2f}** (goal ≤ {GOAL_SECONDS:.0f}) |", "",
             f"Store build (not timed as analysis): {build:.1f} s. {os.cpu_count()} CPUs, "
             f"Python {record['python']}, {args.bootstrap} bootstrap resamples, "
             f"{len(figs)} figures."]
    (args.results / "analysis_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
