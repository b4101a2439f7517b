"""Copy-paste augmentation: real nodules, enlarged, pasted into whole-CT lung next to the mediastinum.

Nodule crops show a model small lesions surrounded by lung. Large central tumours touch the
mediastinum and hilum, which crops never show. Pasting real (enlarged) nodules into lung beside
the mediastinum of a tumour-free CT region gives examples of that geometry with exact labels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from LungTumorSegLib.segmentation.lungfield import AIR_HU as LUNG_HU
from LungTumorSegLib.segmentation.lungfield import BODY_HU, fill_holes_per_axial_slice

BONE_HU = 250.0
MIN_LUNG_VOXELS = 5000


@dataclass
class Lesion:
    """A lesion cut from a labelled crop: HU values and mask on the same grid, with its voxel size."""

    hu: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]


def lung_mask(ct: np.ndarray) -> np.ndarray:
    """Lung voxels of a whole CT (HU): air inside the body, large components only."""
    body = fill_holes_per_axial_slice(ct > BODY_HU)
    labels, count = ndimage.label((ct < LUNG_HU) & body)
    if count == 0:
        return np.zeros(ct.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = np.argsort(sizes)[::-1][:2]  # the two lungs (or one, when they touch); not bowel gas
    keep = [index for index in largest if sizes[index] >= max(MIN_LUNG_VOXELS, 0.2 * sizes[largest[0]])]
    return np.isin(labels, keep)


def juxtamediastinal_sites(lung: np.ndarray, spacing: np.ndarray, max_mm: float = 6.0) -> np.ndarray:
    """Lung voxels within ``max_mm`` of non-lung tissue on their medial side (towards the body midline)."""
    tissue_distance = ndimage.distance_transform_edt(lung, sampling=spacing)
    near_wall = lung & (tissue_distance <= max_mm)
    centre_x = np.argwhere(lung)[:, 0].mean()
    x = np.arange(lung.shape[0])[:, None, None]
    lung_width = np.ptp(np.argwhere(lung)[:, 0]) + 1
    medial = np.abs(x - centre_x) < 0.22 * lung_width
    return np.argwhere(near_wall & medial)


def resize_lesion(lesion: Lesion, target_spacing: np.ndarray, scale: float) -> Lesion:
    """The lesion on ``target_spacing``, enlarged ``scale`` times in every direction (linear HU, smooth mask)."""
    factors = np.asarray(lesion.spacing) * scale / target_spacing
    hu = ndimage.zoom(lesion.hu.astype(np.float32), factors, order=1, mode="nearest")
    mask = ndimage.zoom(lesion.mask.astype(np.float32), factors, order=1) > 0.5
    return Lesion(hu, mask, tuple(float(s) for s in target_spacing))


def is_calcified(lesion: Lesion) -> bool:
    """True for calcified nodules (bright as bone), which do not look like a soft-tissue tumour."""
    return bool(np.percentile(lesion.hu[lesion.mask], 90) > BONE_HU)


def lesion_box(lesion: Lesion, centre: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, slice, slice] | None:
    """Where ``lesion`` lands when centred at voxel ``centre``; None when it does not fit in ``shape``."""
    coords = np.argwhere(lesion.mask)
    middle = (coords.min(axis=0) + coords.max(axis=0)) // 2
    start = np.asarray(centre) - middle
    stop = start + np.array(lesion.mask.shape)
    if np.any(start < 0) or np.any(stop > np.array(shape)):
        return None
    return tuple(slice(int(a), int(b)) for a, b in zip(start, stop))  # type: ignore[return-value]


def paste(
    ct: np.ndarray,
    label: np.ndarray,
    lesion: Lesion,
    centre: np.ndarray,
    lung_level: float = LUNG_HU,
    bone_level: float = BONE_HU,
    min_lung_fraction: float = 0.5,
) -> bool:
    """Paste ``lesion`` centred at voxel ``centre`` into ``ct`` and ``label`` (in place).

    Inside the mask the CT takes the brighter of lesion and tissue, so the lesion merges with the
    mediastinum as a real central tumour does; a soft rim just outside the mask avoids a cut-out edge.
    Returns False (nothing changed) when the lesion does not fit inside the volume, or when it
    would not lie mostly in lung (under ``min_lung_fraction`` of its voxels) or would overlap bone.
    ``lung_level`` and ``bone_level`` are in the image's units (HU by default; window-scaled images
    pass the scaled levels).
    """
    box = lesion_box(lesion, centre, ct.shape)
    if box is None:
        return False
    under = ct[box][lesion.mask]
    if np.mean(under < lung_level) < min_lung_fraction or np.mean(under > bone_level) > 0.01:
        return False
    weight = np.maximum(lesion.mask, ndimage.gaussian_filter(lesion.mask.astype(np.float32), 0.7))
    region = ct[box].astype(np.float32)
    blended = weight * np.maximum(lesion.hu, region) + (1 - weight) * region
    ct[box] = (np.round(blended) if np.issubdtype(ct.dtype, np.integer) else blended).astype(ct.dtype)
    label[box] |= lesion.mask
    return True
