"""Ensemble/TTA inference, uncertainty and resampling back onto the input grid, with exact answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import (
    HU_WINDOW,
    LUNG_HU,
    NODULE_HU,
    POINTWISE_CENTRE,
    make_pointwise_bundle,
    pointwise_probability,
    reoriented,
    synthetic_chest,
)
from scipy import ndimage

from LungTumorSegLib.core.resampling import resample
from LungTumorSegLib.model.bundle import read_bundle
from LungTumorSegLib.model.inference import (
    InferenceSettings,
    _sliding_window,
    predict_ensemble,
    tta_flips,
    window_count,
)
from LungTumorSegLib.model.networks import build_network
from LungTumorSegLib.model.uncertainty import binary_entropy, mutual_information
from LungTumorSegLib.segmentation.options import SegmentOptions
from LungTumorSegLib.segmentation.pipeline import segment


def test_entropy_is_in_bits_with_maximum_at_one_half():
    p = torch.linspace(0, 1, 101)
    h = binary_entropy(p)
    assert h.min() >= 0 and h.max() <= 1
    assert h[50] == pytest.approx(1.0, abs=1e-6)
    assert h[0] < 1e-5 and h[-1] < 1e-5
    assert torch.allclose(h, binary_entropy(1 - p), atol=1e-6)


def test_mutual_information_separates_disagreement():
    agree = torch.tensor([0.9, 0.9])
    disagree = torch.tensor([0.1, 0.9])
    for samples, expect_zero in ((agree, True), (disagree, False)):
        mean_p = samples.mean()
        mi = mutual_information(mean_p, binary_entropy(samples).mean())
        assert (mi < 1e-6) == expect_zero
        assert mi >= 0


@pytest.mark.parametrize("codes", ["RAS", "LPS", "SLP"])
def test_pipeline_output_equals_direct_prediction_voxel_by_voxel(tmp_path, codes):
    """At the model's own spacing, the pipeline adds nothing: p equals f(HU) at every input voxel."""
    ct, _ = synthetic_chest()
    ct = reoriented(ct, codes)
    bundle = read_bundle(make_pointwise_bundle(tmp_path / "pw", spacing=(1.5, 1.5, 2.5)))
    result = segment(ct, bundle, SegmentOptions(tta=1, crop_to_lung=False, device="cpu"))
    assert result.probability.same_grid(ct, atol=0) and result.label.same_grid(ct, atol=0)
    assert np.abs(result.probability.array - pointwise_probability(ct.array)).max() < 1e-5


@pytest.mark.parametrize("codes", ["LPS", "SAL"])
def test_resampling_back_lands_on_the_input_grid(tmp_path, codes):
    """Model spacing twice the CT's: the nodule comes back where it was (Dice, centroid)."""
    nodule_centre, radius = (-30.0, 5.0, 8.0), 9.0
    ct, truth = synthetic_chest(nodules=((nodule_centre, radius),))
    ct, truth_volume = reoriented(ct, codes), reoriented(ct.with_array(truth.astype(np.uint8)), codes)
    # threshold half-way between lung and nodule HU, so that blurring by resampling is unbiased
    centre = ((LUNG_HU + NODULE_HU) / 2 - HU_WINDOW[0]) / (HU_WINDOW[1] - HU_WINDOW[0])
    bundle = read_bundle(make_pointwise_bundle(tmp_path / "pw", spacing=(3.0, 3.0, 5.0), centres=(centre,)))
    result = segment(ct, bundle, SegmentOptions(tta=1, device="cpu", restrict_to_lung=False))
    assert np.array_equal(result.label.affine, ct.affine)
    near = np.linalg.norm(ct.voxel_to_ras(np.argwhere(np.ones(ct.shape, bool))) - nodule_centre, axis=1)
    near = (near <= radius + 10).reshape(ct.shape)  # the body is "tumour" too at this threshold: look near the nodule
    label, truth = result.label.array.astype(bool) & near, truth_volume.array.astype(bool)
    dice = 2 * np.logical_and(label, truth).sum() / (label.sum() + truth.sum())
    assert dice > 0.9
    centroid = ct.voxel_to_ras(np.array(ndimage.center_of_mass(label)))
    assert np.linalg.norm(centroid - np.array(nodule_centre)) < 0.5 * min(ct.spacing)


def test_lung_crop_gives_the_same_label_as_the_whole_image(tmp_path):
    ct, truth = synthetic_chest(nodules=(((-30.0, 0.0, 0.0), 8.0), ((32.0, -10.0, 15.0), 6.0)))
    bundle = read_bundle(make_pointwise_bundle(tmp_path / "pw", spacing=(1.5, 1.5, 2.5)))
    cropped = segment(ct, bundle, SegmentOptions(tta=1, device="cpu"))
    whole = segment(ct, bundle, SegmentOptions(tta=1, crop_to_lung=False, device="cpu"))
    assert cropped.info["lung_field_found"]
    assert np.prod([b - a for a, b in cropped.info["region_voxels"]]) < 0.8 * np.prod(ct.shape)
    assert np.array_equal(cropped.label.array, whole.label.array)
    assert ndimage.label(cropped.label.array)[1] == 2


