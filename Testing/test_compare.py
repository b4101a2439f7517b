"""Follow-up comparison on real CT pairs with known answers (LIDC-IDRI-0003, three radiologist-marked nodules).

The baseline is the real CT (block-averaged to 1.64 x 1.64 x 2.5 mm) with its nodule label; the follow-up
is the same patient moved by 10 mm and 5 degrees, with the label changed in a known way. One rigid
registration (the product's default settings) serves every test: all the follow-ups are placed by the
same move.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, shared
from followup_pairs import (
    LIDC_0003,
    dilated_in_plane,
    downsampled_case,
    eroded_in_plane,
    moved,
    resampled_after_move,
    rigid_move,
    with_pasted_nodule,
)

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.followup.compare import compare, time_point
from LungTumorSegLib.followup.registration import register
from LungTumorSegLib.measurements.lesion_measurements import find_lesions, measure_lesions


@pytest.fixture(scope="module")
def baseline() -> tuple[Volume, Volume]:
    return downsampled_case(shared(LIDC_0003))


@pytest.fixture(scope="module")
def move(baseline) -> np.ndarray:
    return rigid_move(baseline[0])


@pytest.fixture(scope="module")
def rescanned(baseline, move) -> tuple[Volume, Volume]:
    """The patient moved and scanned again: CT and label resampled on the same grid."""
    ct, label = baseline
    return resampled_after_move(ct, move), resampled_after_move(label, move, label=True)


@pytest.fixture(scope="module")
def alignment(baseline, rescanned):
    return register(baseline[0], rescanned[0])


def _voxel_mm(volume: Volume) -> float:
    """One voxel in-plane (the larger in-plane spacing)."""
    return float(volume.spacing[:2].max())


def _pairs(comparison) -> list[tuple[list[int], list[int], str]]:
    return [(m.baseline_ids, m.followup_ids, m.match_type) for m in comparison.matches]


def test_rigid_registration_recovers_the_move_at_the_tumour(alignment, baseline, move):
    ct, label = baseline
    tumour = ct.voxel_to_ras(np.argwhere(label.array > 0))
    truth = tumour @ move[:3, :3].T + move[:3, 3]
    error = np.linalg.norm(alignment.to_followup(tumour) - truth, axis=1)
    assert error.max() <= 1.0, f"residual at the tumour {error.max():.2f} mm"
    assert np.linalg.norm(truth - tumour, axis=1).min() > 5.0  # each tumour voxel moved 5.6 to 14.5 mm
    residual = alignment.residual
    assert residual["after"]["mean_mm"] < 1.0 < residual["before"]["mean_mm"]


def test_rescanned_pair_is_stable_disease_with_every_lesion_matched(alignment, baseline, rescanned):
    base = time_point("baseline", *baseline)
    follow = time_point("follow-up", *rescanned)
    comparison = compare(base, follow, alignment=alignment)
    assert comparison.response.category == "SD"
    assert _pairs(comparison) == [([1], [1], "matched"), ([2], [2], "matched"), ([3], [3], "matched")]
    assert all(m.matched_by == "overlap" for m in comparison.matches)
    assert [t.baseline_id for t in comparison.response.targets] == [1, 2]  # at most 2 per organ (the lungs)
    voxel = _voxel_mm(baseline[0])
    for lesion_id in (1, 2, 3):
        before, after = base.lesion(lesion_id), follow.lesion(lesion_id)
        assert abs(after.long_axis_mm - before.long_axis_mm) <= voxel
        assert abs(after.short_axis_mm - before.short_axis_mm) <= voxel
    assert abs(comparison.response.change_percent) < 5.0


def _changed_followup(baseline, move, changed_label: Volume, ct: Volume | None = None):
    """The follow-up: (changed) CT and label, both moved exactly by ``move``."""
    return time_point("follow-up", moved(ct or baseline[0], move), moved(changed_label, move))


def _expected_pairs(base_label: Volume, changed: Volume) -> dict[int, list[int]]:
    """Baseline lesion id -> the changed label's lesions it overlaps, on the shared grid (no registration)."""
    base, after = find_lesions(base_label.array > 0), find_lesions(changed.array > 0)
    pairs: dict[int, list[int]] = {}
    for b, component in enumerate(base, start=1):
        inside = np.zeros(base_label.shape, bool)
        inside[component.slices] = component.mask
        pairs[b] = [f for f, other in enumerate(after, start=1) if inside[other.slices][other.mask].any()]
    return pairs


