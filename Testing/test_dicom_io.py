"""Reading CT series from DICOM folders: real CT written slice by slice with pydicom, read back exactly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from conftest import shared
from dicom_series import ct_slab, downsampled, read_back_order, rotated, tilted, write_ct_series
from pydicom.encaps import encapsulate
from pydicom.uid import MPEG2MPML, JPEGLosslessSV1, RLELossless

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.dicom_cases import dicom_cases, dicom_inputs
from LungTumorSegLib.io.dicom_io import read_ct_series, series_grid, series_in_folder

R01 = "chest-ct/nsclc-radiogenomics-R01-001/ct.nii.gz"


@pytest.fixture(scope="module")
def small_ct() -> Volume:
    """A 128 x 128 x 40 slab of the real R01-001 chest CT (every 4th voxel in-plane), geometry exact."""
    return ct_slab(shared(R01), 120, 40)


def read(folder, series_uid=None):
    case = dicom_cases(folder, series_uid)[0]
    return read_ct_series(case.series).volume, case


def test_series_reads_back_with_the_nifti_geometry_and_voxels(tmp_path, small_ct):
    write_ct_series(small_ct, tmp_path)
    order = read_back_order(tmp_path)
    assert order != sorted(order) and order != sorted(order, reverse=True)  # files are not in slice order
    volume, _ = read(tmp_path)
    assert volume.shape == small_ct.shape
    np.testing.assert_allclose(volume.spacing, small_ct.spacing, atol=1e-4)
    np.testing.assert_allclose(volume.affine, small_ct.affine, atol=1e-3)
    np.testing.assert_array_equal(volume.array, small_ct.array)


def test_rescale_intercept_minus_1024_gives_hounsfield_units(tmp_path, small_ct):
    files = write_ct_series(small_ct, tmp_path, intercept=-1024.0)
    dataset = pydicom.dcmread(files[0])
    assert float(dataset.RescaleIntercept) == -1024.0 and dataset.PixelRepresentation == 0
    assert dataset.pixel_array.min() >= 0  # stored values are HU + 1024
    volume, _ = read(tmp_path)
    assert volume.array.min() == small_ct.array.min() < -1000
    np.testing.assert_array_equal(volume.array, small_ct.array)


def test_slope_and_signed_storage(tmp_path, small_ct):
    write_ct_series(small_ct, tmp_path, slope=0.5, intercept=0.0)  # int16, stored = 2 * HU
    volume, _ = read(tmp_path)
    np.testing.assert_array_equal(volume.array, small_ct.array)


def test_oblique_series_keeps_its_rotated_geometry(tmp_path, small_ct):
    oblique = rotated(small_ct, 25.0)
    write_ct_series(oblique, tmp_path)
    orientation = [float(v) for v in pydicom.dcmread(next(tmp_path.iterdir())).ImageOrientationPatient]
    assert min(abs(v) for v in orientation[:3] if abs(v) > 1e-6) < 0.99  # really oblique
    volume, _ = read(tmp_path)
    np.testing.assert_allclose(volume.affine, oblique.affine, atol=1e-3)
    np.testing.assert_array_equal(volume.array, oblique.array)


def test_rle_compressed_series_is_decoded(tmp_path, small_ct):
    for path in write_ct_series(downsampled(small_ct, (1, 1, 4)), tmp_path):
        dataset = pydicom.dcmread(path)
        dataset.compress(RLELossless)
        dataset.save_as(path)
    volume, _ = read(tmp_path)
    np.testing.assert_array_equal(volume.array, downsampled(small_ct, (1, 1, 4)).array)


def test_jpeg_lossless_series_is_decoded(tmp_path, small_ct):
    """JPEG Lossless (process 14), the usual compression of PACS exports, decodes through python-gdcm."""
    import gdcm

    thick = downsampled(small_ct, (1, 1, 4))
    for path in write_ct_series(thick, tmp_path):
        reader = gdcm.ImageReader()
        reader.SetFileName(str(path))
        assert reader.Read()
        change = gdcm.ImageChangeTransferSyntax()
        change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
        change.SetInput(reader.GetImage())
        assert change.Change()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(path))
        writer.SetFile(reader.GetFile())
        writer.SetImage(change.GetOutput())
        assert writer.Write()
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEGLosslessSV1
    volume, _ = read(tmp_path)
    np.testing.assert_array_equal(volume.array, thick.array)


def test_two_series_in_one_folder_picks_the_largest_ct_and_names_it(tmp_path, small_ct):
    thin = write_ct_series(small_ct, tmp_path, series_number=2, description="CHEST 1.0")
    thick_ct = downsampled(small_ct, (1, 1, 4))
    write_ct_series(thick_ct, tmp_path, series_number=3, description="CHEST 4.0", seed=1)
    thin_uid = pydicom.dcmread(thin[0]).SeriesInstanceUID
    series = series_in_folder(tmp_path)
    assert len(series) == 2
    thick_uid = next(s.uid for s in series if s.uid != thin_uid)
    volume, case = read(tmp_path)
    assert case.series.uid == thin_uid and volume.shape == small_ct.shape
    assert len(case.notes) == 1 and "CHEST 1.0" in case.notes[0] and thick_uid in case.notes[0]
    assert "--series-uid" in case.notes[0]
    volume, case = read(tmp_path, series_uid=thick_uid)
    assert volume.shape == thick_ct.shape
    np.testing.assert_allclose(volume.affine, thick_ct.affine, atol=1e-3)
    with pytest.raises(InputError, match="no series with UID 1.2.3"):
        dicom_cases(tmp_path, "1.2.3")


def test_folder_of_folders_is_one_case_per_ct_series(tmp_path, small_ct):
    thick = downsampled(small_ct, (2, 2, 8))
    write_ct_series(thick, tmp_path / "patient1" / "CT")
    write_ct_series(thick, tmp_path / "patient2" / "CT", series_number=4)
    write_ct_series(thick, tmp_path / "patient2" / "CT", series_number=5, seed=1)
    write_ct_series(thick, tmp_path / "patient2" / "MR", modality="MR", intercept=0.0)
    for path in write_ct_series(downsampled(thick, (1, 1, 3)), tmp_path / "patient1" / "CT", series_number=1):
        dataset = pydicom.dcmread(path)
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        dataset.save_as(path)
    (tmp_path / "patient1" / "CT" / "notes.txt").write_text("not DICOM")
    cases = dicom_cases(tmp_path)
    assert [case.stem for case in cases] == ["patient1_CT", "patient2_CT_S4", "patient2_CT_S5"]
    assert any("skipped" in note and "MR" in note for note in cases[0].notes)
    assert any("skipped series 1" in note for note in cases[0].notes)  # the localizer


def test_a_single_dicom_file_stands_for_its_series(tmp_path, small_ct):
    thick = downsampled(small_ct, (2, 2, 4))
    write_ct_series(thick, tmp_path, series_number=2)
    other = write_ct_series(downsampled(thick, (1, 1, 2)), tmp_path, series_number=7, seed=3)
    (case,) = dicom_inputs(other[0])
    assert case.series.number == "7" and len(case.series.files) == len(other)
    assert dicom_inputs(tmp_path / "missing.nii.gz") == []


def refused(folder) -> str:
    with pytest.raises(InputError) as error:
        read(folder)
    message = str(error.value)
    assert "\n" not in message and str(folder) in message
    return message


def test_missing_slice_is_refused(tmp_path, small_ct):
    write_ct_series(small_ct, tmp_path, skip_slices=(17,))
    assert "1 missing slice(s)" in refused(tmp_path)


def test_uneven_spacing_is_refused(tmp_path, small_ct):
    uneven = Volume(small_ct.array[:, :, :8], small_ct.affine)
    files = write_ct_series(uneven, tmp_path)
    dataset = pydicom.dcmread(files[4])
    dataset.ImagePositionPatient[2] = float(dataset.ImagePositionPatient[2]) + 0.4  # 1.4 mm then 0.6 mm
    dataset.save_as(files[4])
    assert "non-uniform slice spacing" in refused(tmp_path)


def test_gantry_tilt_is_refused(tmp_path, small_ct):
    write_ct_series(tilted(small_ct, 12.0), tmp_path)
    assert "gantry tilt of 12.00°" in refused(tmp_path)


def test_mixed_orientations_and_duplicates_are_refused(tmp_path, small_ct):
    files = write_ct_series(small_ct, tmp_path / "mixed")
    dataset = pydicom.dcmread(files[3])
    dataset.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    dataset.save_as(files[3])
    assert "mixed slice orientations" in refused(tmp_path / "mixed")
    uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    write_ct_series(small_ct, tmp_path / "twice", series_uid=uid)
    write_ct_series(small_ct, tmp_path / "twice", series_uid=uid, seed=1)
    assert "share a position" in refused(tmp_path / "twice")


def test_mr_series_is_refused(tmp_path, small_ct):
    write_ct_series(small_ct, tmp_path, modality="MR", intercept=0.0)
    assert "is MR, not CT" in refused(tmp_path)


def test_undecodable_compression_is_refused_before_reading_pixels(tmp_path, small_ct):
    files = write_ct_series(downsampled(small_ct, (1, 1, 8)), tmp_path)
    for path in files:
        dataset = pydicom.dcmread(path)
        dataset.file_meta.TransferSyntaxUID = MPEG2MPML
        dataset.PixelData = encapsulate([dataset.PixelData])
        dataset.save_as(path, enforce_file_format=True)
    message = refused(tmp_path)
    assert "cannot be decoded" in message and MPEG2MPML in message
    with pytest.raises(InputError, match="cannot be decoded"):
        series_grid(series_in_folder(tmp_path)[0])
