"""CSV/Parquet mode end to end through the CLI, as a user runs it."""

from __future__ import annotations

import json
import re

import pytest

from study.contract import SUMMARY_JSON
from tests.analysis.conftest import run_analysis
from tests.analysis.tables import epoch_table, trial_table


def _referenced(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"#:]+)"', html)


def test_csv_per_epoch_report(tmp_path):
    table = epoch_table().rename(columns={"val_loss": "vl", "val_accuracy": "va",
                                          "study": "run_group", "test_accuracy": "ta"})
    table["width"] = [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4]
    path = tmp_path / "epochs.parquet"
    table.to_parquet(path)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), "--study-col", "run_group", "--loss-col", "vl",
                        "--accuracy-col", "va", "--test-accuracy-col", "ta", "--epoch-col", "epoch",
                        "--explain-col", "width", "--out", str(out), "--bootstrap", "200")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / SUMMARY_JSON).read_text())
    assert s["loss_metric"] == "vl" and s["scoring"] == "best"
    assert (s["trial_level"]["studies"], s["trial_level"]["disagreements"]) == (2, 1)
    assert (s["epoch_level"]["trials"], s["epoch_level"]["disagreements"]) == (4, 2)
    assert s["source"]["kind"] == "parquet"
    html = (out / "index.html").read_text()
    refs = _referenced(html)
    assert any(r.endswith(".png") for r in refs)
    assert all((out / r).is_file() for r in refs)
    assert "needs replicates" not in (out / "report.md").read_text()


def test_csv_per_trial_with_nan_written_as_null(tmp_path):
    path = tmp_path / "trials.csv"
    trial_table().to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), "--state-col", "state",
                        "--test-accuracy-col", "test_accuracy", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    def no_constants(name):
        raise AssertionError(f"{name} in summary.json; NaN must be written as null")

    s = json.loads((out / SUMMARY_JSON).read_text(), parse_constant=no_constants)
    assert s["trial_level"]["rate"] == 0.3  # D's tied loss picks count 1/2 (tables.py)
    assert s["trial_level"]["kendall_tau_b"]["median"] is not None
    assert {x["why"] for x in s["exclusions"]} >= {"trial state FAIL",
                                                   "single-trial study (nothing to compare)"}


def test_csv_nan_test_accuracy_is_listed_not_silent(tmp_path):
    table = trial_table()
    table["test_accuracy"] = table["test_accuracy"].astype(object)
    table.loc[table.index[:2], "test_accuracy"] = ["n/a", None]
    path = tmp_path / "trials.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "out"
    proc = run_analysis("report", "--csv", str(path), "--state-col", "state",
                        "--test-accuracy-col", "test_accuracy", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    s = json.loads((out / SUMMARY_JSON).read_text())
    listed = [x for x in s["exclusions"] if x["what"] == "values of test_accuracy"]
    assert len(listed) == 1 and listed[0]["count"] == 2, s["exclusions"]


@pytest.mark.parametrize("case", ["missing_column", "empty", "no_file", "all_single"])
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    path = tmp_path / "t.csv"
    args = ["report", "--csv", str(path), "--out", str(tmp_path / "out")]
    if case == "missing_column":
        trial_table().drop(columns=["val_accuracy"]).to_csv(path, index=False)
    elif case == "empty":
        trial_table().head(0).to_csv(path, index=False)
    elif case == "all_single":
        trial_table().query("study == 'F'").to_csv(path, index=False)
    proc = run_analysis(*args)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    if case == "missing_column":
        assert "--accuracy-col=val_accuracy" in lines[0]
    assert not (tmp_path / "out").exists()
