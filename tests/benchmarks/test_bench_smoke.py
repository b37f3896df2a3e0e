"""Smoke test of the benchmarks: the smallest configuration of each, on tiny data.

Checks what each benchmark writes (its JSON keys, the definitions of its figures, the
summary rows) and that the figures are positive finite numbers. Never asserts on timings:
benchmarks do not fail CI on speed.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import statistics

import pytest

from tests.conftest import FASHION_DIR, require, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _data() -> None:
    require((FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), "dataset-fashion-mnist is not installed")


def _positive_finite(value) -> bool:
    from benchmarks.common import finite_positive

    return finite_positive(value)


def test_trial_overhead_is_one_ratio_of_medians_over_interleaved_repeats(tmp_path, monkeypatch) -> None:
    """Three repeats, the fewest whose median is a middle value: the definition is the same at
    any count, and each repeat trains all four variants (the test's cost). The five-repeat
    floor of a real run is checked by the test below."""
    from benchmarks import trial_overhead

    monkeypatch.setattr(trial_overhead, "MIN_REPEATS", 3)
    result = trial_overhead.measure_overhead(True, repeats=3, epochs=1, train_size=256, val_size=128, test_size=128,
                                             results_dir=tmp_path)
    stored = json.loads((tmp_path / "trial_overhead.json").read_text())
    assert (tmp_path / "trial_overhead.md").exists()
    assert stored["repeats"] == 3 and stored["mode"] == "quick"
    assert all(len(stored["seconds"][variant]["values"]) == 3 for variant in trial_overhead.VARIANTS)
    seconds = stored["seconds"]
    expected = statistics.median(seconds["pipeline_no_test"]["values"]) / statistics.median(seconds["raw"]["values"])
    assert stored["overhead_ratio"] == pytest.approx(expected, abs=2e-3)  # values are stored rounded
    spread = stored["overhead_ratio_spread"]
    assert spread["min"] <= spread["max"] and _positive_finite(spread["min"])
    assert stored["meets_goal"] == (stored["overhead_ratio"] <= 1.03)
    rows = trial_overhead.summary_rows(stored)
    assert rows[0].value == stored["overhead_ratio"]
    assert rows[0].verdict == ("meets goal" if stored["meets_goal"] else "misses goal")
    assert sum(row.goal != "reported" for row in rows) == 1  # one verdict, from the one figure
    assert _positive_finite(result["ratios"]["trainer_ratio"]["value"])


def test_trial_overhead_refuses_fewer_than_five_repeats() -> None:
    proc = run_cli("benchmarks.trial_overhead", "--repeats", "3", timeout=120)
    assert proc.returncode == 2
    assert "--repeats 3: at least 5 interleaved repeats" in proc.stderr


def test_hardware_smoke(tmp_path) -> None:
    from benchmarks import hardware

    small = {"wider": {"n_conv_blocks": 2, "filters": 16, "filter_growth": 1.0, "convs_per_block": 1,
                       "kernel_size": 3, "dense_units": 64, "batch_norm": True, "dropout": 0.0}}
    result = hardware.measure_hardware(quick=True, repeats=1, baseline_images=256, larger_images=128,
                                       timed_epochs=1, gemm_n=256, results_dir=tmp_path, architectures=small)
    stored = json.loads((tmp_path / "hardware.json").read_text())
    for key in ("baseline_peak_fraction", "raw_keras_peak_fraction", "gemm_peak_gflops", "results", "flops_method", "goal"):
        assert key in stored, key
    assert _positive_finite(result["baseline_peak_fraction"])
    assert _positive_finite(result["results"]["wider"]["fraction"]["median"])
    assert result["results"]["baseline"]["training_mflop_per_image"] == pytest.approx(25.447, abs=0.01)
    assert hardware.summary_rows(stored)[0].value == stored["baseline_peak_fraction"]


def _efficiency(tmp_path, seeds: int, searchers=("default_study", "tpe_no_pruning", "kerastuner_hyperband")):
    from benchmarks import search_efficiency

    return search_efficiency.measure_efficiency(True, seeds=seeds, budget=60, targets=(0.0, 0.05), train_size=256,
                                                val_size=128, test_size=128, max_epochs=2, results_dir=tmp_path,
                                                searchers=searchers)


def test_search_efficiency_is_cold_per_target_and_resumes(tmp_path, capsys) -> None:
    """Each (searcher, seed) is saved as it finishes; a later run of the same protocol keeps
    it and measures only what is missing."""
    require(importlib.util.find_spec("keras_tuner") is not None,
            "keras-tuner is a benchmark-only extra: pip install -r benchmarks/requirements.txt")
    from benchmarks import search_efficiency

    _efficiency(tmp_path, seeds=1, searchers=("default_study",))
    first = json.loads((tmp_path / "search_efficiency.json").read_text())
    assert first["finished_seeds"] == {"default_study": 1, "tpe_no_pruning": 0, "kerastuner_hyperband": 0}
    assert first["complete"] is False
    capsys.readouterr()

    _efficiency(tmp_path, seeds=1)  # all three searchers now: default_study's seed 0 is there already
    second = json.loads((tmp_path / "search_efficiency.json").read_text())
    out = capsys.readouterr().out
    assert "default_study seed 0: kept from the last run" in out
    assert "tpe_no_pruning seed 0: kept" not in out
    assert second["runs"]["default_study"][0] == first["runs"]["default_study"][0]
    assert second["warm_start"] is False and second["seeds"] == 1 and second["complete"] is True
    assert second["targets"] == ["0.00", "0.05"]
    from study.config import SearchConfig  # the default study follows the product's defaults

    assert second["runs"]["default_study"][0]["settings"] == {  # the product's defaults, cnn.yaml's cap
        **{name: SearchConfig.model_fields[name].default for name in ("sampler", "pruner")}, "max_cost": 6.0}
    assert second["runs"]["tpe_no_pruning"][0]["settings"]["max_cost"] is None  # the anchors: no cap
    for searcher, runs in second["runs"].items():
        assert [r["seed"] for r in runs] == [0], searcher
        assert [r["enqueued_trials"] for r in runs] == [0], searcher  # nobody starts from an enqueued trial
        assert set(runs[0]["time_to_target_s"]) == {"0.00", "0.05"}
        assert _positive_finite(runs[0]["gemm_gflops_at_start"]), searcher  # the machine's speed at the run
    assert set(second["speedups"]["0.05"]) == {"kerastuner_hyperband", "tpe_no_pruning"}
    assert _positive_finite(second["speedups"]["0.00"]["kerastuner_hyperband"]["value"])
    rows = search_efficiency.summary_rows(second)
    assert any("speed-up to 0.05 vs kerastuner_hyperband" in row.figure and "1/1 seeds" in row.figure for row in rows)
    assert rows[-1].goal == ">= 0.9"
    second["complete"] = False
    assert all("incomplete: re-run to resume" in row.verdict for row in search_efficiency.summary_rows(second))


def test_kerastuner_hypermodel_covers_the_space() -> None:
    """The KerasTuner HyperModel declares every searched knob of cnn.yaml, conditionals included."""
    require(importlib.util.find_spec("keras_tuner") is not None, "keras-tuner is a benchmark-only extra")
    import keras_tuner as kt
    import numpy as np

    from benchmarks.common import load_space
    from benchmarks.search_efficiency import kerastuner_hypermodel
    from study.data import Splits

    space = load_space()
    tiny = np.zeros((8, 28, 28, 1), np.float32)
    labels = np.arange(8) % 2
    splits = Splits(tiny, labels, tiny, labels, tiny, labels, 2, "fake")
    hypermodel = kerastuner_hypermodel(space, splits, 9)
    hp = kt.HyperParameters()
    values = hypermodel.values(hp)
    assert set(values) == set(space.params)
    assert {p.name for p in hp.space} == set(space.searched())
    conditional = {p.name for p in hp.space if p.conditions}
    assert conditional == {n for n, spec in space.params.items() if spec.condition}


def test_scale_sleep_objective_overhead_with_repeats(tmp_path) -> None:
    """1 and 2 workers on the journal and on a real PostgreSQL, 2 repeats (the fewest that
    have a median and a spread; `make bench` runs at least 3), 2 workers starting together and
    at random phases, the overhead per repeat against the same repeat's one-worker rate."""
    require(bool(glob.glob("/usr/lib/postgresql/*/bin/initdb")), "Debian's postgresql is not installed")
    from benchmarks import scale

    result = scale.measure_scale(True, worker_counts=(1, 2), repeats=2, seconds=0.2, study_trials=4,
                                 mlflow_sqlite=False, results_dir=tmp_path)
    stored = json.loads((tmp_path / "scale.json").read_text())
    assert "postgresql_skipped" not in stored
    runs = stored["sleep"]["runs"]
    assert {(r["storage"], r["workers"], r["start"]) for r in runs} == {
        (storage, workers, start) for storage in ("journal", "postgresql")
        for workers, start in ((1, "together"), (2, "together"), (2, "random"))}
    for figure in stored["sleep"]["figures"]:
        own = [r for r in runs if (r["storage"], r["workers"], r["start"]) ==
               (figure["storage"], figure["workers"], figure["start"])]
        assert figure["repeats"] == 2 == len(own)
        ones = {r["repeat"]: r for r in runs if r["storage"] == figure["storage"] and r["workers"] == 1}
        steady = statistics.median(1 - r["steady_trials_per_s"] / (r["workers"] * ones[r["repeat"]]["steady_trials_per_s"])
                                   for r in own)
        assert figure["steady_overhead"]["median"] == pytest.approx(steady, abs=1e-3)
        if figure["start"] == "random":  # its span holds the start delays: no span figure
            assert "overhead" not in figure
            continue
        span = statistics.median(1 - r["trials_per_s"] / (r["workers"] * ones[r["repeat"]]["trials_per_s"]) for r in own)
        assert figure["overhead"]["median"] == pytest.approx(span, abs=1e-3)
        assert figure["overhead"]["min"] <= figure["overhead"]["median"] <= figure["overhead"]["max"]
        assert _positive_finite(figure["storage_ops_per_trial"])
    assert stored["meets_goal"] is None  # no 8-worker row in this small run: no verdict
    assert scale.goal_missing(stored) == "not measured: no 8-worker run"
    assert result["sleep"]["study_trials"] == 4
    assert all(4 <= r["trials"] <= 4 + r["workers"] - 1 for r in runs)  # one study size at every W
    assert any("2 workers, postgresql, starting random" in row.figure for row in scale.summary_rows(stored))
    assert "overhead = 1 - trials/s(W) / (W x trials/s(1))" in (tmp_path / "scale.md").read_text()


def test_scale_workers_start_after_their_delays(tmp_path) -> None:
    """Two workers on a journal, 0.3 s trials: delayed by 0.6 s, the second worker's first trial
    starts about 0.6 s after the first one's; without delays, within a fraction of a trial."""
    from benchmarks import scale

    delayed = scale.sleep_config("journal", str(tmp_path / "delayed.journal"), 2, 8, 0.3, 1, "random", (0.0, 0.6))
    assert delayed["first_starts_s"][-1] == pytest.approx(0.6, abs=0.12), delayed
    together = scale.sleep_config("journal", str(tmp_path / "together.journal"), 2, 8, 0.3, 1, "random")
    assert together["first_starts_s"][-1] < 0.12, together


def test_scale_random_phases_are_seeded_delays_within_one_trial() -> None:
    from benchmarks.scale import RANDOM, TOGETHER, start_delays

    delays = start_delays(RANDOM, 8, 3.0, 1)
    assert len(delays) == 8 and all(0.0 <= delay < 3.0 for delay in delays) and len(set(delays)) == 8
    assert start_delays(RANDOM, 8, 3.0, 1) == delays != start_delays(RANDOM, 8, 3.0, 2)
    assert start_delays(TOGETHER, 8, 3.0, 1) == ()


def test_scale_goal_is_judged_on_random_phases_with_lockstep_beside() -> None:
    """By hand: the verdict reads the 8-worker PostgreSQL random-phase steady median (0.04 and
    0.06 against 5%), never the lockstep figures; an old result without it is stale."""
    from benchmarks.scale import GOAL_OVERHEAD, goal_figures, summary_rows

    def figures(random_median: float) -> list[dict]:
        def spread(median: float) -> dict:
            return {"median": median, "min": median - 0.01, "max": median + 0.01, "n": 3}
        return [{"storage": "postgresql", "workers": 8, "start": "together", "repeats": 3, "overhead": spread(0.15),
                 "steady_overhead": spread(0.10)},
                {"storage": "postgresql", "workers": 8, "start": "random", "repeats": 3,
                 "steady_overhead": spread(random_median)}]

    assert GOAL_OVERHEAD == 0.05
    met, missed = goal_figures(figures(0.04)), goal_figures(figures(0.06))
    assert met["meets_goal"] is True and missed["meets_goal"] is False
    assert met["overhead_8_workers_postgresql"]["median"] == 0.15
    assert met["steady_overhead_8_workers_postgresql"]["median"] == 0.10
    current = {"sleep": {"runs": [{"storage": "postgresql", "workers": 8, "start": "random"}], "figures": figures(0.04)}}
    verdicts = {row.figure.split(" (")[0]: row.verdict for row in summary_rows(current)}
    assert verdicts == {"overhead, 8 workers, postgresql, starting together": "reported",
                        "steady overhead, 8 workers, postgresql, starting together": "reported: the start and the tail left out",
                        "steady overhead, 8 workers, postgresql, starting random": "meets goal"}
    old = {"sleep": {"runs": [{"storage": "postgresql", "workers": 8}],
                     "figures": [{k: v for k, v in figures(0.04)[0].items() if k != "start"}]}}
    assert [row.verdict for row in summary_rows(old) if row.value is None] == [
        "stale: measured before random-phase starts (the goal's figure); re-run"]


def test_scale_steady_rate_by_hand() -> None:
    """Worker 1 starts trials at 0, 3.5 and 7 s (two cycles of 3.5 s), worker 2 at 0.2 and
    4.2 s (one of 4 s): 1/3.5 + 1/4 = 0.5357 trials/s. A worker with one trial has no cycle."""
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from benchmarks.scale import steady_trials_per_s

    zero = datetime(2026, 11, 27)

    def trial(pid: int, start: float) -> SimpleNamespace:
        return SimpleNamespace(user_attrs={"pid": pid}, datetime_start=zero + timedelta(seconds=start))

    trials = [trial(1, 7.0), trial(2, 0.2), trial(1, 0.0), trial(2, 4.2), trial(1, 3.5)]
    assert steady_trials_per_s(trials) == pytest.approx(1 / 3.5 + 1 / 4, abs=1e-4)
    assert steady_trials_per_s([*trials, trial(3, 1.0)]) is None
