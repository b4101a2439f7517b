"""Exact, lossless reorientation between a volume's own axes and RAS-aligned axes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations as ornt

from .volume import Volume


@dataclass(frozen=True)
class Reorientation:
    """A permutation/flip of voxel axes that makes a volume RAS-aligned, and its inverse."""

    to_ras: np.ndarray  # nibabel orientation array (3, 2)
    source_shape: tuple[int, int, int]
    source_affine: np.ndarray

    @classmethod
    def for_volume(cls, volume: Volume) -> Reorientation:
        """The transform that takes ``volume``'s axes to the closest RAS-aligned axes."""
        current = ornt.io_orientation(volume.affine)
        return cls(ornt.ornt_transform(current, ornt.axcodes2ornt("RAS")), volume.shape, volume.affine.copy())

    @property
    def is_identity(self) -> bool:
        """True when the volume is already RAS-aligned (no data movement needed)."""
        return bool(np.array_equal(self.to_ras, ornt.axcodes2ornt("RAS")))

    def apply(self, volume: Volume) -> Volume:
        """Reorient a volume on the source grid to RAS-aligned axes (a view where possible)."""
        if self.is_identity:
            return volume
        array = ornt.apply_orientation(volume.array, self.to_ras)
        affine = volume.affine @ ornt.inv_ornt_aff(self.to_ras, volume.shape)
        return Volume(array, affine)

    def apply_array(self, array: np.ndarray) -> np.ndarray:
        """Reorient an array on the source grid to RAS-aligned axes."""
        return array if self.is_identity else ornt.apply_orientation(array, self.to_ras)

    def invert_array(self, array: np.ndarray) -> np.ndarray:
        """Bring an array on the RAS-aligned grid back to the source grid."""
        if self.is_identity:
            return array
        back = ornt.ornt_transform(ornt.axcodes2ornt("RAS"), ornt.io_orientation(self.source_affine))
        return ornt.apply_orientation(array, back)

    def invert(self, array: np.ndarray) -> Volume:
        """A Volume on the source grid from an array on the RAS-aligned grid."""
        return Volume(np.ascontiguousarray(self.invert_array(array)), self.source_affine.copy())


def on_grid_of(volume: Volume, reference: Volume, atol: float = 1e-3) -> Volume | None:
    """``volume`` re-indexed onto ``reference``'s grid when both cover the same voxels in another axis order.

    A lossless permutation/flip of the voxel axes (no resampling). Returns ``volume`` itself when the
    grids already agree and None when no such re-indexing maps one grid onto the other.
    """
    if reference.same_grid(volume, atol):
        return volume
    if sorted(volume.shape) != sorted(reference.shape):
        return None
    transform = ornt.ornt_transform(ornt.io_orientation(volume.affine), ornt.io_orientation(reference.affine))
    array = ornt.apply_orientation(volume.array, transform)
    if tuple(array.shape) != reference.shape:
        return None
    moved = Volume(np.ascontiguousarray(array), volume.affine @ ornt.inv_ornt_aff(transform, volume.shape))
    return moved if reference.same_grid(moved, atol) else None
