"""Signals honoured at safe points (pipeline/interrupts.py): the first is recorded and raised
by ``check``, a second raises at once, and the handlers are restored afterwards."""

from __future__ import annotations

import signal
import time

import pytest


def test_a_signal_waits_for_a_safe_point_and_a_second_one_does_not():
    """The first SIGINT/SIGTERM is only recorded (raised inside a library it could be swallowed
    by a weakref callback, or leave a connection mid-transaction); ``check`` raises it. A second
    raises wherever it lands."""
    import os

    from pipeline import interrupts

    # What was there before: Python's default handler, or SIG_IGN in a process started in the
    # background by a non-interactive shell (`cmd &`), which ignores SIGINT for it.
    before = signal.getsignal(signal.SIGINT)
    with interrupts.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the handler has run by now, and raised nothing
        assert interrupts.pending() == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            interrupts.check()
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
    assert interrupts.pending() is None
    assert signal.getsignal(signal.SIGINT) == before  # restored


def test_the_training_callback_is_a_safe_point():
    import os

    from pipeline import interrupts

    with interrupts.deferred():
        interrupts.callback(10, {"val/mse": 1.0})  # nothing pending: training goes on
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        with pytest.raises(KeyboardInterrupt, match="SIGINT"):
            interrupts.callback(20, {"val/mse": 1.0})
