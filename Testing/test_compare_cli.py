"""``lungtumorseg compare``: every output, JSON progress, segmentation without labels, and clear errors."""

from __future__ import annotations

import csv
import html
import json

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import (
    DEMO_CT,
    DEMO_GTV,
    DEMO_NODULE,
    DEMO_NODULE_MASK,
    assert_outputs_kept_unless_overwrite,
    make_pointwise_bundle,
    shared,
    synthetic_chest,
)
from followup_pairs import LIDC_0003, downsampled_case, eroded_in_plane, moved, rigid_move
from matplotlib.image import imread

from LungTumorSegLib.cli.main import main
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.image_io import load_volume, save_volume


@pytest.fixture(scope="module")
def pr_pair(tmp_path_factory):
    """Files: LIDC-IDRI-0003 (downsampled) and its label eroded by 4 mm (a partial response), not moved."""
    ct, label = downsampled_case(shared(LIDC_0003))
    folder = tmp_path_factory.mktemp("pair")
    paths = {"ct": folder / "ct.nii.gz", "label": folder / "label.nii.gz", "eroded": folder / "eroded.nii.gz"}
    save_volume(ct, paths["ct"])
    save_volume(label, paths["label"])
    save_volume(eroded_in_plane(label, 4.0), paths["eroded"])
    return paths


def _compare(*args) -> int:
    """``lungtumorseg compare`` with these arguments (paths become strings)."""
    return main(["compare", *map(str, args)])


def _compare_args(pair, out, *extra):
    return [
        "compare",
        str(pair["ct"]),
        str(pair["ct"]),
        "--baseline-label",
        str(pair["label"]),
        "--followup-label",
        str(pair["eroded"]),
        "-o",
        str(out),
        *extra,
    ]


