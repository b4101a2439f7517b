"""Lesion matching across time points: overlap links, centroid fallback, and the five match types."""

from __future__ import annotations

import numpy as np
import pytest

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.followup.compare import CompareOptions, compare, lesion_ids, time_point
from LungTumorSegLib.followup.lesion_matching import match_lesions, overlap_counts
from LungTumorSegLib.measurements.lesion_measurements import find_lesions


def test_overlap_counts_equal_a_brute_force_count():
    rng = np.random.default_rng(0)
    baseline, followup = rng.integers(0, 4, (20, 20, 10)), rng.integers(0, 3, (20, 20, 10))
    counts = overlap_counts(baseline, followup, 3, 2)
    for i in range(3):
        for j in range(2):
            assert counts[i, j] == np.count_nonzero((baseline == i + 1) & (followup == j + 1))


def _match(overlap, volumes_b, volumes_f, centroids_b, centroids_f, **kwargs):
    return [
        (m.match_type, m.baseline_ids, m.followup_ids, m.matched_by)
        for m in match_lesions(
            np.array(overlap, float).reshape(len(volumes_b), len(volumes_f)),
            np.array(volumes_b, float),
            np.array(volumes_f, float),
            np.array(centroids_b, float).reshape(-1, 3),
            np.array(centroids_f, float).reshape(-1, 3),
            **kwargs,
        )
    ]


def test_overlapping_lesions_match_and_the_rest_are_new_or_disappeared():
    result = _match(
        [[0.9, 0.0], [0.0, 0.0]],
        [1.0, 0.5],
        [1.0, 0.2],
        [[0, 0, 0], [100, 0, 0]],
        [[1, 0, 0], [0, 80, 0]],
    )
    assert result == [
        ("matched", [1], [1], "overlap"),
        ("disappeared", [2], [], ""),
        ("new", [], [2], ""),
    ]


def test_lesions_without_overlap_match_by_centroid_within_the_tolerance():
    centroids_b, centroids_f = [[0, 0, 0], [50, 0, 0]], [[0, 6, 0], [50, 0, 14]]
    result = _match(np.zeros((2, 2)), [1.0, 1.0], [1.0, 1.0], centroids_b, centroids_f, max_distance_mm=10.0)
    assert result == [
        ("matched", [1], [1], "centroid distance"),
        ("disappeared", [2], [], ""),
        ("new", [], [2], ""),
    ]
    wider = _match(np.zeros((2, 2)), [1.0, 1.0], [1.0, 1.0], centroids_b, centroids_f, max_distance_mm=15.0)
    assert [kind for kind, *_ in wider] == ["matched", "matched"]


def test_one_to_one_centroid_pairing_takes_the_closest_overall():
    # baseline 1 is 4 mm from follow-up 2 and 5 mm from follow-up 1; baseline 2 is 1 mm from follow-up 1
    result = _match(
        np.zeros((2, 2)), [1.0, 1.0], [1.0, 1.0], [[0, 0, 0], [6, 0, 0]], [[5, 0, 0], [-4, 0, 0]], max_distance_mm=10
    )
    assert [(b, f) for _, b, f, _ in result] == [([1], [2]), ([2], [1])]


def test_a_small_overlap_is_no_link():
    # 0.05 ml of a 1 ml lesion falls on the other one: under 10 % of the smaller lesion
    result = _match([[0.05]], [1.0], [1.0], [[0, 0, 0]], [[30, 0, 0]], min_overlap_fraction=0.1)
    assert [kind for kind, *_ in result] == ["disappeared", "new"]
    assert [kind for kind, *_ in _match([[0.15]], [1.0], [1.0], [[0, 0, 0]], [[30, 0, 0]])] == ["matched"]


def test_split_and_merged_groups():
    split = _match([[0.4, 0.3]], [1.0], [0.4, 0.3], [[0, 0, 0]], [[-5, 0, 0], [5, 0, 0]])
    assert split == [("split", [1], [1, 2], "overlap")]
    merged = _match([[0.5], [0.4]], [0.5, 0.4], [1.2], [[-5, 0, 0], [5, 0, 0]], [[0, 0, 0]])
    assert merged == [("merged", [1, 2], [1], "overlap")]


def _volume(array: np.ndarray) -> Volume:
    return Volume(array.astype(np.uint8), np.diag([1.0, 1.0, 2.0, 1.0]))


def _compare(before: np.ndarray, after: np.ndarray):
    ct = np.full(before.shape, -800.0, np.float32)
    base = time_point("baseline", _volume(ct), _volume(before))
    follow = time_point("follow-up", _volume(ct), _volume(after))
    return compare(base, follow, CompareOptions(registration=None))


def test_compare_finds_a_split_target_and_sums_its_fragments():
    before = np.zeros((60, 40, 6), bool)
    before[10:50, 15:25, 2:4] = True  # a 40 x 10 mm bar
    after = before.copy()
    after[28:32] = False  # cut in two: 18 mm and 18 mm
    comparison = _compare(before, after)
    (match,) = comparison.matches
    assert match.match_type == "split" and match.followup_ids == [1, 2]
    (target,) = comparison.response.targets
    fragments = [comparison.followup.lesion(i).long_axis_mm for i in (1, 2)]
    assert target.followup_mm == pytest.approx(sum(fragments))
    assert comparison.match_rows()[0]["followup_long_axis_mm"] == pytest.approx(sum(fragments), abs=1e-3)


def test_compare_gives_a_merged_lesion_to_the_first_target():
    before = np.zeros((60, 40, 6), bool)
    before[5:25, 15:25, 2:4] = True  # 20 x 10 mm
    before[35:50, 15:25, 2:4] = True  # 15 x 10 mm
    after = before.copy()
    after[25:35, 18:22, 2:4] = True  # a bridge: one lesion
    comparison = _compare(before, after)
    (match,) = comparison.matches
    assert match.match_type == "merged" and match.baseline_ids == [1, 2]
    first, second = comparison.response.targets
    assert first.followup_mm == pytest.approx(comparison.followup.lesion(1).long_axis_mm)
    assert second.followup_mm == 0.0 and second.followup_ids == []


def test_lesion_ids_number_the_components_largest_first():
    mask = np.zeros((20, 20, 4), bool)
    mask[1:3, 1:3, 1] = True
    mask[10:16, 10:16, 1:3] = True
    ids = lesion_ids(mask.shape, find_lesions(mask))
    assert np.count_nonzero(ids == 1) == 72 and np.count_nonzero(ids == 2) == 4
