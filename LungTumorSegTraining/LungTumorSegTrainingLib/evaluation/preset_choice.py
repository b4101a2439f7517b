"""Choosing the sensitivity presets (``high``, ``balanced``, ``specific``) by rules, honestly.

Each preset's lesion-confidence level is chosen by a written rule from two kinds of evidence:

- false positives per CT and whole-CT lesions from the cross-validated whole CTs (``operating_points`` sweeps);
- how many real nodules a level keeps, from the LIDC **validation** crops (patients no model trained on; the test
  patients stay out of every choice): six whole CTs hold 8 lesions, too few to tell how close to 1 the peak
  probability of a new scan's nodule will be (a level chosen on them alone, 0.95, dropped nodules of new scans).

Nested: each fold's level is chosen on the other folds' whole CTs (and its own model's validation crops) and scored
on its own held-out CTs; the shipped level is chosen on all folds (and the shipped model's validation crops).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from LungTumorSegLib.segmentation.postprocess import CONNECTIVITY_26

from .operating_points import PEAK_GRID, preset_scores


@dataclass(frozen=True)
class PresetRule:
    """How a preset's confidence level is chosen, and which candidates it lists."""

    name: str
    keep_share: float | None  # the highest level keeping this share of the validation nodules found at threshold
    max_fp_per_ct: float | None  # else: the most sensitive level with at most this many false positives per CT
    candidate_min_peak: float
    max_candidates: int
    description: str


RULES = (
    PresetRule(
        "high",
        0.99,
        None,
        0.1,
        10,
        "sensitivity first: reports every lesion the outline threshold finds unless the confidence filter costs "
        "less than 1 % of the validation nodules; lists up to 10 weaker regions (probability >= 0.1) as candidates",
    ),
    PresetRule(
        "balanced",
        None,
        3.0,
        0.3,
        5,
        "at most 3 false positives per CT on the cross-validated whole CTs (the most lesions within that); lists "
        "up to 5 regions with probability >= 0.3 as candidates",
    ),
    PresetRule(
        "specific",
        None,
        1.0,
        1.0,
        0,
        "at most 1 false positive per CT on the cross-validated whole CTs (the most lesions within that); no "
        "candidates",
    ),
)


def crop_nodule_peak(probability: np.ndarray, mask: np.ndarray, threshold: float) -> dict[str, float]:
    """A nodule crop's highest probability in the nodule and the highest peak of the regions drawn at ``threshold``
    that touch it (0 when none: missed at any confidence level)."""
    drawn, _ = ndimage.label(probability >= threshold, structure=CONNECTIVITY_26)
    touching = np.unique(drawn[mask & (drawn > 0)])
    peak = float(probability[np.isin(drawn, touching)].max()) if len(touching) else 0.0
    return {"max_probability": round(float(probability[mask].max()), 4), "peak_at_threshold": round(peak, 4)}


def crop_peaks(
    bundle: Any, networks: list, cases: Sequence[dict[str, Any]], threshold: float, log: Any = print
) -> list[dict[str, Any]]:
    """``crop_nodule_peak`` of every nodule crop (``{"case", "image", "label"}``) through the full pipeline (TTA and
    overlap as the bundle says; no confidence filter is involved, only the probability map)."""
    from LungTumorSegLib.io.image_io import load_volume
    from LungTumorSegLib.segmentation.options import SegmentOptions
    from LungTumorSegLib.segmentation.pipeline import segment

    rows = []
    for index, case in enumerate(cases):
        ct = load_volume(case["image"])
        mask = load_volume(case["label"], dtype=None).array > 0
        result = segment(ct, bundle, SegmentOptions(device="cpu"), networks=networks)
        rows.append({"case": case["case"], **crop_nodule_peak(result.probability.array, mask, threshold)})
        if (index + 1) % 25 == 0:
            log(f"  {index + 1}/{len(cases)} crops")
    return rows


def keep_shares(peaks: Sequence[dict[str, float]], threshold: float, levels: Sequence[float] = PEAK_GRID) -> dict:
    """Share of the nodules found at ``threshold`` that each confidence level keeps; and the share found at all."""
    found = [p["peak_at_threshold"] for p in peaks if p["peak_at_threshold"] >= threshold]
    shares = {f"{level:g}": (sum(v >= level for v in found) / len(found) if found else 1.0) for level in levels}
    return {"nodules": len(peaks), "found_at_threshold": len(found), "kept_share": shares}


