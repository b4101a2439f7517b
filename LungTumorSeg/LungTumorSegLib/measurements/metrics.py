"""Segmentation evaluation metrics shared by training, validation and benchmarks.

Conventions (see docs/measurements.md):

- Dice of two empty masks is 1.0; of one empty mask 0.0.
- Surfaces are the mask voxels removed by a 6-connected binary erosion (MONAI's ``get_mask_edges``);
  distances are Euclidean in mm between surface-voxel centres (scipy's exact EDT with the voxel
  spacing), computed only on the bounding box of both masks. HD95 is the larger of the two directed
  95th percentiles and NSD counts surface voxels within the tolerance on both sides, as MONAI's
  ``compute_hausdorff_distance`` and ``compute_surface_dice`` do (the tests check both against MONAI);
  scipy on the bounding box is used because it needs no torch tensors and is faster on CPU.
- With one mask empty, HD95 is infinite (``None`` in ``evaluate``) and NSD is 0; both empty: 0 mm and 1.
- A predicted lesion is a true positive when it overlaps a ground-truth lesion with a lesion-wise Dice
  >= ``detection_threshold`` (default 0.1). Sensitivity = detected GT lesions / GT lesions (1.0 with no
  GT lesion); precision = matched predicted lesions / predicted lesions (1.0 with no predicted lesion).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..core.errors import InputError
from ..core.volume import Volume
from .lesion_measurements import CaseMeasurements, Component, find_lesions, lesion_mask, measure_lesions

DEFAULT_TOLERANCE_MM = 2.0
DEFAULT_DETECTION_THRESHOLD = 0.1


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    pred, gt = lesion_mask(pred), lesion_mask(gt)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & gt)) / total


def relative_volume_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """(V_pred - V_gt) / V_gt; 0.0 when both are empty, ``inf`` when only the ground truth is."""
    n_pred, n_gt = int(np.count_nonzero(lesion_mask(pred))), int(np.count_nonzero(lesion_mask(gt)))
    if n_gt == 0:
        return 0.0 if n_pred == 0 else math.inf
    return (n_pred - n_gt) / n_gt


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm.

    Args:
        pred: boolean mask.
        gt: boolean mask on the same grid.
        spacing: voxel size in mm along each array axis.

    Returns:
        ``(pred_to_gt, gt_to_pred)``: for each surface voxel of one mask, the distance to the nearest
        surface voxel of the other (empty arrays when a mask is empty).
    """
    pred, gt = lesion_mask(pred), lesion_mask(gt)
    if pred.shape != gt.shape:
        raise InputError(f"mask shapes differ: {pred.shape} vs {gt.shape}")
    union = pred | gt
    if not union.any() or not pred.any() or not gt.any():
        return np.zeros(0), np.zeros(0)
    box = _padded_box(union, margin=1)
    pred_edges, gt_edges = _edges(pred[box]), _edges(gt[box])
    sampling = np.asarray(spacing, dtype=np.float64)
    to_gt = ndimage.distance_transform_edt(~gt_edges, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_edges, sampling=sampling)
    return to_gt[pred_edges], to_pred[gt_edges]


def hausdorff_distance(pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray, percentile: float = 95.0) -> float:
    """Percentile Hausdorff distance in mm (max of the two directed percentiles); ``inf`` if one mask is empty."""
    return _hausdorff(*_distances_or_empty(pred, gt, spacing), percentile)


def normalized_surface_dice(
    pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray, tolerance_mm: float = DEFAULT_TOLERANCE_MM
) -> float:
    """Fraction of both surfaces lying within ``tolerance_mm`` of the other surface (Nikolov et al. 2021)."""
    return _nsd(*_distances_or_empty(pred, gt, spacing), tolerance_mm)


def lesion_detection(
    pred_lesions: list[Component],
    gt_lesions: list[Component],
    threshold: float = DEFAULT_DETECTION_THRESHOLD,
) -> dict:
    """Lesion-wise detection counts.

    Args:
        pred_lesions: predicted lesions (``find_lesions``), lesion id = position + 1.
        gt_lesions: ground-truth lesions on the same grid.
        threshold: minimum lesion-wise Dice for a match (a match also needs at least one shared voxel).

    Returns:
        ``tp`` (detected GT lesions), ``fn`` (missed GT lesions), ``fp`` (predicted lesions matching no
        GT lesion), ``sensitivity``, ``precision``, lesion counts, and ``matches``: one entry per
        overlapping pair with its Dice.
    """
    overlaps = np.zeros((len(pred_lesions), len(gt_lesions)), dtype=np.int64)
    for p, pred in enumerate(pred_lesions):
        for g, gt in enumerate(gt_lesions):
            common = tuple(slice(max(a.start, b.start), min(a.stop, b.stop)) for a, b in zip(pred.slices, gt.slices))
            if any(s.start >= s.stop for s in common):
                continue
            in_pred = tuple(slice(c.start - a.start, c.stop - a.start) for c, a in zip(common, pred.slices))
            in_gt = tuple(slice(c.start - b.start, c.stop - b.start) for c, b in zip(common, gt.slices))
            overlaps[p, g] = np.count_nonzero(pred.mask[in_pred] & gt.mask[in_gt])
    sizes_pred = np.array([c.voxel_count for c in pred_lesions], dtype=np.float64)
    sizes_gt = np.array([c.voxel_count for c in gt_lesions], dtype=np.float64)
    pair_dice = 2.0 * overlaps / np.maximum(sizes_pred[:, None] + sizes_gt[None, :], 1.0)
    matched = (overlaps > 0) & (pair_dice >= threshold)
    tp = int(matched.any(axis=0).sum())
    matched_pred = int(matched.any(axis=1).sum())
    n_pred, n_gt = len(pred_lesions), len(gt_lesions)
    matches = [
        {"pred_lesion_id": int(p + 1), "gt_lesion_id": int(g + 1), "dice": float(pair_dice[p, g]), "match": bool(m)}
        for (p, g), m in zip(np.argwhere(overlaps > 0), matched[overlaps > 0])
    ]
    return {
        "tp": tp,
        "fn": n_gt - tp,
        "fp": n_pred - matched_pred,
        "n_pred_lesions": n_pred,
        "n_gt_lesions": n_gt,
        "sensitivity": tp / n_gt if n_gt else 1.0,
        "precision": matched_pred / n_pred if n_pred else 1.0,
        "threshold": float(threshold),
        "matches": matches,
    }


