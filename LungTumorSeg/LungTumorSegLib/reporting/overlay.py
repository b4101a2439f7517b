"""2D overlay PNG: the axial slice with the largest tumour area, in radiological orientation.

CT in the lung window (W 1500, L -600), tumour contour, entropy heat map, RECIST long and short axes.
Radiological convention: patient right on the image left, anterior up; pixels are drawn with their
physical size (the extent is in mm), so the aspect ratio follows the voxel spacing. Rendering uses
matplotlib's Agg canvas directly (no pyplot, no display).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from nibabel.orientations import io_orientation

from ..core.errors import InputError
from ..core.volume import Volume
from ..measurements.lesion_measurements import CaseMeasurements, axial_voxel_axis, lesion_mask
from .report import check_targets, write_bytes_atomic

LUNG_WINDOW = (1500.0, -600.0)  # width, level (HU)
CONTOUR_COLOR = "#00ff00"
LONG_AXIS_COLOR = "#ff3b3b"
SHORT_AXIS_COLOR = "#3bc4ff"
ENTROPY_CMAP = "inferno"
ENTROPY_ALPHA = 0.55
ENTROPY_MIN_SHOWN = 0.05  # bits; lower values are transparent


@dataclass(frozen=True)
class RadiologicalSlice:
    """One axial slice arranged for display.

    Attributes:
        image: 2D array, rows from anterior (top) to posterior, columns from patient right to left.
        extent: ``(0, width_mm, height_mm, 0)`` for ``imshow``/``contour`` with ``origin="upper"``.
        to_display: maps RAS points (N, 3) to display millimetres (N, 2) ``(x right-to-left, y anterior-down)``.
    """

    image: np.ndarray
    extent: tuple[float, float, float, float]
    to_display: Callable[[np.ndarray], np.ndarray]


def largest_area_slice(label: Volume) -> int:
    """Index (along the axial voxel axis) of the slice with the most tumour voxels."""
    axis = axial_voxel_axis(label.affine)
    mask = lesion_mask(label.array)
    counts = np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis))
    if not counts.any():
        raise InputError("the label is empty: there is no tumour slice to show")
    return int(np.argmax(counts))


def radiological_slice(volume: Volume, slice_index: int) -> RadiologicalSlice:
    """Extract axial slice ``slice_index`` in radiological orientation with its physical extent.

    Permuted and flipped voxel axes are handled; oblique grids use their closest patient axes.
    """
    ornt = io_orientation(volume.affine)
    axis = int(np.flatnonzero(ornt[:, 0] == 2)[0])
    x_axis = int(np.flatnonzero(ornt[:, 0] == 0)[0])  # voxel axis closest to R-L
    y_axis = int(np.flatnonzero(ornt[:, 0] == 1)[0])  # voxel axis closest to A-P
    if not 0 <= slice_index < volume.shape[axis]:
        raise InputError(f"slice {slice_index} is outside the image (0..{volume.shape[axis] - 1})")
    plane = np.take(volume.array, slice_index, axis=axis)
    remaining = [a for a in range(3) if a != axis]
    image = plane if remaining.index(y_axis) == 0 else plane.T  # rows: A-P axis, columns: R-L axis
    flip_x, flip_y = ornt[x_axis, 1] > 0, ornt[y_axis, 1] > 0  # index grows towards R / towards A
    image = image[:: -1 if flip_y else 1, :: -1 if flip_x else 1]
    n_y, n_x = image.shape
    s_x, s_y = float(volume.spacing[x_axis]), float(volume.spacing[y_axis])

    def to_display(ras: np.ndarray) -> np.ndarray:
        ijk = np.atleast_2d(volume.ras_to_voxel(np.asarray(ras, dtype=np.float64)))
        col = n_x - 1 - ijk[:, x_axis] if flip_x else ijk[:, x_axis]
        row = n_y - 1 - ijk[:, y_axis] if flip_y else ijk[:, y_axis]
        return np.stack([(col + 0.5) * s_x, (row + 0.5) * s_y], axis=1)

    return RadiologicalSlice(np.ascontiguousarray(image), (0.0, n_x * s_x, n_y * s_y, 0.0), to_display)


def overlay_png(
    label: Volume,
    ct: Volume | None = None,
    entropy: Volume | None = None,
    case: CaseMeasurements | None = None,
    *,
    slice_index: int | None = None,
    fov_mm: float | None = None,
    dpi: int = 110,
) -> bytes:
    """Render the overlay and return PNG bytes.

    Args:
        label: tumour label.
        ct: CT in HU on the label's grid (black background without it).
        entropy: uncertainty map (bits) on the label's grid, drawn as a translucent heat map.
        case: measurements of ``label``; their RECIST axes are drawn (solid on their own slice,
            dashed when measured on another slice).
        slice_index: axial slice to show (default: the slice with the largest tumour area).
        fov_mm: show a square of this size around the tumour instead of the whole slice.
        dpi: output resolution (the figure is 7 x 7.6 inches).

    Raises:
        InputError: empty label, or ``ct``/``entropy`` not on the label's grid.
    """
    for name, other in (("CT", ct), ("entropy", entropy)):
        if other is not None and not label.same_grid(other):
            raise InputError(f"the {name} image is not on the label's grid; resample it first")
    if slice_index is None:
        slice_index = largest_area_slice(label)
    view = radiological_slice(label.with_array(lesion_mask(label.array).astype(np.uint8)), slice_index)
    extent = view.extent
    figure = Figure(figsize=(7.0, 7.6), dpi=dpi, facecolor="black")
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0.02, 0.06, 0.86 if entropy is not None else 0.96, 0.86))
    ax.set_facecolor("black")
    if ct is not None:
        width, level = LUNG_WINDOW
        ct_image = radiological_slice(ct, slice_index).image
        ax.imshow(
            ct_image,
            cmap="gray",
            vmin=level - width / 2,
            vmax=level + width / 2,
            extent=extent,
            origin="upper",
            interpolation="nearest",
        )
    else:
        ax.imshow(np.zeros_like(view.image, dtype=float), cmap="gray", vmin=0, vmax=1, extent=extent, origin="upper")
    if entropy is not None:
        heat = radiological_slice(entropy, slice_index).image.astype(np.float32)
        top = max(1.0, float(np.nanmax(heat)) if heat.size else 1.0)
        shown = ax.imshow(
            np.ma.masked_less(heat, ENTROPY_MIN_SHOWN),
            cmap=ENTROPY_CMAP,
            vmin=0.0,
            vmax=top,
            alpha=ENTROPY_ALPHA,
            extent=extent,
            origin="upper",
            interpolation="nearest",
        )
        bar = figure.colorbar(shown, cax=figure.add_axes((0.89, 0.3, 0.025, 0.4)))
        bar.set_label("entropy (bits)", color="white")
        bar.ax.tick_params(colors="white")
    if view.image.any():
        ax.contour(
            view.image.astype(np.float32),
            levels=[0.5],
            colors=[CONTOUR_COLOR],
            linewidths=1.4,
            extent=extent,
            origin="upper",
        )
    for lesion in case.lesions if case is not None else []:
        on_slice = lesion.axial_slice_index == slice_index
        style = dict(
            linewidth=2.0 if on_slice else 1.2, linestyle="-" if on_slice else "--", alpha=1.0 if on_slice else 0.7
        )
        for segment, color in ((lesion.long_axis_ras, LONG_AXIS_COLOR), (lesion.short_axis_ras, SHORT_AXIS_COLOR)):
            xy = view.to_display(np.array(segment))
            ax.plot(xy[:, 0], xy[:, 1], color=color, **style)
        end = view.to_display(np.array(lesion.long_axis_ras[0]))[0]
        ax.annotate(
            str(lesion.lesion_id), end, color=LONG_AXIS_COLOR, fontsize=9, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    if fov_mm is not None and view.image.any():
        rows, cols = np.nonzero(view.image)
        centre_x = (cols.mean() + 0.5) * extent[1] / view.image.shape[1]
        centre_y = (rows.mean() + 0.5) * extent[2] / view.image.shape[0]
        ax.set_xlim(centre_x - fov_mm / 2, centre_x + fov_mm / 2)
        ax.set_ylim(centre_y + fov_mm / 2, centre_y - fov_mm / 2)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    for text, position in (("R", (0.01, 0.5)), ("L", (0.99, 0.5)), ("A", (0.5, 0.99)), ("P", (0.5, 0.01))):
        ax.text(
            *position,
            text,
            transform=ax.transAxes,
            color="white",
            fontsize=13,
            fontweight="bold",
            bbox=dict(facecolor="black", alpha=0.5, edgecolor="none", pad=1.5),
            ha={0.01: "left", 0.99: "right"}.get(position[0], "center"),
            va={0.99: "top", 0.01: "bottom"}.get(position[1], "center"),
        )
    _scale_bar(ax)
    s_mm = label.voxel_to_ras(_slice_centre(label, slice_index))[2]
    figure.suptitle(
        f"Axial slice {slice_index} (S {s_mm:.1f} mm) - lung window W 1500 / L -600",
        color="white",
        fontsize=11,
        y=0.975,
    )
    handles = [
        Line2D([], [], color=CONTOUR_COLOR, label="tumour contour"),
        Line2D([], [], color=LONG_AXIS_COLOR, label="RECIST long axis"),
        Line2D([], [], color=SHORT_AXIS_COLOR, label="short axis"),
    ]
    figure.legend(handles=handles, loc="lower center", ncol=3, frameon=False, labelcolor="white", fontsize=9)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", facecolor=figure.get_facecolor())
    return buffer.getvalue()


def write_overlay_png(
    path: str | os.PathLike,
    label: Volume,
    ct: Volume | None = None,
    entropy: Volume | None = None,
    case: CaseMeasurements | None = None,
    *,
    overwrite: bool = False,
    **options,
) -> Path:
    """Render ``overlay_png`` into ``path`` (atomically); ``options`` go to ``overlay_png``.

    Raises:
        OutputError: the file exists and ``overwrite`` is false, or it cannot be written.
    """
    path = Path(path)
    check_targets([path], overwrite)
    return write_bytes_atomic(path, overlay_png(label, ct, entropy, case, **options))


def _slice_centre(volume: Volume, slice_index: int) -> np.ndarray:
    centre = (np.array(volume.shape, dtype=np.float64) - 1) / 2
    centre[axial_voxel_axis(volume.affine)] = slice_index
    return centre


def _scale_bar(ax) -> None:
    x0, x1 = sorted(ax.get_xlim())
    y_bottom, y_top = ax.get_ylim()
    span = x1 - x0
    length = next(v for v in (100.0, 50.0, 20.0, 10.0, 5.0, 2.0, 1.0) if v <= span / 4)
    x = x1 - 0.05 * span - length
    y = y_bottom - 0.05 * abs(y_bottom - y_top)
    ax.plot([x, x + length], [y, y], color="white", linewidth=3)
    ax.text(
        x + length / 2,
        y - 0.015 * abs(y_bottom - y_top),
        f"{length:g} mm",
        color="white",
        ha="center",
        va="bottom",
        fontsize=9,
        bbox=dict(facecolor="black", alpha=0.5, edgecolor="none", pad=1.0),
    )
