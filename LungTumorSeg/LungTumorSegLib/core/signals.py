"""SIGTERM handled like Ctrl-C, and critical sections that a signal must not cut in half.

The command line turns SIGTERM into a :class:`Terminated` exception (a ``KeyboardInterrupt``), so the
same clean-up runs for both: staged outputs are removed and the run reports "cancelled" with exit
code 143 (130 for Ctrl-C). Moving a finished output set into place runs inside
:func:`signals_deferred`, so a signal arriving then takes effect once the set is complete.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


def exit_code_of(interrupt: KeyboardInterrupt) -> int:
    """143 for SIGTERM, 130 for Ctrl-C."""
    return EXIT_TERMINATED if isinstance(interrupt, Terminated) else EXIT_INTERRUPTED


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises :class:`Terminated` in the main thread (a no-op in other threads)."""
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then act on the first one that arrived.

    Re-entrant; a no-op outside the main thread.
    """
    if not _in_main_thread() or getattr(_held, "active", False):
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: object) -> None:
        received.append(signum)

    watched = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, hold) for signum in watched}
    _held.active = True
    try:
        yield
    finally:
        _held.active = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])  # now handled as it would have been without the block


_held = threading.local()
