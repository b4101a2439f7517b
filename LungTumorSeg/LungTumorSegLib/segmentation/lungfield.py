"""A fast HU-threshold lung-field mask, used to crop the CT and to filter detections.

The mask is computed on a coarse strided grid (about 3 mm) for speed: air inside the
body, components larger than a minimum volume, closed and hole-filled slice by slice so
that nodules and tumours inside or against the lung are part of the field. A field smaller
than ``MIN_FIELD_ML`` is not a chest CT's lung field (a small field of view, or a sub-volume
cut through the body, where the body's outline is open): it counts as not found, so the whole
image is segmented and nothing is filtered by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..core.volume import Volume

BODY_HU = -300.0
AIR_HU = -400.0
MIN_LUNG_ML = 20.0
MIN_FIELD_ML = 200.0  # one adult lung holds about 1-3 litres


@dataclass
class LungField:
    """A lung-field mask on a strided grid of a RAS-aligned volume.

    Attributes:
        mask: boolean mask on the strided grid.
        stride: voxel stride per axis between the full grid and ``mask``.
        full_shape: shape of the full-resolution grid.
    """

    mask: np.ndarray
    stride: tuple[int, int, int]
    full_shape: tuple[int, int, int]

    @property
    def found(self) -> bool:
        """True when a lung field was found."""
        return bool(self.mask.any())

    def bounding_box(self, margin_voxels: np.ndarray) -> tuple[slice, slice, slice] | None:
        """Full-resolution slices around the field, widened by ``margin_voxels`` per axis."""
        if not self.found:
            return None
        box = ndimage.find_objects(self.mask.astype(np.uint8))[0]
        slices = []
        for axis, sl in enumerate(box):
            start = sl.start * self.stride[axis] - int(margin_voxels[axis])
            stop = sl.stop * self.stride[axis] + int(margin_voxels[axis])
            slices.append(slice(max(0, start), min(self.full_shape[axis], stop)))
        return tuple(slices)  # type: ignore[return-value]

    def full_resolution(self, box: tuple[slice, slice, slice] | None = None) -> np.ndarray:
        """The mask expanded to the full grid (or to ``box`` of it)."""
        full = self.mask
        for axis, step in enumerate(self.stride):
            full = np.repeat(full, step, axis=axis)
        full = full[tuple(slice(0, n) for n in self.full_shape)]
        pad = [(0, n - s) for n, s in zip(self.full_shape, full.shape)]
        full = np.pad(full, pad, mode="edge") if any(p[1] for p in pad) else full
        return full[box] if box is not None else full


def lung_field(volume: Volume, working_spacing_mm: float = 3.0, min_lung_ml: float = MIN_LUNG_ML) -> LungField:
    """Find the lung field of a RAS-aligned CT volume in HU.

    Args:
        volume: CT in HU on RAS-aligned axes (axis 2 is superior).
        working_spacing_mm: approximate voxel size of the coarse grid.
        min_lung_ml: air components smaller than this are ignored (bowel gas, noise).
    """
    stride = tuple(max(1, int(round(working_spacing_mm / s))) for s in volume.spacing)
    small = volume.array[:: stride[0], :: stride[1], :: stride[2]]
    voxel_ml = volume.voxel_volume_ml * float(np.prod(stride))

    body = _largest_component(small > BODY_HU)
    body = fill_holes_per_axial_slice(body)
    air = (small < AIR_HU) & body
    labels, count = ndimage.label(air)
    if count == 0:
        return LungField(np.zeros(small.shape, bool), stride, volume.shape)  # type: ignore[arg-type]
    sizes = ndimage.sum_labels(air, labels, index=np.arange(1, count + 1)) * voxel_ml
    keep = np.flatnonzero(sizes >= min_lung_ml) + 1
    lungs = np.isin(labels, keep)
    if lungs.any():
        closing_voxels = max(1, int(round(6.0 / working_spacing_mm)))
        lungs = ndimage.binary_closing(lungs, iterations=closing_voxels, border_value=0)
        lungs = fill_holes_per_axial_slice(lungs)
    if lungs.sum() * voxel_ml < MIN_FIELD_ML:
        lungs = np.zeros(small.shape, bool)
    return LungField(lungs, stride, volume.shape)  # type: ignore[arg-type]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_holes_per_axial_slice(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial (axis-2) slice at once."""
    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = ndimage.generate_binary_structure(2, 1)
    padded = np.pad(mask, ((0, 0), (0, 0), (1, 1)))
    return ndimage.binary_fill_holes(padded, structure=structure)[:, :, 1:-1]
