"""Benchmark (issue 5 item 4, issue 9 section 2): analysis time and memory at scale.

MLflow: builds a synthetic store per the search contract (20 studies x 50 trials x 50
epochs; its construction is not counted), then times `python -m analysis report` stages
in-process: loading, computing, drawing and writing. Goal: <= 15 s.

Tables: writes a synthetic epoch table of 10,000 studies x 30 trials x 20 epochs as CSV
(and Parquet when pyarrow is installed) and runs `python -m analysis report --csv` on it
as a child process, recording its seconds and peak RSS. Goal: <= 60 s and <= 2 GB each,
with the default bootstrap count. Quick mode uses 1,000 studies (labelled in the rows).
The 1-minute load average at the start is recorded: figures taken on a busy machine say so.
Writes benchmarks/results/analysis_speed.{json,md}.

    .venv/bin/python -m benchmarks.analysis_speed [--studies 20 --trials 50 --epochs 50]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, Options, Row, markdown_table, verdict, write_results

NAME = "analysis_speed"
GOAL_SECONDS = 15.0  # MLflow, 1,000 trials x 50 epochs, loaded and analysed
TABLE_GOAL_SECONDS, TABLE_GOAL_MB = 60.0, 2048.0  # a table of 10,000 x 30 x 20
TABLE_SIZE = {"studies": 10_000, "trials": 30, "epochs": 20}
QUICK_TABLE_STUDIES = 1_000
GOAL = (f"python -m analysis report: 1,000 trials x 50 epochs from MLflow in <= {GOAL_SECONDS:.0f} s; "
        f"10,000 studies x 30 trials x 20 epochs from CSV/Parquet in <= {TABLE_GOAL_SECONDS:.0f} s "
        f"and <= {TABLE_GOAL_MB / 1024:.0f} GB peak RSS")


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
    from benchmarks.synthetic_store import write_synthetic_store

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


def epoch_table(studies: int, trials: int, epochs: int, seed: int = 0):
    """A synthetic per-epoch table (study, trial, epoch, val_loss, val_accuracy,
    test_accuracy, then every column a selection rule or its test cost reads, so the
    benchmark runs every rule): each trial's loss turns at a random epoch while its
    accuracy keeps rising, so the two rules disagree in a share of trials; rounded values
    make ties."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    runs, rows = studies * trials, studies * trials * epochs
    epoch = np.tile(np.arange(epochs), runs)
    quality = np.repeat(rng.uniform(0.6, 0.95, runs), epochs)
    turn = np.repeat(rng.integers(1, epochs, runs), epochs)
    loss = 1.2 - quality + 0.02 * np.abs(epoch - turn) + rng.normal(0, 0.01, rows)
    accuracy = np.clip(quality - 0.3 * np.exp(-epoch / 3) + rng.normal(0, 0.01, rows), 0, 1)
    test = np.clip(accuracy + rng.normal(0, 0.01, rows), 0, 1)
    penalty = np.repeat(rng.uniform(0, 0.05, runs), epochs)  # a trial's L2 term
    noise = lambda: rng.normal(0, 0.01, rows)  # noqa: E731
    return pd.DataFrame({"study": np.repeat(np.arange(studies), trials * epochs),
                         "trial": np.tile(np.repeat(np.arange(trials), epochs), studies),
                         "epoch": epoch, "val_loss": loss.round(4),
                         "val_accuracy": accuracy.round(3), "test_accuracy": test.round(3),
                         "val_crossentropy": (loss - penalty).round(4),
                         "val_calibrated_nll": (0.9 * (loss - penalty) + noise()).round(4),
                         "val_balanced_accuracy": np.clip(accuracy + noise(), 0, 1).round(3),
                         "val_macro_f1": np.clip(accuracy + noise(), 0, 1).round(3),
                         "test_crossentropy": (loss - penalty + noise()).round(4),
                         "test_ece": np.clip(0.05 + noise(), 0, 1).round(4),
                         "test_brier": np.clip(2 * (1 - test) * 0.7 + noise(), 0, 2).round(4)})


# Runs a command and prints its seconds, exit code and rusage peak RSS (KiB) as JSON. The
# command is this small launcher's child, not the benchmark's: Linux carries the peak RSS
# of the process a child was forked from into the child's ru_maxrss, across exec, so a
# report started by the benchmark process (which has just built the 6 M-row frame and
# peaks above 2 GB itself) would report the benchmark's peak, not its own.
_LAUNCHER = """
import json, os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(json.dumps({"seconds": time.perf_counter() - started, "maxrss_kib": usage.ru_maxrss,
                  "returncode": os.waitstatus_to_exitcode(status)}))
"""


def peak_of(command: list[str]) -> tuple[float, float, int, str]:
    """Seconds, peak RSS (MB) of that process alone, exit code and stderr of `command`."""
    launched = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True,
                              text=True, check=True)
    measured = json.loads(launched.stdout)
    return (measured["seconds"], measured["maxrss_kib"] / 1024,  # ru_maxrss is in KiB on Linux
            measured["returncode"], launched.stderr)


