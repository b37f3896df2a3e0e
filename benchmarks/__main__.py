"""`make bench`: every benchmark of issue 5, then a summary table next to the goals.

    python -m benchmarks            # the default run (~60 min on 2 cores; see benchmarks/README.md)
    python -m benchmarks --quick    # reduced reference run (smaller budgets; JSON says "mode": "quick")
    python -m benchmarks --only hardware trial_overhead
    python -m benchmarks --protocol full   # search efficiency as specified: 3 seeds x 900 s (135 min more)

Benchmarks never fail on timing: the exit code is 0 unless a benchmark crashed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import time
import traceback
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.common import RESULTS_DIR, ROOT, markdown_table  # noqa: E402

OURS = ("trial_overhead", "hardware", "search_efficiency")
OTHERS = ("analysis_speed", "scale", "masking_speed")  # written by the analysis, scale-out and secrets work


def ensure_extras() -> None:
    """keras-tuner and tensorboard are benchmark-only extras (benchmarks/requirements.txt)."""
    if importlib.util.find_spec("keras_tuner") is None:
        print("bench: installing benchmark extras from benchmarks/requirements.txt", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r",
                        str(ROOT / "benchmarks" / "requirements.txt")], check=True)
        importlib.invalidate_caches()


def call_main(module: Any, quick: bool, **extra: Any) -> Any:
    parameters = inspect.signature(module.main).parameters
    kwargs = {k: v for k, v in {"quick": quick, **extra}.items() if k in parameters}
    if "quick" in parameters or not parameters:
        if "quick" not in parameters:  # an argparse main(): give it no flags of ours
            saved, sys.argv = sys.argv, [module.__name__]
            try:
                return module.main()
            finally:
                sys.argv = saved
        return module.main(**kwargs)
    return module.main(**kwargs)


def read_json(name: str) -> dict[str, Any]:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def summary_rows(status: dict[str, str]) -> list[list[Any]]:
    rows: list[list[Any]] = []

    def add(bench: str, key: str, value: Any, goal: str, met: bool | None, missing: str = "not run") -> None:
        where = status.get(bench, "ok" if value is not None else missing)
        verdict = where if where != "ok" else ("meets goal" if met else ("misses goal" if met is False else "reported"))
        if value is None and where == "ok":
            verdict = missing
        if bench not in status and (value is not None or missing != "not run"):
            verdict += " (earlier run)"
        rows.append([bench, key, "" if value is None else value, goal, verdict])

    def read(bench: str) -> dict[str, Any]:  # this run's result, or the last one on disk
        return read_json(bench) if status.get(bench, "ok") == "ok" else {}

    overhead = read("trial_overhead")
    add("trial_overhead", "overhead_ratio", overhead.get("overhead_ratio"), "<= 1.03",
        None if not overhead else overhead.get("meets_goal"))
    cpu = (overhead.get("ratios") or {}).get("overhead_ratio_cpu", {}).get("median")
    add("trial_overhead", "overhead_ratio_cpu (process CPU time)", cpu, "<= 1.03 (same goal, CPU time)",
        None if cpu is None else cpu <= 1.03)
    add("trial_overhead", "test_eval_extra (÷ raw)", overhead.get("test_eval_extra"), "reported", None)
    add("trial_overhead", "logging_extra (÷ raw)", overhead.get("logging_extra"), "reported", None)
    hardware = read("hardware")
    add("hardware", "baseline_peak_fraction", hardware.get("baseline_peak_fraction"), ">= 0.40",
        None if not hardware else hardware.get("meets_goal"))
    for name, result in (hardware.get("results") or {}).items():
        if name != "baseline":
            add("hardware", f"peak fraction: {name}", result["fraction"]["median"], "reported", None)
    efficiency = read("search_efficiency")
    for key, goal, threshold in (("speedup_vs_kerastuner", ">= 2", 2.0), ("speedup_vs_tpe_no_pruning", "> 1", 1.0)):
        value = efficiency.get(key)
        met = None if value is None else (value >= threshold if threshold == 2.0 else value > threshold)
        default_time = (efficiency.get("summary") or {}).get("default_study", {}).get("median_time_to_target_s", 0)
        missed = ("not run" if not efficiency else
                  f"misses goal: the default study missed the target in {efficiency.get('budget_s', 0):.0f} s"
                  if default_time is None else "not run (that searcher was left out)")
        add("search_efficiency", key, value, goal, met, missing=missed)
    analysis = read("analysis_speed")
    add("analysis_speed", "analysis_seconds", analysis.get("analysis_seconds"), "<= 30 s",
        analysis.get("meets_goal") if analysis else None)
    masking = read("masking_speed")
    add("masking_speed", "seconds_10mb (CPU; worst realistic text)", masking.get("seconds_10mb"), "< 1 s",
        None if not masking else masking["seconds_10mb"] < 1.0)
    add("masking_speed", "ratio_2x (10 MB ÷ 5 MB time, worst text)", masking.get("ratio_2x"), "<= 3",
        None if not masking else masking["ratio_2x"] <= 3.0)
    scale = read("scale")
    for key, value in scale.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool) and ("ratio" in key or "speedup" in key or "efficiency" in key):
            add("scale", key, value, str(scale.get("goal", "reported")), scale.get("meets_goal"))
    if not any(row[0] == "scale" for row in rows):
        add("scale", "(table: scale.md, appended below)", None, "reported", None,
            missing="reported" if scale else "not run")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="issue 5 benchmarks")
    parser.add_argument("--quick", action="store_true", help="reduced reference run (labelled quick)")
    parser.add_argument("--only", nargs="+", choices=OURS + OTHERS)
    parser.add_argument("--protocol", choices=("bench", "full"), default="bench",
                        help="search efficiency: 'full' = 3 seeds x 900 s without early stop")
    args = parser.parse_args(argv)
    selected = args.only or list(OURS + OTHERS)
    started = time.monotonic()
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in selected:
        t0 = time.monotonic()
        try:
            spec = importlib.util.find_spec(f"benchmarks.{name}")
            if spec is None:
                status[name] = "not available"
                print(f"bench: {name}: not available", flush=True)
                continue
            module = importlib.import_module(f"benchmarks.{name}")
            if not hasattr(module, "main"):
                status[name] = "not available"
                print(f"bench: {name}: not available (no main)", flush=True)
                continue
            if name == "search_efficiency":
                ensure_extras()
            print(f"bench: {name} ({'quick' if args.quick else 'full'}) ...", flush=True)
            extra = {"protocol": args.protocol} if name == "search_efficiency" else {}
            call_main(module, args.quick, **extra)
            status[name] = "ok"
        except Exception:  # one crashed benchmark does not stop the others
            traceback.print_exc()
            status[name] = "crashed"
        seconds[name] = round(time.monotonic() - t0, 1)
        print(f"bench: {name}: {status[name]} in {seconds[name]:.0f} s", flush=True)
    rows = summary_rows(status)
    table = markdown_table(["benchmark", "figure", "value", "goal", "where we stand"], rows)
    summary = {"mode": "quick" if args.quick else "full", "status": status, "seconds": seconds,
               "total_seconds": round(time.monotonic() - started, 1),
               "rows": [dict(zip(["benchmark", "figure", "value", "goal", "status"], r)) for r in rows]}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    text = f"### summary ({summary['mode']} mode, {summary['total_seconds']:.0f} s)\n\n" + table
    for name in OTHERS:  # their own tables, as they wrote them (this run's, or the last on disk)
        if status.get(name, "ok") == "ok" and (RESULTS_DIR / f"{name}.md").exists():
            text += "\n" + (RESULTS_DIR / f"{name}.md").read_text()
    (RESULTS_DIR / "summary.md").write_text(text)
    print(table, flush=True)
    return 1 if "crashed" in status.values() else 0


if __name__ == "__main__":
    sys.exit(main())
