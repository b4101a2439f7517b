"""Checks that an input volume is a usable CT in Hounsfield units."""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .volume import Volume

MIN_VOXELS_PER_AXIS = 2


def validate_ct(volume: Volume, name: str = "input") -> None:
    """Raise InputError with a one-line reason unless ``volume`` looks like CT in HU.

    Checks: at least 2 voxels per axis, finite values, not a label map, air present
    (values below -500 HU), and a plausible HU range.
    """
    array = volume.array
    if min(volume.shape) < MIN_VOXELS_PER_AXIS:
        raise InputError(f"{name}: image is too small ({volume.shape}); a 3D CT is needed")
    sample = array[:: max(1, array.shape[0] // 64), :: max(1, array.shape[1] // 64), :]
    if not np.all(np.isfinite(sample)) or not np.all(np.isfinite(array)):
        raise InputError(f"{name}: image contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    unique = np.unique(sample)
    if unique.size <= 16 and low >= 0:
        raise InputError(
            f"{name}: looks like a label map ({unique.size} distinct values from {low:g} to {high:g}), not a CT"
        )
    if high - low < 200:
        raise InputError(f"{name}: intensity range {low:g}..{high:g} is too narrow for CT in Hounsfield units")
    if low > -500:
        hint = " (stored values without rescale slope/intercept?)" if low >= 0 else ""
        raise InputError(f"{name}: no air below -500 HU (minimum {low:g}); not a chest CT in Hounsfield units{hint}")
    if low < -5000 or high > 40000:
        raise InputError(f"{name}: intensities {low:g}..{high:g} are outside any CT range in Hounsfield units")
