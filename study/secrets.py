"""Masking of credentials in anything we print, tag or log."""

from __future__ import annotations

import logging
import re

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?P<tail>@)")
_KEY_VALUE = re.compile(r"(?P<head>(?:password|passwd|pwd|token|secret)=)(?P<secret>[^&\s;]+)", re.IGNORECASE)
MASK = "***"


def mask_secrets(text: str) -> str:
    """`postgresql://u:pw@h/db` -> `postgresql://u:***@h/db`; also `password=...` pairs."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK + m["tail"], str(text))
    return _KEY_VALUE.sub(lambda m: m["head"] + MASK, text)


class MaskingFilter(logging.Filter):
    """Masks secrets in a log record's message and traceback before any handler prints it
    (Optuna logs a failed trial's exception, whose text can hold a server URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = mask_secrets(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_secrets(logging.Formatter().formatException(record.exc_info))
        return True


def mask_logging() -> None:
    """Put the masking filter on every handler that prints: the root logger's and Optuna's."""
    import mlflow  # noqa: F401 - importing it installs the handler of its own logger
    import optuna

    optuna.logging.get_verbosity()  # creates Optuna's handler if it has none yet
    loggers = [logging.getLogger(), logging.getLogger("optuna"), logging.getLogger("mlflow")]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, MaskingFilter) for f in handler.filters):
                handler.addFilter(MaskingFilter())
