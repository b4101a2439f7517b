"""Scan variants made from a real CT keep the anatomy where it was: new slices, noise, kernels, fields of view."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import reoriented, synthetic_chest

from LungTumorSegTrainingLib.evaluation.scan_variants import box_around, box_from, reslice, with_kernel, with_noise


def _centroid_ras(volume, mask):
    return volume.voxel_to_ras(np.argwhere(mask).mean(axis=0))


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SRA"])
@pytest.mark.parametrize("slice_mm", [1.0, 5.0])
def test_reslicing_changes_the_slices_and_keeps_the_nodule_in_place(codes, slice_mm):
    ct, mask = synthetic_chest(spacing=(1.5, 1.5, 2.5), nodules=(((-30.0, 0.0, 3.0), 8.0),))
    ct, label = reoriented(ct, codes), reoriented(ct.with_array(mask.astype(np.uint8)), codes)
    thin, thin_label = reslice(ct, slice_mm), reslice(label, slice_mm, label=True)
    axis = int(np.argmax(np.abs(ct.affine[2, :3])))  # the voxel axis along S
    assert thin.spacing[axis] == pytest.approx(slice_mm) and thin_label.same_grid(thin)
    assert thin.shape[axis] == int((ct.shape[axis] - 1) * 2.5 / slice_mm) + 1
    moved = _centroid_ras(thin_label, thin_label.array > 0) - _centroid_ras(label, label.array > 0)
    assert np.all(np.abs(moved) < slice_mm / 2 + 0.5)
    assert thin.array.max() <= ct.array.max() and thin.array.min() >= ct.array.min()  # averaging, no overshoot
    if slice_mm > 2.5:  # a thick slice averages the nodule with lung: its peak HU drops at the rim slices
        assert thin.array[thin_label.array > 0].mean() < ct.array[label.array > 0].mean()


def test_noise_and_kernels_change_the_texture_not_the_grid():
    ct, mask = synthetic_chest()
    noisy = with_noise(ct, 30.0, seed=1)
    assert noisy.same_grid(ct) and (noisy.array - ct.array)[~mask].std() == pytest.approx(30.0, rel=0.1)
    assert np.array_equal(with_noise(ct, 30.0, seed=1).array, noisy.array)
    sharp, soft = with_kernel(ct, 1.5), with_kernel(ct, -1.0)
    edge = np.abs(np.diff(ct.array, axis=0)).max()
    assert np.abs(np.diff(sharp.array, axis=0)).max() > edge > np.abs(np.diff(soft.array, axis=0)).max()
    centre = tuple(np.rint(np.argwhere(mask).mean(axis=0)).astype(int))
    assert sharp.array[centre] == pytest.approx(ct.array[centre], abs=5)  # flat inside: only the edges change


def test_fields_of_view_are_boxes_inside_the_image():
    ct, mask = synthetic_chest()
    centre = np.argwhere(mask).mean(axis=0)
    box = box_around(ct, centre, 20.0)
    assert all(0 <= s.start < s.stop <= n for s, n in zip(box, ct.shape))
    assert [s.stop - s.start for s in box] == [2 * int(np.ceil(20.0 / sp)) + 1 for sp in ct.spacing]
    assert [s.start for s in box_from(ct, np.array([3, 0, 5]))] == [3, 0, 5]


def test_a_variant_cut_around_one_lesion_is_matched_to_it_by_volume():
    """Cutting the image renumbers the lesions left in it; the table and picture must follow the right one."""
    from LungTumorSegTrainingLib.evaluation.preset_pictures import variant_lesion_index

    def facts(*volumes):
        return [{"lesion": i + 1, "volume_ml": v} for i, v in enumerate(volumes)]

    as_is = {"case": "c", "variant": "as is", "around_lesion": None, "lesions": facts(1.5, 0.6, 6.4)}
    edge_2 = {"case": "c", "variant": "edge", "around_lesion": 2, "lesions": facts(0.6, 6.4)}  # lesion 1 cut off
    edge_3 = {"case": "c", "variant": "edge", "around_lesion": 3, "lesions": facts(6.4)}
    rows = [as_is, edge_2, edge_3]
    assert variant_lesion_index(rows, as_is, 3) == 2
    assert variant_lesion_index(rows, edge_2, 2) == 0 and variant_lesion_index(rows, edge_3, 3) == 0
    assert variant_lesion_index(rows, edge_2, 3) is None  # the row was cut around another lesion
    assert variant_lesion_index(rows, as_is, 4) is None
