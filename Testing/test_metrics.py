"""Tests of LungTumorSegLib.measurements.metrics: overlap, surface distances, detection, evaluate()."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.measurements.lesion_measurements import find_lesions
from LungTumorSegLib.measurements.metrics import (
    dice,
    evaluate,
    hausdorff_distance,
    lesion_detection,
    normalized_surface_dice,
    relative_volume_error,
    surface_distances,
)

SPACING = np.array([0.8, 0.7, 2.0])
SHAPE = (60, 60, 30)
GRID = np.indices(SHAPE).astype(float)
AFFINE = np.diag([*SPACING, 1.0])


def sphere(centre, radius_mm: float = 10.0) -> np.ndarray:
    offsets = (GRID - np.asarray(centre, dtype=float)[:, None, None, None]) * SPACING[:, None, None, None]
    return (offsets**2).sum(axis=0) <= radius_mm**2


CENTRE = (30, 30, 15)
EMPTY = np.zeros(SHAPE, bool)


def test_dice():
    a = sphere(CENTRE)
    assert dice(a, a) == 1.0
    assert dice(a, sphere((30, 30, 15), 5.0)) == pytest.approx(
        2 * sphere(CENTRE, 5.0).sum() / (a.sum() + sphere(CENTRE, 5.0).sum())
    )
    assert dice(sphere((12, 30, 15), 5.0), sphere((48, 30, 15), 5.0)) == 0.0
    assert dice(EMPTY, EMPTY) == 1.0
    assert dice(a, EMPTY) == 0.0 and dice(EMPTY, a) == 0.0


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("shift", [1, 2, 4])
def test_hd95_of_a_shifted_sphere(axis, shift):
    moved = list(CENTRE)
    moved[axis] += shift
    a, b = sphere(CENTRE), sphere(moved)
    expected = shift * SPACING[axis]
    assert abs(hausdorff_distance(a, b, SPACING) - expected) <= SPACING[axis] + 1e-9
    assert hausdorff_distance(a, b, SPACING, percentile=100) == pytest.approx(expected)
    assert hausdorff_distance(a, b, SPACING) == pytest.approx(hausdorff_distance(b, a, SPACING))


def test_surface_metrics_edge_cases():
    a = sphere(CENTRE)
    assert hausdorff_distance(a, a, SPACING) == 0.0
    assert normalized_surface_dice(a, a, SPACING) == 1.0
    assert math.isinf(hausdorff_distance(a, EMPTY, SPACING))
    assert normalized_surface_dice(a, EMPTY, SPACING) == 0.0 and normalized_surface_dice(EMPTY, a, SPACING) == 0.0
    assert hausdorff_distance(EMPTY, EMPTY, SPACING) == 0.0 and normalized_surface_dice(EMPTY, EMPTY, SPACING) == 1.0
    to_b, to_a = surface_distances(a, sphere((32, 30, 15)), SPACING)
    assert len(to_b) > 100 and len(to_a) > 100 and to_b.max() == pytest.approx(1.6)


def test_nsd_behaviour():
    a, b = sphere(CENTRE), sphere((32, 30, 15))  # shifted by 1.6 mm
    assert normalized_surface_dice(a, b, SPACING, tolerance_mm=1.6) == 1.0
    values = [normalized_surface_dice(a, b, SPACING, tolerance_mm=t) for t in (0.0, 0.3, 0.8, 1.2, 1.6)]
    assert values == sorted(values) and values[0] < 0.5 < values[-1]
    thick = sphere((30, 30, 17))  # shifted by 4 mm along the slice axis
    assert normalized_surface_dice(a, thick, SPACING, tolerance_mm=2.0) < 0.5


def test_distance_metrics_match_monai():
    torch = pytest.importorskip("torch")
    monai_metrics = pytest.importorskip("monai.metrics")
    a = sphere(CENTRE, 9.0)
    b = sphere((33, 28, 16), 8.0) | sphere((20, 30, 15), 3.0)
    ta, tb = (torch.from_numpy(m[None, None].astype(np.float32)) for m in (a, b))
    hd = monai_metrics.compute_hausdorff_distance(
        ta, tb, include_background=True, percentile=95, spacing=SPACING.tolist()
    )
    nsd = monai_metrics.compute_surface_dice(
        ta, tb, class_thresholds=[1.5], include_background=True, spacing=SPACING.tolist()
    )
    assert hausdorff_distance(a, b, SPACING) == pytest.approx(float(hd), abs=1e-4)
    assert normalized_surface_dice(a, b, SPACING, 1.5) == pytest.approx(float(nsd), abs=1e-6)


def test_relative_volume_error():
    a, doubled = EMPTY.copy(), EMPTY.copy()
    a[10:20, 10:20, 5:10] = True
    doubled[10:20, 10:30, 5:10] = True
    assert relative_volume_error(doubled, a) == pytest.approx(1.0)
    assert relative_volume_error(a, doubled) == pytest.approx(-0.5)
    assert relative_volume_error(EMPTY, EMPTY) == 0.0 and math.isinf(relative_volume_error(a, EMPTY))


def test_lesion_detection_counts():
    gt = sphere((15, 15, 15), 5.0) | sphere((45, 45, 15), 5.0)
    pred = sphere((16, 15, 15), 5.0) | sphere((45, 15, 15), 4.0)  # hits lesion A, misses B, one false positive
    result = lesion_detection(find_lesions(pred), find_lesions(gt))
    assert (result["tp"], result["fp"], result["fn"]) == (1, 1, 1)
    assert result["sensitivity"] == 0.5 and result["precision"] == 0.5
    assert len(result["matches"]) == 1 and result["matches"][0]["dice"] > 0.8

    bridge = gt | (np.abs(GRID[0] - GRID[1]) < 1.5) & (GRID[0] > 14) & (GRID[0] < 46) & (np.abs(GRID[2] - 15) < 2)
    merged = lesion_detection(find_lesions(bridge), find_lesions(gt))
    assert merged["n_pred_lesions"] == 1 and merged["tp"] == 2 and merged["fp"] == 0 and merged["precision"] == 1.0

    sliver = np.zeros(SHAPE, bool)
    sliver[15, 15, 15] = True  # one shared voxel: Dice far below 0.1
    missed = lesion_detection(find_lesions(sliver), find_lesions(gt))
    assert (missed["tp"], missed["fp"], missed["fn"]) == (0, 1, 2)
    assert lesion_detection(find_lesions(sliver), find_lesions(gt), threshold=0.0)["tp"] == 1
    none = lesion_detection([], [])
    assert none["sensitivity"] == 1.0 and none["precision"] == 1.0


def test_evaluate():
    gt = sphere((20, 20, 15), 8.0) | sphere((45, 45, 15), 6.0)
    result = evaluate(Volume(gt.astype(np.uint8), AFFINE), Volume(gt.astype(np.uint8), AFFINE))
    assert result["dice"] == 1.0 and result["hd95_mm"] == 0.0 and result["nsd"] == 1.0
    assert result["relative_volume_error"] == 0.0 and result["recist_relative_error"] == 0.0
    assert (result["lesion_tp"], result["lesion_fp"], result["lesion_fn"]) == (2, 0, 0)

    pred = sphere((21, 20, 15), 8.0)  # second lesion missed
    result = evaluate(Volume(pred.astype(np.uint8), AFFINE), Volume(gt.astype(np.uint8), AFFINE), tolerance_mm=1.0)
    assert 0.5 < result["dice"] < 0.95
    assert result["relative_volume_error"] < 0 and result["recist_relative_error"] < 0
    assert (result["lesion_tp"], result["lesion_fp"], result["lesion_fn"]) == (1, 0, 1)
    assert result["nsd_tolerance_mm"] == 1.0
    json.dumps(result, allow_nan=False)

    empty = evaluate(Volume(EMPTY.astype(np.uint8), AFFINE), Volume(gt.astype(np.uint8), AFFINE))
    assert empty["dice"] == 0.0 and empty["hd95_mm"] is None and empty["nsd"] == 0.0 and empty["lesion_fn"] == 2
    json.dumps(empty, allow_nan=False)


def test_evaluate_requires_the_same_grid():
    a = Volume(sphere(CENTRE).astype(np.uint8), AFFINE)
    shifted = AFFINE.copy()
    shifted[0, 3] = 5.0
    with pytest.raises(InputError, match="same grid"):
        evaluate(a, Volume(a.array, shifted))
    with pytest.raises(InputError, match="same grid"):
        evaluate(a, Volume(a.array[:-1], AFFINE))
