"""What the Slicer module decides without Slicer: model defaults, table rows, entropy display, seed-click merging.

The real engine segments the bundled demo nodule (held-out LIDC-IDRI patient) once for the whole module.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DEMO_NODULE, DEMO_NODULE_MASK
from scipy import ndimage

from LungTumorSegLib.cli.main import build_parser
from LungTumorSegLib.core.volume import Volume
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


def test_a_clicked_row_is_the_lesion_shown_on_it():
    # SetUseColumnNameAsColumnHeader(True): view row n is lesion n
    assert [helpers.lesion_row_of_table_row(r, True, 3) for r in range(4)] == [0, 1, 2, None]
    # without it, qMRMLTableView shows the column names as data row 0 (qMRMLTableModel::mrmlTableRowIndex)
    assert [helpers.lesion_row_of_table_row(r, False, 3) for r in range(5)] == [None, 0, 1, 2, None]
    assert helpers.lesion_row_of_table_row(-1, True, 3) is None


def test_table_cells_carry_the_centroid_the_click_jumps_to(nodule_run, nodule):
    rows = helpers.lesion_rows(json.loads(json.dumps(measure_lesions(nodule_run.label, nodule).to_dict())))
    columns = helpers.table_columns()
    assert [key for key, _, _ in columns][-3:] == ["centroid_r", "centroid_a", "centroid_s"]
    cells = [helpers.table_cell(key, rows[0]) for key, _, _ in columns]
    assert cells[0] == "1" and float(cells[-1]) == pytest.approx(rows[0]["centroid_ras"][2], abs=0.05)
    assert helpers.table_cell("centroid_r", {"centroid_ras": None}) == ""


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


# ---------------------------------------------------------------- point 12: seed clicks add lesions


def test_a_second_click_on_the_same_lesion_keeps_one_lesion(bundle, nodule):
    truth = load_volume(DEMO_NODULE_MASK).array > 0
    centre = nodule.voxel_to_ras(np.argwhere(truth).mean(axis=0))
    options = SegmentOptions(device="cpu", tta=1, point_ras=tuple(centre), roi_mm=60.0)
    first = segment(nodule, bundle, options)
    assert first.label.array.any()
    kji, _ = helpers.kji_from_volume(first.label)
    merged = helpers.union_label(first.label, kji)  # the segment already holds the first click's lesion
    np.testing.assert_array_equal(merged.array > 0, first.label.array > 0)
    assert measure_lesions(merged, nodule).lesion_count == 1


def test_clicks_on_two_lesions_give_both(nodule_run, nodule):
    first = nodule_run.label.array > 0.5
    other = np.zeros_like(first)
    other[2:8, 2:8, 2:8] = True  # a second lesion away from the nodule
    assert not (other & first).any()
    merged = helpers.union_label(nodule_run.label, helpers.kji_from_volume(Volume(other, nodule.affine))[0])
    assert np.count_nonzero(merged.array) == np.count_nonzero(first) + other.sum()
    assert measure_lesions(merged, nodule).lesion_count == 2
    assert helpers.union_label(nodule_run.label, None) is nodule_run.label
    with pytest.raises(ValueError, match="not on the CT grid"):
        helpers.union_label(nodule_run.label, np.zeros((3, 3, 3)))


def test_the_entropy_of_earlier_clicks_is_kept(nodule_run):
    previous = np.zeros_like(nodule_run.entropy.array, dtype=np.float32)
    previous[0, 0, 0] = 0.9
    merged = helpers.merged_entropy(
        nodule_run.entropy, helpers.kji_from_volume(Volume(previous, nodule_run.entropy.affine))[0]
    )
    assert merged.array[0, 0, 0] == pytest.approx(max(0.9, float(nodule_run.entropy.array[0, 0, 0])))
    np.testing.assert_array_equal(merged.array >= nodule_run.entropy.array, True)
    assert helpers.merged_entropy(nodule_run.entropy, np.zeros((2, 2, 2))) is nodule_run.entropy
