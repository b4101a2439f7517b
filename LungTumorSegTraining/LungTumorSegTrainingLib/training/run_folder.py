"""The run folder: the files a training run writes and the Slicer training GUI reads (docs/training.md).

::

    RUN_DIR/config.json            the full TrainConfig (with the command line)
    RUN_DIR/split.json             the patient-level split used (splits.py format)
    RUN_DIR/status.json            {"state", "pid", "epoch", "best_dice", "updated", ...}, rewritten atomically
    RUN_DIR/metrics.csv            one row per completed epoch (METRIC_COLUMNS)
    RUN_DIR/train.log              log lines
    RUN_DIR/tensorboard/           TensorBoard event files
    RUN_DIR/curves.png             training loss and validation Dice per epoch
    RUN_DIR/val_overlay.png        image, label, prediction, entropy on the slice with the largest tumour area
    RUN_DIR/checkpoints/last.pt    after every epoch and on stop
    RUN_DIR/checkpoints/best.pt    when the validation Dice improves
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..config import write_json_atomic
from .checkpoints import BEST, CHECKPOINT_DIR, LAST

STATES = ("running", "stopped", "finished", "failed")
METRIC_COLUMNS = ("epoch", "global_step", "train_loss", "val_dice", "lr", "epoch_time_s", "best_dice")


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds, e.g. ``2025-01-31T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class RunFolder:
    """Paths and writers of one run folder (writers do nothing when ``enabled`` is false, i.e. rank > 0).

    Args:
        root: the run folder (created on first write).
        enabled: write files (rank 0 only in a DDP job).
    """

    def __init__(self, root: str | os.PathLike, enabled: bool = True) -> None:
        self.root = Path(root)
        self.enabled = enabled
        self._status: dict[str, Any] = {}

    config = property(lambda self: self.root / "config.json")
    split = property(lambda self: self.root / "split.json")
    status = property(lambda self: self.root / "status.json")
    metrics = property(lambda self: self.root / "metrics.csv")
    log = property(lambda self: self.root / "train.log")
    tensorboard_dir = property(lambda self: self.root / "tensorboard")
    curves = property(lambda self: self.root / "curves.png")
    overlay = property(lambda self: self.root / "val_overlay.png")
    checkpoints = property(lambda self: self.root / CHECKPOINT_DIR)
    last = property(lambda self: self.root / CHECKPOINT_DIR / LAST)
    best = property(lambda self: self.root / CHECKPOINT_DIR / BEST)
    cache_dir = property(lambda self: self.root / "cache")

    def create(self) -> None:
        """Make the folder and its checkpoints sub-folder."""
        if self.enabled:
            self.checkpoints.mkdir(parents=True, exist_ok=True)

    def write_status(self, state: str, **fields: Any) -> None:
        """Update ``status.json``: ``state`` plus ``fields`` merged over the previous values."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}")
        self._status.update(fields)
        self._status.update(state=state, pid=os.getpid(), host=socket.gethostname(), updated=utc_now())
        self._status.setdefault("started", self._status["updated"])
        if self.enabled:
            write_json_atomic(self.status, self._status)

    def write_metrics(self, history: list[dict[str, Any]]) -> None:
        """Rewrite ``metrics.csv`` from the per-epoch history, atomically."""
        if not self.enabled:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in history:
            writer.writerow({key: _csv_value(row.get(key)) for key in METRIC_COLUMNS})
        tmp = self.metrics.with_name(f".{self.metrics.name}.tmp")
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        os.replace(tmp, self.metrics)

    def tensorboard(self, purge_step: int | None = None) -> Any:
        """A TensorBoard SummaryWriter (events after ``purge_step`` from an interrupted run are dropped)."""
        if not self.enabled:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(log_dir=str(self.tensorboard_dir), purge_step=purge_step)


def read_status(root: str | os.PathLike) -> dict[str, Any]:
    """The run's ``status.json`` ({} when absent or being replaced)."""
    try:
        return json.loads((Path(root) / "status.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def read_metrics(root: str | os.PathLike) -> list[dict[str, Any]]:
    """``metrics.csv`` rows with numbers parsed (empty cells become None)."""
    path = Path(root) / "metrics.csv"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as handle:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return value


def _parse(value: str) -> Any:
    if value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
