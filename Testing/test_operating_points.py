"""Operating points: per-case sweeps, why a lesion is lost, preset scores with bootstrap intervals, and the nested
choice of the presets."""

from __future__ import annotations

import numpy as np
import pytest

from LungTumorSegLib.segmentation.postprocess import PostprocessSettings
from LungTumorSegTrainingLib.evaluation.operating_points import (
    PEAK_GRID,
    bootstrap_interval,
    case_sweep,
    loss_reason,
    preset_scores,
)
from LungTumorSegTrainingLib.evaluation.preset_choice import (
    PresetRule,
    choose_level,
    choose_presets,
    crop_nodule_peak,
    keep_shares,
)
from LungTumorSegTrainingLib.evaluation.whole_ct_cases import Reference

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # 0.002 ml voxels
SHAPE = (60, 60, 30)
POST = PostprocessSettings(threshold=0.5, min_lesion_ml=0.05, restrict_to_lung=True)


def _box(*slices):
    mask = np.zeros(SHAPE, bool)
    mask[slices] = True
    return mask


def _case():
    """Three reference lesions (sure 0.99, middling 0.7, faint 0.3), a confident false positive (0.96, 1 ml), a
    weak one (0.2) and a region on the ignore area; the lung field covers everything."""
    sure = _box(slice(5, 15), slice(5, 15), slice(5, 10))
    middling = _box(slice(40, 50), slice(40, 50), slice(5, 10))
    faint = _box(slice(5, 15), slice(40, 50), slice(20, 25))
    ignore = _box(slice(45, 55), slice(5, 15), slice(20, 25))
    reference = Reference(sure | middling | faint, ignore, np.zeros(SHAPE, bool), AFFINE)
    probability = np.zeros(SHAPE, np.float32)
    probability[sure], probability[middling], probability[faint] = 0.99, 0.7, 0.3
    probability[_box(slice(25, 35), slice(20, 30), slice(20, 25))] = 0.96  # 500 voxels, 1 ml: false positive
    probability[_box(slice(25, 35), slice(45, 55), slice(5, 10))] = 0.2  # a weak false region
    probability[ignore] = 0.8
    ct = np.where(probability > 0, 20.0, -800.0).astype(np.float32)
    return probability, np.ones(SHAPE, bool), reference, ct


@pytest.fixture(scope="module")
def sweep():
    probability, lung, reference, ct = _case()
    return case_sweep(probability, lung, reference, POST, ct)


def test_a_sweep_scores_every_level_and_ranks_the_candidates(sweep):
    assert set(sweep["levels"]) == {f"{level:g}" for level in PEAK_GRID}
    assert sweep["levels"]["0.5"]["detected"] == [True, False, True]  # lesions numbered as score_label numbers them
    assert sweep["levels"]["0.95"]["detected"] == [True, False, False]
    assert sweep["levels"]["0.95"]["false_positives"] == 1 and sweep["levels"]["0.99"]["false_positives"] == 0
    listed = sweep["levels"]["0.95"]["candidates"]["0.1"]
    assert [c["peak"] for c in listed] == pytest.approx([0.8, 0.7, 0.3, 0.2])  # strongest first
    assert [c["hits"] for c in listed] == [[], [3], [2], []] and [c["excused"] for c in listed] == [
        True,
        False,
        False,
        False,
    ]
    facts = {f["lesion"]: f for f in sweep["lesions"]}
    assert facts[2]["max_probability"] == pytest.approx(0.3) and facts[2]["regions_at_threshold"] == []
    assert facts[3]["regions_at_threshold"] == [{"peak": pytest.approx(0.7), "volume_ml": 1.0, "touches_lung": True}]
    assert facts[1]["mean_hu"] == 20.0 and facts[1]["in_lung_field"] is True


def test_the_first_filter_that_drops_a_lesion_is_named(sweep):
    facts = {f["lesion"]: f for f in sweep["lesions"]}
    assert loss_reason(facts[1], POST, 0.95) is None
    assert loss_reason(facts[2], POST, 0.5).startswith("below the outline threshold (highest probability 0.300")
    assert loss_reason(facts[3], POST, 0.95) == "confidence filter (peak 0.700 < 0.95)"
    outside = {**facts[3], "regions_at_threshold": [{"peak": 0.7, "volume_ml": 1.0, "touches_lung": False}]}
    assert loss_reason(outside, POST, 0.5).startswith("lung-field filter")
    tiny = {**facts[3], "regions_at_threshold": [{"peak": 0.7, "volume_ml": 0.01, "touches_lung": True}]}
    assert loss_reason(tiny, POST, 0.5) == "size filter (< 0.05 ml)"


def test_a_preset_counts_lesions_found_with_its_candidates_and_the_false_candidates(sweep):
    high = preset_scores({"a": sweep}, 0.95, 0.1, 10)["cases"]["a"]
    assert high == {
        "lesions": 3,
        "found": 1,
        "found_with_candidates": 3,
        "missed": [],
        "false_positives": 1,
        "lesion_dice": pytest.approx(1 / 3),
        "candidates": 4,
        "false_candidates": 1,  # the 0.2 region; the one on the ignore area is excused
    }
    top_two = preset_scores({"a": sweep}, 0.95, 0.1, 2)["cases"]["a"]
    assert top_two["found_with_candidates"] == 2 and top_two["missed"] == [2]
    assert preset_scores({"a": sweep}, 0.95, 0.3, 0)["cases"]["a"]["candidates"] == 0


