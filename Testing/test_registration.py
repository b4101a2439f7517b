"""Registration plumbing (RAS volumes <-> SimpleITK LPS images, transforms) and registration on a phantom."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import reoriented, synthetic_chest

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.followup.registration import (
    Alignment,
    RegistrationSettings,
    boundary_distances,
    from_sitk,
    register,
    sitk_affine,
    to_sitk,
)


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SLP"])
def test_sitk_images_keep_every_voxel_at_its_patient_position(codes):
    ct, _ = synthetic_chest(shape=(20, 16, 8))
    volume = reoriented(ct, codes)
    image = to_sitk(volume.array, volume.affine)
    assert np.array_equal(from_sitk(image), volume.array)
    np.testing.assert_allclose(sitk_affine(image), volume.affine, atol=1e-9)
    for ijk in ([0, 0, 0], [3, 5, 7], [19, 0, 2]):
        index = [min(i, n - 1) for i, n in zip(ijk, volume.shape)]
        lps = np.array(image.TransformIndexToPhysicalPoint(index))
        np.testing.assert_allclose(lps * [-1, -1, 1], volume.voxel_to_ras(np.array(index, float)), atol=1e-9)


def _alignment(rotation_deg: float, translation_lps: tuple[float, float, float]) -> Alignment:
    transform = sitk.Euler3DTransform()
    transform.SetCenter((10.0, -20.0, 5.0))
    transform.SetRotation(0.0, 0.0, np.deg2rad(rotation_deg))
    transform.SetTranslation(translation_lps)
    return Alignment(transform, "rigid")


def test_alignment_maps_points_and_gives_its_ras_matrix(tmp_path):
    alignment = _alignment(7.0, (3.0, -2.0, 4.0))
    points = np.array([[0.0, 0.0, 0.0], [-40.0, 25.0, 12.0]])
    matrix = alignment.linear_matrix_ras()
    np.testing.assert_allclose(alignment.to_followup(points), points @ matrix[:3, :3].T + matrix[:3, 3], atol=1e-9)
    np.testing.assert_allclose(alignment.to_followup(points[1]), alignment.to_followup(points)[1])
    # a pure LPS translation of (3, -2, 4) moves RAS points by (-3, 2, 4)
    shifted = _alignment(0.0, (3.0, -2.0, 4.0))
    np.testing.assert_allclose(shifted.to_followup(points) - points, [[-3.0, 2.0, 4.0]] * 2, atol=1e-9)
    back = sitk.ReadTransform(str(alignment.write(tmp_path / "t.h5")))
    assert np.allclose(back.TransformPoint((1.0, 2.0, 3.0)), alignment.transform.TransformPoint((1.0, 2.0, 3.0)))


def test_resampling_the_followup_label_by_whole_voxels_is_exact():
    label = np.zeros((20, 20, 10), np.uint8)
    label[5:9, 6:10, 3:5] = 7
    volume = Volume(label, np.diag([2.0, 2.0, 3.0, 1.0]))
    # follow-up point = baseline point + (4, 0, 3) mm in RAS, i.e. LPS translation (-4, 0, 3)
    aligned = _alignment(0.0, (-4.0, 0.0, 3.0)).resample_followup(volume, volume, nearest=True)
    expected = np.zeros_like(label)
    expected[3:7, 6:10, 2:4] = 7
    assert np.array_equal(aligned.array, expected)


def test_boundary_distances_of_shifted_boxes():
    a = np.zeros((30, 30, 20), bool)
    a[5:20, 5:20, 2:18] = True
    b = np.roll(a, 2, axis=0)  # 2 voxels = 3 mm along i
    distances = boundary_distances(a, b, np.array([1.5, 1.5, 2.0]))
    assert distances.max() == pytest.approx(3.0)
    assert boundary_distances(a, a, np.array([1.5, 1.5, 2.0])).max() == 0.0


@pytest.mark.parametrize("mode", ["rigid", "affine"])
def test_registration_recovers_a_known_move_of_a_phantom(mode):
    ct, nodule = synthetic_chest(spacing=(2.0, 2.0, 2.5), shape=(80, 70, 48))
    move = np.eye(4)
    angle = np.deg2rad(4.0)
    move[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    move[:3, 3] = [5.0, -4.0, 3.0]
    followup = Volume(ct.array, move @ ct.affine)  # the same voxels, the patient moved
    alignment = register(ct, followup, RegistrationSettings(mode=mode, iterations=60))
    points = ct.voxel_to_ras(np.argwhere(nodule))
    error = np.linalg.norm(alignment.to_followup(points) - (points @ move[:3, :3].T + move[:3, 3]), axis=1)
    assert error.max() < 1.0
    assert alignment.residual["after"]["mean_mm"] < alignment.residual["before"]["mean_mm"]
    assert [stage["stage"] for stage in alignment.stages] == (["rigid"] if mode == "rigid" else ["rigid", "affine"])


def test_a_crop_without_a_lung_field_still_registers_from_the_image_centres():
    ct, _ = synthetic_chest(spacing=(2.0, 2.0, 2.5), shape=(80, 70, 48))
    inside = Volume(ct.array[20:60, 15:55, 5:43].copy(), ct.affine)  # no body around it: no lung field
    move = np.eye(4)
    move[:3, 3] = [3.0, -2.0, 1.0]
    alignment = register(inside, Volume(inside.array, move @ inside.affine), RegistrationSettings(iterations=30))
    np.testing.assert_allclose(alignment.linear_matrix_ras()[:3, 3], move[:3, 3], atol=0.3)
    assert alignment.residual["after"] is None  # no lung boundary to measure
