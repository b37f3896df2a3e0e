"""The one error the CLI turns into a one-line message and exit code 2."""

from __future__ import annotations


class AnalysisInputError(Exception):
    """Bad input the user can fix: unknown experiment, missing column, empty table."""
