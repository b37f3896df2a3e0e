"""The benchmarks' one interface, the runner's summary, and the trial hooks that replace
patching study internals (issue 12)."""

from __future__ import annotations

import ast
import contextlib
import io
import json
from pathlib import Path

import optuna
import pytest

from tests.conftest import PROJECT_ROOT, run_cli

BENCHMARKS_DIR = PROJECT_ROOT / "benchmarks"


def test_every_benchmark_has_name_goal_run_and_summary_rows() -> None:
    import inspect

    from benchmarks.__main__ import ORDER, discover

    modules = discover()
    assert list(modules)[:len(ORDER)] == list(ORDER)
    for name, module in modules.items():
        assert module.NAME == name and isinstance(module.GOAL, str) and module.GOAL, name
        assert list(inspect.signature(module.run).parameters) == ["options"], name
        assert list(inspect.signature(module.summary_rows).parameters) == ["result"], name


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call)):
        node = node.value if isinstance(node, ast.Attribute) else node.func
    return node.id if isinstance(node, ast.Name) else None


def study_patches(source: str) -> list[str]:
    """Assignments to an attribute of a `study` module, or of an object a `study` name made:
    `study.objective.EpochEvaluator = ...`, `tracker = Tracker(...); tracker.log_epoch = ...`."""
    tree = ast.parse(source)
    from_study: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            from_study |= {(a.asname or a.name).split(".")[0] for a in node.names if a.name.startswith("study")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("study"):
            from_study |= {a.asname or a.name for a in node.names}
    for node in ast.walk(tree):  # objects made by a study name
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and _root(node.value) in from_study:
            from_study |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        found += [f"{node.lineno}: {ast.unparse(t)}" for t in targets
                  if isinstance(t, ast.Attribute) and _root(t) in from_study]
    return found


def test_no_benchmark_patches_study_internals() -> None:
    assert study_patches("import study.objective\nstudy.objective.EpochEvaluator = 1\n") != []  # the check bites
    assert study_patches("from study.tracking import Tracker\nt = Tracker('x')\nt.log_epoch = print\n") != []
    patches = {path.name: study_patches(path.read_text()) for path in sorted(BENCHMARKS_DIR.glob("*.py"))}
    assert {name: found for name, found in patches.items() if found} == {}


# Issue 5's results as they were committed (the figures that matter): a median of per-repeat
# ratios over 3 repeats, a warm-started one-seed search, a quick scale-out run.
OLD_RESULTS = {
    "trial_overhead": {"name": "trial_overhead", "mode": "full", "repeats": 3, "overhead_ratio": 0.983,
                       "meets_goal": True, "seconds": {"pipeline_no_test": {"median": 28.7052},
                                                       "raw": {"median": 25.2903}}},
    "search_efficiency": {"name": "search_efficiency", "mode": "full", "protocol": "bench", "seeds": 1,
                          "speedup_vs_kerastuner": 27.273, "speedup_vs_tpe_no_pruning": 0.897},
    "scale": {"mode": "quick", "configs": [{"storage": "journal", "workers": 1, "trials_per_s": 0.5}]},
    "analysis_speed": {"trials": 1000, "epochs": 50, "analysis_seconds": 16.83, "meets_goal": True},
}


def test_summary_is_rebuilt_from_the_results_on_disk(tmp_path) -> None:
    """Results measured under issue 5's definitions are shown as stale, not judged: no 27x
    speed-up, no 0.983 "meets goal"; the ratio of medians (1.135) is what the summary quotes."""
    for name, result in OLD_RESULTS.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(result))
    before = {path.name: path.read_text() for path in tmp_path.glob("*.json")}
    proc = run_cli("benchmarks", "--summary", "--results", str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "summary.json").read_text())["rows"]
    by_benchmark = {name: [row for row in rows if row["benchmark"] == name] for name in OLD_RESULTS}
    assert [row["value"] for row in by_benchmark["trial_overhead"]] == [1.135]
    for name in ("trial_overhead", "search_efficiency", "scale"):
        assert by_benchmark[name] and all(row["status"].startswith("stale") for row in by_benchmark[name]), name
    assert by_benchmark["analysis_speed"][0]["status"] == "meets goal (earlier run)"
    assert [row["status"] for row in rows if row["benchmark"] == "hardware"] == ["not run"]
    text = (tmp_path / "summary.md").read_text()
    assert "27.3" not in text and "0.983" not in text
    assert before == {name: (tmp_path / name).read_text() for name in before}  # results are read, never rewritten


def test_unknown_benchmark_is_refused_and_nothing_is_written(tmp_path) -> None:
    results = tmp_path / "results"
    proc = run_cli("benchmarks", "--only", "nosuch", "--results", str(results), timeout=300)
    assert proc.returncode == 2
    assert "--only" in proc.stderr and "nosuch" in proc.stderr
    assert not results.exists()


def _digits_config(tmp_path: Path, name: str):
    from study.config import SearchConfig
    from study.data import load_dataset
    from study.inputs import PreparedStudy
    from study.space import load_space
    from study.storage import open_storage
    from study.tracking import Tracker

    space_file = PROJECT_ROOT / "search_spaces" / "digits.yaml"
    space = load_space(space_file, ["train.epochs=2"])
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = str(tmp_path / "optuna.journal")
    config = SearchConfig(space_file=str(space_file), space=space, trials=1, experiment="hooks", study_name=name,
                          seed=0, sampler="random", pruner="none", objective="val_accuracy", storage=storage,
                          tracking_uri=tracking_uri)
    return config, (load_dataset(space.data), Tracker(tracking_uri), [PreparedStudy(name, 0, open_storage(storage))])


