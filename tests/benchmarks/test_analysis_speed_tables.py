"""Issue 9 §2: the analysis_speed benchmark's table rows (studies, trials, epochs, seconds,
peak RSS of the report process), at a tiny size; no timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import sys

from benchmarks import analysis_speed


def test_table_rows_carry_size_time_and_peak_rss(tmp_path):
    rows = analysis_speed.measure_tables(4, 5, 3, bootstrap=50)
    formats = ["csv"] + (["parquet"] if importlib.util.find_spec("pyarrow") else [])
    assert [row["source"] for row in rows] == formats
    for row in rows:
        assert (row["studies"], row["trials"], row["epochs"], row["bootstrap"]) == (4, 5, 3, 50)
        assert row["seconds"] > 0 and 50 < row["peak_rss_mb"] < 100_000  # MB of a Python process
    mlflow_record = {"name": "analysis_speed", "trials": 1000, "studies": 20, "epochs": 50,
                     "bootstrap": 50, "analysis_seconds": 1.0, "meets_goal": True}
    stored = analysis_speed.add_table_rows(mlflow_record, rows, 1.25, tmp_path)
    on_disk = json.loads((tmp_path / "analysis_speed.json").read_text())
    assert on_disk["load_average"] == 1.25 and on_disk["tables"] == stored["tables"]
    figures = [row.figure for row in analysis_speed.summary_rows(on_disk)]
    assert len(figures) == 1 + len(rows) and "4 studies x 5 trials x 3 epochs" in figures[1]
    assert "| csv | 4 | 5 | 3 | 50 |" in (tmp_path / "analysis_speed.md").read_text()


def test_peak_rss_is_the_child_alone_not_the_process_that_started_it():
    """Linux carries a parent's peak RSS into its child's ru_maxrss across fork and exec;
    the benchmark builds a 6 M-row frame before it starts the report, so its own peak must
    not be reported as the report's."""
    import numpy as np

    held = np.ones(600 * 2**20 // 8)  # 600 MB, every page touched
    seconds, peak_mb, returncode, _ = analysis_speed.peak_of(
        [sys.executable, "-c", "import numpy as np; np.ones(200 * 2**20 // 8)"])
    assert returncode == 0 and seconds > 0
    assert 200 < peak_mb < 400, peak_mb  # the child's 200 MB array and its interpreter
    failed = analysis_speed.peak_of([sys.executable, "-c", "import sys; sys.exit(3)"])
    assert failed[2] == 3
    del held
