"""Scoring a whole-CT segmentation against its reference: detection, lesion Dice, false positives, RECIST error.

A reference lesion is *detected* when a predicted lesion shares a voxel with it; its *lesion Dice* compares it with
the union of the predicted lesions touching it; a *false positive* is a predicted lesion of at least ``fp_min_ml``
touching no reference lesion, ignore region or involved node. Sweeps over the threshold (FROC) and the
lesion-confidence level, case summaries, and the nested choice of ``min_peak_probability``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.measurements.lesion_measurements import Component, measure_lesions
from LungTumorSegLib.measurements.metrics import dice
from LungTumorSegLib.segmentation.pipeline import SegmentationResult
from LungTumorSegLib.segmentation.postprocess import CONNECTIVITY_26, PostprocessSettings, postprocess

from .whole_ct_cases import Reference, WholeCtCase

FP_MIN_ML = 0.1


FROC_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))


PEAK_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)


@dataclass
class LesionScore:
    """One reference lesion against the prediction."""

    lesion: int
    volume_ml: float
    detected: bool
    dice: float
    long_axis_mm: float
    pred_long_axis_mm: float

    @property
    def long_axis_error(self) -> float | None:
        """Relative RECIST long-axis error, (predicted - reference) / reference; None when missed."""
        if not self.detected or self.long_axis_mm <= 0:
            return None
        return (self.pred_long_axis_mm - self.long_axis_mm) / self.long_axis_mm


def score_label(label: np.ndarray, reference: Reference, fp_min_ml: float = FP_MIN_ML) -> dict[str, Any]:
    """Lesion-wise scores of a predicted label (bool/uint8 on the CT grid) against ``reference``."""
    pred = np.asarray(label) > 0
    ref_labels, n_ref = ndimage.label(reference.tumour, structure=CONNECTIVITY_26)
    pred_labels, n_pred = ndimage.label(pred, structure=CONNECTIVITY_26)
    overlap = np.zeros((n_pred + 1, n_ref + 1), dtype=np.int64)
    both = pred & reference.tumour
    np.add.at(overlap, (pred_labels[both], ref_labels[both]), 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1) * reference.voxel_ml
    excused = np.zeros(n_pred + 1, dtype=bool)  # touches an ignore region or an involved node
    excused[np.unique(pred_labels[(reference.ignore | reference.other_tumour) & pred])] = True
    scored = ~reference.ignore
    lesions: list[LesionScore] = []
    for r in range(1, n_ref + 1):
        ref_mask = ref_labels == r
        touching = np.flatnonzero(overlap[1:, r]) + 1
        union = np.isin(pred_labels, touching) & scored if len(touching) else np.zeros_like(pred)
        lesions.append(
            LesionScore(
                lesion=r,
                volume_ml=float(ref_mask.sum() * reference.voxel_ml),
                detected=bool(len(touching)),
                dice=dice(union, ref_mask),
                long_axis_mm=_long_axis(ref_mask, reference.affine),
                pred_long_axis_mm=_long_axis(union, reference.affine) if len(touching) else 0.0,
            )
        )
    false_positives = [
        round(float(pred_sizes[p]), 3)
        for p in range(1, n_pred + 1)
        if not overlap[p, 1:].any() and not excused[p] and pred_sizes[p] >= fp_min_ml
    ]
    errors = [abs(e) for e in (lesion.long_axis_error for lesion in lesions) if e is not None]
    return {
        "lesions": [vars(lesion) | {"long_axis_error": lesion.long_axis_error} for lesion in lesions],
        "reference_lesions": n_ref,
        "detected": sum(lesion.detected for lesion in lesions),
        "all_detected": all(lesion.detected for lesion in lesions),
        "lesion_dice": float(np.mean([lesion.dice for lesion in lesions])) if lesions else float("nan"),
        "case_dice": dice(pred & scored, reference.tumour),
        "false_positives": len(false_positives),
        "false_positive_ml": sorted(false_positives, reverse=True),
        "mean_abs_long_axis_error": float(np.mean(errors)) if errors else None,
        "pred_volume_ml": float(pred[scored].sum() * reference.voxel_ml),
        "reference_volume_ml": float(reference.tumour.sum() * reference.voxel_ml),
    }


def froc_points(
    probability: np.ndarray,
    lung_mask: np.ndarray | None,
    reference: Reference,
    settings: PostprocessSettings,
    thresholds: Sequence[float] = FROC_THRESHOLDS,
    fp_min_ml: float = FP_MIN_ML,
) -> list[dict[str, float]]:
    """Detected lesions and false positives at each threshold (the rest of post-processing as ``settings``)."""
    scores = _sweep(probability, lung_mask, reference, settings, "threshold", thresholds, fp_min_ml)
    return [
        {"threshold": float(t), "detected": score["detected"], "false_positives": score["false_positives"]}
        for t, score in zip(thresholds, scores)
    ]


def peak_points(
    probability: np.ndarray,
    lung_mask: np.ndarray | None,
    reference: Reference,
    settings: PostprocessSettings,
    levels: Sequence[float] = PEAK_LEVELS,
    fp_min_ml: float = FP_MIN_ML,
) -> list[dict[str, float]]:
    """Detections, false positives and lesion Dice when lesions must reach each peak probability level."""
    scores = _sweep(probability, lung_mask, reference, settings, "min_peak_probability", levels, fp_min_ml)
    return [
        {
            "min_peak_probability": float(level),
            "detected": score["detected"],
            "false_positives": score["false_positives"],
            "lesion_dice": score["lesion_dice"],
        }
        for level, score in zip(levels, scores)
    ]


def _sweep(
    probability: np.ndarray,
    lung_mask: np.ndarray | None,
    reference: Reference,
    settings: PostprocessSettings,
    setting: str,
    values: Sequence[float],
    fp_min_ml: float,
) -> list[dict[str, Any]]:
    """``score_label`` of the post-processed probability with one post-processing setting at each value."""
    scores = []
    for value in values:
        post = PostprocessSettings(**{**vars(settings), setting: float(value)})
        scores.append(score_label(postprocess(probability, reference.voxel_ml, post, lung_mask), reference, fp_min_ml))
    return scores


def score_case(
    case: WholeCtCase, result: SegmentationResult, fp_min_ml: float = FP_MIN_ML, with_froc: bool = True
) -> dict[str, Any]:
    """All scores of one whole CT's segmentation (``result`` on the CT's own grid)."""
    reference = Reference.load(case)
    if reference.tumour.shape != result.label.shape or not np.allclose(
        reference.affine, result.label.affine, atol=1e-3
    ):
        raise InputError(f"{case.tumour}: not on the grid of {case.ct}")
    row: dict[str, Any] = {"case": case.name, "patient": case.patient, **score_label(result.label.array, reference)}
    if with_froc:
        post = PostprocessSettings(**result.info["postprocess"])
        lung = None if result.lung_mask is None else result.lung_mask.array > 0
        row["froc"] = froc_points(result.probability.array, lung, reference, post, fp_min_ml=fp_min_ml)
        row["peak_sweep"] = peak_points(result.probability.array, lung, reference, post, fp_min_ml=fp_min_ml)
    row["max_probability_in_tumour"] = float(result.probability.array[reference.tumour].max())
    return row


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over cases and over lesions, detection counts and the pooled FROC curve."""
    lesions = [lesion for row in rows for lesion in row["lesions"]]
    errors = [abs(x["long_axis_error"]) for x in lesions if x["long_axis_error"] is not None]
    summary: dict[str, Any] = {
        "cases": len(rows),
        "lesions": len(lesions),
        "lesions_detected": sum(x["detected"] for x in lesions),
        "cases_all_detected": sum(bool(r["all_detected"]) for r in rows),
        "mean_lesion_dice_over_cases": _mean([r["lesion_dice"] for r in rows]),
        "mean_lesion_dice_over_lesions": _mean([x["dice"] for x in lesions]),
        "mean_case_dice": _mean([r["case_dice"] for r in rows]),
        "false_positives_per_ct": _mean([r["false_positives"] for r in rows]),
        "mean_abs_long_axis_error": _mean(errors) if errors else None,
    }
    froc = [r["froc"] for r in rows if "froc" in r]
    if froc and len(froc) == len(rows):
        summary["froc"] = [
            {
                "threshold": points[0]["threshold"],
                "sensitivity": sum(p["detected"] for p in points) / max(len(lesions), 1),
                "false_positives_per_ct": sum(p["false_positives"] for p in points) / len(rows),
            }
            for points in zip(*froc)
        ]
    return summary


