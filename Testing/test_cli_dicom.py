"""``segment`` on DICOM folders: the same result as on the NIfTI, clinical outputs, series choice, refusals."""

from __future__ import annotations

import json

import highdicom as hd
import numpy as np
import pydicom
import pytest
import slicerio
from conftest import DEMO_NODULE, make_pointwise_bundle, shared
from dicom_series import ct_slab, downsampled, write_ct_series

from LungTumorSegLib.cli.main import main
from LungTumorSegLib.io.image_io import load_volume

R01 = "chest-ct/nsclc-radiogenomics-R01-001/ct.nii.gz"


@pytest.fixture(scope="module")
def fast_bundle(tmp_path_factory):
    return make_pointwise_bundle(tmp_path_factory.mktemp("models") / "pointwise", spacing=(3.0, 3.0, 3.0))


@pytest.fixture(scope="module")
def slab():
    return ct_slab(shared(R01), 120, 40)


def run(capsys, *args):
    code = main(["segment", *map(str, args), "--progress", "json"])
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    return code, events, captured.err


def test_dicom_series_gives_the_nifti_result_and_clinical_files_that_overlay_it(tmp_path, capsys):
    """The bundled model on a held-out LIDC nodule, as NIfTI and as a shuffled DICOM series, in one run."""
    nifti = load_volume(DEMO_NODULE)
    write_ct_series(nifti, tmp_path / "LIDC_nodule")
    out = tmp_path / "out"
    code, events, err = run(capsys, DEMO_NODULE, tmp_path / "LIDC_nodule", "-o", out, "--no-pictures")
    assert code == 0, err
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 2
    from_nifti, from_dicom = (load_volume(r["outputs"]["tumor"]) for r in results)
    assert results[1]["summary"]["lesions"]["lesion_count"] == 1
    assert from_dicom.shape == nifti.shape
    np.testing.assert_allclose(from_dicom.affine, nifti.affine, atol=1e-3)
    np.testing.assert_array_equal(from_dicom.array, from_nifti.array)  # the same tumour, voxel for voxel

    outputs = results[1]["outputs"]
    assert outputs["tumor"].endswith("LIDC_nodule_tumor.nii.gz")
    assert {"seg_nrrd", "dicom_seg", "dicom_sr"} <= set(outputs) and "seg_nrrd" not in results[0]["outputs"]
    tumour = from_dicom.array > 0
    segmentation = slicerio.read_segmentation(outputs["seg_nrrd"])
    np.testing.assert_array_equal(slicerio.segment_mask(segmentation, segmentation["segments"][0]), tumour)
    seg = hd.seg.segread(outputs["dicom_seg"])
    sources = sorted(
        (pydicom.dcmread(p, stop_before_pixels=True) for p in (tmp_path / "LIDC_nodule").iterdir()),
        key=lambda d: float(d.ImagePositionPatient[2]),
    )
    frames = seg.get_pixels_by_source_instance([d.SOPInstanceUID for d in sources], segment_numbers=[1])[..., 0]
    np.testing.assert_array_equal(frames, tumour.transpose(2, 1, 0))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    report = hd.sr.srread(outputs["dicom_sr"])
    (lesion,) = report.content.get_volumetric_roi_measurement_groups()
    volume = next(m.value for m in lesion.get_measurements() if m.name.value == "118565006")
    assert volume == pytest.approx(results[1]["summary"]["lesions"]["total_volume_ml"], rel=1e-6)


def test_two_series_in_a_folder_says_which_and_series_uid_chooses(tmp_path, capsys, fast_bundle, slab):
    folder = tmp_path / "study"
    write_ct_series(slab, folder, series_number=2)
    thick = downsampled(slab, (1, 1, 4))
    files = write_ct_series(thick, folder, series_number=3, description="THICK", seed=1)
    thick_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
    args = [folder, "-o", tmp_path / "a", "--model", fast_bundle, "--no-pictures"]
    code, events, err = run(capsys, *args)
    assert code == 0, err
    (note,) = [e["message"] for e in events if e["event"] == "log" and "--series-uid" in e["message"]]
    assert "CT, 40 images" in note and thick_uid in note
    result = next(e for e in events if e["event"] == "result")
    assert load_volume(result["outputs"]["tumor"]).shape == slab.shape
    code, events, err = run(capsys, *args[:2], tmp_path / "b", *args[3:], "--series-uid", thick_uid)
    assert code == 0, err
    result = next(e for e in events if e["event"] == "result")
    tumour = load_volume(result["outputs"]["tumor"])
    assert tumour.shape == thick.shape
    np.testing.assert_allclose(tumour.affine, thick.affine, atol=1e-3)


def test_folder_of_folders_is_a_batch_and_flags_choose_the_files(tmp_path, capsys, fast_bundle, slab):
    small = downsampled(slab, (1, 1, 2))
    write_ct_series(small, tmp_path / "in" / "patient1")
    write_ct_series(small, tmp_path / "in" / "patient2" / "series5")
    write_ct_series(small, tmp_path / "in" / "patient2" / "mr", modality="MR", intercept=0.0)
    out = tmp_path / "out"
    code, events, err = run(
        capsys, tmp_path / "in", "-o", out, "--model", fast_bundle, "--no-pictures", "--no-dicom-seg"
    )
    assert code == 0, err
    results = [e for e in events if e["event"] == "result"]
    assert [r["outputs"]["tumor"].split("/")[-1] for r in results] == [
        "patient1_tumor.nii.gz",
        "patient2_series5_tumor.nii.gz",
    ]
    assert any("skipped" in e["message"] and "MR" in e["message"] for e in events if e["event"] == "log")
    names = {p.name for p in out.iterdir()}
    assert "patient1.seg.nrrd" in names and not any(n.endswith(".dcm") for n in names)


def test_seg_nrrd_on_request_for_nifti_and_dicom_seg_refused(tmp_path, capsys, fast_bundle, slab):
    from LungTumorSegLib.io.image_io import save_volume

    ct = save_volume(slab, tmp_path / "ct.nii.gz")
    out = tmp_path / "out"
    code, _, err = run(capsys, ct, "-o", out, "--model", fast_bundle, "--no-pictures", "--dicom-seg")
    assert code == 2 and "--dicom-seg needs DICOM input" in err and str(ct) in err
    assert not out.exists() or not any(out.iterdir())
    code, events, err = run(capsys, ct, "-o", out, "--model", fast_bundle, "--no-pictures", "--seg-nrrd")
    assert code == 0, err
    assert (out / "ct.seg.nrrd").is_file() and not (out / "ct_seg.dcm").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"modality": "MR", "intercept": 0.0}, "is MR, not CT"),
        ({"skip_slices": (9,)}, "1 missing slice(s)"),
    ],
)
def test_refused_series_exit_2_with_one_line(tmp_path, capsys, fast_bundle, slab, options, message):
    write_ct_series(downsampled(slab, (1, 1, 2)), tmp_path / "series", **options)
    out = tmp_path / "out"
    code, _, err = run(capsys, tmp_path / "series", "-o", out, "--model", fast_bundle)
    lines = [line for line in err.splitlines() if line.startswith("lungtumorseg: error:")]
    assert code == 2 and len(lines) == 1 and message in lines[0] and str(tmp_path / "series") in lines[0]
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith("."))
