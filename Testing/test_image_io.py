"""Geometry-exact reading and writing of NIfTI and NRRD, on the real LPS CTs."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest
from conftest import reoriented, shared

from LungTumorSegLib.core.errors import InputError, OutputError
from LungTumorSegLib.core.orientation import Reorientation
from LungTumorSegLib.io.image_io import load_volume, save_volume


@pytest.fixture(scope="module")
def real_ct():
    """A crop of the real 4D-Lung CT (LPS-oriented NIfTI) around the tumour."""
    volume = load_volume(shared("chest-ct/4dlung-113_HM10395-phase40/ct.nii.gz"), dtype=None)
    box = (slice(280, 360), slice(260, 370), slice(40, 80))
    affine = volume.affine.copy()
    affine[:3, 3] = volume.voxel_to_ras(np.array([b.start for b in box]))
    return type(volume)(np.ascontiguousarray(volume.array[box]), affine)


def test_lps_nifti_geometry_matches_nibabel():
    path = shared("chest-ct/4dlung-113_HM10395-phase40/ct.nii.gz")
    volume = load_volume(path)
    assert nib.aff2axcodes(volume.affine) == ("L", "P", "S")
    assert np.allclose(volume.affine, nib.load(str(path)).affine)
    assert np.allclose(volume.spacing, [0.9766, 0.9766, 3.0], atol=1e-3)
    assert volume.array.min() == -1000


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd"])
@pytest.mark.parametrize("codes", ["LPS", "RAS", "SAL"])
def test_round_trip_keeps_geometry_and_values(real_ct, tmp_path, suffix, codes):
    volume = reoriented(real_ct, codes)
    path = save_volume(volume, tmp_path / f"image{suffix}")
    back = load_volume(path, dtype=None)
    assert back.shape == volume.shape
    assert np.array_equal(back.array, volume.array)
    assert np.allclose(back.affine, volume.affine, atol=1e-5)
    # the same physical point: voxel centre (1, 2, 3) maps to the same RAS position
    assert np.allclose(back.voxel_to_ras([1, 2, 3]), volume.voxel_to_ras([1, 2, 3]), atol=1e-5)


def test_nrrd_is_written_in_lps_space(real_ct, tmp_path):
    save_volume(real_ct, tmp_path / "image.nrrd")
    _, header = nrrd.read(str(tmp_path / "image.nrrd"))
    assert header["space"] == "left-posterior-superior"
    # the source is LPS-stored, so its NRRD directions are positive along L, P and S
    assert np.allclose(np.diag(header["space directions"]), real_ct.spacing, atol=1e-4)


def test_reorientation_round_trip_is_exact(real_ct):
    for codes in ("LPS", "RAS", "SLP", "IRA"):
        volume = reoriented(real_ct, codes)
        reorientation = Reorientation.for_volume(volume)
        ras = reorientation.apply(volume)
        assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
        back = reorientation.invert(ras.array)
        assert np.array_equal(back.array, volume.array)
        assert np.allclose(back.affine, volume.affine)


def test_save_refuses_to_overwrite(real_ct, tmp_path):
    path = save_volume(real_ct, tmp_path / "image.nii.gz")
    before = path.read_bytes()
    with pytest.raises(OutputError, match="exists"):
        save_volume(real_ct, path)
    assert path.read_bytes() == before


def test_corrupt_and_unsupported_files(tmp_path):
    source = shared("lidc-nodule-crops/image/LIDC-IDRI-0001_R_1.nii.gz").read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(source[: len(source) // 2])
    with pytest.raises(InputError, match="cannot read"):
        load_volume(truncated)
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="unsupported file type"):
        load_volume(tmp_path / "image.png")
    with pytest.raises(InputError, match="no such file"):
        load_volume(tmp_path / "missing.nii.gz")
