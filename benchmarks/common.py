"""Shared pieces of the benchmarks: the interface, timing, median and spread, data, output.

Every benchmark module has the same small interface, which `python -m benchmarks` uses:

    NAME: str                                   # results/<NAME>.json and .md
    GOAL: str                                   # one line: what the benchmark must show
    def run(options: Options) -> dict           # measure, write results/<NAME>.*, return the JSON
    def summary_rows(result: dict) -> list[Row] # the summary table's rows, from that JSON

Every benchmark measures its variants side by side in the same process, interleaved repeat
by repeat, and reports ratios (median and spread), because this 2-core machine is shared
and absolute times alone mean little.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_SPACE = ROOT / "search_spaces" / "cnn.yaml"


@dataclass(frozen=True)
class Options:
    """What the runner passes to every benchmark's `run`: quick = the reduced reference run
    (its JSON says "mode": "quick"); results_dir = where <NAME>.json and .md go."""

    quick: bool = False
    results_dir: Path = field(default_factory=lambda: RESULTS_DIR)

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


@dataclass(frozen=True)
class Row:
    """One line of the summary table: a figure, its value, its goal and the verdict."""

    figure: str
    value: Any
    goal: str
    verdict: str


def verdict(met: bool | None) -> str:
    return "reported" if met is None else ("meets goal" if met else "misses goal")


def read_result(name: str, results_dir: Path | None = None) -> dict[str, Any]:
    """results/<name>.json as written by the benchmark's last run, or {} when there is none."""
    path = Path(results_dir or RESULTS_DIR) / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def ratio_of_medians(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """median(numerators) / median(denominators), the one definition of a ratio of times here;
    spread = the range of the per-repeat ratios (each numerator over its own repeat's denominator)."""
    per_repeat = [n / d for n, d in zip(numerators, denominators)]
    value = statistics.median(numerators) / statistics.median(denominators)
    return {"value": round(value, 4), "min": round(min(per_repeat), 4), "max": round(max(per_repeat), 4),
            "n": len(per_repeat), "per_repeat": [round(r, 4) for r in per_repeat]}


def stats(values: Iterable[float]) -> dict[str, Any]:
    """Median and spread (min, max, and max-min relative to the median) of repeated figures."""
    values = [float(v) for v in values]
    if not values:
        return {"median": None, "min": None, "max": None, "rel_spread": None, "n": 0, "values": []}
    median = statistics.median(values)
    return {"median": round(median, 4), "min": round(min(values), 4), "max": round(max(values), 4),
            "rel_spread": round((max(values) - min(values)) / median, 4) if median else None,
            "n": len(values), "values": [round(v, 4) for v in values]}


def finite_positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def environment() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine(),
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "load_average_1min_at_start": round(load, 2) if load is not None else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


def load_space(overrides: Sequence[str] = (), path: Path = DEFAULT_SPACE):
    from study.space import load_space as _load

    return _load(path, list(overrides))


def load_splits(space):
    from study.data import load_dataset

    return load_dataset(space.data)


def baseline_hp(space) -> dict[str, Any]:
    """The enqueued baseline with every inactive knob at its default, as a trial would see it."""
    hp: dict[str, Any] = {}
    for name, spec in space.params.items():
        if spec.role == "fixed":
            hp[name] = spec.value
        elif not spec.is_active(hp):
            hp[name] = spec.default
        else:
            hp[name] = space.baseline[name]
    return hp


def quiet() -> None:
    """No TF/absl chatter, no optuna info lines, no MLflow migrations output."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import logging

    for name in ("mlflow", "alembic", "optuna", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        pass


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "" if value is None else str(value)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(name: str, payload: dict[str, Any], table: str, results_dir: Path | None = None,
                  notes: str = "") -> dict[str, Any]:
    """benchmarks/results/<name>.json and <name>.md (the table the README quotes)."""
    folder = Path(results_dir) if results_dir else RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    mode = payload.get("mode", "full")
    header = f"### {name} ({mode} mode)\n\n"
    (folder / f"{name}.md").write_text(header + table + ("\n" + notes.strip() + "\n" if notes else ""))
    return payload
