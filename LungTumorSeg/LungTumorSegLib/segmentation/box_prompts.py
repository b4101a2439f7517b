"""What the user gives for box-prompted segmentation (boxes and points in RAS mm), checked and placed on the CT.

Work happens on the CT in the radiological display orientation that MedSAM was trained on: axial slices with
the patient's anterior at the top and the patient's right on the left of the image (``display_array``). There a
slice is ``array[z]``, rows ``y`` run anterior to posterior and columns ``x`` right to left, and ``z`` runs
inferior to superior.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError
from ..core.option_checks import numbers_text
from ..core.volume import Volume

Point = tuple[float, float, float]
MAX_BOX_MM = 200.0  # one lesion; larger boxes are refused (a T4 lung tumour is rarely over 15 cm)
MIN_BOX_MM = 1.0  # thinner than this along R or A is a zero-size box


@dataclass
class LesionPrompt:
    """One lesion: a 3D box, and optionally more boxes on chosen slices and include/exclude points.

    Attributes:
        corners: two opposite corners of the box (RAS mm), e.g. the corners of a Slicer ROI.
        slice_boxes: extra 2D boxes, each two opposite corners (RAS mm) on one axial slice; on that slice the
            box replaces the propagated one (a correction).
        include_points: points (RAS mm) that belong to the lesion, used on their axial slice.
        exclude_points: points (RAS mm) that do not, used on their axial slice.
    """

    corners: tuple[Sequence[float], Sequence[float]]
    slice_boxes: list[tuple[Sequence[float], Sequence[float]]] = field(default_factory=list)
    include_points: list[Sequence[float]] = field(default_factory=list)
    exclude_points: list[Sequence[float]] = field(default_factory=list)


@dataclass(frozen=True)
class DisplayBox:
    """A box in display voxel indices, both ends included: slices z0..z1, rows y0..y1, columns x0..x1."""

    z0: int
    z1: int
    y0: int
    y1: int
    x0: int
    x1: int

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        """Index slices of the box in the display array."""
        return slice(self.z0, self.z1 + 1), slice(self.y0, self.y1 + 1), slice(self.x0, self.x1 + 1)

    @property
    def middle_slice(self) -> int:
        """The slice MedSAM's 3D scheme starts from."""
        return (self.z0 + self.z1) // 2

    def rectangle(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) for a box prompt."""
        return float(self.x0), float(self.y0), float(self.x1), float(self.y1)


@dataclass
class PlacedPrompt:
    """A ``LesionPrompt`` in display indices: its box, extra rectangles and points by slice."""

    box: DisplayBox
    slice_rectangles: dict[int, tuple[float, float, float, float]]
    points: dict[int, list[tuple[float, float, bool]]]
    clipped: bool


def display_array(ras_array: np.ndarray) -> np.ndarray:
    """A RAS-aligned array [i (R), j (A), k (S)] as display slices [z (S), y (to P), x (to L)] (a view)."""
    return np.transpose(ras_array[::-1, ::-1, :], (2, 1, 0))


def _display_index(ras: Volume, points_mm: np.ndarray) -> np.ndarray:
    """Continuous display indices (z, y, x) of RAS points on a RAS-aligned volume."""
    ijk = ras.ras_to_voxel(points_mm)
    ni, nj, _ = ras.shape
    return np.stack([ijk[..., 2], (nj - 1) - ijk[..., 1], (ni - 1) - ijk[..., 0]], axis=-1)


def check_prompt_values(prompt: LesionPrompt, name: str = "--box") -> None:
    """Finite corners that span a box (before any image is read)."""
    corners = np.asarray(prompt.corners, dtype=np.float64)
    shown = " ".join(f"{v:g}" for v in corners.ravel())
    if corners.shape != (2, 3) or not np.all(np.isfinite(corners)):
        raise InputError(f"{name} {shown}: must be 6 finite numbers, two opposite corners R A S (mm)")
    extent = np.abs(corners[1] - corners[0])
    for axis, size in zip("RAS", extent):
        if size < MIN_BOX_MM and axis != "S" or size <= 0.0:
            raise InputError(f"{name} {shown}: the box has zero size along {axis}; give two opposite corners")
        if size > MAX_BOX_MM:
            raise InputError(
                f"{name} {shown}: the box is {size:.0f} mm along {axis}, more than {MAX_BOX_MM:.0f} mm; draw one box "
                "per lesion"
            )
    for label, points in (("include", prompt.include_points), ("exclude", prompt.exclude_points)):
        for point in points:
            values = [float(v) for v in point]
            if len(values) != 3 or not all(math.isfinite(v) for v in values):
                raise InputError(f"--{label} {numbers_text(values)}: must be 3 finite RAS coordinates (mm)")


def place_prompt(ras: Volume, prompt: LesionPrompt, name: str = "--box") -> PlacedPrompt:
    """The prompt in display indices of a RAS-aligned CT: voxels whose centres lie in the box.

    A box partly outside the image is clipped to it (``clipped``). A box along S thinner than one slice takes the
    slice nearest to its centre.

    Raises:
        InputError: the box lies outside the image, or a point or slice box lies outside the box.
    """
    check_prompt_values(prompt, name)
    corners = np.asarray(prompt.corners, dtype=np.float64)
    index = _display_index(ras, corners)
    low, high = index.min(axis=0), index.max(axis=0)
    shape = np.array(display_array(ras.array).shape)
    first, last = np.ceil(low - 1e-6).astype(int), np.floor(high + 1e-6).astype(int)
    thin = first > last  # between two voxel centres: the nearest one
    first[thin] = last[thin] = np.rint((low[thin] + high[thin]) / 2).astype(int)
    if np.any(last < 0) or np.any(first > shape - 1):
        shown = " ".join(f"{v:g}" for v in corners.ravel())
        raise InputError(f"{name} {shown}: the box lies outside the image (RAS mm; check the coordinates' signs)")
    clipped = bool(np.any(first < 0) or np.any(last > shape - 1))
    first, last = np.maximum(first, 0), np.minimum(last, shape - 1)
    box = DisplayBox(int(first[0]), int(last[0]), int(first[1]), int(last[1]), int(first[2]), int(last[2]))

    rectangles: dict[int, tuple[float, float, float, float]] = {}
    for slice_corners in prompt.slice_boxes:
        z, rectangle = _slice_rectangle(ras, box, slice_corners)
        rectangles[z] = rectangle
    points: dict[int, list[tuple[float, float, bool]]] = {}
    for include, values in ((True, prompt.include_points), (False, prompt.exclude_points)):
        for point in values:
            z, y, x = _display_index(ras, np.asarray(point, dtype=np.float64))
            zi = int(round(z))
            if not (box.z0 <= zi <= box.z1 and box.y0 - 0.5 <= y <= box.y1 + 0.5 and box.x0 - 0.5 <= x <= box.x1 + 0.5):
                label = "--include" if include else "--exclude"
                raise InputError(f"{label} {numbers_text(point)}: the point lies outside its lesion's box")
            points.setdefault(zi, []).append((float(x), float(y), include))
    return PlacedPrompt(box, rectangles, points, clipped)


def _slice_rectangle(
    ras: Volume, box: DisplayBox, corners: tuple[Sequence[float], Sequence[float]]
) -> tuple[int, tuple[float, float, float, float]]:
    """The slice and (x0, y0, x1, y1) of a 2D box given by two corners on one axial slice, inside ``box``."""
    values = np.asarray(corners, dtype=np.float64)
    index = _display_index(ras, values)
    z = int(round(float(index[:, 0].mean())))
    low, high = index.min(axis=0), index.max(axis=0)
    shown = " ".join(f"{v:g}" for v in values.ravel())
    if not box.z0 <= z <= box.z1:
        raise InputError(f"--slice-box {shown}: its slice lies outside its lesion's box")
    x0, x1 = max(low[2], box.x0), min(high[2], box.x1)
    y0, y1 = max(low[1], box.y0), min(high[1], box.y1)
    if x1 - x0 < 1 or y1 - y0 < 1:
        raise InputError(f"--slice-box {shown}: the box has zero size inside its lesion's box")
    return z, (float(x0), float(y0), float(x1), float(y1))
