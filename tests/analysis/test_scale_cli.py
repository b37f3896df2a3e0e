"""Issue 9 §2 (scale), met where a user meets it: `python -m analysis report --csv` on a
table of many studies writes bounded figures and the full summary, nothing skipped."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from study.contract import SUMMARY_JSON
from tests.analysis.conftest import run_analysis

MAX_BYTES, MAX_PIXELS = 2_000_000, 4000
STUDIES = 240


def _epoch_table(studies: int, trials: int, epochs: int) -> pd.DataFrame:
    """Loss turning at a random epoch, accuracy still rising: some trials disagree."""
    rng = np.random.default_rng(1)
    rows = []
    for study in range(studies):
        for trial in range(trials):
            quality, turn = rng.uniform(0.6, 0.95), rng.integers(1, epochs)
            for epoch in range(epochs):
                accuracy = round(quality - 0.3 * np.exp(-epoch / 3) + rng.normal(0, 0.01), 3)
                rows.append((study, trial, epoch, round(1.2 - quality + 0.02 * abs(epoch - turn), 4),
                             min(max(accuracy, 0.0), 1.0), min(max(accuracy + 0.01, 0.0), 1.0)))
    return pd.DataFrame(rows, columns=["study", "trial", "epoch", "val_loss", "val_accuracy",
                                       "test_accuracy"])


@pytest.fixture(scope="module")
def many_studies(tmp_path_factory):
    """240 studies x 6 trials x 4 epochs: far more studies than one figure has panels."""
    folder = tmp_path_factory.mktemp("many")
    table = folder / "many.csv"
    _epoch_table(STUDIES, 6, 4).to_csv(table, index=False)
    out = folder / "out"
    proc = run_analysis("report", "--csv", str(table), "--epoch-col", "epoch",
                        "--test-accuracy-col", "test_accuracy", "--out", str(out),
                        "--bootstrap", "300", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, json.loads((out / SUMMARY_JSON).read_text())


def test_no_figure_over_2_mb_or_4000_px_with_many_studies(many_studies):
    out, _ = many_studies
    pngs = sorted(out.glob("*.png"))
    assert pngs
    for png in pngs:
        with Image.open(png) as image:
            width, height = image.size
        assert png.stat().st_size <= MAX_BYTES and max(width, height) <= MAX_PIXELS, \
            f"{png.name}: {png.stat().st_size} bytes, {width} x {height} px"


def test_many_studies_keep_every_statistic_and_the_bootstrap_count(many_studies):
    _, summary = many_studies
    assert summary["source"]["studies_analysed"] == STUDIES
    assert summary["source"]["bootstrap"]["resamples"] == 300
    trial = summary["trial_level"]
    assert trial["studies"] == STUDIES and trial["kendall_tau_b"]["studies"] > 0
    assert None not in trial["ci95_bootstrap"] and None not in summary["epoch_level"]["ci95_bootstrap"]
    assert summary["study_size"] and summary["study_size"][-1]["k"] == 6
    # One experiment: its by_experiment block is the main one (computed once, the same numbers).
    (name, block), = summary["by_experiment"].items()
    assert block["trial_level"] == summary["trial_level"]
    assert block["epoch_level"] == summary["epoch_level"]
    rho = trial["spearman_rho"]["median"]
    assert np.isfinite(rho)
