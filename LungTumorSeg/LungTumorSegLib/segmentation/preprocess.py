"""Pre-processing shared by inference and training: HU windowing and regions of interest."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import InputError
from ..core.volume import Volume

Box = tuple[slice, slice, slice]


def scale_hu(array: np.ndarray | torch.Tensor, hu_window: Sequence[float]) -> torch.Tensor:
    """Clip to the HU window and scale linearly to [0, 1].

    Same mapping as MONAI ``ScaleIntensityRanged(a_min=lo, a_max=hi, b_min=0, b_max=1, clip=True)``,
    which the training transforms use.
    """
    low, high = float(hu_window[0]), float(hu_window[1])
    tensor = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))
    return ((tensor - low) / (high - low)).clamp_(0.0, 1.0)


def box_around_point(volume: Volume, point_ras: Sequence[float], side_mm: float) -> Box:
    """A cube of ``side_mm`` centred on a RAS point, clipped to the volume.

    Raises:
        InputError: the point lies outside the image.
    """
    centre = volume.ras_to_voxel(np.asarray(point_ras, dtype=np.float64))
    if np.any(centre < -0.5) or np.any(centre > np.array(volume.shape) - 0.5):
        shown = ", ".join(f"{float(v):.1f}" for v in point_ras)
        raise InputError(f"seed point ({shown}) (RAS mm) lies outside the image")
    half = side_mm / 2.0 / volume.spacing
    return tuple(
        slice(max(0, int(np.floor(c - h))), min(n, int(np.ceil(c + h)) + 1))
        for c, h, n in zip(centre, half, volume.shape)
    )  # type: ignore[return-value]


def crop(volume: Volume, box: Box) -> Volume:
    """The sub-volume inside ``box``, with its affine moved to the box's first voxel."""
    affine = volume.affine.copy()
    affine[:3, 3] = volume.voxel_to_ras(np.array([s.start for s in box], dtype=np.float64))
    return Volume(volume.array[box], affine)


def box_size_mm(box: Box, spacing: np.ndarray) -> np.ndarray:
    """Physical side lengths of a box."""
    return np.array([s.stop - s.start for s in box]) * spacing
