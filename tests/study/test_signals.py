"""study/signals.py in a process of its own (pytest keeps its own handlers): a real SIGTERM,
swallowed where Python cannot raise its KeyboardInterrupt, stays pending until the driver
has seen an interrupt, across a second install (the next study of the same process)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import PROJECT_ROOT

SCRIPT = """
import gc, os, signal, time
from study.signals import install_signal_handlers, interrupt_handled, raise_if_signalled


def outcome():
    try:
        raise_if_signalled()
    except KeyboardInterrupt as exc:
        return f"raised {exc}"
    return "nothing"


install_signal_handlers()
print("before any signal:", outcome())


class SendsSigtermWhenCollected:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN and time.monotonic() < deadline:
            pass  # the handler runs here; its KeyboardInterrupt cannot leave a finalizer


holder = SendsSigtermWhenCollected()
holder.cycle = holder  # freed only by the collector
del holder
gc.collect()
print("the process went on")
print("first check:", outcome())
print("second check:", outcome())
install_signal_handlers()
print("after a new install:", outcome())
interrupt_handled()
print("after the driver saw it:", outcome())
"""


def test_a_swallowed_sigterm_stays_pending_until_the_driver_sees_an_interrupt() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Exception ignored" in result.stderr and "KeyboardInterrupt: SIGTERM" in result.stderr, result.stderr
    again = "raised SIGTERM (raised again: the first was swallowed)"
    assert result.stdout.splitlines() == [
        "before any signal: nothing",
        "the process went on",
        f"first check: {again}",
        f"second check: {again}",  # a re-raise that is swallowed too leaves it pending
        f"after a new install: {again}",
        "after the driver saw it: nothing",
    ], result.stdout