def choose_min_peak(rows: Sequence[dict[str, Any]]) -> float:
    """The peak level that keeps the most reference lesions, then gives the fewest false positives (the highest
    such level when several tie)."""
    sweeps = [{point["min_peak_probability"]: point for point in row["peak_sweep"]} for row in rows]
    levels = sorted(set.intersection(*(set(sweep) for sweep in sweeps)))  # rows scored with other levels

    def totals(level: float) -> tuple[int, int, float]:
        detected = sum(sweep[level]["detected"] for sweep in sweeps)
        return detected, -sum(sweep[level]["false_positives"] for sweep in sweeps), level

    return max(levels, key=totals)


def nested_peak_choice(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Choose ``min_peak_probability`` honestly: each fold's level is chosen on the other folds' cases only, and
    scored on its own cases; the level for the shipped model is chosen on all cases."""
    if not rows or any("peak_sweep" not in row for row in rows):
        return None
    folds = sorted({row["fold"] for row in rows})
    per_fold, scored = {}, []
    for fold in folds:
        others = [row for row in rows if row["fold"] != fold]
        if not others:
            continue
        level = choose_min_peak(others)
        per_fold[fold] = level
        for row in rows:
            if row["fold"] == fold:
                point = next(p for p in row["peak_sweep"] if p["min_peak_probability"] == level)
                scored.append({**point, "case": row["case"], "reference_lesions": row["reference_lesions"]})
    choice: dict[str, Any] = {
        "rule": "most reference lesions kept, then fewest false positives, then the highest level",
        "all_folds": choose_min_peak(rows),
        "per_fold": per_fold,
    }
    if scored:
        lesions = sum(p["reference_lesions"] for p in scored)
        choice["cross_validated"] = {
            "cases": scored,
            "sensitivity": sum(p["detected"] for p in scored) / max(lesions, 1),
            "false_positives_per_ct": _mean([p["false_positives"] for p in scored]),
            "mean_lesion_dice_over_cases": _mean([p["lesion_dice"] for p in scored]),
        }
    return choice


def report_value(value: Any) -> Any:
    """A value as the reports write it: floats to 4 decimals, None as an empty cell."""
    return round(value, 4) if isinstance(value, float) and math.isfinite(value) else ("" if value is None else value)


def _mean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def _long_axis(mask: np.ndarray, affine: np.ndarray) -> float:
    """RECIST long axis (mm) of a mask measured as one lesion, whatever its connectivity."""
    if not mask.any():
        return 0.0
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    component = Component(box, mask[box])  # type: ignore[arg-type]
    case = measure_lesions(Volume(mask.astype(np.uint8), affine), components=[component])
    return float(case.lesions[0].long_axis_mm)
