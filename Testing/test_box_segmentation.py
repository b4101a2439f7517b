"""Box-prompted lesion segmentation (LiteMedSAM) on real CT: the engine API, re-prompting, orientation, bad boxes,
and ``lungtumorseg segment --box``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import DEMO_NODULE, DEMO_NODULE_MASK, reoriented, shared

from LungTumorSegLib.cli.main import main
from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.core.volume import Volume
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.measurements.lesion_measurements import measure_lesions
from LungTumorSegLib.model.litemedsam import load_litemedsam
from LungTumorSegLib.segmentation.box_prompts import LesionPrompt, place_prompt
from LungTumorSegLib.segmentation.box_segmentation import BoxLesion, BoxSegmentOptions, _measure, segment_boxes

SLICES = (24, 30)  # seven 1 mm slices through the middle of the demo nodule (stored index k)


def box_corners(reference: Volume, k_range: tuple[int, int], margin: float = 0.1) -> tuple[list, list]:
    """RAS corners of the reference's voxel box on slices k_range, grown by ``margin`` of its size in-plane."""
    sub = reference.array[:, :, k_range[0] : k_range[1] + 1] > 0
    ijk = np.argwhere(sub) + [0, 0, k_range[0]]
    low, high = ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5
    corners = reference.voxel_to_ras(np.array([low, high]))
    first, last = corners.min(axis=0), corners.max(axis=0)
    grow = margin * (last - first)
    grow[2] = 0.0
    return list(first - grow), list(last + grow)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return load_litemedsam()


@pytest.fixture(scope="module")
def nodule():
    return load_volume(DEMO_NODULE), load_volume(DEMO_NODULE_MASK)


@pytest.fixture(scope="module")
def first_run(model, nodule):
    ct, reference = nodule
    return segment_boxes(
        ct, [LesionPrompt(box_corners(reference, SLICES))], BoxSegmentOptions(device="cpu"), None, model
    )


def test_a_box_gives_the_nodule_on_the_ct_grid_with_its_measurements(first_run, nodule):
    ct, reference = nodule
    result = first_run
    assert result.label.same_grid(ct) and result.probability.same_grid(ct) and result.entropy.same_grid(ct)
    label = result.label.array
    assert set(np.unique(label)) == {0, 1}
    inside = np.zeros(ct.shape, bool)
    inside[:, :, SLICES[0] : SLICES[1] + 1] = True
    assert not label[~inside].any()  # nothing beyond the box's slices
    assert dice(label[inside] > 0, reference.array[inside] > 0) > 0.8
    p, h = result.probability.array, result.entropy.array
    assert p.min() >= 0.0 and p.max() <= 1.0 and h.min() >= 0.0 and h.max() <= 1.0
    assert np.all(h[p == 0] == 0) and h[(p > 0.3) & (p < 0.7)].min() > 0.8  # binary entropy in bits
    (lesion,) = result.measurements.lesions
    assert lesion.lesion_id == 1 and lesion.voxel_count == np.count_nonzero(label)
    assert lesion.volume_ml == pytest.approx(np.count_nonzero(label) * ct.voxel_volume_ml)
    on_slices = reference.with_array((reference.array > 0) & inside)
    (expected,) = measure_lesions(on_slices).lesions
    # the network keeps the nodule's pleural tail, which the readers left out: a longer long axis
    assert expected.long_axis_mm * 0.9 < lesion.long_axis_mm < expected.long_axis_mm * 1.35
    assert lesion.mean_entropy is not None
    info = result.info["box_lesions"][0]
    assert info["lesion_id"] == 1 and info["voxel_count"] == lesion.voxel_count
    assert result.info["timings"]["slices_encoded"] == SLICES[1] - SLICES[0] + 1
    assert result.info["tinyvit_helpers"] in ("timm", "monai")


def test_re_prompting_the_same_ct_reuses_the_encoded_slices(first_run, nodule, model):
    """A second prompt (here an exclude click on the nodule's middle slice) costs no encoder pass, and the click
    reaches the network: that slice's outline shrinks."""
    ct, reference = nodule
    corners = box_corners(reference, SLICES)
    middle = (SLICES[0] + SLICES[1]) // 2
    centre = ct.voxel_to_ras(np.argwhere(reference.array[:, :, middle] > 0).mean(axis=0).tolist() + [middle])
    prompt = LesionPrompt(corners, exclude_points=[list(centre)])
    again = segment_boxes(ct, [prompt], BoxSegmentOptions(device="cpu"), None, model, encoder=first_run.encoder)
    assert again.info["timings"]["slices_encoded"] == 0
    before = np.count_nonzero(first_run.label.array[:, :, middle])
    assert np.count_nonzero(again.label.array[:, :, middle]) < 0.9 * before


