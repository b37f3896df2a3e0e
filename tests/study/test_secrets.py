"""Passwords never reach a printed line: URLs, key=value pairs, and logged tracebacks."""

from __future__ import annotations

import io
import logging

import optuna

from study.secrets import MaskingFilter, mask_logging, mask_secrets


def test_mask_secrets_urls_and_pairs() -> None:
    assert mask_secrets("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_secrets("dsn password=hunter2 host=h") == "dsn password=*** host=h"
    assert mask_secrets("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_logged_exception_is_masked_on_optunas_handler() -> None:
    """Optuna logs a failed trial with its exception; the handler must print it masked."""
    mask_logging()
    handler = logging.getLogger("optuna").handlers[0]
    assert any(isinstance(f, MaskingFilter) for f in handler.filters)
    stream = io.StringIO()
    probe = logging.StreamHandler(stream)
    probe.addFilter(MaskingFilter())
    logger = optuna.logging.get_logger("optuna.study._optimize")
    logger.addHandler(probe)
    try:
        try:
            raise ConnectionError("API request to http://alice:hunter2@tracking:5000/api failed")
        except ConnectionError:
            logger.warning("Trial %d failed against %s", 3, "postgresql://bob:s3cret@db/optuna", exc_info=True)
    finally:
        logger.removeHandler(probe)
    printed = stream.getvalue()
    assert "hunter2" not in printed and "s3cret" not in printed
    assert "Trial 3 failed against postgresql://bob:***@db/optuna" in printed
    assert "http://alice:***@tracking:5000" in printed and "Traceback" in printed
