"""The coverage simulation of the campaign's intervals (benchmarks/campaign_coverage.py),
small: the benchmark runs >= 1,000 campaigns per model."""

from __future__ import annotations

import numpy as np

from analysis.size import pooled_disagreement
from benchmarks.campaign_coverage import MODELS, coverage, draw_trials, epoch_disagrees


def test_pooled_bootstrap_covers_one_minus_one_over_k_for_unrelated_loss_and_accuracy() -> None:
    """Loss and accuracy independent and continuous: the loss pick is the most accurate of k
    trials with probability 1/k, so P(disagree | k) = 1 - 1/k exactly (worked by hand)."""
    rng = np.random.default_rng(7)
    k, truth, hits = 5, 1 - 1 / 5, 0
    for _ in range(40):
        pooled = pooled_disagreement(rng.random(80), rng.random(80), [k], n_boot=100, seed=int(rng.integers(1000)))
        hits += bool(pooled.lo[0] <= truth <= pooled.hi[0])
    assert hits / 40 >= 0.85


def test_synthetic_models_tie_in_accuracy_steps_and_the_simulation_reports_coverage() -> None:
    coarse = MODELS[2]
    loss, accuracy = draw_trials(coarse, 50, np.random.default_rng(0))
    assert loss.shape == accuracy.shape == (50, 5)
    assert np.allclose(accuracy * coarse.n_val, np.round(accuracy * coarse.n_val))  # 1/n_val steps
    assert len(np.unique(accuracy.max(axis=1))) < 50  # ties between trials
    # A trial whose accuracy is tied at the maximum at the loss pick agrees.
    assert not epoch_disagrees(np.array([[1.0, 0.5]]), np.array([[0.8, 0.8]]))[0]
    result = coverage(coarse, campaigns=12, trials=60, n_boot=50, seed=1)
    assert set(result["truth"]) == {"k10", "k20", "epoch"}
    assert all(result[key]["coverage"] >= 0.75 for key in result["truth"])
