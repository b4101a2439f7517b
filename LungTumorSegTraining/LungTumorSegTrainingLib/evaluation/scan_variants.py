"""New test scans made from a real one: other slice thickness, noise, reconstruction kernel, field of view.

Used to find out why lesions are lost (``scripts/analyse_misses.py``): each variant changes one thing a new scanner
or protocol changes, on the same patient, with the reference label carried along on the new grid.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.measurements.lesion_measurements import axial_voxel_axis

AIR_HU = -1024.0


def reslice(volume: Volume, slice_mm: float, label: bool = False) -> Volume:
    """The volume with axial slices ``slice_mm`` apart, as a scanner reconstructs them.

    A CT is averaged over each new slice's thickness (a box of ``slice_mm``: partial volume, as in a thick
    reconstruction) and sampled linearly; a label takes the nearest slice. The first slice keeps its position.
    """
    axis = axial_voxel_axis(volume.affine)
    old = float(volume.spacing[axis])
    step = slice_mm / old  # new slice spacing in old voxels
    positions = np.arange(0.0, volume.shape[axis] - 1 + 1e-6, step)
    array = volume.array
    if label:
        resliced = np.take(array, np.clip(np.rint(positions).astype(int), 0, volume.shape[axis] - 1), axis=axis)
    else:
        array = array.astype(np.float32)
        if step > 1:
            array = ndimage.uniform_filter1d(array, size=max(1, int(round(step))), axis=axis, mode="nearest")
        low = np.floor(positions).astype(int)
        high = np.minimum(low + 1, volume.shape[axis] - 1)
        weight = (positions - low).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = len(positions)
        weight = weight.reshape(shape)
        resliced = np.take(array, low, axis=axis) * (1 - weight) + np.take(array, high, axis=axis) * weight
    affine = volume.affine.copy()
    affine[:3, axis] *= step
    return Volume(np.ascontiguousarray(resliced), affine)


def with_noise(ct: Volume, sigma_hu: float, seed: int = 0) -> Volume:
    """The CT with added noise of standard deviation ``sigma_hu``, correlated over about a voxel as CT noise is."""
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.standard_normal(ct.shape).astype(np.float32), 0.7)
    noise *= sigma_hu / max(float(noise.std()), 1e-6)
    return ct.with_array(np.maximum(ct.array.astype(np.float32) + noise, AIR_HU))


def with_kernel(ct: Volume, sharpness: float, sigma_mm: float = 1.0) -> Volume:
    """A sharper (``sharpness`` > 0: unsharp mask, as a lung/bone kernel) or softer (< 0: Gaussian blur of
    ``-sharpness`` times ``sigma_mm``) reconstruction of the same CT."""
    array = ct.array.astype(np.float32)
    if sharpness < 0:
        sigma = -sharpness * sigma_mm / ct.spacing
        return ct.with_array(ndimage.gaussian_filter(array, sigma))
    blurred = ndimage.gaussian_filter(array, sigma_mm / ct.spacing)
    return ct.with_array(np.maximum(array + sharpness * (array - blurred), AIR_HU))


def box_around(volume: Volume, centre_voxel: np.ndarray, half_mm: float) -> tuple[slice, slice, slice]:
    """A box of ``2 * half_mm`` around a voxel, clipped to the volume (a small field of view)."""
    half = np.ceil(half_mm / volume.spacing).astype(int)
    centre = np.rint(centre_voxel).astype(int)
    return tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(centre, half, volume.shape))  # type: ignore[return-value]


def box_from(volume: Volume, offset_voxels: np.ndarray) -> tuple[slice, slice, slice]:
    """The volume without its first ``offset_voxels`` along each axis (moves the sliding windows over a lesion)."""
    return tuple(slice(int(o), n) for o, n in zip(offset_voxels, volume.shape))  # type: ignore[return-value]
