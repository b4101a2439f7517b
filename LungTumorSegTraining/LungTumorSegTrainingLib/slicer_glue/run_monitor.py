"""Following training runs: the engine's JSON progress lines, the metrics history, and the run folders' state.

- ``parse_line``: one stdout line of ``--progress json`` as an event (non-JSON lines become ``text`` events);
- ``MetricsHistory``: per-epoch loss and validation Dice from ``metrics`` events or ``metrics.csv``;
- ``discover_runs`` / ``read_run``: the runs of an output folder and their state (a dead pid: ``crashed``);
- ``eta_seconds`` / ``format_duration``.

No slicer, qt or torch import.
"""

from __future__ import annotations

import csv
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RUN_STATES = ("running", "stopped", "finished", "failed", "crashed", "unknown")
RUN_MARKERS = ("status.json", "config.json", "metrics.csv")


# ----------------------------------------------------------------------------------------------- events


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One stdout line → an event dictionary; ``None`` for blank lines.

    JSON objects with an ``event`` key are returned as they are; anything else (tracebacks, warnings,
    torchrun's prefixed lines such as ``[rank0]: {...}``) becomes ``{"event": "text", "message": line}``.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.strip()
    if not text:
        return None
    start = text.find("{")
    if start >= 0 and text.endswith("}"):
        try:
            event = json.loads(text[start:])
        except (json.JSONDecodeError, ValueError):
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            return event
    return {"event": "text", "message": text}


class LineBuffer:
    """Splits a byte/text stream read in arbitrary chunks into complete lines."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str | bytes) -> list[str]:
        """Add a chunk; return the complete lines it finishes."""
        if isinstance(chunk, bytes):
            chunk = chunk.decode("utf-8", errors="replace")
        self._pending += chunk
        *lines, self._pending = self._pending.replace("\r\n", "\n").split("\n")
        return lines

    def flush(self) -> list[str]:
        """The last, unterminated line (if any)."""
        rest, self._pending = self._pending, ""
        return [rest] if rest else []


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN → None


@dataclass
class MetricsHistory:
    """Per-epoch training loss and validation Dice, merged from ``metrics`` events and ``metrics.csv`` rows."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, values: dict[str, Any]) -> bool:
        """Merge one row / ``metrics`` event (needs ``epoch``); True when it changed the history."""
        epoch = _number(values.get("epoch"))
        if epoch is None:
            return False
        row = self.rows.setdefault(int(epoch), {"epoch": int(epoch)})
        before = dict(row)
        for key, value in values.items():
            if key in ("event", "epoch"):
                continue
            number = _number(value)
            if number is not None:
                row[key] = number
        return row != before

    def load_csv(self, path: Path | str) -> bool:
        """Merge every row of a ``metrics.csv`` (missing or half-written file: nothing)."""
        changed = False
        for row in read_metrics_csv(path):
            changed = self.add(row) or changed
        return changed

    def epochs(self) -> list[int]:
        """Epoch numbers, in order."""
        return sorted(self.rows)

    def column(self, key: str) -> list[float | None]:
        """Values of ``key`` per epoch (None where not measured, e.g. epochs without validation)."""
        return [self.rows[e].get(key) for e in self.epochs()]

    def table(self) -> dict[str, list[float]]:
        """Columns for the plot table: epoch, train_loss and val_dice (NaN where missing)."""
        nan = float("nan")
        return {
            "epoch": [float(e) for e in self.epochs()],
            "train_loss": [nan if v is None else v for v in self.column("train_loss")],
            "val_dice": [nan if v is None else v for v in self.column("val_dice")],
        }

    def best_dice(self) -> float | None:
        """Highest validation Dice so far."""
        values = [v for v in self.column("val_dice") if v is not None]
        values += [v for v in self.column("best_dice") if v is not None]
        return max(values) if values else None


def read_metrics_csv(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` (empty cells → None, numbers parsed); [] when absent or unreadable."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            if key is None:
                continue
            number = _number(value) if value not in (None, "") else None
            parsed[key] = number if number is not None else (value or None)
        out.append(parsed)
    return out


def progress_fraction(event: dict[str, Any], epochs_total: int | None = None) -> float | None:
    """Overall fraction done from a ``progress`` event (``fraction``, else epoch/step counters)."""
    fraction = _number(event.get("fraction"))
    if fraction is not None:
        return max(0.0, min(1.0, fraction))
    epoch, total = _number(event.get("epoch")), _number(event.get("epochs")) or epochs_total
    if epoch is None or not total:
        return None
    step, steps = _number(event.get("step")), _number(event.get("steps"))
    within = (step / steps) if step is not None and steps else 0.0
    return max(0.0, min(1.0, (epoch - 1 + within) / total if epoch >= 1 else within / total))


def eta_seconds(elapsed_s: float, fraction: float | None) -> float | None:
    """Remaining time assuming a constant rate; None when it cannot be estimated yet."""
    if fraction is None or fraction <= 0.0 or elapsed_s <= 0:
        return None
    if fraction >= 1.0:
        return 0.0
    return elapsed_s * (1.0 - fraction) / fraction


def format_duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s``, ``42s``, or ``?``."""
    if seconds is None:
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


# ----------------------------------------------------------------------------------------------- runs


def pid_alive(pid: Any) -> bool:
    """Whether a process with this id exists on this machine (never signals it)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def read_json(path: Path | str) -> dict[str, Any]:
    """A JSON object file, {} when absent, half-written or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def effective_state(status: dict[str, Any], hostname: str | None = None) -> str:
    """The run's state; ``running`` with a dead pid on this host becomes ``crashed``."""
    state = status.get("state")
    if state not in RUN_STATES:
        return "unknown"
    if state == "running":
        host = status.get("host")
        if host and host != (hostname or socket.gethostname()):
            return "running"  # another machine (e.g. a cluster node): cannot check
        if not pid_alive(status.get("pid")):
            return "crashed"
    return state


@dataclass
class RunInfo:
    """What the runs list shows about one run folder."""

    path: Path
    state: str = "unknown"
    epoch: int | None = None
    epochs: int | None = None
    best_dice: float | None = None
    last_val_dice: float | None = None
    last_loss: float | None = None
    arch: str = ""
    pid: int | None = None
    updated: str = ""
    has_best: bool = False
    has_last: bool = False
    log: Path | None = None
    overlay: Path | None = None

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name

    @property
    def resumable(self) -> bool:
        """Stopped, crashed or failed with a last checkpoint."""
        return self.has_last and self.state in ("stopped", "crashed", "failed")

    @property
    def installable(self) -> bool:
        """Has a best (or last) checkpoint to export."""
        return self.has_best or self.has_last

    def summary(self) -> str:
        """One line, e.g. ``finished · epoch 300/300 · best Dice 0.712``."""
        parts = [self.state]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}/{self.epochs}" if self.epochs else f"epoch {self.epoch}")
        if self.best_dice is not None:
            parts.append(f"best Dice {self.best_dice:.3f}")
        return " · ".join(parts)


def is_run_dir(path: Path) -> bool:
    """A folder holding status.json, config.json or metrics.csv."""
    return path.is_dir() and any((path / marker).is_file() for marker in RUN_MARKERS)


def read_run(path: Path | str, hostname: str | None = None) -> RunInfo:
    """State and best metrics of one run folder, from status.json, metrics.csv and config.json."""
    path = Path(path)
    status, config = read_json(path / "status.json"), read_json(path / "config.json")
    history = MetricsHistory()
    history.load_csv(path / "metrics.csv")
    info = RunInfo(path=path)
    info.state = effective_state(status, hostname) if status else ("unknown" if not history.rows else "stopped")
    epoch = _number(status.get("epoch"))
    if epoch is None and history.rows:
        epoch = history.epochs()[-1]
    info.epoch = int(epoch) if epoch is not None else None
    epochs = _number(config.get("epochs") or status.get("epochs"))
    info.epochs = int(epochs) if epochs else None
    candidates = [v for v in (_number(status.get("best_dice")), history.best_dice()) if v is not None]
    info.best_dice = max(candidates) if candidates else None
    dice = [v for v in history.column("val_dice") if v is not None]
    loss = [v for v in history.column("train_loss") if v is not None]
    info.last_val_dice = dice[-1] if dice else None
    info.last_loss = loss[-1] if loss else None
    info.arch = str(config.get("arch", ""))
    pid = _number(status.get("pid"))
    info.pid = int(pid) if pid is not None else None
    info.updated = str(status.get("updated", ""))
    info.has_best = (path / "checkpoints" / "best.pt").is_file()
    info.has_last = (path / "checkpoints" / "last.pt").is_file()
    for name in ("train.log", "log.txt", "gui.log"):
        if (path / name).is_file():
            info.log = path / name
            break
    info.overlay = path / "val_overlay.png" if (path / "val_overlay.png").is_file() else None
    return info


def discover_runs(output_dir: Path | str, hostname: str | None = None) -> list[RunInfo]:
    """Run folders directly under ``output_dir`` (or ``output_dir`` itself), newest first."""
    root = Path(output_dir).expanduser()
    if not root.is_dir():
        return []
    folders = [root] if is_run_dir(root) else [p for p in root.iterdir() if is_run_dir(p)]

    def modified(p: Path) -> float:
        times = [(p / m).stat().st_mtime for m in RUN_MARKERS if (p / m).is_file()]
        return max(times, default=0.0)

    return [read_run(p, hostname) for p in sorted(folders, key=lambda p: (-modified(p), p.name))]
