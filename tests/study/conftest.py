"""One real tiny search, shared by the end-to-end and UI tests (training is the slow part):
made once per session (per xdist process, and its users share one xdist group)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FASHION_DIR, require, run_cli

# Half of what this search used to train on: the costliest design it draws (trial 1: 3 blocks of
# 64-128-256 filters, two convs each) trains and is scored in proportion to the images, and its
# outcomes (trial 0 COMPLETE, trials 1 and 2 PRUNED at the first rung, trial 1 with L2) are the same.
TRAIN_SIZE, VAL_SIZE, TEST_SIZE, EPOCHS = 500, 250, 250, 2
TINY = ["--set", f"data.train_size={TRAIN_SIZE}", "--set", f"data.val_size={VAL_SIZE}",
        "--set", f"data.test_size={TEST_SIZE}", "--set", f"train.epochs={EPOCHS}"]


@pytest.fixture(scope="session")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """`python -m study search` with 3 trials x 2 epochs into a temporary store."""
    require((FASHION_DIR / "train-images-idx3-ubyte.gz").exists(), "dataset-fashion-mnist is not installed")
    folder = tmp_path_factory.mktemp("search")
    stores = {"tracking_uri": f"sqlite:///{folder / 'mlflow.db'}", "storage": str(folder / "optuna.journal")}
    result = run_cli("study", "search", "--trials", "3", "--sampler", "random", "--pruner", "hyperband",
                     "--experiment", "e2e", "--storage", stores["storage"],
                     "--tracking-uri", stores["tracking_uri"], *TINY)
    assert result.returncode == 0, result.stdout + result.stderr
    return {**stores, "folder": folder, "stdout": result.stdout, "study_name": "e2e-seed0"}