@pytest.mark.slow
def test_trial_hooks_observe_epochs_and_drop_test_evaluation(tmp_path) -> None:
    """A real digits study through run_search: the hook sees every epoch of the trial, the
    test evaluation is off inside the block, and the product's behaviour is back after it."""
    from study.objective import TrialHooks, trial_hooks
    from study.search import run_search

    seen = []
    config, checked = _digits_config(tmp_path, "with-hooks")
    with trial_hooks(TrialHooks(on_epoch=lambda trial, epoch, row: seen.append((trial, epoch, dict(row))),
                                evaluate_test=False)), contextlib.redirect_stdout(io.StringIO()):
        assert run_search(config, checked) == 0
    assert [(trial, epoch) for trial, epoch, _ in seen] == [(0, 0), (0, 1)]
    assert all("val_accuracy" in row and not any(key.startswith("test_") for key in row) for _, _, row in seen)
    tracker = checked[1]
    trial = optuna.load_study(study_name="with-hooks", storage=checked[2][0].storage).trials[0]
    run_id = trial.user_attrs["mlflow_run_id"]
    assert "test_accuracy" not in tracker.client.get_run(run_id).data.metrics

    config, checked = _digits_config(tmp_path, "without-hooks")
    with contextlib.redirect_stdout(io.StringIO()):
        assert run_search(config, checked) == 0
    trial = optuna.load_study(study_name="without-hooks", storage=checked[2][0].storage).trials[0]
    assert "test_accuracy" in checked[1].client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
    assert len(seen) == 2  # the hook was not installed any more


def test_a_missed_seed_counts_as_the_budget_and_makes_the_speedup_a_lower_bound() -> None:
    from benchmarks.search_efficiency import median_time, speedup, summarize, summary_rows

    assert median_time([10.0, None, 20.0], 900) == {"median_s": 20.0, "censored": False, "reached": "2/3"}
    assert median_time([10.0, None, None], 900) == {"median_s": 900, "censored": True, "reached": "1/3"}
    fast, slow, missed = median_time([20.0] * 3, 900), median_time([600.0] * 3, 900), median_time([None] * 3, 900)
    assert speedup(fast, missed, 2.0) == {"value": 45.0, "bound": "lower",
                                          "verdict": "meets goal (lower bound: the anchor missed)"}
    assert speedup(slow, missed, 2.0)["verdict"] == "not shown: a lower bound under the goal"
    assert speedup(missed, fast, 2.0)["value"] is None
    assert speedup(fast, slow, 1.0) == {"value": 30.0, "bound": "exact", "verdict": "meets goal"}

    def seed_run(seed: int, t89: float | None, t90: float | None, best: float) -> dict:
        return {"seed": seed, "time_to_target_s": {"0.89": t89, "0.90": t90}, "best_val_accuracy": best}

    runs = {"default_study": [seed_run(s, 100.0, 300.0, 0.905) for s in range(3)],
            "tpe_no_pruning": [seed_run(s, 150.0, None, 0.895) for s in range(3)],
            "kerastuner_hyperband": [seed_run(s, None, None, 0.88) for s in range(3)]}
    figures = summarize(runs, (0.89, 0.90), 900.0)
    result = {"protocol": {}, "seeds": 3, "runs": runs, "budget_s": 900.0, "complete": True,
              "goals": {"speedup_vs_kerastuner_hyperband": ">= 2", "speedup_vs_tpe_no_pruning": "> 1"}, **figures}
    shown = {row.figure: (row.value, row.verdict) for row in summary_rows(result)}
    assert shown["speed-up to 0.89 vs kerastuner_hyperband (median, 3/3 seeds, cold)"] == (
        "≥ 9.0", "meets goal (lower bound: the anchor missed)")
    assert shown["speed-up to 0.89 vs tpe_no_pruning (median, 3/3 seeds, cold)"] == ("1.5", "meets goal")
    assert shown["speed-up to 0.90 vs tpe_no_pruning (median, 3/3 seeds, cold)"] == (
        "≥ 3.0", "meets goal (lower bound: the anchor missed)")
    assert shown["default study best val acc in 900 s (median)"] == (0.905, "meets goal")


def test_a_changed_default_redoes_its_own_seeds_and_keeps_the_anchors() -> None:
    """A stored run is kept only under the same protocol and its searcher's settings as they
    are now: a new default study (here a cost cap) is measured again, the anchors are not."""
    from benchmarks.search_efficiency import reusable

    old_default = {"sampler": "tpe", "pruner": "hyperband", "max_cost": None}
    new_default = {**old_default, "max_cost": 6.0}
    anchor = {"sampler": "tpe", "pruner": "none", "max_cost": None}
    stored = {"protocol": {"budget_s": 900.0},
              "runs": {"default_study": [{"seed": 0, "settings": old_default}],
                       "tpe_no_pruning": [{"seed": 0, "settings": anchor}, {"seed": 1}]}}  # seed 1: no record
    kept = reusable(stored, {"budget_s": 900.0}, {"default_study": new_default, "tpe_no_pruning": anchor})
    assert kept == {"default_study": [], "tpe_no_pruning": [{"seed": 0, "settings": anchor}]}
    same = reusable(stored, {"budget_s": 900.0}, {"default_study": old_default, "tpe_no_pruning": anchor})
    assert same["default_study"] == [{"seed": 0, "settings": old_default}]
    assert reusable(stored, {"budget_s": 300.0}, {"default_study": old_default}) == {}  # another protocol
