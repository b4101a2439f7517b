"""Side-by-side PNG of one target lesion at both time points, with its RECIST lines.

Each half is the engine's overlay (``overlay.overlay_png``: lung window, contour, RECIST long axis in
red, short axis in blue, radiological orientation) of the axial slice where that time point's long axis
lies, zoomed on the lesion; only the lesions of this match are drawn. For a split target the follow-up
half shows the largest fragment's slice (the other fragments' axes are dashed when on other slices).
"""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imread

from ..reporting.overlay import overlay_png
from .compare import Comparison, TimePoint
from .lesion_matching import LesionMatch
from .recist_response import TargetLesion

MIN_FOV_MM = 50.0


def side_by_side_png(comparison: Comparison, target: TargetLesion, dpi: int = 80) -> bytes:
    """PNG bytes: the target at baseline (left) and what it became at follow-up (right).

    Raises:
        ValueError: the target has no follow-up lesion (it disappeared or merged into another target).
    """
    match = next(m for m in comparison.matches if target.baseline_id in m.baseline_ids)
    if not target.followup_ids:
        raise ValueError(f"target {target.number} has no follow-up lesion of its own ({match.match_type})")
    baseline_ids, followup_ids = [target.baseline_id], target.followup_ids
    longest = max(
        [comparison.baseline.lesion(i).long_axis_mm for i in baseline_ids]
        + [comparison.followup.lesion(i).long_axis_mm for i in followup_ids]
    )
    fov = max(MIN_FOV_MM, 1.6 * longest + 20.0)
    halves = [
        _half(comparison.baseline, baseline_ids, fov, dpi),
        _half(comparison.followup, followup_ids, fov, dpi),
    ]
    height, width = halves[0].shape[:2]
    figure = Figure(figsize=(2 * width / dpi, height / dpi + 0.9), dpi=dpi, facecolor="black")
    FigureCanvasAgg(figure)
    captions = [
        f"Baseline: lesion {target.baseline_id}, long axis {target.baseline_mm:.1f} mm",
        f"Follow-up: lesion {', '.join(map(str, followup_ids))} ({match.match_type}), "
        f"{target.followup_mm:.1f} mm ({target.change_percent:+.0f} %)",
    ]
    for column, (image, caption) in enumerate(zip(halves, captions)):
        ax = figure.add_axes((column / 2, 0.0, 0.5, height / (height + 0.9 * dpi)))
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(caption, color="white", fontsize=11)
    figure.suptitle(
        f"Target {target.number}: {comparison.response.category} overall "
        f"(sum {comparison.response.baseline_sum_mm:.1f} -> {comparison.response.followup_sum_mm:.1f} mm)",
        color="white",
        fontsize=12,
        y=0.995,
    )
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor=figure.get_facecolor())
    return buffer.getvalue()


def target_matches(comparison: Comparison) -> list[tuple[TargetLesion, LesionMatch]]:
    """The targets that have a follow-up lesion of their own (those a side-by-side picture is drawn for)."""
    pairs = []
    for target in comparison.response.targets:
        if target.followup_ids:
            pairs.append((target, next(m for m in comparison.matches if target.baseline_id in m.baseline_ids)))
    return pairs


def _half(point: TimePoint, lesion_ids: list[int], fov_mm: float, dpi: int) -> np.ndarray:
    """The overlay of ``lesion_ids`` only, on the slice of the first (largest) one's long axis, as RGBA."""
    mask = np.zeros(point.label.shape, dtype=np.uint8)
    for lesion_id in lesion_ids:
        component = point.components[lesion_id - 1]
        mask[component.slices][component.mask] = 1
    lesions = [point.lesion(i) for i in lesion_ids]
    case = replace(point.case, lesions=lesions)
    png = overlay_png(
        point.label.with_array(mask),
        point.ct,
        None,
        case,
        slice_index=lesions[0].axial_slice_index,
        fov_mm=fov_mm,
        dpi=dpi,
    )
    return imread(io.BytesIO(png))
