"""Benchmark (issue 5, item 4): analysis time on a store of 1,000 trials x 50 epochs.

Builds a synthetic store per the search contract (20 studies x 50 trials x 50 epochs),
then times `python -m analysis report` stages in-process: loading from MLflow, computing,
drawing and writing. Goal: <= 30 s. Writes benchmarks/results/analysis_speed.{json,md}.

    .venv/bin/python -m benchmarks.analysis_speed [--studies 20 --trials 50 --epochs 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, Options, Row, markdown_table, verdict, write_results

NAME = "analysis_speed"
GOAL_SECONDS = 30.0
GOAL = f"python -m analysis report on 1,000 trials x 50 epochs in <= {GOAL_SECONDS:.0f} s"


def timed_stages(uri: str, folder: Path, bootstrap: int) -> tuple[dict[str, float], int]:
    """Seconds of each stage of the report, and the number of figures drawn."""
    from analysis import figures, report
    from analysis.sources import load_mlflow
    from analysis.summary import analyse

    stages = {}
    started = time.perf_counter()
    dataset = load_mlflow(["bench"], uri)
    stages["load (MLflow search + history.csv)"] = time.perf_counter() - started
    started = time.perf_counter()
    result = analyse(dataset, n_boot=bootstrap)
    stages["compute (picks, intervals, McNemar, models)"] = time.perf_counter() - started
    started = time.perf_counter()
    drawn = figures.draw_all(result, folder / "report")
    stages["draw figures"] = time.perf_counter() - started
    started = time.perf_counter()
    report.write(result, drawn, folder / "report", "benchmark")
    stages["write report"] = time.perf_counter() - started
    return stages, len(drawn)


def measure_analysis(studies: int = 20, trials: int = 50, epochs: int = 50, bootstrap: int = 2000,
                     results_dir: Path | None = None, mode: str = "full") -> dict[str, Any]:
    from analysis.synthetic_store import write_synthetic_store

    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        started = time.perf_counter()
        write_synthetic_store(uri, "bench", studies=studies, trials=trials, epochs=epochs, n_val=10000, n_test=1000)
        build = time.perf_counter() - started
        stages, figure_count = timed_stages(uri, Path(tmp), bootstrap)
    total = sum(stages.values())
    record = {"name": NAME, "mode": mode, "trials": studies * trials, "studies": studies, "epochs": epochs,
              "bootstrap": bootstrap, "store_build_seconds": round(build, 2),
              "stages_seconds": {k: round(v, 2) for k, v in stages.items()},
              "analysis_seconds": round(total, 2), "goal_seconds": GOAL_SECONDS,
              "meets_goal": total <= GOAL_SECONDS, "cpus": os.cpu_count(),
              "python": platform.python_version(), "machine": platform.machine(), "figures": figure_count}
    table = markdown_table(["stage", "seconds"], [*[[k, f"{v:.2f}"] for k, v in record["stages_seconds"].items()],
                                                  ["**total analysis**", f"**{total:.2f}** (goal ≤ {GOAL_SECONDS:.0f})"]])
    notes = (f"{record['trials']} trials x {epochs} epochs ({studies} studies). Store build (not timed as "
             f"analysis): {build:.1f} s. {os.cpu_count()} CPUs, Python {record['python']}, {bootstrap} bootstrap "
             f"resamples, {figure_count} figures.")
    return write_results(NAME, record, table, results_dir, notes)


def run(options: Options) -> dict[str, Any]:
    """The full size in both modes: the goal is stated for 1,000 trials x 50 epochs."""
    return measure_analysis(results_dir=options.results_dir, mode=options.mode)


def summary_rows(result: dict[str, Any]) -> list[Row]:
    return [Row(f"analysis_seconds ({result['trials']} trials x {result['epochs']} epochs)",
                result["analysis_seconds"], f"<= {GOAL_SECONDS:.0f} s", verdict(result["meets_goal"]))]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    print(measure_analysis(args.studies, args.trials, args.epochs, args.bootstrap, args.results)["stages_seconds"])
