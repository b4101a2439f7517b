"""Turning a probability map into a clean tumour label."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CONNECTIVITY_26 = np.ones((3, 3, 3), bool)


@dataclass
class PostprocessSettings:
    """Threshold and lesion filters (from the bundle's ``output`` section, overridable)."""

    threshold: float = 0.5
    min_lesion_ml: float = 0.05
    restrict_to_lung: bool = True
    keep_largest: bool = False
    min_peak_probability: float = 0.0


def postprocess(
    probability: np.ndarray,
    voxel_ml: float,
    settings: PostprocessSettings,
    lung_mask: np.ndarray | None = None,
) -> np.ndarray:
    """Threshold, then drop small lesions, lesions outside the lung field and lesions whose highest
    probability stays below ``settings.min_peak_probability`` (a lesion-level confidence: outlines are drawn
    at ``threshold``, but a lesion is only reported when the models are sure of some part of it).

    Args:
        probability: tumour probability on the output grid.
        voxel_ml: volume of one voxel in ml.
        settings: threshold and filters.
        lung_mask: lung field on the same grid; lesions that do not touch it are removed.

    Returns:
        uint8 label (1 = tumour).
    """
    mask = probability >= settings.threshold
    labels, count = ndimage.label(mask, structure=CONNECTIVITY_26)
    if count == 0:
        return mask.astype(np.uint8)
    index = np.arange(1, count + 1)
    keep = np.bincount(labels.ravel(), minlength=count + 1)[1:] * voxel_ml >= settings.min_lesion_ml
    if settings.min_peak_probability > settings.threshold:
        keep &= ndimage.maximum(probability, labels, index=index) >= settings.min_peak_probability
    if settings.restrict_to_lung and lung_mask is not None and lung_mask.any():
        keep &= ndimage.maximum(lung_mask, labels, index=index).astype(bool)
    if settings.keep_largest and keep.any():
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:] * keep
        keep = index == index[int(np.argmax(sizes))]
    lookup = np.concatenate([[False], keep])
    return lookup[labels].astype(np.uint8)


def lesion_at_point(label: np.ndarray, voxel: np.ndarray) -> np.ndarray:
    """Keep only the lesion that contains ``voxel`` (continuous index), or the nearest one."""
    labels, count = ndimage.label(label > 0, structure=CONNECTIVITY_26)
    if count == 0:
        return np.zeros_like(label, dtype=np.uint8)
    index = tuple(int(round(v)) for v in voxel)
    inside = all(0 <= i < n for i, n in zip(index, label.shape))
    chosen = labels[index] if inside else 0
    if chosen == 0:
        distance, nearest = ndimage.distance_transform_edt(labels == 0, return_indices=True)
        clipped = tuple(int(np.clip(i, 0, n - 1)) for i, n in zip(index, label.shape))
        chosen = labels[tuple(nearest[:, clipped[0], clipped[1], clipped[2]])]
    return (labels == chosen).astype(np.uint8)