@pytest.mark.parametrize(
    ("change", "category"),
    [("eroded 3 mm", "SD"), ("eroded 4 mm", "PR"), ("dilated 4 mm", "PD")],
)
def test_shrinking_and_growing_tumours_get_their_category(alignment, baseline, move, change, category):
    ct, label = baseline
    kind, millimetres = change.split()[0], float(change.split()[1])
    changed = (eroded_in_plane if kind == "eroded" else dilated_in_plane)(label, millimetres)
    base = time_point("baseline", ct, label)
    comparison = compare(base, _changed_followup(baseline, move, changed), alignment=alignment)
    response = comparison.response

    expected = _expected_pairs(label, changed)
    assert {tuple(m.baseline_ids): m.followup_ids for m in comparison.matches} == {(b,): f for b, f in expected.items()}
    reference = measure_lesions(changed)  # the changed label measured on its own, before the move
    voxel = _voxel_mm(ct)
    for target in response.targets:
        known = sum(reference.lesions[i - 1].long_axis_mm for i in expected[target.baseline_id])
        assert target.followup_mm == pytest.approx(known, abs=voxel)
    known_sum = sum(reference.lesions[i - 1].long_axis_mm for t in response.targets for i in expected[t.baseline_id])
    known_change = 100 * (known_sum - base.case.sum_longest_diameters_recist_strict_mm)
    known_change /= base.case.sum_longest_diameters_recist_strict_mm
    assert response.change_percent == pytest.approx(known_change, abs=0.01)
    assert response.category == category, response.rule
    thresholds = {"SD": (-30, 20), "PR": (-100, -30), "PD": (20, 1000)}[category]
    assert thresholds[0] <= known_change <= thresholds[1]  # the pair is what the test claims


def test_a_new_lesion_is_progression(alignment, baseline, move):
    ct, label = baseline
    crops = SHARED_DATA / "lidc-nodule-crops"
    if not crops.exists():
        pytest.skip("LIDC nodule crops not available")
    new_ct, new_label, centre = with_pasted_nodule(ct, label, crops, "LIDC-IDRI-0024_R_2.nii.gz")
    follow = _changed_followup(baseline, move, new_label, new_ct)
    comparison = compare(time_point("baseline", ct, label), follow, alignment=alignment)
    response = comparison.response
    new = [m for m in comparison.matches if m.match_type == "new"]
    assert len(new) == 1 and response.new_lesion_ids == new[0].followup_ids
    pasted = follow.lesion(new[0].followup_ids[0])
    assert np.linalg.norm(np.array(pasted.centroid_ras) - move[:3, :3] @ centre - move[:3, 3]) < 3.0
    assert response.category == "PD" and response.rule.startswith("new lesion")
    assert abs(response.change_percent) < 1e-6  # the targets did not change: the new lesion decided
    assert sorted(m.match_type for m in comparison.matches) == ["matched"] * 3 + ["new"]


def test_all_lesions_gone_is_complete_response(alignment, baseline, move):
    ct, label = baseline
    follow = _changed_followup(baseline, move, label.with_array(np.zeros_like(label.array)))
    comparison = compare(time_point("baseline", ct, label), follow, alignment=alignment)
    assert comparison.response.category == "CR"
    assert _pairs(comparison) == [([1], [], "disappeared"), ([2], [], "disappeared"), ([3], [], "disappeared")]
    assert comparison.response.followup_sum_mm == 0.0
    assert comparison.response.volume_change_percent == -100.0
