"""The exit codes the README promises, for every study command.

A module of its own, free of heavy imports, so that the CLI can answer bad input before
TensorFlow, MLflow or Optuna load.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # an unexpected error (traceback, then one line); with --workers: workers kept dying
    BAD_INPUT = 2  # one line naming the file or flag, nothing created
    FAILURES = 3  # --max-consecutive-failures failed trials in a row
    INTERRUPTED = 130  # SIGINT or SIGTERM; re-run to continue
