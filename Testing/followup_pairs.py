"""Baseline / follow-up CT pairs with known answers, built from the real CT in ../shared/data.

Real follow-up pairs are not available, so the follow-up is the baseline changed in a known way:
moved by a rigid transform (the patient lying differently), its label eroded or dilated (the tumour
shrinking or growing), a real LIDC nodule pasted in (a new lesion), or its lesions removed.
Used by the compare tests and by ``Testing/benchmarks/bench_registration.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.image_io import load_volume

LIDC_0003 = "chest-ct/lidc-idri-0003"
MOVE_MM = np.array([6.0, 6.0, np.sqrt(100.0 - 72.0)])  # 10 mm in all three directions
ROTATION_DEG = 5.0  # about the S axis through the image centre


def downsampled_case(folder: Path, factor: int = 2) -> tuple[Volume, Volume]:
    """CT and tumour label of a shared whole-CT case, block-averaged ``factor`` times in-plane.

    The label is the block average thresholded at 0.5, so it is the same tumour on the coarser grid.
    """
    ct, label = load_volume(folder / "ct.nii.gz"), load_volume(folder / "tumor.nii.gz", dtype=np.float32)
    n0, n1 = ct.shape[0] // factor * factor, ct.shape[1] // factor * factor

    def block_mean(array: np.ndarray) -> np.ndarray:
        return array[:n0, :n1].reshape(n0 // factor, factor, n1 // factor, factor, -1).mean(axis=(1, 3))

    affine = ct.affine.copy()
    affine[:3, :2] *= factor
    affine[:3, 3] += (ct.affine[:3, 0] + ct.affine[:3, 1]) * (factor - 1) / 2
    small_ct = Volume(block_mean(ct.array).astype(np.float32), affine)
    return small_ct, Volume((block_mean(label.array) >= 0.5).astype(np.uint8), affine)


def rigid_move(volume: Volume, degrees: float = ROTATION_DEG, move_mm: np.ndarray = MOVE_MM) -> np.ndarray:
    """4x4 RAS matrix: rotation by ``degrees`` about the S axis through the image centre, then ``move_mm``."""
    rotation = Rotation.from_euler("z", degrees, degrees=True).as_matrix()
    centre = volume.voxel_to_ras((np.array(volume.shape) - 1) / 2)
    matrix = np.eye(4)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + np.asarray(move_mm)
    return matrix


def resampled_after_move(volume: Volume, move: np.ndarray, *, label: bool = False) -> Volume:
    """The patient moved by ``move`` (RAS) and scanned again on the same grid.

    CT: linear interpolation, air (-1024 HU) where the moved patient leaves the field of view. Label:
    its linear interpolation thresholded at 0.5. Uses scipy, independent of the engine's SimpleITK code.
    """
    to_source = np.linalg.inv(volume.affine) @ np.linalg.inv(move) @ volume.affine
    source = volume.array.astype(np.float32)
    out = ndimage.affine_transform(source, to_source[:3, :3], to_source[:3, 3], order=1, cval=0.0 if label else -1024)
    return volume.with_array((out > 0.5).astype(np.uint8) if label else out.astype(np.float32))


def moved(volume: Volume, move: np.ndarray) -> Volume:
    """The same voxels in patient coordinates moved by ``move``: an exact rigid move, no interpolation."""
    return Volume(volume.array, move @ volume.affine)


def eroded_in_plane(label: Volume, millimetres: float) -> Volume:
    """The label shrunk by ``millimetres`` on every axial slice (exact Euclidean distance, voxel spacing)."""
    mask = label.array > 0
    inside = np.stack(
        [ndimage.distance_transform_edt(mask[:, :, k], sampling=label.spacing[:2]) for k in range(mask.shape[2])],
        axis=2,
    )
    return label.with_array((inside > millimetres).astype(np.uint8))


def dilated_in_plane(label: Volume, millimetres: float) -> Volume:
    """The label grown by ``millimetres`` on every axial slice that has lesion voxels."""
    mask = label.array > 0
    grown = mask.copy()
    for k in np.flatnonzero(mask.any(axis=(0, 1))):
        grown[:, :, k] = ndimage.distance_transform_edt(~mask[:, :, k], sampling=label.spacing[:2]) <= millimetres
    return label.with_array(grown.astype(np.uint8))


def with_pasted_nodule(ct: Volume, label: Volume, crops: Path, name: str, away_mm: float = 40.0):
    """A real LIDC nodule crop (``crops/image/<name>``, ``crops/mask/<name>``) pasted into the lung.

    The site is the lung voxel deepest inside the lung among those at least ``away_mm`` from every
    lesion of ``label``. Returns the new CT, the new label, and the nodule's centre (RAS).
    """
    from LungTumorSegTrainingLib.data.lesion_paste import Lesion, lung_mask, paste, resize_lesion

    image, mask = load_volume(crops / "image" / name), load_volume(crops / "mask" / name, dtype=None)
    nodule = resize_lesion(Lesion(image.array, mask.array > 0, tuple(image.spacing)), ct.spacing, 1.0)
    lung = lung_mask(ct.array)
    depth = ndimage.distance_transform_edt(lung, sampling=ct.spacing)
    depth[ndimage.distance_transform_edt(label.array == 0, sampling=ct.spacing) < away_mm] = 0
    centre = np.unravel_index(int(np.argmax(depth)), depth.shape)
    new_ct, new_label = ct.array.copy(), label.array.copy()
    if not paste(new_ct, new_label, nodule, np.array(centre)):
        raise ValueError(f"{name} does not fit at voxel {centre}")
    return ct.with_array(new_ct), label.with_array(new_label), ct.voxel_to_ras(np.array(centre, dtype=float))
