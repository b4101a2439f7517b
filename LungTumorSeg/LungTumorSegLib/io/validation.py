"""Checks on the images the user gives, run before the expensive steps, each failing with a one-line InputError.

- image headers, before the voxels are read (``check_image_header``, ``geometry_warnings``);
- voxel values, on the stored type before any float32 copy (``value_stats`` and the ``check_*_values``).

Option checks are in ``core.option_checks`` and ``segmentation.options``; the run-size limits in
``core.memory_limits``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError
from ..core.memory_limits import BASE_BYTES, BYTES_PER_IMAGE_VOXEL, gb_text, memory_limit_bytes, memory_limit_source
from ..core.option_checks import numbers_text
from ..core.volume import Volume
from .image_io import ImageHeader, is_scalar_type, voxel_type_name

MIN_VOXELS_PER_AXIS = 2
# A CT scanner's bore and couch bound what one image can hold: wider or longer means a wrong voxel spacing.
MAX_FIELD_OF_VIEW_ACROSS_MM = 750.0  # left-right and front-back (big-bore extended field of view ~ 700 mm)
MAX_FIELD_OF_VIEW_LENGTH_MM = 2000.0  # head to foot (a whole-body scan)
MAX_LABEL_VALUES = 255


# ---------------------------------------------------------------- headers and geometry


def field_of_view_mm(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """Extent of the image along R, A and S in mm (the bounding box of its voxels)."""
    return np.abs(np.asarray(affine)[:3, :3]) @ np.asarray(shape[:3], dtype=np.float64)


def check_image_header(header: ImageHeader, ct: bool = True) -> None:
    """Cheap checks on an image header before the voxels are read.

    Every image: 3D (trailing axes of length 1 allowed), a scalar voxel type. A CT also: at least 2
    voxels per axis, a field of view a CT can have, and a size whose full-resolution steps fit in memory.
    """
    path = header.path
    shape = tuple(header.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        raise InputError(f"{path}: expected a 3D image, got {len(shape)}D with shape {tuple(header.shape)}")
    if header.dtype is not None and not is_scalar_type(header.dtype):
        kind = voxel_type_name(header.dtype)
        raise InputError(f"{path}: voxel type {kind} is not a scalar image (colour or complex)")
    if not ct:
        return
    if min(shape) < MIN_VOXELS_PER_AXIS:
        raise InputError(f"{path}: image is too small {shape}; a 3D CT is needed")
    extent = field_of_view_mm(shape, header.affine)
    if (
        extent[0] > MAX_FIELD_OF_VIEW_ACROSS_MM
        or extent[1] > MAX_FIELD_OF_VIEW_ACROSS_MM
        or (extent[2] > MAX_FIELD_OF_VIEW_LENGTH_MM)
    ):
        spacing = np.linalg.norm(np.asarray(header.affine)[:3, :3], axis=0)
        raise InputError(
            f"{path}: field of view {extent[0]:.0f} x {extent[1]:.0f} x {extent[2]:.0f} mm (R x A x S) is larger "
            f"than a CT can image (at most {MAX_FIELD_OF_VIEW_ACROSS_MM:.0f} mm across and "
            f"{MAX_FIELD_OF_VIEW_LENGTH_MM:.0f} mm long); check the voxel spacing {numbers_text(spacing)} mm"
        )
    voxels = math.prod(shape)
    need, limit = BASE_BYTES + voxels * BYTES_PER_IMAGE_VOXEL, memory_limit_bytes()
    if need > limit:
        raise InputError(
            f"{path}: {shape[0]} x {shape[1]} x {shape[2]} voxels need about {gb_text(need)} of memory, more than "
            f"the limit of {gb_text(limit)} ({memory_limit_source()}); crop or downsample the image"
        )


def geometry_warnings(header: ImageHeader) -> list[str]:
    """Warnings about legal geometry worth a look: a sform and qform that disagree, sheared voxel axes.

    The engine uses nibabel's choice (the sform when its code is > 0). ITK, and so Slicer, also read a
    rigid sform but fall back to the qform when the sform is sheared; the outputs copy both transforms
    (``image_io.save_volume(like=...)``), so they line up with the CT in either kind of viewer.
    """
    path, affine = header.path, np.asarray(header.affine)
    shear = shear_degrees(affine)
    offset = 0.0
    if header.sform is not None and header.qform is not None:
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in header.shape[:3]], indexing="ij")).reshape(3, -1)
        corners = np.vstack([corners, np.ones(corners.shape[1])])
        offset = float(np.abs((header.sform - header.qform) @ corners)[:3].max())
    both = "the outputs carry the same sform and qform, so they line up with the CT in either kind of viewer"
    if offset > 0.01 and shear > 0.01 and header.sform_code > 0:
        return [
            f"{path}: the sform is sheared by {shear:.2f} degrees (e.g. a tilted gantry) and places voxels up to "
            f"{offset:.1f} mm from the qform; the segmentation uses the sform, as nibabel does, while ITK and "
            f"Slicer show the image by its qform; {both}"
        ]
    if offset > 0.01:
        return [
            f"{path}: the sform and the qform disagree (voxel positions differ by up to {offset:.1f} mm); the "
            f"segmentation uses the {'sform' if header.sform_code > 0 else 'qform'}, as nibabel, ITK and Slicer do; "
            f"{both}"
        ]
    if shear > 0.01:
        return [
            f"{path}: the voxel axes are not perpendicular (sheared by {shear:.2f} degrees, e.g. a tilted gantry); "
            "the segmentation uses this geometry as stored and the outputs keep it"
        ]
    return []


def shear_degrees(affine: np.ndarray) -> float:
    """Largest deviation from 90 degrees between two voxel axes of an affine."""
    columns = np.asarray(affine)[:3, :3]
    unit = columns / np.linalg.norm(columns, axis=0)
    cosines = np.abs(unit.T @ unit)[np.triu_indices(3, 1)]
    return float(np.degrees(np.arcsin(np.clip(cosines.max(), 0.0, 1.0))))


# ---------------------------------------------------------------- voxel values


@dataclass(frozen=True)
class ValueStats:
    """Value facts of an image: range over all voxels, distinct values and integrality on a sample."""

    low: float
    high: float
    distinct: int
    integral: bool

    @property
    def finite(self) -> bool:
        """False when any voxel is NaN or infinite (min/max propagate both)."""
        return math.isfinite(self.low) and math.isfinite(self.high)


def value_stats(array: np.ndarray, slope: float = 1.0, inter: float = 0.0) -> ValueStats:
    """Value facts of ``array * slope + inter``, computed on the stored type (no full-size copy)."""
    if array.dtype == bool:
        array = array.view(np.uint8)
    low, high = float(array.min()), float(array.max())  # NaN and inf propagate: no isfinite copy needed
    if math.isfinite(low) and math.isfinite(high):
        low, high = sorted((low * slope + inter, high * slope + inter))
    sample = array[:: max(1, array.shape[0] // 64), :: max(1, array.shape[1] // 64), :]
    values = np.unique(sample).astype(np.float64) * slope + inter
    finite = values[np.isfinite(values)]
    return ValueStats(low, high, int(values.size), bool(np.all(finite == np.round(finite))))


def check_ct_values(stats: ValueStats, name: str, require_air: bool = True) -> None:
    """Raise InputError with a one-line reason unless the values look like CT in Hounsfield units.

    Checks: finite, not a label map, a range wide enough for CT, air below -500 HU (``require_air``),
    and no value outside any CT range.
    """
    low, high = stats.low, stats.high
    if not stats.finite:
        raise InputError(f"{name}: image contains NaN or infinite values")
    if stats.distinct <= 16 and low >= 0:
        raise InputError(
            f"{name}: looks like a label map ({stats.distinct} distinct values from {low:g} to {high:g}), not a CT"
        )
    if high - low < 200:
        raise InputError(f"{name}: intensity range {low:g}..{high:g} is too narrow for CT in Hounsfield units")
    if require_air and low > -500:
        hint = " (stored values without rescale slope/intercept?)" if low >= 0 else ""
        raise InputError(f"{name}: no air below -500 HU (minimum {low:g}); not a chest CT in Hounsfield units{hint}")
    if low < -5000 or high > 40000:
        raise InputError(f"{name}: intensities {low:g}..{high:g} are outside any CT range in Hounsfield units")


def check_label_map_values(stats: ValueStats, name: str) -> None:
    """Raise InputError unless the values look like a label map (or a probability map in 0..1).

    A label holds no negative values and either lies in 0..1 or takes a few integer values (at most 255).
    """
    low, high = stats.low, stats.high
    if not stats.finite:
        raise InputError(f"{name}: label contains NaN or infinite values")
    if low < 0 or (high > 1 and (not stats.integral or stats.distinct > MAX_LABEL_VALUES)):
        what = "a CT" if low < -100 or stats.distinct > MAX_LABEL_VALUES else "an intensity image"
        raise InputError(
            f"{name}: not a label map (values {low:g} to {high:g}, {stats.distinct}+ distinct); looks like {what}"
        )


def check_unit_interval_values(stats: ValueStats, name: str, what: str = "an entropy map in bits") -> None:
    """Raise InputError unless every value is finite and in 0..1 (entropy in bits, probabilities)."""
    if not stats.finite or stats.low < -1e-3 or stats.high > 1 + 1e-3:
        raise InputError(f"{name}: not {what} (values {stats.low:g} to {stats.high:g}, expected 0 to 1)")


def validate_ct(volume: Volume, name: str = "input", require_air: bool = True) -> None:
    """Raise InputError with a one-line reason unless ``volume`` looks like CT in HU.

    Checks: at least 2 voxels per axis, then ``check_ct_values`` (on the array's own type).
    """
    if min(volume.shape) < MIN_VOXELS_PER_AXIS:
        raise InputError(f"{name}: image is too small {volume.shape}; a 3D CT is needed")
    check_ct_values(value_stats(volume.array), name, require_air)


# ---------------------------------------------------------------- run size