def test_bootstrap_intervals_over_cases_hold_the_estimate_and_are_seeded():
    found, lesions = np.array([1.0, 0, 2, 1, 1, 0]), np.array([1.0, 1, 3, 1, 1, 1])
    ratio = lambda f, n, axis=-1: f.sum(axis=axis) / n.sum(axis=axis)  # noqa: E731
    low, high = bootstrap_interval((found, lesions), ratio)
    assert low <= found.sum() / lesions.sum() <= high and 0 <= low < high <= 1
    assert bootstrap_interval((found, lesions), ratio) == [low, high]
    assert bootstrap_interval((np.array([2.0, 2.0, 2.0]),), np.mean) == [2.0, 2.0]
    assert bootstrap_interval((np.array([2.0]),), np.mean) is None


def _sweep_with(fps: dict[float, int], found: dict[float, bool]) -> dict:
    """A one-lesion case sweep with the given false positives and detection per level."""
    levels = {
        f"{level:g}": {
            "detected": [found[level]],
            "dice": [0.5],
            "lesion_dice": 0.5 if found[level] else 0.0,
            "false_positives": fps[level],
            "false_positive_ml": [],
            "candidates": {"0.1": [], "0.3": [], "1": []},
        }
        for level in PEAK_GRID
    }
    return {"lesions": [], "levels": levels}


def _falling(start: int, kept_up_to: float) -> dict:
    fps = {level: max(0, start - i) for i, level in enumerate(PEAK_GRID)}
    return _sweep_with(fps, {level: level <= kept_up_to for level in PEAK_GRID})


def test_the_rules_pick_their_levels():
    sweeps = {"a": _falling(6, 0.8), "b": _falling(4, 0.99)}  # FP/CT 5, 4, 3, 2, 1, 0.5, 0, 0 over the grid
    peaks = [{"peak_at_threshold": p} for p in [0.4, *[0.999] * 97, 0.97, 0.85]]
    high = PresetRule("high", 0.98, None, 0.1, 10, "")
    assert choose_level(sweeps, peaks, high) == 0.8  # 0.9 keeps 98/99 crops but loses a whole-CT lesion
    assert choose_level(sweeps, peaks, PresetRule("high", 0.995, None, 0.1, 10, "")) == 0.8  # 99/99 up to 0.8
    balanced = PresetRule("balanced", None, 3.0, 0.3, 5, "")
    assert choose_level(sweeps, peaks, balanced) == 0.7  # the first level within 3 FP/CT, both lesions kept
    specific = PresetRule("specific", None, 0.2, 1.0, 0, "")
    assert choose_level(sweeps, peaks, specific) == 0.98  # within 0.2 FP/CT: 0.98 and 0.99 keep one lesion each
    assert keep_shares(peaks, 0.5)["found_at_threshold"] == 99


def test_the_nested_choice_uses_the_other_folds_only():
    sweeps = {"a": _falling(6, 0.99), "b": _falling(2, 0.99), "c": _falling(2, 0.6)}
    folds = {"a": "fold0", "b": "fold1", "c": "fold2"}
    peaks = [{"peak_at_threshold": 0.999}] * 10
    rule = PresetRule("balanced", None, 1.0, 0.3, 5, "")
    presets = choose_presets(sweeps, folds, dict.fromkeys(folds.values(), peaks), peaks, [rule])["balanced"]
    # fold0 is chosen on b and c (1 FP/CT from 0.6, both lesions kept there), fold1 on a and c, fold2 on a and b
    assert presets["per_fold"] == {"fold0": 0.6, "fold1": 0.9, "fold2": 0.9}
    assert presets["cross_validated"]["cases"]["a"]["false_positives"] == 5  # a at 0.6: its own FPs are many
    assert presets["cross_validated"]["summary"]["found"] == 2  # c at 0.9 loses its lesion
    assert presets["min_peak_probability"] == 0.8  # on all three: 1 FP/CT from 0.8


def test_a_crop_nodule_peak_is_that_of_the_regions_touching_it():
    probability = np.zeros((20, 20, 10), np.float32)
    probability[5:12, 5:12, 3:6] = 0.6
    probability[11, 11, 5] = 0.97  # the region's peak lies just outside the nodule mask
    mask = np.zeros_like(probability, bool)
    mask[5:9, 5:9, 3:6] = True
    assert crop_nodule_peak(probability, mask, 0.5) == {"max_probability": 0.6, "peak_at_threshold": 0.97}
    assert crop_nodule_peak(probability * 0.5, mask, 0.5)["peak_at_threshold"] == 0.0


def test_the_chosen_presets_make_a_valid_manifest_section():
    from LungTumorSegLib.model.sensitivity_presets import bundle_presets, preset_problem
    from LungTumorSegTrainingLib.evaluation.preset_choice import RULES, manifest_presets

    sweeps = {"a": _falling(6, 0.99), "b": _falling(2, 0.99), "c": _falling(2, 0.6)}
    folds = {"a": "fold0", "b": "fold1", "c": "fold2"}
    peaks = [{"peak_at_threshold": p} for p in np.linspace(0.55, 1.0, 200)]
    presets = choose_presets(sweeps, folds, dict.fromkeys(folds.values(), peaks), peaks, RULES)
    section = manifest_presets(presets)
    assert preset_problem({"sensitivity": section}) is None and section["default"] == "high"
    read = bundle_presets({"sensitivity": section})
    assert list(read) == ["high", "balanced", "specific"] and read["specific"].max_candidates == 0
    assert read["high"].min_peak_probability <= read["balanced"].min_peak_probability
    point = read["high"].operating_point
    assert point["lesions_found"] == f"{presets['high']['cross_validated']['summary']['found']}/3"
    assert len(point["false_positives_per_ct_ci95"]) == 2
