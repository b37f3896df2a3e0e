"""SIGINT and SIGTERM in a process that trains: both end it the way Ctrl-C does.

The handler raises KeyboardInterrupt wherever the main thread is, and ignores any further
signal so that the clean-up it starts is not cut. Python cannot always deliver that
exception: inside a finalizer or a garbage-collector callback it prints "Exception ignored"
and goes on, and a bare `except:` (Keras has several on its tracing path) swallows it. The
process would then train on and exit 0, deaf to every later signal. So the handler also
records the signal as pending, and `raise_if_signalled` raises it again, at every training
batch's and epoch's end, each trial's end and each study's start and end, until the driver
says that an interrupt reached it (`interrupt_handled`).
"""

from __future__ import annotations

import signal


class _Pending:
    """The signal caught and not yet seen by the driver as a KeyboardInterrupt."""

    signum: int | None = None


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    # Only the first signal interrupts: a second one (Ctrl-C twice, or the terminal's SIGINT
    # plus the supervisor's SIGTERM) must not cut the clean-up that marks the trial and run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _Pending.signum = signum
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install_signal_handlers() -> None:
    """SIGTERM (kill, Slurm, Kubernetes) ends a search the same way as Ctrl-C. A signal still
    pending (swallowed while the last study closed) stays pending: the next study stops."""
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)


def raise_if_signalled() -> None:
    """Raise the pending signal's KeyboardInterrupt (again), in case the first was swallowed.

    Called only where no interrupt's clean-up can be running (nothing trains or finishes a
    trial after an interrupt), so a first exception that did arrive never meets this one."""
    if signal_pending():
        raise KeyboardInterrupt(f"{signal.Signals(_Pending.signum).name} (raised again: the first was swallowed)")


def signal_pending() -> bool:
    """Whether a caught signal has not reached the driver yet: then an exception other than
    KeyboardInterrupt may be the interrupt, replaced by a library's clean-up (Optuna's journal
    lock release unlinks its file again when interrupted just after unlinking it, and raises
    FileNotFoundError instead)."""
    return _Pending.signum is not None


def interrupt_replacing(exc: Exception) -> KeyboardInterrupt:
    """The interrupt to raise (from `exc`) where a pending signal's was replaced by `exc`."""
    return KeyboardInterrupt(f"interrupted, then {type(exc).__name__} in a clean-up")


def interrupt_handled() -> None:
    """The driver caught the KeyboardInterrupt: the study ends interrupted, nothing is pending."""
    _Pending.signum = None


def raise_at_trial_end_if_signalled(study: object, trial: object) -> None:
    """An Optuna callback (the last one, so the trial's progress line is printed first)."""
    raise_if_signalled()