def choose_level(sweeps: dict[str, dict[str, Any]], peaks: Sequence[dict[str, float]], rule: PresetRule) -> float:
    """The confidence level ``rule`` picks on these whole-CT sweeps and validation-crop peaks."""
    scores = {level: preset_scores(sweeps, level, rule.candidate_min_peak, 0)["summary"] for level in PEAK_GRID}
    if rule.keep_share is not None:
        threshold_found = scores[PEAK_GRID[0]]["found"]
        shares = keep_shares(peaks, PEAK_GRID[0])["kept_share"]
        fine = [
            level
            for level in PEAK_GRID
            if shares[f"{level:g}"] >= rule.keep_share and scores[level]["found"] == threshold_found
        ]
        return max(fine)
    within = [level for level in PEAK_GRID if scores[level]["false_positives_per_ct"] <= rule.max_fp_per_ct]
    if not within:  # the budget cannot be met: the fewest false positives, then the most lesions
        return min(PEAK_GRID, key=lambda level: (scores[level]["false_positives_per_ct"], -scores[level]["found"]))
    return min(within, key=lambda level: (-scores[level]["found"], level))


def choose_presets(
    sweeps: dict[str, dict[str, Any]],
    folds: dict[str, str],
    fold_peaks: dict[str, Sequence[dict[str, float]]],
    shipped_peaks: Sequence[dict[str, float]],
    rules: Sequence[PresetRule] = RULES,
) -> dict[str, Any]:
    """Each preset's level chosen per fold (on the other folds) and scored on the held-out cases, and the shipped
    level chosen on all folds.

    Args:
        sweeps: ``{case: operating_points.case_sweep(...)}`` of the cross-validated whole CTs.
        folds: ``{case: fold name}``.
        fold_peaks: ``{fold name: validation-crop peaks of that fold's model}``.
        shipped_peaks: validation-crop peaks of the shipped model.
    """
    presets = {}
    for rule in rules:
        per_fold = {}
        for fold in sorted(set(folds.values())):
            others = {case: sweep for case, sweep in sweeps.items() if folds[case] != fold}
            per_fold[fold] = choose_level(others, fold_peaks[fold], rule)
        shipped = choose_level(sweeps, shipped_peaks, rule)
        nested = _nested_summary(sweeps, folds, per_fold, rule)
        presets[rule.name] = {
            "rule": rule.description,
            "min_peak_probability": shipped,
            "candidate_min_peak": rule.candidate_min_peak,
            "max_candidates": rule.max_candidates,
            "per_fold": per_fold,
            "cross_validated": nested,
            "at_shipped_level": preset_scores(sweeps, shipped, rule.candidate_min_peak, rule.max_candidates),
            "validation_nodules_kept": keep_shares(shipped_peaks, PEAK_GRID[0])["kept_share"][f"{shipped:g}"],
        }
    return presets


def _nested_summary(
    sweeps: dict[str, dict[str, Any]], folds: dict[str, str], per_fold: dict[str, float], rule: PresetRule
) -> dict[str, Any]:
    """The held-out cases, each at its fold's own level, pooled (``preset_scores`` on a per-case level)."""
    fixed = {case: _at_level(sweep, per_fold[folds[case]]) for case, sweep in sweeps.items()}
    return preset_scores(fixed, PEAK_GRID[0], rule.candidate_min_peak, rule.max_candidates)


def _at_level(sweep: dict[str, Any], level: float) -> dict[str, Any]:
    """A sweep whose lowest level holds the scores of ``level`` (so one call scores cases at their own levels)."""
    return {**sweep, "levels": {f"{PEAK_GRID[0]:g}": sweep["levels"][f"{level:g}"]}}


def manifest_presets(presets: dict[str, Any]) -> dict[str, Any]:
    """``output.sensitivity`` for the manifest: each preset's levels, rule and nested cross-validated point."""
    section: dict[str, Any] = {"default": "high", "presets": {}}
    for name, preset in presets.items():
        summary = preset["cross_validated"]["summary"]
        section["presets"][name] = {
            "min_peak_probability": preset["min_peak_probability"],
            "candidate_min_peak": preset["candidate_min_peak"],
            "max_candidates": preset["max_candidates"],
            "description": preset["rule"],
            "operating_point": {
                "measured_on": "6 whole CTs, nested cross-validation (each fold's level chosen on the other folds)",
                "lesions_found": f"{summary['found']}/{summary['lesions']}",
                "lesions_found_with_candidates": f"{summary['found_with_candidates']}/{summary['lesions']}",
                "sensitivity": round(summary["sensitivity"], 4),
                "sensitivity_ci95": summary["ci95"]["sensitivity"],
                "false_positives_per_ct": round(summary["false_positives_per_ct"], 3),
                "false_positives_per_ct_ci95": summary["ci95"]["false_positives_per_ct"],
                "false_candidates_per_ct": round(summary["false_candidates_per_ct"], 3),
                "mean_lesion_dice_over_cases": round(summary["mean_lesion_dice_over_cases"], 4),
                "validation_nodules_kept": round(preset["validation_nodules_kept"], 4),
            },
        }
    return section
