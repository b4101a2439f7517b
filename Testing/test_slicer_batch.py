"""The Slicer batch script's decisions (LungTumorSegLib.slicer_glue.batch) and its DICOM self-test input (demo_dicom).

Inside Slicer the script loads one series at a time with DICOMUtils.loadSeriesByUID and segments only CT volumes;
its self-test (LungTumorSegTest.test_BatchScriptSegmentsDicomSeriesOneByOne) runs it on the series written here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pydicom
import pytest
from conftest import DEMO_NODULE, ROOT

from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.demo_dicom import write_series
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.slicer_glue import batch as slicer_batch

SCRIPT = ROOT / "LungTumorSeg" / "Scripts" / "lungtumorseg_slicer_batch.py"


@pytest.mark.parametrize(
    ("modality", "image_type", "reason"),
    [
        ("CT", "ORIGINAL\\PRIMARY\\AXIAL", None),
        ("CT", "DERIVED\\SECONDARY\\REFORMATTED", None),
        ("CT", "ORIGINAL\\PRIMARY\\LOCALIZER", "localizer"),
        (" ct ", "ORIGINAL/PRIMARY/LOCALIZER", "localizer"),
        ("MR", "ORIGINAL\\PRIMARY", "modality MR, not CT"),
        ("SEG", "", "modality SEG"),
        ("", "", "modality unknown"),
    ],
)
def test_which_series_are_segmented(modality, image_type, reason):
    got = slicer_batch.series_skip_reason(modality, image_type)
    assert (got is None) if reason is None else (reason in got)


def test_volumes_with_too_few_slices_are_skipped():
    assert slicer_batch.volume_skip_reason((512, 512, 120)) is None
    assert "fewer than 3 slices" in slicer_batch.volume_skip_reason((512, 512, 1))
    assert slicer_batch.volume_skip_reason(()) is not None


def test_case_names_are_safe_unique_and_carry_no_patient_id():
    used: set[str] = set()
    first = slicer_batch.series_case_name("3", "Chest 1.25mm / lung", "1.2.3.4.5", used)
    assert first == "series3_Chest_1.25mm_lung"
    again = slicer_batch.series_case_name("3", "Chest 1.25mm / lung", "1.2.3.4.99", used)
    assert again != first and again.endswith("99")
    assert slicer_batch.series_case_name("", "", "1.2", used) == "series"
    assert len(used) == 3
    script = SCRIPT.read_text(encoding="utf-8")
    assert "0010,0020" not in script and "PatientID" not in script, "the batch script never reads the PatientID"


def test_the_batch_never_touches_the_users_dicom_database_setting():
    """DICOMUtils.TemporaryDICOMDatabase writes the database-folder setting; a killed batch left it on a temporary
    database. The script swaps slicer.dicomDatabase for a private one and puts it back in a finally block."""
    tree = ast.parse(SCRIPT.read_text(encoding="utf-8"))
    source = ast.unparse(tree)
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    used |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert not used & {"TemporaryDICOMDatabase", "openTemporaryDatabase", "QSettings", "setValue"}
    (function,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "private_dicom_database"]
    (guard,) = [n for n in ast.walk(function) if isinstance(n, ast.Try)]
    assert "slicer.dicomDatabase = original" in ast.unparse(guard.finalbody)
    assert "with private_dicom_database() as database" in source


def test_only_the_nodes_a_case_added_are_removed_newest_first():
    before = ["vtkMRMLSelectionNodeSingleton", "vtkMRMLScalarVolumeNode1"]
    after = [*before, "vtkMRMLScalarVolumeNode2", "vtkMRMLScalarVolumeDisplayNode2", "vtkMRMLSegmentationNode1"]
    assert slicer_batch.nodes_to_remove(before, after) == [
        "vtkMRMLSegmentationNode1",
        "vtkMRMLScalarVolumeDisplayNode2",
        "vtkMRMLScalarVolumeNode2",
    ]


def test_file_inputs(tmp_path: Path):
    (tmp_path / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "b.seg.nrrd").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert sorted(slicer_batch.file_case_name(p) for p in tmp_path.iterdir() if slicer_batch.is_image_file(p)) == [
        "a",
        "b",
    ]


def test_the_written_ct_series_reads_back_with_its_geometry(tmp_path: Path):
    """The self-test's DICOM input is a faithful CT series: pixel values and LPS geometry (via SimpleITK's reader)."""
    sitk = pytest.importorskip("SimpleITK")
    nodule = load_volume(DEMO_NODULE)
    files = write_series(nodule, tmp_path / "ct", series_number=2, description="chest CT")
    assert len(files) == nodule.shape[2]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    image = reader.Execute()
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # SimpleITK is KJI too
    np.testing.assert_array_equal(array, np.rint(nodule.array).astype(np.int16))
    lps = np.diag([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(image.GetOrigin(), lps @ nodule.affine[:3, 3], atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), nodule.spacing, atol=1e-4)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction, lps @ nodule.affine[:3, :3] / nodule.spacing, atol=1e-5)
    first = pydicom.dcmread(files[0])
    assert slicer_batch.series_skip_reason(first.Modality, "\\".join(first.ImageType)) is None


def test_the_skipped_series_are_what_they_claim(tmp_path: Path):
    nodule = load_volume(DEMO_NODULE)
    mr = pydicom.dcmread(write_series(nodule, tmp_path / "mr", modality="MR", series_number=3)[0])
    scout = Volume(nodule.array[:, :, :1], nodule.affine)
    (localizer,) = write_series(scout, tmp_path / "scout", image_type="ORIGINAL\\PRIMARY\\LOCALIZER")
    loc = pydicom.dcmread(localizer)
    assert "not CT" in slicer_batch.series_skip_reason(mr.Modality, "\\".join(mr.ImageType))
    assert "localizer" in slicer_batch.series_skip_reason(loc.Modality, "\\".join(loc.ImageType))


def test_the_script_loads_series_one_by_one():
    """loadPatientByUID loaded every series of a patient at once and only the first was segmented."""
    calls = {
        ast.unparse(node.func)
        for node in ast.walk(ast.parse(SCRIPT.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
    }
    assert "DICOMUtils.loadSeriesByUID" in calls and "DICOMUtils.loadPatientByUID" not in calls
    assert "slicer.mrmlScene.Clear" not in calls, "a case removes only the nodes it created"
    assert "slicer_batch.series_skip_reason" in calls and "slicer_batch.volume_skip_reason" in calls
