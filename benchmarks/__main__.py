"""`make bench`: every benchmark, then a summary table next to the goals.

    python -m benchmarks                      # every benchmark (see benchmarks/README.md for the time)
    python -m benchmarks --quick              # reduced reference run (JSON says "mode": "quick")
    python -m benchmarks --only hardware trial_overhead
    python -m benchmarks --summary            # rebuild summary.{json,md} from the results on disk
    python -m benchmarks --results DIR        # write results somewhere else (tests do)

A benchmark is a module of this package with the interface of `benchmarks.common`: NAME,
GOAL, run(options), summary_rows(result). The ones in ORDER run in that order; any other
module of the package that has the interface runs after them, so adding a benchmark is
adding its module. Benchmarks never fail on timing: the exit code is 0 unless a benchmark
crashed (1), or 2 for a bad flag.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import benchmarks  # noqa: E402
from benchmarks.common import RESULTS_DIR, ROOT, Options, Row, markdown_table, read_result  # noqa: E402

ORDER = ("trial_overhead", "hardware", "search_efficiency", "analysis_speed", "scale", "masking_speed")
INTERFACE = ("NAME", "GOAL", "run", "summary_rows")
NEEDS_EXTRAS = ("search_efficiency",)  # keras-tuner


def is_benchmark(module: ModuleType) -> bool:
    return all(hasattr(module, attribute) for attribute in INTERFACE)


def discover() -> dict[str, ModuleType]:
    """Every benchmark module, ORDER first. A module that imports heavy libraries at the top
    costs that import here; the ones of this package import them inside `run`."""
    names = [info.name for info in pkgutil.iter_modules(benchmarks.__path__) if not info.name.startswith("_")]
    found = {name: importlib.import_module(f"benchmarks.{name}") for name in names}
    modules = {name: found[name] for name in ORDER if name in found}
    modules.update({name: module for name, module in sorted(found.items())
                    if name not in modules and is_benchmark(module)})
    for name, module in sorted(found.items()):  # meant as a benchmark, but with another interface
        if name not in modules and (hasattr(module, "NAME") or hasattr(module, "main")):
            missing = [attribute for attribute in INTERFACE if not hasattr(module, attribute)]
            print(f"bench: benchmarks/{name}.py lacks {', '.join(missing)}: not run", file=sys.stderr)
    return modules


def ensure_extras() -> None:
    """keras-tuner and tensorboard are benchmark-only extras (benchmarks/requirements.txt)."""
    if importlib.util.find_spec("keras_tuner") is None:
        print("bench: installing benchmark extras from benchmarks/requirements.txt", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-r",
                        str(ROOT / "benchmarks" / "requirements.txt")], check=True)
        importlib.invalidate_caches()


def run_one(name: str, module: ModuleType, options: Options) -> str:
    """'ok' or 'crashed'; one crashed benchmark does not stop the others."""
    try:
        if name in NEEDS_EXTRAS:
            ensure_extras()
        print(f"bench: {name} ({options.mode}) ...", flush=True)
        module.run(options)
        return "ok"
    except Exception:
        traceback.print_exc()
        return "crashed"


def summary_table(modules: dict[str, ModuleType], status: dict[str, str], results_dir: Path) -> list[list[object]]:
    """Each benchmark's own rows, from this run's result or the last one on disk."""
    rows: list[list[object]] = []
    for name, module in modules.items():
        result = read_result(module.NAME, results_dir) if status.get(name, "ok") == "ok" else {}
        if not result:
            rows.append([name, "", "", module.GOAL, status.get(name, "not run")])
            continue
        earlier = "" if name in status else " (earlier run)"
        for row in module.summary_rows(result):
            rows.append([name, row.figure, "" if row.value is None else row.value, row.goal, row.verdict + earlier])
    return rows


def write_summary(rows: list[list[object]], status: dict[str, str], seconds: dict[str, float], mode: str,
                  total: float, results_dir: Path) -> str:
    table = markdown_table(["benchmark", "figure", "value", "goal", "where we stand"], rows)
    summary = {"mode": mode, "status": status, "seconds": seconds, "total_seconds": round(total, 1),
               "rows": [dict(zip(["benchmark", "figure", "value", "goal", "status"], row)) for row in rows]}
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    heading = f"{mode} mode, {total:.0f} s" if status else "rebuilt from the results on disk, nothing run"
    (results_dir / "summary.md").write_text(
        f"### summary ({heading})\n\nEach benchmark's own table: `<name>.md` beside this file.\n\n" + table)
    return table


def main(argv: list[str] | None = None) -> int:
    modules = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="the project's benchmarks")
    parser.add_argument("--quick", action="store_true", help="reduced reference run (labelled quick)")
    parser.add_argument("--only", nargs="+", choices=list(modules), metavar="NAME",
                        help=f"run only these: {', '.join(modules)}")
    parser.add_argument("--summary", action="store_true", help="run nothing; rebuild the summary from the results")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="results folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    options = Options(quick=args.quick, results_dir=args.results)
    selected = [] if args.summary else (args.only or list(modules))
    started = time.monotonic()
    status: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name in selected:
        begun = time.monotonic()
        status[name] = run_one(name, modules[name], options)
        seconds[name] = round(time.monotonic() - begun, 1)
        print(f"bench: {name}: {status[name]} in {seconds[name]:.0f} s", flush=True)
    rows = summary_table(modules, status, args.results)
    print(write_summary(rows, status, seconds, options.mode, time.monotonic() - started, args.results), flush=True)
    return 1 if "crashed" in status.values() else 0


if __name__ == "__main__":
    sys.exit(main())