def test_flip_tta_is_inverted_exactly_for_an_equivariant_model(tmp_path):
    bundle = read_bundle(make_pointwise_bundle(tmp_path / "pw", spacing=(1.0, 1.0, 1.0)))
    members = bundle.load_networks("cpu")
    image = torch.rand(40, 36, 20)
    plain = predict_ensemble(image, members, InferenceSettings((32, 32, 16), flips=tta_flips(1)))
    tta = predict_ensemble(image, members, InferenceSettings((32, 32, 16), flips=tta_flips(8)))
    assert torch.allclose(plain.probability, tta.probability, atol=1e-6)
    # a model that is not flip-equivariant does change under TTA, so the check above can fail
    torch.manual_seed(0)
    network = build_network("UNet", {"in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]}).eval()
    spec = members[0][0]
    plain = predict_ensemble(image, [(spec, network)], InferenceSettings((32, 32, 16), flips=tta_flips(1)))
    tta = predict_ensemble(image, [(spec, network)], InferenceSettings((32, 32, 16), flips=tta_flips(8)))
    assert not torch.allclose(plain.probability, tta.probability, atol=1e-4)


def test_ensemble_is_the_weighted_mean_of_its_members(tmp_path):
    centres, weights = (POINTWISE_CENTRE, POINTWISE_CENTRE + 0.15), (1.0, 3.0)
    bundle = read_bundle(make_pointwise_bundle(tmp_path / "pw", (1.0, 1.0, 1.0), centres, weights))
    members = bundle.load_networks("cpu")
    image = torch.linspace(0, 1, 32 * 32 * 32).reshape(32, 32, 32)
    out = predict_ensemble(image, members, InferenceSettings((32, 32, 32)))
    hu = image.numpy() * 1400.0 - 1000.0
    expected = 0.25 * pointwise_probability(hu, centre=centres[0]) + 0.75 * pointwise_probability(hu, centre=centres[1])
    assert np.abs(out.probability.numpy() - expected).max() < 1e-5
    assert out.entropy.max() <= 1.0 and out.entropy.min() >= 0.0
    disagree = np.abs(pointwise_probability(hu, centre=centres[0]) - pointwise_probability(hu, centre=centres[1])) > 0.5
    assert out.mutual_information.numpy()[disagree].min() > 0.1
    assert out.mutual_information.numpy()[~disagree].mean() < out.mutual_information.numpy()[disagree].mean()


@pytest.mark.parametrize(
    "shape, roi, overlap",
    [((40, 36, 20), (32, 32, 16), 0.25), ((100, 70, 50), (32, 16, 16), 0.5), ((20, 20, 8), (32, 32, 16), 0.25)],
)
def test_window_count_matches_the_windows_monai_evaluates(shape, roi, overlap):
    calls = []

    def predictor(windows: torch.Tensor) -> torch.Tensor:
        calls.append(windows.shape[0])
        return torch.zeros(windows.shape[0], 2, *windows.shape[2:])

    settings = InferenceSettings(roi, overlap=overlap, sw_batch_size=3)
    _sliding_window(predictor, torch.rand(1, 1, *shape), settings, torch.device("cpu"), torch.device("cpu"), 3)
    assert sum(calls) == window_count(shape, roi, overlap)


def test_progress_moves_within_each_pass_and_never_goes_back(tmp_path):
    centres = (POINTWISE_CENTRE, POINTWISE_CENTRE + 0.1)
    bundle = read_bundle(make_pointwise_bundle(tmp_path / "pw", (1.0, 1.0, 1.0), centres, (1.0, 1.0)))
    members = bundle.load_networks("cpu")
    events: list[tuple[float, str]] = []
    settings = InferenceSettings((16, 16, 8), flips=tta_flips(2), sw_batch_size=1)
    predict_ensemble(torch.rand(64, 64, 32), members, settings, progress=lambda f, m: events.append((f, m)))
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    passes = 2 * len(members)
    # hundreds of windows per pass: every pass reports many times, not only when it ends
    first_pass = [f for f in fractions if f < 1 / passes]
    assert len(first_pass) >= 10
    assert len(fractions) <= passes * (1 / 0.02 + 1)


def test_seed_point_selects_the_lesion_under_the_point(tmp_path):
    a, b = ((-30.0, 0.0, 0.0), 8.0), ((32.0, -10.0, 15.0), 6.0)
    ct, _ = synthetic_chest(nodules=(a, b))
    ct = reoriented(ct, "LPS")
    bundle = read_bundle(make_pointwise_bundle(tmp_path / "pw", spacing=(1.5, 1.5, 2.5)))
    for point in (b[0], (b[0][0] + b[1] + 4.0, b[0][1], b[0][2])):  # inside b, then just beside it
        result = segment(ct, bundle, SegmentOptions(tta=1, device="cpu", point_ras=point, roi_mm=60))
        label = result.label.array
        assert ndimage.label(label)[1] == 1
        centroid = ct.voxel_to_ras(np.array(ndimage.center_of_mass(label)))
        assert np.linalg.norm(centroid - np.array(b[0])) < 1.5


def test_resample_round_trip_preserves_smooth_fields():
    field = torch.from_numpy(np.fromfunction(lambda i, j, k: np.sin(i / 9) + np.cos(j / 7) + k / 30, (60, 50, 30)))
    back = resample(resample(field, (30, 25, 15)), (60, 50, 30))
    assert back.shape == (60, 50, 30)
    assert (back - field.float())[4:-4, 4:-4, 4:-4].abs().max() < 0.05
