"""The HU lung-field mask on real chest CT."""

from __future__ import annotations

import numpy as np
from conftest import shared
from scipy import ndimage

from LungTumorSegLib.core.orientation import Reorientation
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.segmentation.lungfield import lung_field


def test_lung_field_of_the_4dlung_ct_holds_the_tumour():
    case = shared("chest-ct/4dlung-113_HM10395-phase40")
    ct = load_volume(case / "ct.nii.gz")
    reorientation = Reorientation.for_volume(ct)
    ras = reorientation.apply(ct)
    field = lung_field(ras)
    mask = reorientation.invert_array(field.full_resolution())
    volume_l = mask.sum() * ct.voxel_volume_ml / 1000
    assert 1.5 < volume_l < 8.0
    # the GTV is hilar: it touches the lung field (so post-processing keeps it) and lies in the crop box
    tumour = load_volume(case / "tumor.nii.gz").array > 0
    assert (ndimage.binary_dilation(mask, iterations=2) & tumour).any()
    box = field.bounding_box(np.ceil(15.0 / ras.spacing))
    inside = np.zeros(ras.shape, bool)
    inside[box] = True
    assert reorientation.apply_array(tumour)[~inside].sum() == 0
    assert np.prod([s.stop - s.start for s in box]) < 0.6 * np.prod(ras.shape)


def test_no_lung_field_in_a_small_nodule_crop():
    crop = load_volume(shared("lidc-nodule-crops/image/LIDC-IDRI-0001_R_1.nii.gz"))
    assert not lung_field(Reorientation.for_volume(crop).apply(crop)).found
