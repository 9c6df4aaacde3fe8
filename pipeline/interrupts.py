"""SIGINT and SIGTERM stop a job at the next safe point, not wherever the main thread happens to
be; imports no MLflow or Optuna, so core code may use it too.

Why: Python raises ``KeyboardInterrupt`` between any two bytecodes of the main thread. Raised
inside SQLAlchemy (Optuna's and MLflow's stores), its connection pool or a lock, it can leave a
connection checked out mid-transaction, holding SQLite's write lock: then Optuna's heartbeat
thread, which the interrupted trial must join before it can fail, waits on that lock, and so does
the worker, for good. So the first signal only records itself; the job raises
``KeyboardInterrupt`` at points where it holds no lock and is inside no database call:

- after each validation pass of a training run (``callback``, a training callback),
- between trials (the study loop runs one trial per ``optimize`` call and checks between
  them) and before each study's wrap-up,
- between the steps of the job (``check``).

A second signal raises at once, wherever the job is (the user insists); a third exits the
process on the spot.

    >>> with deferred():
    ...     fit(cfg, callbacks=[callback])                   # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[signal.Signals] = []
_stopping = threading.Event()
"""Set by ``stop``: the threads stop as for a signal, but no signal was received, so the
user's first Ctrl-C afterwards is still a first one (stop at the next safe point)."""


def _handler(signum: int, frame: FrameType | None) -> None:
    sig = signal.Signals(signum)
    _received.append(sig)
    if len(_received) == 1:
        # os.write, not print: the main thread may be inside a print to stderr already.
        os.write(2, f"\n{sig.name}: stopping at the next safe point "
                    "(send it again to stop at once)\n".encode())
    elif len(_received) == 2:
        raise KeyboardInterrupt(sig.name)
    else:  # the forced unwinding is stuck too: leave now, as the default SIGTERM would
        os._exit(128 + signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are recorded and honored by ``check`` (the first of
    them) rather than raised wherever they land. Only the main thread may enter it."""
    previous = {sig: signal.signal(sig, _handler) for sig in SIGNALS}
    _received.clear()
    _stopping.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _received.clear()
        _stopping.clear()


def stop() -> None:
    """Asks every thread of this process to stop at its next safe point, as a signal would
    (``workers.run_in_threads`` does, for the siblings of a thread that failed), until
    ``resume``. It counts as no signal: ``pending`` does not report it, and a user's signal
    after it is a first one."""
    _stopping.set()


def resume() -> None:
    """Withdraws ``stop`` (once the threads it stopped have ended)."""
    _stopping.clear()


def pending() -> signal.Signals | None:
    """The first signal received and not yet honored, or None."""
    return _received[0] if _received else None


def check() -> None:
    """Raises ``KeyboardInterrupt`` (its message the signal's name) if a signal is pending.

    Raises:
        KeyboardInterrupt: a signal was received, or ``stop`` was called; the caller is at a
            safe point.
    """
    if _received:
        raise KeyboardInterrupt(_received[0].name)
    if _stopping.is_set():
        raise KeyboardInterrupt("stopped: another thread of this process failed")


def callback(step: int, metrics: dict[str, float]) -> None:
    """A training callback (see ``pipeline.train.fit``): a pending signal stops training here,
    after a validation pass, where no store is being written."""
    check()
