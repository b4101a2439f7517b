"""Graceful stop on SIGTERM / SIGINT: finish the current step, checkpoint, exit cleanly.

The first signal sets a flag the training loop checks after every step; a second SIGINT interrupts
at once (KeyboardInterrupt), for a user who really wants out.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

EXIT_STOPPED = 0
EXIT_INTERRUPTED = 130


class StopRequest:
    """Installs SIGTERM/SIGINT handlers that record a stop request instead of killing the process."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived (or ``request`` was called)."""
        return self.signal_name is not None

    @property
    def exit_code(self) -> int:
        """0 after SIGTERM (a requested stop), 130 after SIGINT (Ctrl+C), as shells expect."""
        return EXIT_INTERRUPTED if self.signal_name == "SIGINT" else EXIT_STOPPED

    def request(self, name: str = "request") -> None:
        """Ask the loop to stop (also usable from Python, e.g. a GUI thread)."""
        if self.signal_name is None:
            self.signal_name = name

    def install(self) -> StopRequest:
        """Take over SIGTERM and SIGINT (main thread only; elsewhere this does nothing)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested and name == "SIGINT":
            raise KeyboardInterrupt
        self.request(name)

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()