def test_a_slice_box_replaces_the_propagated_box_on_its_slice(first_run, nodule, model):
    """A 2D box (two corners on one slice) over half of the nodule on the middle slice: that slice's outline halves."""
    ct, reference = nodule
    corners = box_corners(reference, SLICES)
    middle = (SLICES[0] + SLICES[1]) // 2
    ijk = np.argwhere(reference.array[:, :, middle] > 0)
    (i0, j0), (i1, j1) = ijk.min(axis=0), ijk.max(axis=0)
    half = ct.voxel_to_ras(np.array([[i0, j0, middle], [(i0 + i1) / 2, j1, middle]], dtype=float))
    prompt = LesionPrompt(corners, slice_boxes=[(list(half[0]), list(half[1]))])
    placed = place_prompt(reoriented(ct, "RAS"), prompt)
    assert list(placed.slice_rectangles) == [placed.box.middle_slice]
    again = segment_boxes(ct, [prompt], BoxSegmentOptions(device="cpu"), None, model, encoder=first_run.encoder)
    assert again.info["timings"]["slices_encoded"] == 0
    before = np.count_nonzero(first_run.label.array[:, :, middle])
    assert np.count_nonzero(again.label.array[:, :, middle]) < 0.75 * before


def test_the_answer_does_not_depend_on_how_the_ct_is_stored(first_run, nodule, model):
    ct, reference = nodule
    flipped = reoriented(ct, "RAS")  # stored LPS: both in-plane axes reversed
    result = segment_boxes(
        flipped, [LesionPrompt(box_corners(reference, SLICES))], BoxSegmentOptions(device="cpu"), None, model
    )
    back = reoriented(result.label, "LPS")
    assert back.same_grid(ct)
    np.testing.assert_array_equal(back.array, first_run.label.array)


def test_lesions_are_numbered_by_their_box():
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    label = np.zeros((20, 20, 10), np.uint8)
    label[2:6, 2:6, 2:5] = 1
    label[10:18, 10:18, 3:7] = 3  # box 2 found nothing; box 3's lesion is the larger
    volume = Volume(label, affine)
    ct = Volume(np.where(label > 0, 20.0, -800.0).astype(np.float32), affine)
    lesions = [BoxLesion(n, None) for n in (1, 2, 3)]  # type: ignore[arg-type]
    measured = _measure(volume, ct, volume.with_array(np.zeros(label.shape, np.float32)), lesions)
    assert [m.lesion_id for m in measured.lesions] == [1, 3]
    assert [lesion.voxel_count for lesion in lesions] == [48, 0, 256]
    assert measured.lesions[1].volume_ml == pytest.approx(256 * 2.0 / 1000)
    assert set(measured.target_lesion_ids) <= {1, 3}


@pytest.mark.parametrize(
    ("corners", "message"),
    [
        (([500, 500, 500], [520, 520, 520]), "lies outside the image"),
        (([100, 180, 200], [100, 190, 210]), "zero size along R"),
        (([100, 180, 200], [110, 190, 200]), "zero size along S"),
        (([-100, 180, 200], [110, 190, 210]), "more than 200 mm"),
        (([100, 180, float("nan")], [110, 190, 210]), "6 finite numbers"),
    ],
)
def test_bad_boxes_are_one_line_errors(nodule, corners, message):
    ct, _ = nodule
    with pytest.raises(InputError, match=message):
        place_prompt(reoriented(ct, "RAS"), LesionPrompt(corners))


def test_a_point_outside_its_box_is_refused(nodule):
    ct, reference = nodule
    corners = box_corners(reference, SLICES)
    with pytest.raises(InputError, match="outside its lesion's box"):
        place_prompt(reoriented(ct, "RAS"), LesionPrompt(corners, include_points=[[0.0, 0.0, 0.0]]))


