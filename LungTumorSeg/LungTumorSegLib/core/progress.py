"""Progress reporting: tqdm bars for people, JSON lines for the Slicer modules.

JSON-line protocol (one object per line on stdout, ``--progress json``)::

    {"event": "progress", "step": "inference", "fraction": 0.42, "message": "member unet, flip 3/8"}
    {"event": "log", "level": "warning", "message": "CUDA out of memory: falling back to CPU"}
    {"event": "result", "outputs": {"label": "/out/ct_tumor.nii.gz", ...}, "summary": {...}}
    {"event": "error", "message": "ct.nii.gz: expected a 3D image, got 4D"}

``fraction`` is the overall fraction of the whole run in [0, 1].
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG = logging.getLogger("lungtumorseg")
MODES = ("tqdm", "json", "none")


class ProgressReporter:
    """Reports named steps and an overall fraction in one of three modes.

    Args:
        mode: ``"tqdm"`` (a bar on stderr), ``"json"`` (JSON lines on ``stream``) or ``"none"``.
        stream: where JSON lines go (stdout by default).
    """

    def __init__(self, mode: str = "tqdm", stream: TextIO | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"progress mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.stream = stream or sys.stdout
        self._bar: tqdm | None = None
        self.fraction = 0.0

    def emit(self, event: str, **fields: Any) -> None:
        """Write one JSON line (json mode only).

        When the reader has gone (Slicer closed while a training runs), the line is dropped and reporting stops:
        the run goes on and still acts on its stop file, instead of dying on a broken pipe without a checkpoint.
        """
        if self.mode != "json":
            return
        try:
            self.stream.write(json.dumps({"event": event, **fields}, default=str) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            self.mode = "none"
            LOG.debug("progress reader gone: progress lines are no longer written")

    def update(self, step: str, fraction: float, message: str = "") -> None:
        """Report that ``step`` is running and the whole run is ``fraction`` done."""
        self.fraction = max(0.0, min(1.0, float(fraction)))
        if self.mode == "json":
            self.emit("progress", step=step, fraction=round(self.fraction, 4), message=message)
        elif self.mode == "tqdm":
            if self._bar is None:
                self._bar = tqdm(
                    total=1000, desc=step, unit="‰", file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5
                )
            self._bar.set_description(step, refresh=False)
            self._bar.set_postfix_str(message, refresh=False)
            self._bar.update(int(self.fraction * 1000) - self._bar.n)  # redraws at most every mininterval
        LOG.debug("%s %.1f%% %s", step, 100 * self.fraction, message)

    def log(self, level: str, message: str) -> None:
        """A message for the user (``info``, ``warning`` or ``error``), shown once (logged at debug level only)."""
        LOG.debug("%s: %s", level, message)
        if self.mode == "json":
            self.emit("log", level=level, message=message)
            return
        try:
            if self.mode == "tqdm":
                tqdm.write(f"{level}: {message}", file=sys.stderr)
            else:
                print(f"{level}: {message}", file=sys.stderr)
        except (BrokenPipeError, ValueError):  # nobody reads stderr any more (see emit)
            pass

    def close(self) -> None:
        """Finish the bar (tqdm mode)."""
        if self._bar is not None:
            self._bar.n = self._bar.total
            self._bar.close()
            self._bar = None


class StepProgress:
    """Maps the progress of one step (0..1) into its slice [start, end] of the whole run."""

    def __init__(self, reporter: ProgressReporter, step: str, start: float, end: float) -> None:
        self.reporter, self.step, self.start, self.end = reporter, step, start, end

    def __call__(self, fraction: float, message: str = "") -> None:
        self.reporter.update(self.step, self.start + (self.end - self.start) * fraction, message)
