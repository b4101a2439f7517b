"""The shipped model on real held-out data: LIDC test-split patients it never saw in training."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DEMO_NODULE, DEMO_NODULE_MASK, shared

from LungTumorSegLib.cli.main import main
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.measurements.metrics import dice
from LungTumorSegLib.model.bundle import find_bundle
from LungTumorSegLib.segmentation.options import SegmentOptions
from LungTumorSegLib.segmentation.pipeline import segment

HELD_OUT_CASES = 12
DICE_FLOOR = 0.6


@pytest.fixture(scope="module")
def default_bundle():
    bundle = find_bundle(None)
    if bundle.manifest.get("placeholder"):
        pytest.skip("the default bundle is an untrained placeholder")
    return bundle


def _test_split(bundle) -> list[str]:
    members = bundle.manifest.get("training", {}).get("members", [])
    test = members[0].get("split", {}).get("test", []) if members else []
    if not test:
        pytest.skip("the bundle's manifest records no held-out test split")
    return sorted(test)


def test_default_bundle_segments_held_out_lidc_nodules(default_bundle):
    cases = [c for c in _test_split(default_bundle) if c.startswith("LIDC-IDRI")][:HELD_OUT_CASES]
    networks = default_bundle.load_networks("cpu")
    scores = []
    for case in cases:
        image = load_volume(shared(f"lidc-nodule-crops/image/{case}.nii.gz"))
        truth = load_volume(shared(f"lidc-nodule-crops/mask/{case}.nii.gz")).array > 0
        result = segment(image, default_bundle, SegmentOptions(device="cpu"), networks=networks)
        assert result.label.same_grid(image, atol=0)
        scores.append(dice(result.label.array > 0, truth))
    assert len(scores) == HELD_OUT_CASES
    assert float(np.mean(scores)) >= DICE_FLOOR, f"mean Dice {np.mean(scores):.3f} on {cases}"


def test_demo_command_segments_the_demo_nodule(tmp_path, default_bundle):
    """What `make demo` shows: the held-out nodule sample segmented, measured and pictured."""
    assert main(["segment", str(DEMO_NODULE), "-o", str(tmp_path), "--progress", "none"]) == 0
    label = load_volume(tmp_path / "demo_nodule_tumor.nii.gz").array > 0
    truth = load_volume(DEMO_NODULE_MASK).array > 0
    # the nodule is found and lies inside the readers' outline; 0.3.0 draws only its solid core (Dice 0.47,
    # 0.2.1: 0.85): the under-segmentation of crops the model card reports
    assert dice(label, truth) >= 0.4 and (label & truth).sum() >= 0.95 * label.sum()
    summary = json.loads((tmp_path / "demo_nodule_summary.json").read_text())
    assert summary["info"]["model"] == default_bundle.name
    lesions = json.loads((tmp_path / "demo_nodule_measurements.json").read_text())["lesions"]
    assert len(lesions) >= 1 and lesions[0]["measurable"]
    assert (tmp_path / "demo_nodule_overlay.png").stat().st_size > 10_000
