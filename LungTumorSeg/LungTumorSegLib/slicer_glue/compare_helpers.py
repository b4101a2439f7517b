"""Pure helpers for the Slicer module's "Compare with baseline" section (no slicer/qt/torch import).

- the ``lungtumorseg compare`` command line with JSON-line progress;
- reading an engine process's JSON-line events, and a blocking runner (scripts and the Slicer self-test);
- the comparison table rows and the response summary, read from comparison.json;
- which segments of a segmentation node are the tumour.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .lesion_segments import is_lesion_segment
from .process import EngineProcess
from .segment_helpers import ProgressEvent, parse_progress_line

REGISTRATION_CHOICES = (
    ("Rigid", "rigid"),
    ("Affine", "affine"),
    ("Rigid + deformable (lung field)", "deformable"),
    ("None (already aligned)", "none"),
)
# (key, title, unit, column type), as the lesion table: numbers are numbers in the MRML table.
COMPARE_TABLE_COLUMNS = (
    ("match_type", "Match", "", "string"),
    ("target", "Target", "", "string"),
    ("baseline_ids", "Baseline lesion", "", "string"),
    ("followup_ids", "Follow-up lesion", "", "string"),
    ("baseline_long_axis_mm", "Long axis before", "mm", "double"),
    ("followup_long_axis_mm", "Long axis after", "mm", "double"),
    ("long_axis_change_percent", "Change", "%", "double"),
    ("baseline_volume_ml", "Volume before", "ml", "double"),
    ("followup_volume_ml", "Volume after", "ml", "double"),
    ("volume_change_percent", "Volume change (not RECIST)", "%", "double"),
)


@dataclass
class CompareSettings:
    """What the GUI (or a script) asks ``lungtumorseg compare`` for."""

    registration: str = "rigid"
    model: str = ""
    device: str = "auto"
    tta: int | None = None
    pictures: bool = True


def build_compare_command(
    python: str,
    baseline: str | Path,
    followup: str | Path,
    output_dir: str | Path,
    settings: CompareSettings,
    baseline_label: str | Path | None = None,
    followup_label: str | Path | None = None,
) -> list[str]:
    """Argument list running ``python -m LungTumorSegLib compare`` with JSON-line progress.

    Raises:
        ValueError: an unknown registration mode, device or TTA.
    """
    if settings.registration not in {value for _, value in REGISTRATION_CHOICES}:
        raise ValueError(f"registration must be rigid, affine, deformable or none, got {settings.registration!r}")
    if settings.device not in ("auto", "cpu", "cuda") and not settings.device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {settings.device!r}")
    if settings.tta is not None and settings.tta not in (1, 2, 4, 8):
        raise ValueError(f"TTA must be 1, 2, 4 or 8, got {settings.tta}")
    command = [python, "-m", "LungTumorSegLib", "compare", str(baseline), str(followup), "-o", str(output_dir)]
    command += ["--registration", settings.registration, "--device", settings.device]
    command += ["--format", "nrrd", "--progress", "json", "--overwrite"]
    for option, path in (("--baseline-label", baseline_label), ("--followup-label", followup_label)):
        if path is not None:
            command += [option, str(path)]
    if settings.model:
        command += ["--model", settings.model]
    if settings.tta is not None:
        command += ["--tta", str(int(settings.tta))]
    if not settings.pictures:
        command.append("--no-pictures")
    return command


@dataclass
class EngineRun:
    """What an engine process gave: exit code, its ``result`` event, its error, its other output lines."""

    exit_code: int | None
    result: dict[str, Any] | None = None
    error: str | None = None
    stderr: list[str] = field(default_factory=list)
    cancelled: bool = False

    def record(self, event: ProgressEvent) -> None:
        """Keep what the event tells about the outcome (result, error, or a plain output line)."""
        if event.event == "result":
            self.result = event.data
        elif event.event == "error":
            self.error = event.message or "unknown error"
        elif event.event == "text":
            self.stderr.append(event.message)

    def failure(self) -> str | None:
        """The error to show, or None when the run succeeded (or was cancelled)."""
        if self.cancelled:
            return None
        if self.error:
            return self.error
        if self.exit_code != 0 or self.result is None:
            tail = "\n".join(self.stderr[-20:])
            return f"the engine process ended with code {self.exit_code}" + (f"\n{tail}" if tail else "")
        return None


def read_events(
    engine: EngineProcess, run: EngineRun, on_event: Callable[[ProgressEvent], None] | None = None
) -> list[ProgressEvent]:
    """The events of the lines the engine printed since the last call, recorded in ``run`` and passed on."""
    events = [e for e in map(parse_progress_line, engine.read_lines()) if e is not None]
    for event in events:
        run.record(event)
        if on_event:
            on_event(event)
    return events


def run_engine(
    command: list[str],
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    on_event: Callable[[ProgressEvent], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    poll_s: float = 0.05,
) -> EngineRun:
    """Run an engine command and wait (``process.EngineProcess``: own session, output read by a thread).

    Each JSON-line event goes to ``on_event``; when ``should_cancel()`` turns true the process and
    everything it started are killed.

    Raises:
        OSError: the program cannot be started.
    """
    engine = EngineProcess(command, env=env, cwd=cwd)
    engine.start()
    run = EngineRun(exit_code=None)
    while True:
        ended = not engine.running  # before reading, so that the last lines are read
        read_events(engine, run, on_event)
        if should_cancel and should_cancel():
            run.cancelled = True
            engine.kill()
            break
        if ended:
            break
        time.sleep(poll_s)
    engine.wait()
    run.exit_code = engine.returncode
    return run


def comparison_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per match of comparison.json, with ``location_ras``: where to look, in baseline coordinates.

    The location is the first baseline lesion's centroid; for a new lesion, its follow-up centroid mapped
    back into baseline coordinates with the inverse of the alignment's linear part.
    """
    baseline = {x["lesion_id"]: x for x in data.get("baseline", {}).get("lesions", [])}
    followup = {x["lesion_id"]: x for x in data.get("followup", {}).get("lesions", [])}
    matrix = data.get("registration", {}).get("linear_matrix_ras")
    rows = []
    for match in data.get("matches", []):
        row = dict(match)
        location = None
        if match.get("baseline_ids"):
            location = baseline.get(match["baseline_ids"][0], {}).get("centroid_ras")
        elif match.get("followup_ids"):
            point = followup.get(match["followup_ids"][0], {}).get("centroid_ras")
            location = _inverse_map(matrix, point) if point else None
        row["location_ras"] = location
        rows.append(row)
    return rows


