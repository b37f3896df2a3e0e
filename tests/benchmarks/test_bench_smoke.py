"""Smoke test of the issue-5 benchmarks: the smallest configuration of each, on tiny data.

Checks the JSON keys and that the ratios are positive finite numbers. Never asserts on
timings: benchmarks do not fail CI on speed.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.conftest import FASHION_DIR, require

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _data() -> None:
    require((FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), "dataset-fashion-mnist is not installed")


def _positive_finite(value) -> bool:
    from benchmarks.common import finite_positive

    return finite_positive(value)


def test_trial_overhead_smoke(tmp_path) -> None:
    from benchmarks import trial_overhead

    result = trial_overhead.run(quick=True, repeats=1, epochs=1, train_size=256, val_size=128, test_size=128,
                                results_dir=tmp_path)
    stored = json.loads((tmp_path / "trial_overhead.json").read_text())
    assert (tmp_path / "trial_overhead.md").exists()
    for key in ("overhead_ratio", "test_eval_extra", "logging_extra", "ratios", "seconds", "goal", "mode"):
        assert key in stored, key
    assert stored["mode"] == "quick"
    assert _positive_finite(result["overhead_ratio"])
    assert _positive_finite(result["ratios"]["pipeline_with_test_ratio"]["median"])
    assert _positive_finite(result["ratios"]["trainer_ratio"]["median"])


def test_hardware_smoke(tmp_path) -> None:
    from benchmarks import hardware

    small = {"wider": {"n_conv_blocks": 2, "filters": 16, "filter_growth": 1.0, "convs_per_block": 1,
                       "kernel_size": 3, "dense_units": 64, "batch_norm": True, "dropout": 0.0}}
    result = hardware.run(quick=True, repeats=1, baseline_images=256, larger_images=128, timed_epochs=1,
                          gemm_n=256, results_dir=tmp_path, architectures=small)
    stored = json.loads((tmp_path / "hardware.json").read_text())
    for key in ("baseline_peak_fraction", "raw_keras_peak_fraction", "gemm_peak_gflops", "results", "flops_method", "goal"):
        assert key in stored, key
    assert _positive_finite(result["baseline_peak_fraction"])
    assert _positive_finite(result["results"]["wider"]["fraction"]["median"])
    assert result["results"]["baseline"]["training_mflop_per_image"] == pytest.approx(25.447, abs=0.01)


def test_search_efficiency_smoke(tmp_path) -> None:
    require(importlib.util.find_spec("keras_tuner") is not None,
            "keras-tuner is a benchmark-only extra: pip install -r benchmarks/requirements.txt")
    from benchmarks import search_efficiency

    result = search_efficiency.run(quick=True, seeds=1, budget=30, target=0.0, train_size=256, val_size=128,
                                   test_size=128, max_epochs=2, results_dir=tmp_path)
    stored = json.loads((tmp_path / "search_efficiency.json").read_text())
    for key in ("summary", "runs", "speedup_vs_kerastuner", "speedup_vs_tpe_no_pruning", "target_val_accuracy", "mode"):
        assert key in stored, key
    assert set(stored["summary"]) == {"default_study", "tpe_no_pruning", "kerastuner_hyperband"}
    assert _positive_finite(result["speedup_vs_kerastuner"])
    assert _positive_finite(result["speedup_vs_tpe_no_pruning"])


def test_kerastuner_hypermodel_covers_the_space() -> None:
    """The KerasTuner HyperModel declares every searched knob of cnn.yaml, conditionals included."""
    require(importlib.util.find_spec("keras_tuner") is not None, "keras-tuner is a benchmark-only extra")
    import keras_tuner as kt

    from benchmarks.common import load_space
    from benchmarks.search_efficiency import kerastuner_hypermodel
    from study.data import Splits
    import numpy as np

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
