"""Sensitivity presets and candidates: manifest checks, which lesions each preset reports, the candidate list and
label map a panel reads, and the one-line refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import HU_WINDOW, POINTWISE_CENTRE, make_pointwise_bundle, synthetic_chest

from LungTumorSegLib.cli.main import main
from LungTumorSegLib.core.errors import BundleError, InputError
from LungTumorSegLib.io.image_io import load_volume, save_volume
from LungTumorSegLib.model.bundle import read_bundle
from LungTumorSegLib.model.sensitivity_presets import PRESET_NAMES, bundle_presets, default_preset_name
from LungTumorSegLib.segmentation.options import SegmentOptions
from LungTumorSegLib.segmentation.pipeline import segment
from LungTumorSegLib.slicer_glue.segment_helpers import (
    SegmentSettings,
    build_segment_command,
    candidate_rows,
    model_presets,
)

PRESETS = {
    "default": "high",
    "presets": {
        "high": {"min_peak_probability": 0.5, "candidate_min_peak": 0.1, "max_candidates": 10, "description": "h"},
        "balanced": {"min_peak_probability": 0.9, "candidate_min_peak": 0.2, "max_candidates": 1},
        "specific": {"min_peak_probability": 0.95, "candidate_min_peak": 1.0, "max_candidates": 0},
    },
}


def _hu_for(probability: float) -> float:
    """The HU the pointwise bundle maps to ``probability``."""
    x = POINTWISE_CENTRE + np.log(probability / (1 - probability)) / 40.0
    return float(x * (HU_WINDOW[1] - HU_WINDOW[0]) + HU_WINDOW[0])


# three nodules in the left lung, in RAS mm: sure (p ~ 1), middling (p 0.7) and weak (p 0.3)
NODULES = {"sure": ((-30.0, -15.0, -10.0), 300.0), "middling": ((-30.0, 15.0, -10.0), _hu_for(0.7))}
NODULES["weak"] = ((-30.0, 0.0, 20.0), _hu_for(0.3))


@pytest.fixture(scope="module")
def chest():
    """The synthetic chest with the three nodules at their HU (radius 7 mm)."""
    ct, _ = synthetic_chest(nodules=tuple((centre, 7.0) for centre, _ in NODULES.values()))
    for centre, hu in NODULES.values():
        _, mask = synthetic_chest(nodules=((centre, 7.0),))
        ct.array[mask] = hu
    return ct


@pytest.fixture(scope="module")
def preset_bundle(tmp_path_factory):
    """A real pointwise bundle whose manifest has the three presets."""
    path = make_pointwise_bundle(tmp_path_factory.mktemp("models") / "presets", spacing=(1.5, 1.5, 2.5))
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["output"]["sensitivity"] = PRESETS
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def _nearest(point, named=NODULES):
    return min(named, key=lambda name: np.linalg.norm(np.subtract(point, named[name][0])))


def _lesions(result):
    from scipy import ndimage

    labels, count = ndimage.label(result.label.array > 0, structure=np.ones((3, 3, 3), bool))
    centres = ndimage.center_of_mass(np.ones_like(labels), labels, range(1, count + 1))
    return sorted(_nearest(result.label.voxel_to_ras(np.asarray(c))) for c in centres)


def test_the_presets_are_read_in_order_with_their_default():
    presets = bundle_presets({"sensitivity": PRESETS})
    assert list(presets) == list(PRESET_NAMES) and default_preset_name({"sensitivity": PRESETS}) == "high"
    assert presets["specific"].max_candidates == 0 and presets["high"].description == "h"
    assert bundle_presets({}) == {} and default_preset_name({}) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["presets"].update(extreme=s["presets"]["high"]), "unknown preset"),
        (lambda s: s["presets"]["high"].update(min_peak_probability=1.5), "min_peak_probability must be a number"),
        (lambda s: s["presets"]["high"].pop("max_candidates"), "needs min_peak_probability"),
        (lambda s: s["presets"]["high"].update(max_candidates=2.5), "max_candidates must be a whole number"),
        (lambda s: s.update(default="loud"), "default 'loud' is not one of its presets"),
        (lambda s: s.update(presets={}), "non-empty 'presets'"),
    ],
)
def test_a_bad_preset_section_is_a_bundle_error_naming_the_field(preset_bundle, tmp_path, change, message):
    manifest = json.loads((preset_bundle / "manifest.json").read_text())
    change(manifest["output"]["sensitivity"])
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in preset_bundle.iterdir():
        (broken / item.name).write_bytes(item.read_bytes())
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=message):
        read_bundle(broken)


def test_each_preset_reports_its_lesions_and_lists_the_rest_as_candidates(preset_bundle, chest):
    bundle = read_bundle(preset_bundle)
    high = segment(chest, bundle, SegmentOptions(device="cpu"))  # the default preset
    assert high.info["sensitivity"]["preset"] == "high" and high.info["postprocess"]["min_peak_probability"] == 0.5
    assert _lesions(high) == ["middling", "sure"]
    assert [_nearest(c.centroid_ras) for c in high.candidate_list] == ["weak"]
    (weak,) = high.candidate_list
    assert 0.25 < weak.peak_probability < 0.35 and weak.label == 1
    centre = np.array(NODULES["weak"][0])
    assert np.all(np.array(weak.box_ras_min) < centre - 5) and np.all(np.array(weak.box_ras_max) > centre + 5)
    voxels = high.candidates.array == 1
    assert voxels.sum() == weak.voxels and high.info["candidates"] == 1
    assert weak.volume_ml == pytest.approx(voxels.sum() * chest.voxel_volume_ml)

    balanced = segment(chest, bundle, SegmentOptions(device="cpu", sensitivity="balanced"))
    assert _lesions(balanced) == ["sure"]  # the middling nodule (0.7) is below the 0.9 confidence level
    assert [_nearest(c.centroid_ras) for c in balanced.candidate_list] == ["middling"]  # the strongest of two
    specific = segment(chest, bundle, SegmentOptions(device="cpu", sensitivity="specific"))
    assert _lesions(specific) == ["sure"] and specific.candidate_list == [] and not specific.candidates.array.any()


def test_explicit_options_override_the_preset_and_a_seed_point_lists_no_candidates(preset_bundle, chest):
    bundle = read_bundle(preset_bundle)
    explicit = segment(chest, bundle, SegmentOptions(device="cpu", sensitivity="specific", min_peak_probability=0.6))
    assert _lesions(explicit) == ["middling", "sure"]
    point = segment(chest, bundle, SegmentOptions(device="cpu", point_ras=list(NODULES["sure"][0])))
    assert _lesions(point) == ["sure"] and point.candidate_list == []


def test_a_preset_of_a_model_without_presets_is_refused(tmp_path, chest):
    plain = read_bundle(make_pointwise_bundle(tmp_path / "plain", spacing=(1.5, 1.5, 2.5)))
    result = segment(chest, plain, SegmentOptions(device="cpu"))
    assert result.info["sensitivity"] is None and result.candidate_list == []
    with pytest.raises(InputError, match="--sensitivity high: model plain has no sensitivity presets"):
        segment(chest, plain, SegmentOptions(device="cpu", sensitivity="high"))


def test_the_cli_writes_the_candidates_for_a_panel(tmp_path, preset_bundle, chest, capsys):
    ct_path = save_volume(chest, tmp_path / "chest.nii.gz")
    out = tmp_path / "out"
    args = ["segment", str(ct_path), "-o", str(out), "--model", str(preset_bundle), "--progress", "none"]
    assert main([*args, "--sensitivity", "balanced", "--no-pictures"]) == 0
    assert "1 lesion(s)" in capsys.readouterr().out
    document = json.loads((out / "chest_candidates.json").read_text())
    assert document["sensitivity"]["preset"] == "balanced" and document["lesions_reported"] == 1
    assert document["label_map"] == "chest_candidates.nii.gz"
    label_map = load_volume(out / "chest_candidates.nii.gz", dtype=None)
    assert label_map.same_grid(chest) and set(np.unique(label_map.array)) == {0, 1}
    (row,) = candidate_rows(document)
    assert _nearest(row["centroid_ras"]) == "middling" and row["label"] == 1
    inside = np.argwhere(label_map.array == 1)
    ras = label_map.voxel_to_ras(inside)
    assert np.all(ras >= np.array(row["box_ras_min"])) and np.all(ras <= np.array(row["box_ras_max"]))
    # a rerun with --overwrite replaces the candidates too; without it, they block like every other output
    assert main([*args, "--sensitivity", "specific", "--no-pictures"]) == 2
    assert main([*args, "--sensitivity", "specific", "--no-pictures", "--overwrite"]) == 0
    assert json.loads((out / "chest_candidates.json").read_text())["candidates"] == []


def test_the_cli_refuses_a_preset_the_model_lacks_before_any_work(tmp_path, chest, capsys):
    plain = make_pointwise_bundle(tmp_path / "plain", spacing=(1.5, 1.5, 2.5))
    ct_path = save_volume(chest, tmp_path / "chest.nii.gz")
    code = main(["segment", str(ct_path), "-o", str(tmp_path / "out"), "--model", str(plain), "--sensitivity", "high"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "has no sensitivity presets" in err[0]
    assert not (tmp_path / "out").exists()


def test_the_slicer_helpers_pass_the_preset_and_read_the_presets(preset_bundle):
    command = build_segment_command("python", "ct.nrrd", "out", SegmentSettings(sensitivity="specific"))
    assert command[command.index("--sensitivity") + 1] == "specific"
    assert "--sensitivity" not in build_segment_command("python", "ct.nrrd", "out", SegmentSettings())
    with pytest.raises(ValueError, match="sensitivity must be one of"):
        build_segment_command("python", "ct.nrrd", "out", SegmentSettings(sensitivity="loud"))
    rows, default = model_presets(json.loads((preset_bundle / "manifest.json").read_text()))
    assert [row["name"] for row in rows] == ["high", "balanced", "specific"] and default == "high"
    assert model_presets({"output": {}}) == ([], None)


def test_the_report_lists_the_candidates_with_the_preset(tmp_path, preset_bundle, chest):
    ct_path = save_volume(chest, tmp_path / "chest.nii.gz")
    args = ["segment", str(ct_path), "-o", str(tmp_path / "out"), "--model", str(preset_bundle), "--progress", "none"]
    assert main(args) == 0
    report = (tmp_path / "out" / "chest_report.html").read_text()
    assert "high: lesions reported from peak probability 0.5; up to 10 candidates from probability 0.1" in report
    assert "Candidates (not reported: review them)" in report and report.count("<tr><td>1</td><td>0.3") == 1
