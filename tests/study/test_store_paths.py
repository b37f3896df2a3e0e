"""Store names a supervisor hands its workers, which start in the project root: relative
SQLite files and journal paths become absolute, and nothing else changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from study.paths import absolute_sqlite, absolute_storage


@pytest.mark.parametrize(("given", "expected"), [
    ("sqlite:///m.db", "sqlite:///{cwd}/m.db"),
    ("sqlite:///./m.db", "sqlite:///{cwd}/m.db"),
    ("sqlite:///a//b/../m.db?timeout=5", "sqlite:///{cwd}/a/m.db?timeout=5"),
    ("sqlite+pysqlite:///m.db", "sqlite+pysqlite:///{cwd}/m.db"),
    ("sqlite:////abs/m.db", "sqlite:////abs/m.db"),
    ("sqlite:///:memory:", "sqlite:///:memory:"),
    ("sqlite://", "sqlite://"),
    ("databricks", "databricks"),
    ("http://tracking:5000", "http://tracking:5000"),
    ("postgresql://study:pw@db/optuna", "postgresql://study:pw@db/optuna"),
])
def test_a_relative_sqlite_file_is_made_absolute_and_nothing_else(given: str, expected: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_sqlite(given) == expected.format(cwd=tmp_path)


def test_a_journal_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert absolute_storage("runs/optuna.journal") == f"{tmp_path}/runs/optuna.journal"
    assert absolute_storage("/abs/optuna.journal") == "/abs/optuna.journal"
    assert absolute_storage("sqlite:///o.db") == f"sqlite:///{tmp_path}/o.db"
    assert absolute_storage("postgresql://db/optuna") == "postgresql://db/optuna"