def test_segment_box_writes_the_output_set(tmp_path, nodule, capsys):
    _, reference = nodule
    first, last = box_corners(reference, SLICES)
    args = ["segment", str(DEMO_NODULE), "-o", str(tmp_path), "--progress", "json", "--threads", "2"]
    assert main([*args, "--box", *map(str, first), *map(str, last)]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(e["event"] == "progress" and e["step"] == "segment" for e in events)
    result = next(e for e in events if e["event"] == "result")
    stem = "demo_nodule"
    names = {p.name for p in tmp_path.iterdir()}
    expected = {f"{stem}_{k}.nii.gz" for k in ("tumor", "probability", "entropy")}
    expected |= {f"{stem}_{k}" for k in ("summary.json", "measurements.json", "lesions.csv", "summary.csv")}
    expected |= {f"{stem}_overlay.png", f"{stem}_report.html"}
    assert expected <= names and f"{stem}_mutual_information.nii.gz" not in names
    summary = json.loads((tmp_path / f"{stem}_summary.json").read_text())
    assert summary["info"]["model"].startswith("LiteMedSAM") and summary["lesions"]["lesion_count"] == 1
    assert summary["info"]["box_lesions"][0]["grew_past_box"] in (True, False)
    lesions = json.loads((tmp_path / f"{stem}_measurements.json").read_text())["lesions"]
    assert [lesion["lesion_id"] for lesion in lesions] == [1]
    assert result["outputs"]["tumor"].endswith(f"{stem}_tumor.nii.gz")
    label = load_volume(tmp_path / f"{stem}_tumor.nii.gz")
    assert label.same_grid(reference) and dice(label.array > 0, reference.array > 0) > 0.15  # 7 of 43 slices


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--box", "500", "500", "500", "520", "520", "520"], "lies outside the image"),
        (["--box", "100", "180", "200", "100", "190", "210"], "zero size along R"),
        (["--box", "-100", "180", "200", "110", "190", "210"], "more than 200 mm"),
        (["--box", "100", "180", "200", "110", "190", "210", "--tta", "2"], "--tta: not used with --box"),
        (["--box", "100", "180", "200", "110", "190", "210", "--include", "0", "0", "0"], "in no --box"),
        (["--include", "0", "0", "0"], "--include: only used with --box"),
        (["--hu-gate", "off"], "--hu-gate: only used with --box"),
        (["--slice-box", "100", "180", "200", "110", "190", "200"], "--slice-box: only used with --box"),
        (
            ["--box", "80", "160", "190", "110", "200", "220", "--slice-box", "90", "170", "200", "100", "190", "201"],
            "two corners on one axial slice",
        ),
    ],
)
def test_bad_box_options_exit_2_with_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert main(["segment", str(DEMO_NODULE), "-o", str(out), "--progress", "none", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()


def test_box_with_several_inputs_is_refused(tmp_path, capsys):
    box = ["--box", "100", "180", "200", "110", "190", "210"]
    assert main(["segment", str(DEMO_NODULE), str(DEMO_NODULE_MASK), "-o", str(tmp_path / "o"), *box]) == 2
    assert "give one CT" in capsys.readouterr().err


def test_an_existing_output_is_kept(tmp_path, nodule, capsys):
    _, reference = nodule
    first, last = box_corners(reference, SLICES)
    kept = tmp_path / "demo_nodule_tumor.nii.gz"
    kept.write_bytes(b"not mine to replace")
    assert main(["segment", str(DEMO_NODULE), "-o", str(tmp_path), "--box", *map(str, first), *map(str, last)]) == 2
    assert "already exist" in capsys.readouterr().err and kept.read_bytes() == b"not mine to replace"


@pytest.mark.slow
def test_simulated_user_on_a_whole_lidc_ct(model):
    """The reference nodule's box + 10 % on a whole LIDC CT (the benchmark's protocol, one case)."""
    ct_path, tumor_path = shared("chest-ct/lidc-idri-0001/ct.nii.gz"), shared("chest-ct/lidc-idri-0001/tumor.nii.gz")
    ct, tumor = load_volume(ct_path), load_volume(tumor_path)
    ijk = np.argwhere(tumor.array > 0)
    corners = tumor.voxel_to_ras(np.array([ijk.min(axis=0) - 0.5, ijk.max(axis=0) + 0.5]))
    low, high = corners.min(axis=0), corners.max(axis=0)
    grow = 0.1 * (high - low)
    result = segment_boxes(ct, [LesionPrompt((low - grow, high + grow))], BoxSegmentOptions(device="cpu"), None, model)
    assert dice(result.label.array > 0, tumor.array > 0) > 0.75
    assert not result.lesions[0].voxels_outside_box
