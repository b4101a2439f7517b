"""Operating points on cross-validated whole CTs: per-case sweeps, why lesions are lost, and preset scores.

``evaluate_plan`` keeps each held-out case's probability map (``maps/``); here each map is post-processed at every
lesion-confidence level (``PEAK_GRID``) and every candidate level (``CANDIDATE_GRID``) exactly as the engine does
(``postprocess``, ``find_candidates``), and scored against the reference. A preset (confidence level, candidate level,
number of candidates) is then scored on any set of cases from these sweeps without running a model again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy import ndimage, stats

from LungTumorSegLib.segmentation.candidates import CandidateSettings, find_candidates
from LungTumorSegLib.segmentation.postprocess import CONNECTIVITY_26, PostprocessSettings, postprocess

from .whole_ct_cases import Reference
from .whole_ct_scoring import FP_MIN_ML, score_label

PEAK_GRID = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99)
CANDIDATE_GRID = (0.02, 0.05, 0.1, 0.2, 0.3)
MAX_LISTED = 30  # candidates kept per sweep point (a preset lists at most this many)
BOOTSTRAP_RESAMPLES = 10000


def case_sweep(
    probability: np.ndarray,
    lung: np.ndarray | None,
    reference: Reference,
    post: PostprocessSettings,
    ct: np.ndarray | None = None,
    fp_min_ml: float = FP_MIN_ML,
) -> dict[str, Any]:
    """One case's lesion scores at every confidence level, its ranked candidates at every candidate level, and the
    facts about each reference lesion (``lesion_facts``)."""
    levels = {}
    for level in PEAK_GRID:
        settings = replace(post, min_peak_probability=level)
        lesions = postprocess(probability, reference.voxel_ml, settings, lung)
        score = score_label(lesions, reference, fp_min_ml)
        candidates = {}
        for candidate_level in CANDIDATE_GRID:
            listing = CandidateSettings(candidate_level, MAX_LISTED)
            label_map, rows = find_candidates(probability, lesions, reference.voxel_ml, settings, listing, lung)
            candidates[f"{candidate_level:g}"] = candidate_hits(label_map, rows, reference)
        levels[f"{level:g}"] = {
            "detected": [lesion["detected"] for lesion in score["lesions"]],
            "dice": [round(lesion["dice"], 4) for lesion in score["lesions"]],
            "lesion_dice": score["lesion_dice"],
            "false_positives": score["false_positives"],
            "false_positive_ml": score["false_positive_ml"],
            "candidates": candidates,
        }
    return {"lesions": lesion_facts(probability, lung, reference, post, ct), "levels": levels}


def candidate_hits(label_map: np.ndarray, rows: Sequence[tuple], reference: Reference) -> list[dict[str, Any]]:
    """Per listed candidate (strongest first): peak probability, volume, the reference lesions it touches (1-based,
    numbered as ``score_label`` numbers them) and whether it touches an ignore region or involved node."""
    ref_labels, _ = ndimage.label(reference.tumour, structure=CONNECTIVITY_26)
    both = (label_map > 0) & (ref_labels > 0)
    pairs = set(zip(label_map[both].tolist(), ref_labels[both].tolist()))
    excused = set(np.unique(label_map[(reference.ignore | reference.other_tumour) & (label_map > 0)]).tolist())
    return [
        {
            "peak": round(peak, 4),
            "volume_ml": round(voxels * reference.voxel_ml, 4),
            "hits": sorted(r for c, r in pairs if c == rank),
            "excused": rank in excused,
        }
        for rank, peak, _mean, voxels in rows
    ]


def lesion_facts(
    probability: np.ndarray,
    lung: np.ndarray | None,
    reference: Reference,
    post: PostprocessSettings,
    ct: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """What decides each reference lesion's fate: its highest probability, the regions drawn at the outline threshold
    that touch it (their peak, volume, lung contact), its volume, mean HU and lung-field contact."""
    ref_labels, count = ndimage.label(reference.tumour, structure=CONNECTIVITY_26)
    drawn, _ = ndimage.label(probability >= post.threshold, structure=CONNECTIVITY_26)
    facts = []
    for index in range(1, count + 1):
        mask = ref_labels == index
        touching = np.unique(drawn[mask & (drawn > 0)])
        regions = [drawn == t for t in touching]
        facts.append(
            {
                "lesion": index,
                "volume_ml": round(float(mask.sum() * reference.voxel_ml), 3),
                "mean_hu": None if ct is None else round(float(ct[mask].mean()), 1),
                "max_probability": round(float(probability[mask].max()), 4),
                "in_lung_field": None if lung is None or not lung.any() else bool((lung[mask] > 0).any()),
                "regions_at_threshold": [
                    {
                        "peak": round(float(probability[region].max()), 4),
                        "volume_ml": round(float(region.sum() * reference.voxel_ml), 3),
                        "touches_lung": None if lung is None or not lung.any() else bool((lung[region] > 0).any()),
                    }
                    for region in regions
                ],
            }
        )
    return facts


def loss_reason(facts: dict[str, Any], post: PostprocessSettings, min_peak: float) -> str | None:
    """Why a reference lesion is not reported at ``min_peak`` (None when it is): the first filter that drops it."""
    regions = facts["regions_at_threshold"]
    if not regions:
        return f"below the outline threshold (highest probability {facts['max_probability']:.3f} < {post.threshold:g})"
    confident = [r for r in regions if r["peak"] >= min_peak]
    if not confident:
        best = max(r["peak"] for r in regions)
        return f"confidence filter (peak {best:.3f} < {min_peak:g})"
    in_lung = [r for r in confident if r["touches_lung"] is not False] if post.restrict_to_lung else confident
    if not in_lung:
        return "lung-field filter (the region does not touch the lung field)"
    if not any(r["volume_ml"] >= post.min_lesion_ml for r in in_lung):
        return f"size filter (< {post.min_lesion_ml:g} ml)"
    return None


def preset_case_scores(sweep: dict[str, Any], min_peak: float, candidate_min_peak: float, max_candidates: int) -> dict:
    """One case at one preset: reference lesions, found as lesions, found as a lesion or listed candidate, false
    positives, listed candidates and the false ones among them (touching no reference lesion, ignore region or node)."""
    level = sweep["levels"][f"{min_peak:g}"]
    listed = level["candidates"][f"{candidate_min_peak:g}"][:max_candidates] if max_candidates else []
    reported = list(level["detected"])
    with_candidates = list(reported)
    for candidate in listed:
        for lesion in candidate["hits"]:
            with_candidates[lesion - 1] = True
    return {
        "lesions": len(reported),
        "found": int(sum(reported)),
        "found_with_candidates": int(sum(with_candidates)),
        "missed": [i + 1 for i, found in enumerate(with_candidates) if not found],
        "false_positives": int(level["false_positives"]),
        "lesion_dice": level["lesion_dice"],
        "candidates": len(listed),
        "false_candidates": sum(1 for c in listed if not c["hits"] and not c["excused"]),
    }


def preset_scores(
    sweeps: dict[str, dict[str, Any]], min_peak: float, candidate_min_peak: float, max_candidates: int
) -> dict[str, Any]:
    """A preset over cases (``{case: sweep}``): totals, means and 95 % bootstrap intervals over cases."""
    cases = {
        name: preset_case_scores(sweep, min_peak, candidate_min_peak, max_candidates) for name, sweep in sweeps.items()
    }
    rows = list(cases.values())
    lesions = np.array([r["lesions"] for r in rows], float)
    columns = {key: np.array([r[key] for r in rows], float) for key in rows[0] if key not in ("missed",)}
    totals = {
        "cases": len(rows),
        "lesions": int(lesions.sum()),
        "found": int(columns["found"].sum()),
        "found_with_candidates": int(columns["found_with_candidates"].sum()),
        "sensitivity": float(columns["found"].sum() / max(lesions.sum(), 1)),
        "sensitivity_with_candidates": float(columns["found_with_candidates"].sum() / max(lesions.sum(), 1)),
        "false_positives_per_ct": float(columns["false_positives"].mean()),
        "candidates_per_ct": float(columns["candidates"].mean()),
        "false_candidates_per_ct": float(columns["false_candidates"].mean()),
        "mean_lesion_dice_over_cases": float(np.nanmean(columns["lesion_dice"])),
    }
    totals["ci95"] = {
        "sensitivity": bootstrap_interval((columns["found"], lesions), _ratio),
        "sensitivity_with_candidates": bootstrap_interval((columns["found_with_candidates"], lesions), _ratio),
        "false_positives_per_ct": bootstrap_interval((columns["false_positives"],), _mean),
        "mean_lesion_dice_over_cases": bootstrap_interval((columns["lesion_dice"],), _mean),
    }
    return {"summary": totals, "cases": cases}


def bootstrap_interval(samples: tuple[np.ndarray, ...], statistic: Any, seed: int = 0) -> list[float] | None:
    """95 % percentile bootstrap interval over cases (cases resampled together; None for fewer than 2 cases)."""
    if len(samples[0]) < 2:
        return None
    if all(np.all(s == s[0]) for s in samples):  # every case alike: no spread to resample
        value = float(statistic(*samples, axis=-1))
        return [value, value]
    result = stats.bootstrap(
        samples,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return [round(float(result.confidence_interval.low), 4), round(float(result.confidence_interval.high), 4)]


def _ratio(found: np.ndarray, lesions: np.ndarray, axis: int = -1) -> np.ndarray:
    return found.sum(axis=axis) / np.maximum(lesions.sum(axis=axis), 1)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.nanmean(values, axis=axis)