def test_compare_writes_the_tables_pictures_and_joined_report(tmp_path, pr_pair, capsys):
    code = main(_compare_args(pr_pair, tmp_path, "--registration", "none", "--progress", "json"))
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    result = next(e for e in events if e["event"] == "result")
    assert result["summary"]["response"]["category"] == "PR"

    data = json.loads((tmp_path / "comparison.json").read_text())
    assert data["response"]["category"] == "PR" and "30 %" in data["response"]["rule"]
    assert data["response"]["volume_not_recist"]["change_percent"] < 0
    assert [m["match_type"] for m in data["matches"]] == ["matched"] * 3
    rows = list(csv.DictReader((tmp_path / "comparison.csv").open()))
    assert [r["baseline_ids"] for r in rows] == ["1", "2", "3"] and {r["response"] for r in rows} == {"PR"}
    assert rows[0]["target"] == "1" and rows[2]["target"] == ""
    for name in ("comparison_target_1.png", "comparison_target_2.png", "baseline_overlay.png", "followup_overlay.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    picture = imread(tmp_path / "comparison_target_1.png")[..., :3]
    for half in np.array_split(picture, 2, axis=1):  # baseline left, follow-up right: both with RECIST lines
        r, g, b = half[..., 0], half[..., 1], half[..., 2]
        long_axis = (r > 0.85) & (g < 0.4) & (b < 0.4)  # overlay.LONG_AXIS_COLOR
        short_axis = (b > 0.85) & (r < 0.4) & (g > 0.6) & (g < 0.9)  # overlay.SHORT_AXIS_COLOR
        assert long_axis.sum() > 20 and short_axis.sum() > 10, (long_axis.sum(), short_axis.sum())
    report = (tmp_path / "comparison_report.html").read_text()
    assert "<h2>Baseline scan</h2>" in report and "<h2>Follow-up scan</h2>" in report
    assert html.escape(data["response"]["rule"]) in report
    assert set(result["outputs"]) >= {"comparison_json", "comparison_csv", "report", "transform", "target_1"}
    assert not any(p.name.endswith(".nii.gz") for p in tmp_path.iterdir())  # labels were given: none written


def test_existing_outputs_are_kept_unless_overwrite(tmp_path, pr_pair, capsys):
    args = _compare_args(pr_pair, tmp_path, "--registration", "none", "--progress", "none", "--no-pictures")
    assert_outputs_kept_unless_overwrite(main, args, tmp_path, capsys)


def test_a_label_off_the_ct_grid_is_a_one_line_error_that_writes_nothing(tmp_path, capsys):
    ct, nodule = synthetic_chest(shape=(40, 40, 20))
    save_volume(ct, tmp_path / "ct.nii.gz")
    small = Volume(nodule[:30].astype(np.uint8), ct.affine)
    save_volume(small, tmp_path / "small_label.nii.gz")
    out = tmp_path / "out"
    code = _compare(
        tmp_path / "ct.nii.gz",
        tmp_path / "ct.nii.gz",
        "-o",
        out,
        "--baseline-label",
        tmp_path / "small_label.nii.gz",
        "--progress",
        "none",
    )
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.count("\n") == 0
    assert "small_label.nii.gz" in error and "grid" in error
    assert not out.exists() or not any(out.iterdir())
    code = _compare(
        tmp_path / "ct.nii.gz",
        tmp_path / "ct.nii.gz",
        "-o",
        out,
        "--followup-label",
        tmp_path / "ct.nii.gz",
        "--progress",
        "none",
    )
    assert code == 2 and "not a tumour label" in capsys.readouterr().err


def test_a_dicom_series_folder_is_read_as_segment_reads_it(tmp_path, capsys):
    """The baseline is a DICOM series folder (the engine's DICOM reader), the follow-up a NIfTI of the same scan."""
    from LungTumorSegLib.io.demo_dicom import write_series

    ct, mask = load_volume(DEMO_NODULE), load_volume(DEMO_NODULE_MASK, dtype=None)
    write_series(ct, tmp_path / "dicom" / "ct")
    save_volume(mask, tmp_path / "mask.nii.gz")
    out = tmp_path / "out"
    args = ["-o", out, "--baseline-label", tmp_path / "mask.nii.gz", "--followup-label", tmp_path / "mask.nii.gz"]
    code = _compare(tmp_path / "dicom" / "ct", DEMO_NODULE, *args, "--registration", "none", "--progress", "none")
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "comparison.json").read_text())
    assert data["baseline"]["inputs"]["ct"] == str(tmp_path / "dicom" / "ct")
    assert [m["match_type"] for m in data["matches"]] == ["matched"] and data["response"]["category"] == "SD"
    base, follow = data["baseline"]["lesions"][0], data["followup"]["lesions"][0]
    assert base["long_axis_mm"] == pytest.approx(follow["long_axis_mm"], abs=1e-3)  # the same voxels, read from DICOM
    assert base["volume_ml"] == pytest.approx(follow["volume_ml"], rel=1e-6)
    capsys.readouterr()
    code = _compare(tmp_path / "mask_folder_missing", DEMO_NODULE, "-o", tmp_path / "out2", "--progress", "none")
    error = capsys.readouterr().err.strip()
    assert code == 2 and "mask_folder_missing: no such file or folder" in error and error.count("\n") == 0
    (tmp_path / "empty").mkdir()
    code = _compare(tmp_path / "empty", DEMO_NODULE, "-o", tmp_path / "out2", "--progress", "none")
    error = capsys.readouterr().err.strip()
    assert code == 2 and "without a DICOM series" in error and not (tmp_path / "out2").exists()


