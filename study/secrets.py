"""Masking of credentials in anything we print, tag or log.

Both patterns start with a literal (`://`, `=`), so the regex engine jumps from one
occurrence to the next, and every attempt stops at the next whitespace or `://`: masking
is linear in the text's length (a 10 MB CSV header is masked in well under a second).

    python -m study.secrets < lines   # masks stdin onto stdout (the Makefile prints through it)
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, TextIO

MASK = "***"
# The userinfo of `scheme://userinfo@host`: `user:password`, masked after the first ':'
# (the password may hold an unencoded '@' or '/', so it runs to the last '@' before the next
# whitespace or `://`), or a bare `token` (http://TOKEN@host), masked whole. A user name
# cannot hold '/', '?' or '#': `https://host/path@x` has no userinfo.
_URL_USERINFO = re.compile(
    r"://(?<=[A-Za-z0-9+.\-]://)"
    r"(?:(?P<user>[^\s:/?#]*):(?:(?!://)\S)*|[^\s:/?#]*)@")
# `password=...` and friends (libpq DSNs, query strings). Python's lookbehinds are fixed-width,
# hence one per key; the '=' comes first so the search skips to each '='.
_SECRET_KEYS = ("password", "passwd", "pwd", "token", "secret")
_KEY_VALUE = re.compile("=(?:" + "|".join(f"(?<={key}=)" for key in _SECRET_KEYS) + r")[^&\s;]+",
                        re.IGNORECASE)


def _masked_userinfo(match: re.Match) -> str:
    # A function, not a template: Python 3.11 expands `\g<user>` templates in Python code,
    # twice as slow when every line holds a URL.
    user = match["user"]
    return f"://{MASK}@" if user is None else f"://{user}:{MASK}@"


def mask_secrets(text: str) -> str:
    """`postgresql://u:pw@h/db` -> `postgresql://u:***@h/db`, `http://TOKEN@h` ->
    `http://***@h`; also `password=...` pairs. Idempotent."""
    text = str(text)
    if "://" in text and "@" in text:  # no credential in a URL without both
        text = _URL_USERINFO.sub(_masked_userinfo, text)
    if "=" in text:
        text = _KEY_VALUE.sub(f"={MASK}", text)
    return text


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


class MaskedStream:
    """A text stream that masks every write, then hands it to the stream it wraps.

    Libraries print around our logging filter (MLflow's "View run ... at <URL>" line is a
    plain sys.stdout.write); each such write holds whole URLs, so masking per write is
    enough. Everything else (fileno, isatty, encoding, buffer) is the wrapped stream's.
    """

    def __init__(self, stream: TextIO) -> None:
        self.wrapped = stream

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # let the real stream raise its own TypeError
            return self.wrapped.write(text)
        self.wrapped.write(mask_secrets(text))
        return len(text)  # callers count what they gave, not what was printed

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def mask_process_output() -> None:
    """First thing in every entry point: no URL with a password reaches stdout or stderr.

    MLflow's run-end URL line is turned off (a user who sets the variable gets it masked),
    and stdout/stderr are wrapped before any library keeps a reference to them, so log
    handlers and uncaught tracebacks print through the mask too.
    """
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    if not isinstance(sys.stdout, MaskedStream) and sys.stdout is not None:
        sys.stdout = MaskedStream(sys.stdout)
    if not isinstance(sys.stderr, MaskedStream) and sys.stderr is not None:
        sys.stderr = MaskedStream(sys.stderr)


if __name__ == "__main__":
    for stdin_line in sys.stdin:
        sys.stdout.write(mask_secrets(stdin_line))
