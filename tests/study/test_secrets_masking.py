"""Masking, unit level: every form of credential in a URL, and linear time on huge input."""

from __future__ import annotations

import io
import time

import pytest

from study.secrets import MaskedStream, mask_secrets


@pytest.mark.parametrize(("given", "printed"), [
    ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
    # A token in the user-name position is a credential too (GitHub-style http://TOKEN@host).
    ("tracking http://ghp_TOKEN123@host:5000/x", "tracking http://***@host:5000/x"),
    # An unencoded '@' (or '/') inside a password: everything up to the last '@' is secret.
    ("postgresql://study:p@ss@word@db-host/optuna", "postgresql://study:***@db-host/optuna"),
    ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
    ("postgresql://u:it's'q@h/db", "postgresql://u:***@h/db"),
    ("ftp://u:ftppw@127.0.0.1/x", "ftp://u:***@127.0.0.1/x"),
    ("got unsupported URI 'ftp://u:ftppw@127.0.0.1/x' for", "got unsupported URI 'ftp://u:***@127.0.0.1/x' for"),
    # An e-mail address as the user name stays readable; its password does not.
    ("http://me@example.com:pw@host", "http://me@example.com:***@host"),
    # Two URLs in one token (a comma-separated list): each is masked, neither swallows the other.
    ("a://u:p1@h,b://v:p2@g", "a://u:***@h,b://v:***@g"),
    ("dsn password=hunter2 host=h", "dsn password=*** host=h"),
    ("PGPASSWORD=s3cret make", "PGPASSWORD=*** make"),
    ("?user=a&token=abc&x=1", "?user=a&token=***&x=1"),
])
def test_credentials_are_masked(given: str, printed: str) -> None:
    assert mask_secrets(given) == printed
    assert mask_secrets(printed) == printed  # idempotent: masking twice changes nothing


@pytest.mark.parametrize("text", [
    "sqlite:////tmp/x.db", "http://127.0.0.1:5000/#/experiments/1", "https://host/path@x",
    "file:///a/b@c", "no url here: a:b@c", "mlruns/optuna.journal",
])
def test_text_without_credentials_is_left_alone(text: str) -> None:
    assert mask_secrets(text) == text


@pytest.mark.parametrize("shape", ["x", "a://", "a://b:c", "a://b:c@ ", "col_a,col_b,", "pwd", "a@"])
def test_masking_a_huge_text_takes_linear_time(shape: str) -> None:
    """The old regex took 1.6 s on 40k letters and grew with the square: 400k letters took
    minutes. The bound here is ~100x what the linear scan needs (benchmarks/masking_speed.py)."""
    text = (shape * (400_000 // len(shape) + 1))[:400_000]
    started = time.perf_counter()
    mask_secrets(text)
    assert time.perf_counter() - started < 2.0


def test_masked_stream_masks_every_write_and_counts_what_it_was_given() -> None:
    target = io.StringIO()
    stream = MaskedStream(target)
    assert stream.write("View run at: http://user:pw@host/#/runs/1\n") == len("View run at: http://user:pw@host/#/runs/1\n")
    stream.writelines(["http://TOKEN@h\n"])
    assert target.getvalue() == "View run at: http://user:***@host/#/runs/1\nhttp://***@h\n"
    assert stream.getvalue() == target.getvalue()  # everything else is the wrapped stream's
