"""Clinical formats: .seg.nrrd read back with slicerio, DICOM SEG and SR read back with highdicom and pydicom."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
import slicerio
from conftest import shared
from dicom_series import ct_slab, write_ct_series
from pydicom.uid import Comprehensive3DSRStorage, SegmentationStorage

from LungTumorSegLib.clinical.clinical_outputs import ClinicalOutputs, engine_run_info, on_grid, write_dicom_outputs
from LungTumorSegLib.clinical.dicom_seg import AlgorithmInfo, write_dicom_seg
from LungTumorSegLib.clinical.dicom_sr import write_measurement_report
from LungTumorSegLib.clinical.seg_nrrd import write_seg_nrrd
from LungTumorSegLib.clinical.terminology import (
    LUNG_TUMOR_COLOR,
    LUNG_TUMOR_SEGMENT_NAME,
    LUNG_TUMOR_TERMINOLOGY,
)
from LungTumorSegLib.core.errors import InputError, OutputError
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.dicom_cases import dicom_cases
from LungTumorSegLib.io.dicom_io import read_ct_series
from LungTumorSegLib.measurements.lesion_measurements import measure_lesions

R01 = "chest-ct/nsclc-radiogenomics-R01-001/ct.nii.gz"
ALGORITHM = AlgorithmInfo("lungtumorseg-ensemble", "0.2.1")


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """A real CT slab written as a DICOM series and read back (the engine's DicomImage)."""
    folder = tmp_path_factory.mktemp("series")
    write_ct_series(ct_slab(shared(R01), 140, 24), folder)
    return read_ct_series(dicom_cases(folder)[0].series)


@pytest.fixture(scope="module")
def label(series) -> Volume:
    """Two blobs on the series' grid: a 'tumour' spanning slices 4-13 and a small one on slices 18-19."""
    array = np.zeros(series.volume.shape, np.uint8)
    i, j, k = np.ogrid[: array.shape[0], : array.shape[1], : array.shape[2]]
    array[((i - 40) / 9.0) ** 2 + ((j - 60) / 6.0) ** 2 + ((k - 8) / 5.0) ** 2 <= 1] = 1
    array[100:103, 50:52, 18:20] = 1
    return series.volume.with_array(array)


def test_seg_nrrd_reads_back_with_name_terminology_colour_and_exact_mask(tmp_path, label):
    path = write_seg_nrrd(label, tmp_path / "case.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(path))
    (segment,) = segmentation["segments"]
    assert segment["name"] == LUNG_TUMOR_SEGMENT_NAME == "Lung tumor"
    assert segment["color"] == pytest.approx(list(LUNG_TUMOR_COLOR))
    from slicerio.segmentation import terminology_entry_to_string

    assert terminology_entry_to_string(segment["terminology"]) == LUNG_TUMOR_TERMINOLOGY
    assert segment["terminology"]["type"] == ["SCT", "108369006", "Neoplasm"]
    mask = slicerio.segment_mask(segmentation, segment)
    np.testing.assert_array_equal(mask, label.array > 0)
    np.testing.assert_allclose(segmentation["ijkToLPS"], np.diag([-1.0, -1.0, 1.0, 1.0]) @ label.affine, atol=1e-6)
    header = path.read_bytes()[:4000]
    assert b"Segmentation_MasterRepresentation:=Binary labelmap" in header  # what Slicer reads as a segmentation
    with pytest.raises(OutputError, match="file exists"):
        write_seg_nrrd(label, path)


def test_dicom_seg_references_the_series_and_decodes_to_the_same_mask(tmp_path, series, label):
    path = tmp_path / "case_seg.dcm"
    write_dicom_seg(label, series.grid, ALGORITHM, path)
    dataset = pydicom.dcmread(path)
    assert dataset.SOPClassUID == SegmentationStorage and dataset.SegmentationType == "BINARY"
    source = series.grid.datasets
    assert dataset.ReferencedSeriesSequence[0].SeriesInstanceUID == source[0].SeriesInstanceUID
    referenced = {
        item.ReferencedSOPInstanceUID for item in dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {d.SOPInstanceUID for d in source}
    assert dataset.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    assert dataset.StudyInstanceUID == source[0].StudyInstanceUID and dataset.PatientID == source[0].PatientID
    segment = dataset.SegmentSequence[0]
    assert segment.SegmentLabel == "Lung tumor" and segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"
    assert segment.AnatomicRegionSequence[0].CodeValue == "39607008"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == "LungTumorSeg" and algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
    assert "lungtumorseg-ensemble" in algorithm.AlgorithmParameters and "0.2.1" in algorithm.AlgorithmParameters
    assert dataset.ManufacturerModelName == "lungtumorseg-ensemble 0.2.1"
    colour = hd.color.CIELabColor.from_rgb(*(round(255 * c) for c in LUNG_TUMOR_COLOR))
    assert list(segment.RecommendedDisplayCIELabValue) == list(colour.value)

    seg = hd.seg.segread(path)
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in source], segment_numbers=[1]
    )[..., 0]
    np.testing.assert_array_equal(frames, label.array.transpose(2, 1, 0) > 0)  # frame k = slice k, (rows, cols)
    assert dataset.NumberOfFrames == int(np.count_nonzero(label.array.any(axis=(0, 1))))  # empty frames omitted


def test_empty_label_gives_an_empty_seg(tmp_path, series):
    empty = series.volume.with_array(np.zeros(series.volume.shape, np.uint8))
    seg = write_dicom_seg(empty, series.grid, ALGORITHM, tmp_path / "empty_seg.dcm")
    back = hd.seg.segread(tmp_path / "empty_seg.dcm")
    frames = back.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in series.grid.datasets], segment_numbers=[1]
    )
    assert frames.shape[0] == series.volume.shape[2] and not frames.any()
    report = write_measurement_report(seg, series.grid, measure_lesions(empty), ALGORITHM, tmp_path / "empty_sr.dcm")
    content = hd.sr.srread(report).content
    assert not content.get_volumetric_roi_measurement_groups()
    (total,) = content.get_image_measurement_groups()
    assert total.tracking_identifier == "All lesions" and total.get_measurements()[0].value == 0.0