def recist_relative_error(pred: CaseMeasurements, gt: CaseMeasurements) -> float:
    """Relative error of the sum of target long diameters: (SLD_pred - SLD_gt) / SLD_gt (``inf`` if SLD_gt = 0)."""
    sld_pred, sld_gt = pred.sum_longest_diameters_mm, gt.sum_longest_diameters_mm
    if sld_gt == 0:
        return 0.0 if sld_pred == 0 else math.inf
    return (sld_pred - sld_gt) / sld_gt


def evaluate(
    pred: Volume,
    gt: Volume,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    detection_threshold: float = DEFAULT_DETECTION_THRESHOLD,
) -> dict:
    """All metrics of a predicted label against a ground-truth label.

    Returns:
        JSON-ready dictionary of scalars (``None`` where a value is undefined or infinite) plus
        ``lesion_matches``, the overlapping lesion pairs.

    Raises:
        InputError: the two labels are not on the same grid.
    """
    if not pred.same_grid(gt):
        raise InputError(
            f"prediction and ground truth are not on the same grid: {gt.grid_difference(pred)} "
            "(ground truth vs prediction); resample the prediction onto the ground truth first"
        )
    pred_mask, gt_mask = lesion_mask(pred.array), lesion_mask(gt.array)
    pred_lesions, gt_lesions = find_lesions(pred_mask), find_lesions(gt_mask)
    pred_case = measure_lesions(pred, components=pred_lesions)
    gt_case = measure_lesions(gt, components=gt_lesions)
    distances = _distances_or_empty(pred_mask, gt_mask, gt.spacing)
    detection = lesion_detection(pred_lesions, gt_lesions, detection_threshold)
    largest_pred = max((lesion.long_axis_mm for lesion in pred_case.lesions), default=0.0)
    largest_gt = max((lesion.long_axis_mm for lesion in gt_case.lesions), default=0.0)
    result = {
        "dice": dice(pred_mask, gt_mask),
        "hd95_mm": _hausdorff(*distances, 95.0),
        "nsd": _nsd(*distances, tolerance_mm),
        "nsd_tolerance_mm": float(tolerance_mm),
        "relative_volume_error": relative_volume_error(pred_mask, gt_mask),
        "pred_volume_ml": pred_case.total_volume_ml,
        "gt_volume_ml": gt_case.total_volume_ml,
        "pred_sum_longest_diameters_mm": pred_case.sum_longest_diameters_mm,
        "gt_sum_longest_diameters_mm": gt_case.sum_longest_diameters_mm,
        "recist_relative_error": recist_relative_error(pred_case, gt_case),
        "pred_largest_long_axis_mm": largest_pred,
        "gt_largest_long_axis_mm": largest_gt,
        "largest_long_axis_relative_error": _relative(largest_pred, largest_gt),
        "lesion_tp": detection["tp"],
        "lesion_fp": detection["fp"],
        "lesion_fn": detection["fn"],
        "pred_lesion_count": detection["n_pred_lesions"],
        "gt_lesion_count": detection["n_gt_lesions"],
        "lesion_sensitivity": detection["sensitivity"],
        "lesion_precision": detection["precision"],
        "detection_threshold_dice": detection["threshold"],
    }
    result = {
        key: (value if not isinstance(value, float) or math.isfinite(value) else None) for key, value in result.items()
    }
    result["lesion_matches"] = detection["matches"]
    return result


def _non_finite(value) -> bool:
    return isinstance(value, float) and not math.isfinite(value)


def _relative(value: float, reference: float) -> float:
    if reference == 0:
        return 0.0 if value == 0 else math.inf
    return (value - reference) / reference


def _distances_or_empty(
    pred: np.ndarray, gt: np.ndarray, spacing: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Surface distances, or ``(None, None)`` when both masks are empty and ``None`` on the empty side."""
    pred, gt = lesion_mask(pred), lesion_mask(gt)
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if has_pred and has_gt:
        return surface_distances(pred, gt, spacing)
    return (np.zeros(0) if has_pred else None), (np.zeros(0) if has_gt else None)


def _hausdorff(to_gt: np.ndarray | None, to_pred: np.ndarray | None, percentile: float) -> float:
    if to_gt is None and to_pred is None:
        return 0.0
    if to_gt is None or to_pred is None:
        return math.inf
    return float(max(np.percentile(to_gt, percentile), np.percentile(to_pred, percentile)))


def _nsd(to_gt: np.ndarray | None, to_pred: np.ndarray | None, tolerance_mm: float) -> float:
    if to_gt is None and to_pred is None:
        return 1.0
    if to_gt is None or to_pred is None:
        return 0.0
    within = int(np.count_nonzero(to_gt <= tolerance_mm)) + int(np.count_nonzero(to_pred <= tolerance_mm))
    return within / (len(to_gt) + len(to_pred))


def _edges(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: the mask minus its 6-connected erosion (voxels at the array border count as surface)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _padded_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(int(present[0]) - margin, 0), min(int(present[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(box)
