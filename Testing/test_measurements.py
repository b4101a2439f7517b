"""Tests of LungTumorSegLib.measurements.lesion_measurements on analytic shapes and on the real 4D-Lung GTV."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.measurements.lesion_measurements import axial_voxel_axis, find_lesions, measure_lesions

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GTV_DIR = DATA / "chest-ct" / "4dlung-113_HM10395-phase40"
SPACING = (0.7, 0.7, 2.5)  # R, A, S spacing of the synthetic grids
IN_PLANE_DIAGONAL = float(np.hypot(0.7, 0.7))
VOXEL_DIAGONAL = float(np.linalg.norm(SPACING))

# Voxel-axis layouts of the same physical lattice: each column of the direction matrix is one voxel axis.
LAYOUTS = {
    "RAS": np.diag(SPACING),
    "LPS": np.diag([-SPACING[0], -SPACING[1], SPACING[2]]),
    "S-first": np.array([[0, SPACING[0], 0], [0, 0, SPACING[1]], [SPACING[2], 0, 0]], dtype=float),
    "S-first-flipped": np.array([[0, 0, -SPACING[0]], [0, -SPACING[1], 0], [-SPACING[2], 0, 0]], dtype=float),
}


def make_ellipsoid(
    layout: str, semi_axes: tuple[float, float, float], angle_deg: float = 30.0, centre_s: float = 0.0
) -> Volume:
    """Ellipsoid centred at RAS (0, 0, ``centre_s``), rotated about S by ``angle_deg``; RAS 0 is a voxel centre."""
    direction = LAYOUTS[layout]
    spacing = np.linalg.norm(direction, axis=0)
    shape = tuple(int(2 * np.ceil(max(semi_axes) / s) + 5) for s in spacing)
    centre_index = (np.array(shape) - 1) / 2
    affine = np.eye(4)
    affine[:3, :3] = direction
    affine[:3, 3] = -direction @ centre_index
    ras = np.indices(shape).reshape(3, -1).T @ direction.T + affine[:3, 3]
    t = np.deg2rad(angle_deg)
    rotation = np.array([[np.cos(t), np.sin(t), 0], [-np.sin(t), np.cos(t), 0], [0, 0, 1]])
    local = (ras - np.array([0.0, 0.0, centre_s])) @ rotation.T
    inside = ((local / np.asarray(semi_axes)) ** 2).sum(axis=1) <= 1.0
    return Volume(inside.reshape(shape).astype(np.uint8), affine)


def assert_axes_consistent(volume: Volume, lesion) -> None:
    """Long/short axes on one axial slice, perpendicular, short <= long."""
    (a1, a2), (b1, b2) = np.array(lesion.long_axis_ras), np.array(lesion.short_axis_ras)
    assert a1[2] == pytest.approx(a2[2], abs=1e-6)
    assert b1[2] == pytest.approx(a1[2], abs=1e-6) and b2[2] == pytest.approx(a1[2], abs=1e-6)
    assert np.linalg.norm(a2 - a1) == pytest.approx(lesion.long_axis_mm, abs=1e-6)
    assert np.linalg.norm(b2 - b1) == pytest.approx(lesion.short_axis_mm, abs=1e-6)
    cosine = abs(np.dot(a2 - a1, b2 - b1)) / (lesion.long_axis_mm * lesion.short_axis_mm)
    assert cosine < 1e-6
    assert lesion.short_axis_mm <= lesion.long_axis_mm + 1e-9
    assert lesion.max_diameter_3d_mm >= lesion.long_axis_mm - 1e-9


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(
    ("semi_axes", "long_mm", "short_mm", "max_3d_mm"),
    [((20.0, 10.0, 12.0), 40.0, 20.0, 40.0), ((12.0, 8.0, 25.0), 24.0, 16.0, 50.0), ((12.0, 12.0, 12.0), 24, 24, 24)],
    ids=["flat-ellipsoid", "tall-ellipsoid", "sphere"],
)
def test_analytic_shapes(layout, semi_axes, long_mm, short_mm, max_3d_mm):
    volume = make_ellipsoid(layout, semi_axes)
    case = measure_lesions(volume)
    assert case.lesion_count == 1
    lesion = case.lesions[0]
    assert lesion.volume_ml == pytest.approx(4 / 3 * np.pi * np.prod(semi_axes) / 1000, rel=0.02)
    # Corner convention: the hull of the voxel boxes is at most half a diagonal outside the true surface.
    assert long_mm - 0.25 <= lesion.long_axis_mm <= long_mm + IN_PLANE_DIAGONAL
    assert short_mm - IN_PLANE_DIAGONAL <= lesion.short_axis_mm <= short_mm + IN_PLANE_DIAGONAL
    assert max_3d_mm - VOXEL_DIAGONAL <= lesion.max_diameter_3d_mm <= max_3d_mm + VOXEL_DIAGONAL
    assert np.allclose(lesion.centroid_ras, 0.0, atol=1e-6)
    assert case.slice_thickness_mm == pytest.approx(2.5)
    assert lesion.measurable and lesion.not_measurable_reason == ""
    assert_axes_consistent(volume, lesion)


@pytest.mark.parametrize("semi_axes", [(20.0, 10.0, 12.0), (12.0, 8.0, 25.0), (12.0, 12.0, 12.0), (9.0, 6.0, 4.0)])
def test_permuted_and_flipped_axes_give_identical_measurements(semi_axes):
    """The same physical lattice in four voxel layouts: only the axial plane choice matters, not array order."""
    results = [measure_lesions(make_ellipsoid(layout, semi_axes)).lesions[0] for layout in LAYOUTS]
    for other in results[1:]:
        for name in ("voxel_count", "long_axis_mm", "short_axis_mm", "max_diameter_3d_mm"):
            assert getattr(other, name) == pytest.approx(getattr(results[0], name), abs=1e-9), name
        assert other.long_axis_ras[0][2] == pytest.approx(results[0].long_axis_ras[0][2], abs=1e-9)


def test_tied_slices_resolve_to_the_same_physical_slice_in_every_layout():
    """Centred between two slices, the two central slices tie: the inferior one (S = 0) wins in every layout."""
    results = [
        measure_lesions(make_ellipsoid(layout, (15.0, 7.0, 10.0), centre_s=1.25)).lesions[0] for layout in LAYOUTS
    ]
    for lesion in results:
        assert lesion.long_axis_ras[0][2] == pytest.approx(0.0, abs=1e-9)
        assert lesion.long_axis_mm == pytest.approx(results[0].long_axis_mm, abs=1e-9)


def test_axial_axis_is_found_from_the_affine_not_the_array_order():
    assert axial_voxel_axis(np.diag([0.7, 0.7, 2.5, 1])) == 2
    s_first = np.eye(4)
    s_first[:3, :3] = LAYOUTS["S-first-flipped"]
    assert axial_voxel_axis(s_first) == 0
    case = measure_lesions(make_ellipsoid("S-first", (12.0, 8.0, 25.0)))
    assert case.axial_voxel_axis == 0 and case.slice_thickness_mm == pytest.approx(2.5)
    # Measuring in a plane containing S would have found ~50 mm; the axial long axis is ~24 mm.
    assert case.lesions[0].long_axis_mm < 26


def test_oblique_grid_is_measured_in_its_closest_axial_plane():
    tilt = np.deg2rad(8.0)
    rotation = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
    volume = make_ellipsoid("RAS", (20.0, 10.0, 12.0), angle_deg=30.0)
    volume = Volume(volume.array, np.block([[rotation @ volume.affine[:3, :3], volume.affine[:3, 3:]], [0, 0, 0, 1]]))
    lesion = measure_lesions(volume).lesions[0]
    # The voxels are the same, only the patient frame is tilted: in-plane distances are unchanged.
    assert 40.0 - 0.25 <= lesion.long_axis_mm <= 40.0 + IN_PLANE_DIAGONAL
    assert lesion.volume_ml == pytest.approx(4 / 3 * np.pi * 20 * 10 * 12 / 1000, rel=0.02)


def test_single_voxel_has_the_size_of_its_voxel():
    array = np.zeros((5, 5, 5), np.uint8)
    array[2, 2, 2] = 1
    lesion = measure_lesions(Volume(array, np.diag([*SPACING, 1.0]))).lesions[0]
    assert lesion.long_axis_mm == pytest.approx(IN_PLANE_DIAGONAL)
    assert lesion.short_axis_mm == pytest.approx(IN_PLANE_DIAGONAL)
    assert lesion.max_diameter_3d_mm == pytest.approx(VOXEL_DIAGONAL)
    assert not lesion.measurable and "10 mm" in lesion.not_measurable_reason


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.7, 1.3)])
def test_rectangle_axes_are_exact(spacing):
    """An a x b rectangle: long axis = its diagonal d, short axis = the longest chord perpendicular to it, b*d/a."""
    array = np.zeros((20, 12, 3), np.uint8)
    array[3:14, 4:9, 1] = 1  # 11 x 5 voxels, measured across voxel corners
    a, b = 11 * spacing[0], 5 * spacing[1]
    volume = Volume(array, np.diag([spacing[0], spacing[1], 2.0, 1.0]))
    lesion = measure_lesions(volume).lesions[0]
    diagonal = np.hypot(a, b)
    assert lesion.long_axis_mm == pytest.approx(diagonal, abs=1e-9)
    assert lesion.short_axis_mm == pytest.approx(b * diagonal / a, abs=1e-9)
    assert lesion.max_diameter_3d_mm == pytest.approx(np.sqrt(a**2 + b**2 + 2.0**2), abs=1e-9)
    assert_axes_consistent(volume, lesion)


def test_components_26_connectivity_and_order():
    array = np.zeros((20, 20, 12), np.uint8)
    array[2:5, 2:5, 2:5] = 1
    array[5:8, 5:8, 5:8] = 1  # touches the first cube at one corner only: same lesion (26-connectivity)
    array[12:18, 12:18, 2:10] = 1  # separate and larger: lesion 1
    case = measure_lesions(Volume(array, np.eye(4)))
    assert case.lesion_count == 2
    assert [lesion.voxel_count for lesion in case.lesions] == [6 * 6 * 8, 2 * 27]
    assert case.lesions[0].bbox_min_ijk == (12, 12, 2) and case.lesions[0].bbox_max_ijk == (17, 17, 9)
    assert case.total_volume_ml == pytest.approx((288 + 54) / 1000)


def test_two_separate_ellipsoids_are_two_lesions():
    big = make_ellipsoid("RAS", (20.0, 10.0, 12.0))
    array = np.concatenate([big.array, np.zeros((20,) + big.shape[1:], np.uint8)], axis=0)
    array[-15:-5, 20:30, 5:9] = 1  # a box beyond the ellipsoid's R extent
    case = measure_lesions(Volume(array, big.affine))
    assert case.lesion_count == 2
    assert case.lesions[0].voxel_count == int(big.array.sum())
    assert case.lesions[1].voxel_count == 10 * 10 * 4


def test_block_labelling_equals_full_labelling():
    rng = np.random.default_rng(7)
    mask = ndimage.binary_opening(rng.random((61, 47, 33)) > 0.72)
    mask |= rng.random(mask.shape) > 0.995  # isolated voxels, some touching only at corners
    expected_labels, expected_count = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    components = find_lesions(mask)
    assert len(components) == expected_count
    counts = np.bincount(expected_labels.ravel())[1:]
    assert [c.voxel_count for c in components] == sorted(counts.tolist(), reverse=True)
    rebuilt = np.zeros(mask.shape, np.int32)
    for number, component in enumerate(components, start=1):
        assert not rebuilt[component.slices][component.mask].any()
        rebuilt[component.slices][component.mask] = number
        labels_inside = np.unique(expected_labels[component.slices][component.mask])
        assert len(labels_inside) == 1  # each component is exactly one scipy component
    assert np.array_equal(rebuilt > 0, mask)


def test_measurability_and_target_lesions():
    # Seven spheres (1 mm voxels) with radii 6..12 mm: all measurable, targets are the 5 (strict: 2) longest.
    radii = [6, 9, 12, 7, 11, 8, 10]
    shape = (30 * len(radii) + 4, 30, 30)
    grid = np.indices(shape)
    array = np.zeros(shape, np.uint8)
    for n, radius in enumerate(radii):
        centre = np.array([17 + 30 * n, 15, 15])
        array |= (((grid - centre[:, None, None, None]) ** 2).sum(axis=0) <= radius**2).astype(np.uint8)
    ct = Volume(np.full(shape, 35.0, np.float32), np.eye(4))
    entropy = Volume((0.25 * array).astype(np.float32), np.eye(4))
    case = measure_lesions(Volume(array, np.eye(4)), ct=ct, entropy=entropy)
    assert case.lesion_count == 7 and case.measurable_count == 7
    longest = sorted(case.lesions, key=lambda lesion: -lesion.long_axis_mm)
    assert case.target_lesion_ids == [lesion.lesion_id for lesion in longest[:5]]
    assert case.sum_longest_diameters_mm == pytest.approx(sum(lesion.long_axis_mm for lesion in longest[:5]))
    assert case.target_lesion_ids_recist_strict == case.target_lesion_ids[:2]
    assert case.sum_longest_diameters_recist_strict_mm == pytest.approx(
        longest[0].long_axis_mm + longest[1].long_axis_mm
    )
    lesion = case.lesions[0]
    assert lesion.mean_hu == pytest.approx(35.0) and lesion.max_entropy == pytest.approx(0.25)
    json.dumps(case.to_dict())  # JSON-ready


def test_not_measurable_reasons():
    small = make_ellipsoid("RAS", (3.0, 3.0, 6.0))
    lesion = measure_lesions(small).lesions[0]
    assert not lesion.measurable and "< 10 mm" in lesion.not_measurable_reason
    # 6 mm slices: an 11 mm lesion is >= 10 mm but < 2 x 6 mm.
    array = np.zeros((30, 30, 5), np.uint8)
    array[5:16, 5:8, 2] = 1
    case = measure_lesions(Volume(array, np.diag([1.0, 1.0, 6.0, 1.0])))
    lesion = case.lesions[0]
    assert lesion.long_axis_mm == pytest.approx(np.hypot(11, 3))
    assert not lesion.measurable and "2 x slice thickness" in lesion.not_measurable_reason
    assert case.target_lesion_ids == [] and case.sum_longest_diameters_mm == 0.0


def test_empty_label_and_grid_mismatch():
    empty = Volume(np.zeros((8, 8, 8), np.uint8), np.eye(4))
    case = measure_lesions(empty)
    assert case.lesion_count == 0 and case.total_volume_ml == 0.0 and case.to_dict()["lesions"] == []
    with pytest.raises(InputError, match="grid"):
        measure_lesions(empty, ct=Volume(np.zeros((8, 8, 9), np.float32), np.eye(4)))


@pytest.fixture(scope="module")
def gtv() -> Volume:
    path = GTV_DIR / "tumor.nii.gz"
    if not path.exists():
        pytest.skip(f"real data missing: {path}")
    return load_volume(path, dtype=None)


def test_real_gtv(gtv):
    case = measure_lesions(gtv)
    mask = gtv.array > 0.5
    assert case.lesion_count == ndimage.label(mask, structure=np.ones((3, 3, 3)))[1]
    lesion = case.lesions[0]
    assert case.total_volume_ml == pytest.approx(np.count_nonzero(mask) * gtv.voxel_volume_ml, rel=1e-12)
    assert case.total_volume_ml == pytest.approx(67.6, abs=0.1)
    assert case.slice_thickness_mm == pytest.approx(3.0)
    assert_axes_consistent(gtv, lesion)
    for end in lesion.long_axis_ras:
        ijk = gtv.ras_to_voxel(np.array(end))
        assert abs(ijk[2] - round(ijk[2])) < 1e-6  # on a slice
        corner = np.round(ijk[:2] - 0.5) + 0.5
        assert np.allclose(ijk[:2], corner, atol=1e-6)  # at a voxel corner
        i0, j0, k = int(np.floor(corner[0])), int(np.floor(corner[1])), int(round(ijk[2]))
        around = mask[i0 : i0 + 2, j0 : j0 + 2, k]
        assert around.any() and not around.all()  # on the lesion boundary
    k = lesion.axial_slice_index
    rows, cols = np.nonzero(mask[:, :, k])
    for end in lesion.short_axis_ras:
        ijk = gtv.ras_to_voxel(np.array(end))
        assert rows.min() - 0.5 - 1e-6 <= ijk[0] <= rows.max() + 0.5 + 1e-6
        assert cols.min() - 0.5 - 1e-6 <= ijk[1] <= cols.max() + 0.5 + 1e-6
    assert 60 < lesion.long_axis_mm < 110 and 10 < lesion.short_axis_mm < lesion.long_axis_mm
    assert lesion.measurable and case.target_lesion_ids == [1]