def test_measurement_report_has_volume_and_recist_axes_per_lesion(tmp_path, series, label):
    seg = write_dicom_seg(label, series.grid, ALGORITHM, tmp_path / "case_seg.dcm")
    case = measure_lesions(label, series.volume)
    assert case.lesion_count == 2
    path = write_measurement_report(seg, series.grid, case, ALGORITHM, tmp_path / "case_sr.dcm")
    report = hd.sr.srread(path)
    assert report.SOPClassUID == Comprehensive3DSRStorage
    assert report.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    groups = report.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Lesion 1", "Lesion 2"]
    for group, lesion in zip(groups, case.lesions):
        values = {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}
        assert values["118565006"] == (pytest.approx(lesion.volume_ml, rel=1e-6), "ml")
        assert values["103339001"] == (pytest.approx(lesion.long_axis_mm, rel=1e-6), "mm")
        assert values["103340004"] == (pytest.approx(lesion.short_axis_mm, rel=1e-6), "mm")
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert group.finding_type.value == "108369006"
    (total,) = report.content.get_image_measurement_groups()
    assert total.get_measurements()[0].value == pytest.approx(case.total_volume_ml, rel=1e-6)
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert {item.SeriesInstanceUID for item in evidence} == {series.grid.series.uid, seg.SeriesInstanceUID}


def test_slicer_path_writes_seg_and_sr_for_a_label_on_a_flipped_grid(tmp_path, series, label):
    flipped = Volume(label.array[::-1, :, ::-1].copy(), label.affine @ _flip(label.shape, (0, 2)))
    assert not flipped.same_grid(label)
    info = {"model": "lungtumorseg-ensemble", "model_version": "0.2.1"}
    written = write_dicom_outputs(flipped, series.grid.files[::-1], tmp_path, "ct", info)
    assert sorted(p.name for p in written.values()) == ["ct_seg.dcm", "ct_sr.dcm"]
    seg = hd.seg.segread(written["dicom_seg"])
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[d.SOPInstanceUID for d in series.grid.datasets], segment_numbers=[1]
    )[..., 0]
    np.testing.assert_array_equal(frames, label.array.transpose(2, 1, 0) > 0)
    with pytest.raises(OutputError, match="already exist"):
        write_dicom_outputs(flipped, series.grid.files, tmp_path, "ct", info)
    assert on_grid(label, series.grid.affine, series.grid.shape) is label  # already on the grid
    moved = label.affine.copy()
    moved[0, 3] += 2.0
    with pytest.raises(InputError, match="not on the grid"):
        on_grid(Volume(label.array, moved), series.grid.affine, series.grid.shape)


def test_clinical_output_names_and_engine_info(tmp_path):
    assert ClinicalOutputs(seg_nrrd=True, dicom_seg=True).names("ct") == ["ct.seg.nrrd", "ct_seg.dcm", "ct_sr.dcm"]
    assert ClinicalOutputs().names("ct") == []
    summary = tmp_path / "ct_summary.json"
    summary.write_text('{"info": {"model": "m", "model_version": "2"}}')
    assert AlgorithmInfo.from_run_info(engine_run_info(summary)) == AlgorithmInfo("m", "2")


def _flip(shape, axes) -> np.ndarray:
    """The index map of an array flipped along ``axes``: affine_new = affine @ this."""
    flip = np.eye(4)
    for axis in axes:
        flip[axis, axis] = -1.0
        flip[axis, 3] = shape[axis] - 1
    return flip
