"""SIGINT and SIGTERM in a process that trains: both end it the way Ctrl-C does.

The handler raises KeyboardInterrupt wherever the main thread is, and ignores any further
signal so that the clean-up it starts is not cut. Python cannot always deliver that
exception: inside a finalizer or a garbage-collector callback it prints "Exception ignored"
and goes on, and a bare `except:` (Keras has several on its tracing path) swallows it. The
process would then train on and exit 0, deaf to every later signal. So the handler also
records the signal, and `raise_if_signalled` raises it again at the next training batch or
trial end.
"""

from __future__ import annotations

import signal


class _Caught:
    """The first signal this process caught, and whether it was raised again already."""

    signum: int | None = None
    raised_again = False


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    # Only the first signal interrupts: a second one (Ctrl-C twice, or the terminal's SIGINT
    # plus the supervisor's SIGTERM) must not cut the clean-up that marks the trial and run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _Caught.signum = signum
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGTERM (kill, Slurm, Kubernetes) ends a search the same way as Ctrl-C."""
    _Caught.signum, _Caught.raised_again = None, False
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)


def raise_if_signalled() -> None:
    """Raise the caught signal's KeyboardInterrupt once more, in case the first was swallowed.

    Called only where nothing of an interrupt's clean-up can be running (a training batch's
    end, a trial's end), so a first exception that did arrive never sees this one."""
    if _Caught.signum is not None and not _Caught.raised_again:
        _Caught.raised_again = True
        raise KeyboardInterrupt(f"{signal.Signals(_Caught.signum).name} (raised again: the first was swallowed)")


def raise_at_trial_end_if_signalled(study: object, trial: object) -> None:
    """An Optuna callback (the last one, so the trial's progress line is printed first)."""
    raise_if_signalled()
