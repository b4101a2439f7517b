"""Which GPUs torch sees, asked of the engine in its own process (no slicer import, torch never imported here).

Importing torch into Slicer's process to fill the panel's device list costs seconds, holds GPU memory and ties
Slicer to that torch build until a restart; the engine's ``devices --json`` answers instead, in the background.
"""

from __future__ import annotations

import json
import subprocess

from .i18n import tr as _
from .segment_helpers import engine_environment

TIMEOUT_S = 120.0


class DeviceQuery:
    """``python -m LungTumorSegLib devices --json`` started in the background; ``gpus()`` once it is done."""

    def __init__(self, python: str) -> None:
        self.command = [python, "-m", "LungTumorSegLib", "devices", "--json"]
        self.popen: subprocess.Popen | None = None
        self._gpus: list[dict] | None = None

    def start(self) -> None:
        """Start the query (an engine that cannot start answers 'no GPU')."""
        try:
            self.popen = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=engine_environment(),
            )
        except OSError:
            self._gpus = []

    def done(self) -> bool:
        """True once the answer is in (``gpus()`` does not wait then)."""
        return self._gpus is not None or (self.popen is not None and self.popen.poll() is not None)

    def gpus(self, timeout_s: float = TIMEOUT_S) -> list[dict]:
        """The CUDA GPUs (``{"index", "name", "memory_gb"}``); [] when torch is missing or sees none."""
        if self._gpus is None:
            self._gpus = parse_devices(self._output(timeout_s))
        return self._gpus

    def _output(self, timeout_s: float) -> str:
        if self.popen is None:
            return ""
        try:
            out, _ = self.popen.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            return ""
        return out.decode("utf-8", errors="replace") if self.popen.returncode == 0 else ""


def parse_devices(text: str) -> list[dict]:
    """The ``cuda`` list of the engine's ``devices --json`` output ([] for anything else)."""
    for line in reversed(text.strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and isinstance(report.get("cuda"), list):
            return [gpu for gpu in report["cuda"] if isinstance(gpu, dict) and "index" in gpu and "name" in gpu]
    return []


def device_choices(gpus: list[dict] | None = None) -> list[tuple[str, str]]:
    """(label, --device value) pairs for the panel: Auto, one entry per GPU the engine reported, CPU."""
    choices = [(_("Auto"), "auto")]
    for gpu in gpus or []:
        choices.append((_("GPU {0} ({1})").format(gpu["index"], gpu["name"]), f"cuda:{gpu['index']}"))
    choices.append((_("CPU"), "cpu"))
    return choices