def report_child(table: Path, out: Path, bootstrap: int) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of `python -m analysis report --csv table` as a child
    process (see `_LAUNCHER` for why it is not the benchmark's own child)."""
    command = [sys.executable, "-m", "analysis", "report", "--csv", str(table), "--epoch-col", "epoch",
               "--test-accuracy-col", "test_accuracy", "--val-size", "10000", "--out", str(out),
               "--bootstrap", str(bootstrap)]
    seconds, peak_mb, returncode, stderr = peak_of(command)
    if returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {returncode}: {stderr[-2000:]}")
    return seconds, peak_mb


def measure_tables(studies: int, trials: int, epochs: int, bootstrap: int) -> list[dict[str, Any]]:
    """One row per format (CSV; Parquet if pyarrow is installed) of the same table."""
    formats = ["csv"] + (["parquet"] if importlib.util.find_spec("pyarrow") else [])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        frame = epoch_table(studies, trials, epochs)
        for fmt in formats:
            path = Path(tmp) / f"bench.{fmt}"
            frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path, index=False)
            seconds, peak_mb = report_child(path, Path(tmp) / f"report-{fmt}", bootstrap)
            rows.append({"source": fmt, "studies": studies, "trials": trials, "epochs": epochs,
                         "bootstrap": bootstrap, "seconds": round(seconds, 2),
                         "peak_rss_mb": round(peak_mb, 1),
                         "meets_goal": seconds <= TABLE_GOAL_SECONDS and peak_mb <= TABLE_GOAL_MB})
    return rows


def run(options: Options) -> dict[str, Any]:
    """MLflow at its full size in both modes; the table at 10,000 studies (1,000 in quick)."""
    load = os.getloadavg()[0]
    record = measure_analysis(results_dir=options.results_dir, mode=options.mode)
    size = {**TABLE_SIZE, "studies": QUICK_TABLE_STUDIES if options.quick else TABLE_SIZE["studies"]}
    return add_table_rows(record, measure_tables(**size, bootstrap=record["bootstrap"]), load,
                          options.results_dir)


def add_table_rows(record: dict[str, Any], rows: list[dict[str, Any]], load: float,
                   results_dir: Path | None) -> dict[str, Any]:
    """The table rows beside the MLflow record, with the load average they were taken under."""
    record = {**record, "tables": rows, "load_average": round(load, 2),
              "table_goal": {"seconds": TABLE_GOAL_SECONDS, "peak_rss_mb": TABLE_GOAL_MB}}
    table = markdown_table(
        ["source", "studies", "trials", "epochs", "bootstrap", "seconds", "peak RSS (MB)", "goal met"],
        [["MLflow", record["studies"], record["trials"] // record["studies"], record["epochs"],
          record["bootstrap"], record["analysis_seconds"], "", record["meets_goal"]]]
        + [[r["source"], r["studies"], r["trials"], r["epochs"], r["bootstrap"], r["seconds"],
            r["peak_rss_mb"], r["meets_goal"]] for r in rows])
    notes = (f"Goals: MLflow <= {GOAL_SECONDS:.0f} s (store construction not counted); tables <= "
             f"{TABLE_GOAL_SECONDS:.0f} s and <= {TABLE_GOAL_MB:.0f} MB peak RSS of the report process. "
             f"1-minute load average at the start: {load:.2f} on {os.cpu_count()} CPUs.")
    return write_results(NAME, record, table, results_dir, notes)


def summary_rows(result: dict[str, Any]) -> list[Row]:
    rows = [Row(f"analysis_seconds ({result['trials']} trials x {result['epochs']} epochs)",
                result["analysis_seconds"], f"<= {result.get('goal_seconds', GOAL_SECONDS):.0f} s",
                verdict(result["meets_goal"]))]
    for table in result.get("tables", []):
        shape = f"{table['studies']} studies x {table['trials']} trials x {table['epochs']} epochs"
        rows.append(Row(f"{table['source']} report seconds / peak RSS MB ({shape})",
                        f"{table['seconds']} / {table['peak_rss_mb']}",
                        f"<= {TABLE_GOAL_SECONDS:.0f} s, <= {TABLE_GOAL_MB:.0f} MB",
                        verdict(table["meets_goal"])))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--table-studies", type=int, default=TABLE_SIZE["studies"],
                        help="studies of the CSV/Parquet table (0: skip the tables)")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    load_average = os.getloadavg()[0]
    measured = measure_analysis(args.studies, args.trials, args.epochs, args.bootstrap, args.results)
    print(measured["stages_seconds"])
    if args.table_studies:
        measured = add_table_rows(measured, measure_tables(args.table_studies, TABLE_SIZE["trials"],
                                                           TABLE_SIZE["epochs"], args.bootstrap),
                                  load_average, args.results)
        print(measured["tables"])
