"""Graceful stop on SIGTERM / SIGINT or a stop file: finish the current step, checkpoint, exit cleanly.

The first signal sets a flag the training loop checks after every step; a second SIGINT interrupts
at once (KeyboardInterrupt), for a user who really wants out.

The stop file (``--stop-file``) works on every OS, also where no signal reaches the trainer (Windows console
processes, the Slicer launcher between GUI and engine, every torchrun rank): the loop's check sees the file
appear. It is removed when the run ends, so that a later resume does not stop at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from types import FrameType

EXIT_STOPPED = 0
EXIT_INTERRUPTED = 130
STOP_FILE_NAME = "stop-request"  # the Slicer module's stop file, inside the run folder
STOP_FILE_REASON = "stop file"


class StopRequest:
    """Installs SIGTERM/SIGINT handlers that record a stop request instead of killing the process.

    Args:
        stop_file: a stop is also requested once this file exists.
    """

    def __init__(self, stop_file: str | os.PathLike | None = None) -> None:
        self.signal_name: str | None = None
        self.stop_file = Path(stop_file) if stop_file else None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal arrived, the stop file appeared, or ``request`` was called."""
        if self.signal_name is None and self.stop_file is not None and self.stop_file.exists():
            self.request(STOP_FILE_REASON)
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
        """Put the previous handlers back; remove the stop file (it has been acted on)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self.stop_file is not None:
            with contextlib.suppress(OSError):
                self.stop_file.unlink()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.requested and name == "SIGINT":
            raise KeyboardInterrupt
        self.request(name)

    def __enter__(self) -> StopRequest:
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()
