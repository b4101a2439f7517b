"""RECIST 1.1 response rules: thresholds, their order, target follow-up diameters and new lesions."""

from __future__ import annotations

import numpy as np
import pytest

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.followup.lesion_matching import LesionMatch
from LungTumorSegLib.followup.recist_response import assess_response, classify
from LungTumorSegLib.measurements.lesion_measurements import measure_lesions


@pytest.mark.parametrize(
    ("baseline", "followup", "category", "words"),
    [
        (100.0, 70.0, "PR", "-30.0 %"),  # exactly a 30 % decrease
        (100.0, 70.5, "SD", "neither"),
        (100.0, 120.0, "PD", "+20.0 %"),  # exactly +20 % (and +20 mm)
        (100.0, 119.9, "SD", "neither"),
        (20.0, 24.0, "SD", "neither"),  # +20 % but only +4 mm
        (20.0, 25.0, "PD", "+5.0 mm"),  # +25 % and exactly +5 mm
        (100.0, 0.0, "CR", "disappeared"),
    ],
)
def test_sum_thresholds(baseline, followup, category, words):
    result, rule = classify(baseline, followup, baseline, [], 2)
    assert result == category and words in rule


def test_a_new_lesion_decides_progression_before_anything_else():
    assert classify(100.0, 0.0, 100.0, [3], 2, {3: 8.0})[0] == "PD"
    category, rule = classify(100.0, 60.0, 100.0, [3], 2, {3: 8.0})
    assert category == "PD" and rule == "new lesion(s) at follow-up: 3 (8.0 mm)"


def test_no_target_at_baseline_is_not_evaluable_unless_a_new_lesion_appears():
    assert classify(0.0, 0.0, 0.0, [], 0)[0] == "NE"
    assert classify(0.0, 0.0, 0.0, [1], 0)[0] == "PD"


def test_progression_is_measured_from_the_nadir():
    # 35 % below the baseline (PR from the baseline), but 30 % and 15 mm above the nadir of 50 mm
    category, rule = classify(100.0, 65.0, 50.0, [], 2)
    assert category == "PD" and "nadir 50.0 mm" in rule


def _case(boxes: list[tuple[slice, slice]]):
    """Measurements of flat boxes on a 1 mm grid (two slices thick), largest first."""
    label = np.zeros((120, 120, 4), np.uint8)
    for box in boxes:
        label[box[0], box[1], 1:3] = 1
    return measure_lesions(Volume(label, np.eye(4)))


def test_targets_are_two_per_organ_and_follow_their_matches():
    baseline = _case([(slice(0, 40), slice(0, 10)), (slice(60, 90), slice(0, 10)), (slice(0, 20), slice(50, 60))])
    followup = _case([(slice(0, 30), slice(0, 10)), (slice(60, 75), slice(0, 10)), (slice(100, 103), slice(100, 102))])
    matches = [
        LesionMatch("matched", [1], [1], "overlap"),
        LesionMatch("matched", [2], [2], "overlap"),
        LesionMatch("disappeared", [3], []),
        LesionMatch("new", [], [3]),
    ]
    response = assess_response(baseline, followup, matches)
    assert [t.baseline_id for t in response.targets] == [1, 2]  # the third measurable lesion is not a target
    assert response.non_target_baseline_ids == [3]
    assert [t.followup_mm for t in response.targets] == [
        followup.lesions[0].long_axis_mm,
        followup.lesions[1].long_axis_mm,
    ]
    assert response.baseline_sum_mm == pytest.approx(sum(lesion.long_axis_mm for lesion in baseline.lesions[:2]))
    # the new lesion is 3.6 mm long: under 5 mm it is equivocal and does not decide PD
    assert response.equivocal_new_lesion_ids == [3] and response.new_lesion_ids == []
    assert response.category == "PR"
    assert assess_response(baseline, followup, matches, new_lesion_min_mm=0.0).category == "PD"
    volume = response.to_dict()["volume_not_recist"]
    assert "not part of RECIST" in volume["note"]
    assert volume["change_percent"] == pytest.approx(
        100 * (followup.total_volume_ml / baseline.total_volume_ml - 1), abs=0.01
    )


def test_a_disappeared_target_counts_zero():
    baseline = _case([(slice(0, 40), slice(0, 10)), (slice(60, 90), slice(0, 10))])
    followup = _case([(slice(0, 40), slice(0, 10))])
    matches = [LesionMatch("matched", [1], [1], "overlap"), LesionMatch("disappeared", [2], [])]
    response = assess_response(baseline, followup, matches)
    assert response.targets[1].followup_mm == 0.0 and response.targets[1].match_type == "disappeared"
    assert response.followup_sum_mm == pytest.approx(baseline.lesions[0].long_axis_mm)
    assert response.to_dict()["category"] == response.category
