"""Masking of credentials in anything we print, tag or log."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?P<tail>@)")
_KEY_VALUE = re.compile(r"(?P<head>(?:password|passwd|pwd|token|secret)=)(?P<secret>[^&\s;]+)", re.IGNORECASE)
MASK = "***"


def mask_secrets(text: str) -> str:
    """`postgresql://u:pw@h/db` -> `postgresql://u:***@h/db`; also `password=...` pairs."""
    text = _URL_PASSWORD.sub(lambda m: m["head"] + MASK + m["tail"], str(text))
    return _KEY_VALUE.sub(lambda m: m["head"] + MASK, text)