def compare_table_value(key: str, row: dict[str, Any]) -> float | str:
    """One cell of the comparison table: a rounded number (NaN when unknown) or a text."""
    kind = {column[0]: column[3] for column in COMPARE_TABLE_COLUMNS}.get(key, "string")
    value = row.get(key)
    if kind == "string":
        return format_compare_cell(key, value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return round(number, 2 if key.endswith("_ml") else 1) if math.isfinite(number) else float("nan")


def format_compare_cell(key: str, value: Any) -> str:
    """Table text of one cell of the comparison table."""
    if value is None or value == "" or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if key.endswith("_percent"):
        return f"{value:+.1f}"
    if key.endswith("_ml"):
        return f"{value:.2f}"
    if key.endswith("_mm"):
        return f"{value:.1f}"
    return str(value)


def response_summary_text(data: dict[str, Any]) -> str:
    """The response in two lines: category and rule; sums and the (non-RECIST) volume change."""
    response = data.get("response", {})
    if not response:
        return ""
    change = response.get("change_percent")
    volume = response.get("volume_not_recist", {}).get("change_percent")
    first = f"RECIST 1.1: {response.get('category')} ({response.get('category_name')}) - {response.get('rule')}"
    second = (
        f"Sum of diameters {response.get('baseline_sum_mm', 0.0):.1f} -> {response.get('followup_sum_mm', 0.0):.1f} mm"
    )
    if change is not None:
        second += f" ({change:+.1f} %)"
    if volume is not None:
        second += f"; total volume {volume:+.1f} % (not RECIST)"
    return f"{first}\n{second}"


def tumor_segment_ids(segments: list[tuple[str, str, str]]) -> list[str]:
    """Segment ids to use as the tumour label: the lesion segments when there are some, else every segment.

    Args:
        segments: ``(segment id, segment name, LungTumorSeg.Role tag)`` of a segmentation node's segments.
    """
    tumour = [segment_id for segment_id, name, role in segments if is_lesion_segment(name, role)]
    return tumour or [segment_id for segment_id, _, _ in segments]


def _inverse_map(matrix: Any, point: Any) -> list[float] | None:
    """``point`` mapped by the inverse of a 4x4 matrix (row lists), or None without a usable matrix."""
    try:
        inverse = np.linalg.inv(np.asarray(matrix, dtype=float).reshape(4, 4))
    except (TypeError, ValueError, np.linalg.LinAlgError):
        return None
    return (inverse @ np.array([*map(float, point), 1.0]))[:3].tolist()