def test_without_labels_both_scans_are_segmented(tmp_path, capsys):
    spacing = (1.5, 1.5, 2.5)
    bundle = make_pointwise_bundle(tmp_path / "pointwise", spacing=spacing)
    for name, radius in (("before", 8.0), ("after", 5.0)):
        ct, _ = synthetic_chest(spacing=spacing, nodules=(((-30.0, 0.0, 0.0), radius),))
        save_volume(ct, tmp_path / f"{name}.nii.gz")
    out = tmp_path / "out"
    code = _compare(
        tmp_path / "before.nii.gz",
        tmp_path / "after.nii.gz",
        "-o",
        out,
        "--model",
        bundle,
        "--registration",
        "none",
        "--progress",
        "none",
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "comparison.json").read_text())
    assert data["response"]["category"] == "PR"
    assert data["baseline"]["inputs"]["label"] == "segmented here" and "model" in data["followup"]["inputs"]
    label = load_volume(out / "baseline_tumor.nii.gz")
    assert label.array.sum() > 0 and (out / "followup_entropy.nii.gz").exists()
    assert "PR" in capsys.readouterr().out


def test_the_slicer_self_test_scenario_on_the_command_line(tmp_path):
    """LungTumorSegTest.test_CompareWithBaseline, without Slicer: the demo CT against a copy moved 8, -5, 3 mm."""
    ct, gtv = load_volume(DEMO_CT), load_volume(DEMO_GTV, dtype=None)
    shift = np.array([8.0, -5.0, 3.0])
    affine = ct.affine.copy()
    affine[:3, 3] += shift
    save_volume(Volume(ct.array, affine), tmp_path / "followup.nrrd")
    save_volume(Volume(gtv.array, affine), tmp_path / "followup_gtv.nrrd")
    out = tmp_path / "out"
    code = _compare(
        DEMO_CT,
        tmp_path / "followup.nrrd",
        "-o",
        out,
        "--progress",
        "none",
        "--baseline-label",
        DEMO_GTV,
        "--followup-label",
        tmp_path / "followup_gtv.nrrd",
    )
    assert code == 0
    data = json.loads((out / "comparison.json").read_text())
    assert data["response"]["category"] == "SD" and [m["match_type"] for m in data["matches"]] == ["matched"]
    translation = np.array(data["registration"]["linear_matrix_ras"])[:3, 3]
    assert np.linalg.norm(translation - shift) < 1.0
    transform = sitk.ReadTransform(str(out / "comparison_transform.h5"))  # what Slicer loads
    flip = np.array([-1.0, -1.0, 1.0])
    np.testing.assert_allclose(np.array(transform.TransformPoint((0.0, 0.0, 0.0))) * flip, shift, atol=1.0)


@pytest.mark.slow
def test_compare_command_with_deformable_registration_on_a_moved_pair(tmp_path):
    ct, label = downsampled_case(shared(LIDC_0003))
    move = rigid_move(ct)
    save_volume(ct, tmp_path / "ct.nii.gz")
    save_volume(label, tmp_path / "label.nii.gz")
    save_volume(moved(ct, move), tmp_path / "ct_moved.nii.gz")
    save_volume(moved(eroded_in_plane(label, 4.0), move), tmp_path / "eroded_moved.nii.gz")
    out = tmp_path / "out"
    code = _compare(
        tmp_path / "ct.nii.gz",
        tmp_path / "ct_moved.nii.gz",
        "-o",
        out,
        "--baseline-label",
        tmp_path / "label.nii.gz",
        "--followup-label",
        tmp_path / "eroded_moved.nii.gz",
        "--registration",
        "deformable",
        "--progress",
        "none",
    )
    assert code == 0
    data = json.loads((out / "comparison.json").read_text())
    assert data["response"]["category"] == "PR"
    assert [s["stage"] for s in data["registration"]["stages"]] == ["rigid", "deformable (B-spline, lung field)"]
    transform = sitk.ReadTransform(str(out / "comparison_transform.h5"))
    points = ct.voxel_to_ras(np.argwhere(label.array > 0))
    flip = np.array([-1.0, -1.0, 1.0])
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points * flip]) * flip
    assert np.linalg.norm(mapped - (points @ move[:3, :3].T + move[:3, 3]), axis=1).max() < 1.5
