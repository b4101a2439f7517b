"""What the Slicer module decides without Slicer: model defaults, table values, the entropy display.

The real engine segments the bundled demo nodule (held-out LIDC-IDRI patient) once for the whole module. Seed clicks
and their undo are tested against real MRML in test_mrml_editing.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DEMO_NODULE
from scipy import ndimage

from LungTumorSegLib.cli.main import build_parser
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.measurements.lesion_measurements import measure_lesions
from LungTumorSegLib.model.bundle import find_bundle
from LungTumorSegLib.segmentation.options import SegmentOptions
from LungTumorSegLib.segmentation.pipeline import _postprocess_settings, segment
from LungTumorSegLib.slicer_glue import segment_helpers as helpers


@pytest.fixture(scope="module")
def bundle():
    return find_bundle(None)


@pytest.fixture(scope="module")
def nodule():
    return load_volume(DEMO_NODULE)


@pytest.fixture(scope="module")
def nodule_run(bundle, nodule):
    """The engine on the demo nodule, as the module runs it (CPU, no TTA)."""
    return segment(nodule, bundle, SegmentOptions(device="cpu", tta=1))


# ---------------------------------------------------------------- point 9: the model's own defaults


def test_the_gui_defaults_are_what_the_engine_uses_for_the_model(bundle, placeholder_bundle):
    """With nothing passed, the engine applies the manifest's threshold and minimum size; the GUI shows the same."""
    from LungTumorSegLib.model.bundle import read_bundle

    for model in (bundle, read_bundle(placeholder_bundle)):
        engine = _postprocess_settings(model, SegmentOptions())
        gui = helpers.model_output_defaults(model.manifest)
        assert (gui.threshold, gui.min_lesion_ml) == (engine.threshold, engine.min_lesion_ml), model.name
    assert helpers.model_output_defaults(bundle.manifest).min_lesion_ml == 0.05  # the GUI used to force 0.1
    stripped = read_bundle(placeholder_bundle)
    stripped.manifest["output"] = {}  # a manifest without output defaults: the engine's own fallbacks
    engine = _postprocess_settings(stripped, SegmentOptions())
    assert helpers.model_output_defaults(stripped.manifest) == helpers.OutputDefaults(
        engine.threshold, engine.min_lesion_ml
    )


def test_unchanged_values_are_left_to_the_model_and_changed_ones_are_passed(bundle):
    defaults = helpers.model_output_defaults(bundle.manifest)
    threshold = helpers.override(0.5, defaults.threshold, helpers.THRESHOLD_STEP)
    min_ml = helpers.override(0.0500004, defaults.min_lesion_ml, helpers.MIN_LESION_STEP)  # spin box rounding
    assert threshold is None and min_ml is None
    command = helpers.build_segment_command("py", "ct.nrrd", "out", helpers.SegmentSettings(threshold=threshold))
    args = build_parser().parse_args(command[3:])
    assert args.threshold is None and args.min_lesion_ml is None  # the engine reads them from the manifest
    assert helpers.override(0.1, defaults.min_lesion_ml, helpers.MIN_LESION_STEP) == 0.1
    assert helpers.override(0.35, defaults.threshold, helpers.THRESHOLD_STEP) == 0.35
    assert helpers.override(None, 0.5, 0.01) is None


# ---------------------------------------------------------------- point 6: table rows


def test_table_values_carry_the_centroid_the_click_jumps_to(nodule_run, nodule):
    rows = helpers.lesion_rows(json.loads(json.dumps(measure_lesions(nodule_run.label, nodule).to_dict())))
    columns = helpers.table_columns()
    assert [key for key, _, _, _ in columns][-3:] == ["centroid_r", "centroid_a", "centroid_s"]
    values = [helpers.table_value(key, rows[0]) for key, _, _, _ in columns]
    assert values[0] == "Lesion 1" and values[-1] == pytest.approx(rows[0]["centroid_ras"][2], abs=0.05)
    assert np.isnan(helpers.table_value("centroid_r", {"centroid_ras": None}))


# ---------------------------------------------------------------- point 11: entropy display


def test_the_entropy_threshold_hides_the_empty_slice_and_keeps_the_lesion_border(nodule_run):
    """Inferno's 0 is opaque black: without the threshold the whole slice darkens under the overlay."""
    lower, upper = helpers.ENTROPY_DISPLAY_RANGE
    entropy, label = nodule_run.entropy.array, nodule_run.label.array > 0.5
    assert float(entropy.max()) <= upper + 1e-6
    axial = int(np.argmax(label.sum(axis=(0, 1))))
    shown = entropy[:, :, axial] >= lower
    assert shown.mean() < 0.5, "most of the slice must stay transparent"
    rim = label[:, :, axial] ^ ndimage.binary_erosion(label[:, :, axial])
    assert shown[rim].mean() > 0.9, "the uncertain lesion border stays visible"
