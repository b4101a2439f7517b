"""The bundled model's answer for a lesion must not depend on how much anatomy surrounds it.

The LIDC-IDRI-0001 whole CT's nodule (marked by all four readers) is segmented with seed-point cubes of
40, 80 and 160 mm around it and on the whole scan; the lesion found must match the reference every time
(Dice >= 0.6), and the Dice may change by at most 0.05 between the smallest region and the whole scan.
(0.3.0: 0.94 / 0.94 / 0.75 / 0.90; the 160 mm cube, whose cut body edges fall inside the window, is the
weakest: see the model card.)
"""

from __future__ import annotations

import pytest
from conftest import SHARED_DATA, shared

from LungTumorSegLib.model.bundle import find_bundle
from LungTumorSegLib.model.model_names import DEFAULT_MODELS
from LungTumorSegLib.segmentation.options import SegmentOptions
from LungTumorSegTrainingLib.evaluation.whole_ct import CONTEXT_ROIS_MM, context_sweep
from LungTumorSegTrainingLib.evaluation.whole_ct_cases import find_whole_ct_cases

MAX_DICE_CHANGE = 0.05
MIN_DICE = 0.6


@pytest.fixture(scope="module")
def bundled():
    bundle = find_bundle(DEFAULT_MODELS[0])
    return bundle, bundle.load_networks("cpu")


def test_the_same_nodule_gets_the_same_segmentation_whatever_the_region_around_it(bundled):
    shared("chest-ct/lidc-idri-0001")
    (case,) = find_whole_ct_cases(SHARED_DATA, ["lidc-idri-0001"])
    rows = context_sweep(case, *bundled, options=SegmentOptions(device="cpu", tta=1))
    dices = {row["roi_mm"]: row["dice"] for row in rows}
    assert list(dices) == list(CONTEXT_ROIS_MM)
    assert min(dices.values()) >= MIN_DICE, dices
    assert abs(dices[40.0] - dices[None]) <= MAX_DICE_CHANGE, dices
