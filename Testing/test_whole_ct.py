"""Whole-CT scoring: lesion detection, lesion Dice, false positives, ignore regions, FROC, plans."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import POINTWISE_CENTRE, SHARED_DATA, make_pointwise_bundle, shared

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.segmentation.postprocess import PostprocessSettings
from LungTumorSegTrainingLib.evaluation.whole_ct import evaluate_plan, read_plan
from LungTumorSegTrainingLib.evaluation.whole_ct_cases import NON_COMMERCIAL, Reference, find_whole_ct_cases
from LungTumorSegTrainingLib.evaluation.whole_ct_scoring import (
    choose_min_peak,
    froc_points,
    nested_peak_choice,
    peak_points,
    score_label,
    summarise,
)

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # 2 ul voxels: 0.002 ml


def _box(shape, *slices):
    mask = np.zeros(shape, bool)
    mask[slices] = True
    return mask


def _reference(shape=(60, 60, 30)):
    tumour = _box(shape, slice(5, 15), slice(5, 15), slice(5, 10)) | _box(
        shape, slice(40, 50), slice(40, 50), slice(5, 10)
    )
    ignore = _box(shape, slice(20, 30), slice(40, 50), slice(20, 25))
    nodes = _box(shape, slice(45, 55), slice(5, 15), slice(20, 25))
    return Reference(tumour, ignore, nodes, AFFINE)


def test_score_label_counts_detections_dice_and_only_real_false_positives():
    ref = _reference()
    pred = np.zeros(ref.tumour.shape, bool)
    pred[5:15, 5:10, 5:10] = True  # half of lesion 1: Dice 2*250/(250+500) = 2/3
    pred[30:40, 20:30, 20:25] = True  # 500 voxels = 1.0 ml away from everything: a false positive
    pred[2, 55, 25] = True  # 0.002 ml: below the 0.1 ml false-positive size
    pred[22:28, 42:48, 21:24] = True  # inside the ignore region: not scored
    pred[47:53, 7:13, 21:24] = True  # on an involved node: not a false positive
    score = score_label(pred, ref)
    assert score["reference_lesions"] == 2 and score["detected"] == 1 and not score["all_detected"]
    assert score["lesions"][0]["dice"] == pytest.approx(2 / 3)
    assert score["lesions"][1] == pytest.approx({**score["lesions"][1], "detected": False, "dice": 0.0})
    assert score["lesion_dice"] == pytest.approx(1 / 3)
    assert score["false_positives"] == 1 and score["false_positive_ml"] == [pytest.approx(1.0)]
    # RECIST end points are voxel corners: a 10 x 10 voxel square measures its full diagonal
    assert score["lesions"][0]["long_axis_mm"] == pytest.approx(np.hypot(10, 10))
    assert score["lesions"][0]["long_axis_error"] == pytest.approx(np.hypot(10, 5) / np.hypot(10, 10) - 1)


def test_a_perfect_prediction_scores_one_and_no_false_positive():
    ref = _reference()
    score = score_label(ref.tumour, ref)
    assert score["all_detected"] and score["lesion_dice"] == 1.0 and score["case_dice"] == 1.0
    assert score["false_positives"] == 0 and score["mean_abs_long_axis_error"] == 0.0


def test_froc_sensitivity_falls_and_false_positives_fall_with_the_threshold():
    ref = _reference()
    probability = np.zeros(ref.tumour.shape, np.float32)
    probability[ref.tumour] = np.where(np.arange(ref.tumour.sum()) < 500, 0.85, 0.35)
    probability[30:40, 20:30, 20:25] = 0.55  # a false positive until the threshold passes 0.55
    settings = PostprocessSettings(threshold=0.5, min_lesion_ml=0.0, restrict_to_lung=False)
    points = {p["threshold"]: p for p in froc_points(probability, None, ref, settings)}
    assert points[0.3]["detected"] == 2 and points[0.5]["detected"] == 1 and points[0.9]["detected"] == 0
    assert points[0.5]["false_positives"] == 1 and points[0.6]["false_positives"] == 0
    rows = [{**score_label(probability > 0.5, ref), "froc": list(points.values())}]
    summary = summarise(rows)
    assert summary["lesions"] == 2 and summary["lesions_detected"] == 1
    curve = {p["threshold"]: p for p in summary["froc"]}
    assert curve[0.3]["sensitivity"] == 1.0 and curve[0.5]["false_positives_per_ct"] == 1.0


def test_a_plan_may_not_score_a_case_twice(tmp_path):
    plan = tmp_path / "cv_plan.json"
    plan.write_text(json.dumps({"folds": [{"model": "a", "cases": ["x"]}, {"model": "b", "cases": ["x", "y"]}]}))
    with pytest.raises(InputError, match="case x is in folds fold0 and fold1"):
        read_plan(plan)
    plan.write_text(json.dumps({"folds": [{"model": ["a", "/abs/b"], "cases": ["x"], "weights": [0.5, 0.5]}]}))
    (fold,) = read_plan(plan)
    assert fold.model == [str(tmp_path / "a"), "/abs/b"] and fold.weights == [0.5, 0.5]
    plan.write_text("{}")
    with pytest.raises(InputError, match="not a cross-validation plan"):
        read_plan(plan)


def test_the_shared_whole_cts_are_found_with_patients_and_licences():
    shared("chest-ct")
    cases = {c.name: c for c in find_whole_ct_cases(SHARED_DATA)}
    assert "nsclc-radiogenomics-R01-001" not in cases  # unlabelled
    assert len(cases) >= 6
    assert cases["lidc-idri-0003"].patient == "LIDC-IDRI-0003" and cases["lidc-idri-0003"].votes is not None
    assert cases["nsclc-radiomics-LUNG1-001"].licence == NON_COMMERCIAL
    assert cases["ibsi-ct-phantom-nsclc"].licence == NON_COMMERCIAL
    assert cases["4dlung-113_HM10395-phase40"].involved_nodes is not None
    with pytest.raises(InputError, match="not a labelled whole CT"):
        find_whole_ct_cases(SHARED_DATA, ["nsclc-radiogenomics-R01-001"])
    ref = Reference.load(cases["lidc-idri-0003"])
    assert ref.ignore.sum() > 0 and not (ref.ignore & ref.tumour).any()  # the one-reader nodule


def test_lesions_must_reach_the_peak_probability_to_be_kept():
    from LungTumorSegLib.segmentation.postprocess import postprocess

    probability = np.zeros((40, 40, 20), np.float32)
    probability[5:15, 5:15, 5:10] = 0.6  # a lesion the models are unsure of
    probability[25:35, 25:35, 5:10] = 0.6
    probability[28:32, 28:32, 6:9] = 0.97  # ...and one with a confident core
    settings = PostprocessSettings(threshold=0.5, min_lesion_ml=0.0, restrict_to_lung=False)
    assert postprocess(probability, 0.001, settings).sum() == 1000
    settings.min_peak_probability = 0.9
    kept = postprocess(probability, 0.001, settings)
    assert kept.sum() == 500 and kept[25:35, 25:35, 5:10].all()  # the confident lesion keeps its 0.5 outline
    ref = Reference(probability > 0.9, np.zeros_like(kept, bool), np.zeros_like(kept, bool), AFFINE)
    points = {p["min_peak_probability"]: p for p in peak_points(probability, None, ref, settings)}
    assert points[0.5]["false_positives"] == 1 and points[0.9]["false_positives"] == 0
    assert points[0.98]["detected"] == 0


def _sweep_row(fold, case, sweep):
    """A report row with a peak sweep: {level: (detected, false positives)}, one reference lesion."""
    points = [
        {"min_peak_probability": level, "detected": d, "false_positives": fp, "lesion_dice": 0.8 * d}
        for level, (d, fp) in sweep.items()
    ]
    return {"fold": fold, "case": case, "reference_lesions": 1, "peak_sweep": points}


def test_the_peak_level_is_chosen_on_the_other_folds_only():
    rows = [
        _sweep_row("fold0", "a", {0.5: (1, 3), 0.9: (1, 1), 0.98: (0, 0)}),
        _sweep_row("fold1", "b", {0.5: (1, 2), 0.9: (1, 0), 0.98: (1, 0)}),
        _sweep_row("fold2", "c", {0.5: (1, 4), 0.9: (0, 0), 0.98: (0, 0)}),
    ]
    assert choose_min_peak(rows) == 0.5  # 0.9 would lose case c's lesion
    choice = nested_peak_choice(rows)
    assert choice["per_fold"] == {"fold0": 0.5, "fold1": 0.5, "fold2": 0.9}  # fold2: chosen on a and b
    cv = choice["cross_validated"]
    assert cv["sensitivity"] == pytest.approx(2 / 3)  # c is lost at the level its fold did not choose
    assert cv["false_positives_per_ct"] == pytest.approx((3 + 2 + 0) / 3)
    assert nested_peak_choice([{"fold": "fold0", "case": "a"}]) is None  # no sweep, no choice


@pytest.mark.slow  # about 40 s alone on 2 cores: three whole-CT runs with their FROC and peak sweeps
def test_a_plan_evaluation_resumes_and_rescores_a_changed_model(tmp_path):
    shared("chest-ct/ibsi-ct-phantom-nsclc")
    make_pointwise_bundle(tmp_path / "model", spacing=(4.0, 4.0, 4.0))
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"folds": [{"name": "f0", "model": "model", "cases": ["ibsi-ct-phantom-nsclc"]}]}))
    logs: list[str] = []
    first = evaluate_plan(read_plan(plan), SHARED_DATA, tmp_path / "out", pictures=False, log=logs.append)
    (row,) = first["cases"]
    assert row["reference_lesions"] == 1 and len(row["froc"]) > 1 and "peak_choice" in first
    assert not any("reused" in line for line in logs)
    again = evaluate_plan(read_plan(plan), SHARED_DATA, tmp_path / "out", pictures=False, log=logs.append)
    assert again["cases"] == first["cases"] and any("reused" in line for line in logs)
    make_pointwise_bundle(tmp_path / "model2", spacing=(4.0, 4.0, 4.0), centres=(POINTWISE_CENTRE + 0.05,))
    plan.write_text(plan.read_text().replace('"model": "model"', '"model": "model2"'))
    logs.clear()
    evaluate_plan(read_plan(plan), SHARED_DATA, tmp_path / "out", pictures=False, log=logs.append)
    assert not any("reused" in line for line in logs)  # new weights: scored again
