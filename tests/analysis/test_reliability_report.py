"""`analysis report` against hostile or careless input: broken or missing stores, names that
would climb out of `reports/`, and names that carry HTML or newlines."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from markdown_it import MarkdownIt

from study.contract import MACHINE_PARAMS, SUMMARY_JSON
from tests.analysis.conftest import run_analysis
from tests.analysis.tables import epoch_table
from tests.conftest import PROJECT_ROOT

REPORTS = PROJECT_ROOT / "reports"


def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0]


# --------------------------------------------------------------------------- stores


@pytest.mark.parametrize("content", [b"\x00garbage\xff" * 500, b""], ids=["random-bytes", "empty-file"])
def test_a_corrupt_store_is_one_line_and_left_as_it_was(tmp_path: Path, content: bytes) -> None:
    store = tmp_path / "mlflow.db"
    store.write_bytes(content)
    proc = run_analysis("report", "--experiment", "x", "--tracking-uri", f"sqlite:///{store}",
                        "--out", str(tmp_path / "out"))
    _one_line_error(proc, str(store), "not")
    assert store.read_bytes() == content  # not migrated into an MLflow store
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


@pytest.mark.parametrize("where", ["missing-file", "missing-folder"])
def test_a_missing_store_is_one_line_and_nothing_is_created(tmp_path: Path, where: str) -> None:
    store = tmp_path / "mlflow.db" if where == "missing-file" else tmp_path / "typo" / "mlflow.db"
    proc = run_analysis("report", "--experiment", "x", "--tracking-uri", f"sqlite:///{store}",
                        "--out", str(tmp_path / "out"))
    _one_line_error(proc, str(store), "no such file")
    assert list(tmp_path.iterdir()) == []


def test_a_store_mlflow_cannot_open_is_one_line(tmp_path: Path) -> None:
    # A database URL whose driver is not installed: MLflow fails while opening the store.
    proc = run_analysis("report", "--experiment", "x", "--tracking-uri",
                        "mysql://alice:s3cr3t@127.0.0.1:1/db", "--out", str(tmp_path / "out"))
    _one_line_error(proc, "--tracking-uri", "cannot open the tracking store")
    assert "s3cr3t" not in proc.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- output folder


@pytest.fixture
def report_folder():
    """A folder under reports/ this test owns: absent before, removed after."""
    made: list[Path] = []

    def claim(name: str) -> Path:
        folder = REPORTS / name
        assert not folder.exists(), f"{folder} is left over from another run; remove it"
        made.append(folder)
        return folder

    yield claim
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


def _root_untouched() -> None:
    for name in (SUMMARY_JSON, "report.md", "index.html", "picks_scatter.png"):
        assert not (PROJECT_ROOT / name).exists(), f"the report was written into the project root: {name}"


def test_a_csv_named_dotdot_reports_into_a_folder_under_reports(tmp_path: Path, report_folder) -> None:
    folder = report_folder("__")
    table = tmp_path / "...csv"  # its stem is `..`
    epoch_table().to_csv(table, index=False)
    proc = run_analysis("report", "--csv", str(table), "--epoch-col", "epoch", "--bootstrap", "50")
    assert proc.returncode == 0, proc.stderr
    _root_untouched()
    assert (folder / SUMMARY_JSON).is_file() and (folder / "report.md").is_file()
    assert f"to {folder}" in proc.stdout


def test_an_experiment_named_dots_reports_into_a_folder_under_reports(tmp_path: Path,
                                                                        report_folder) -> None:
    from benchmarks.synthetic_store import write_synthetic_store

    folder = report_folder("___")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    write_synthetic_store(uri, "...", studies=2, trials=3, epochs=3, n_test=20)
    proc = run_analysis("report", "--experiment", "...", "--tracking-uri", uri, "--bootstrap", "50",
                        "--no-log")
    assert proc.returncode == 0, proc.stderr
    _root_untouched()
    assert (folder / SUMMARY_JSON).is_file()


def test_an_explicit_out_is_honoured_as_given(tmp_path: Path) -> None:
    table = tmp_path / "...csv"
    epoch_table().to_csv(table, index=False)
    out = tmp_path / ".kept-as-given"
    proc = run_analysis("report", "--csv", str(table), "--epoch-col", "epoch", "--bootstrap", "50",
                        "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert (out / SUMMARY_JSON).is_file()


# --------------------------------------------------------------------------- names as text

HOSTILE = "<script>alert(1)</script>\n# Forged heading\n| x | y |"


def test_names_cannot_inject_html_or_forge_lines(tmp_path: Path) -> None:
    from benchmarks.synthetic_store import write_synthetic_store

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The study names are `<experiment>-seed<n>`: they carry the same payload.
    write_synthetic_store(uri, HOSTILE, studies=2, trials=3, epochs=3, n_test=20)
    write_synthetic_store(uri, "b|<i>x</i>", studies=2, trials=3, epochs=3, seed=5, n_test=20)
    out = tmp_path / "out"
    proc = run_analysis("report", "--experiment", HOSTILE, "--experiment", "b|<i>x</i>",
                        "--tracking-uri", uri, "--out", str(out), "--bootstrap", "50", "--no-log")
    assert proc.returncode == 0, proc.stderr
    assert not any(line.startswith("# Forged") for line in proc.stdout.splitlines())

    markdown = (out / "report.md").read_text()
    assert not any(line.startswith(("# Forged", "| x | y |")) for line in markdown.splitlines())
    assert not re.search(r"(?<!\\)<(script|i>)", markdown)  # every `<` of a name is escaped
    rendered = MarkdownIt("commonmark").enable("table").render(markdown)
    page = (out / "index.html").read_text()
    for html in (rendered, page):
        assert "<script" not in html and "<i>" not in html
        assert len(re.findall("<h1>", html)) == 1 and "<h1>Forged" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;\\n# Forged heading\\n| x | y |" in html
    # The name stays one cell: every row of the rates table has its six cells.
    rates = next(table for table in rendered.split("<table>")[1:]
                 if "<th>experiment</th>" in table).split("</table>")[0]
    assert {row.count("<td>") for row in rates.split("<tr>")[2:]} == {6}


# --------------------------------------------------------------------------- run settings


def test_run_settings_cover_every_undotted_config_param() -> None:
    """Every undotted param a trial run carries besides its knobs counts as a run setting."""
    from analysis.sources import RUN_SETTINGS
    from study.config import SearchConfig
    from study.data import load_dataset
    from study.objective import shared_trial_params
    from study.space import load_space

    space_file = PROJECT_ROOT / "search_spaces" / "digits.yaml"
    config = SearchConfig(space_file=str(space_file), space=load_space(space_file),
                          experiment="x", storage="s.journal", tracking_uri="sqlite:///x.db")
    shared = shared_trial_params(config, load_dataset(config.space.data))
    assert set(MACHINE_PARAMS) <= set(shared)
    logged = {name for name in {**shared, "seed": 0, "worker_index": 0} if "." not in name}
    assert logged <= RUN_SETTINGS
    assert not RUN_SETTINGS & set(config.space.params)


@pytest.mark.parametrize("names", [[".."], ["."], ["../../etc"], [".hidden"], ["a/b", "c\nd"],
                                   ["x" * 300], ["é" * 200], ["digits-cnn", "fashion-cnn"]])
def test_the_default_folder_is_one_visible_folder_under_reports(names: list[str]) -> None:
    from analysis.cli import REPORTS_DIR, default_out

    folder = default_out(names)
    assert folder.parent == REPORTS_DIR
    assert not folder.name.startswith(".") and "/" not in folder.name
    assert 0 < len(folder.name.encode()) <= 120
    assert default_out(["digits-cnn"]).name == "digits-cnn"
    assert default_out([*names, "other"]) != folder
