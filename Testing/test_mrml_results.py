"""The segmentation Logic against real MRML (slicer-core): what a run leaves in the scene, from a recorded engine run.

The engine segments the bundled demo nodule (held-out LIDC-IDRI patient) once per session
(``recorded_nodule_run``); each test loads those files into a fresh scene with the Logic's own ``loadResults``,
as it does after a real run. Skipped where slicer-core is not installed (Testing/slicer_mrml).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from slicer_mrml.fixtures import SAMPLE_DIR, SKIP_REASON, job_from_record

pytest.importorskip("slicer_core", reason=SKIP_REASON)  # the modules below import slicer (MRML)

from LungTumorSegLib.clinical import terminology
from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.slicer_glue import lesion_nodes, lesion_segments
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes
from LungTumorSegLib.slicer_glue import segment_helpers as helpers

NODULE = SAMPLE_DIR / "demo_nodule.nii.gz"


def load_recorded(logic, record, volume, tmp_path, **options):
    return logic.loadResults(job_from_record(record, volume, tmp_path, **options))


def engine_lesions(record) -> list[dict]:
    return json.loads(Path(record["result"]["outputs"]["lesions"]).read_text())["lesions"]


def shift_transform(shift):
    import slicer
    import vtk

    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
    matrix = vtk.vtkMatrix4x4()
    for axis, value in enumerate(shift):
        matrix.SetElement(axis, 3, float(value))
    transform.SetMatrixTransformToParent(matrix)
    return transform


# ---------------------------------------------------------------- the environment itself


def test_the_scene_is_real_mrml_with_slicer_module_logics(mrml):
    import slicer

    assert slicer.mrmlScene is mrml.scene and slicer.mrmlScene.IsA("vtkMRMLScene")
    assert slicer.modules.segmentations.logic().IsA("vtkSlicerSegmentationsModuleLogic")
    assert slicer.modules.markups.logic().IsA("vtkSlicerMarkupsLogic")
    assert slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSelectionNode") is not None
    rules = {rule.GetClassName() for rule in slicer.vtkSegmentationConverterFactory.GetInstance().GetConverterRules()}
    assert "vtkBinaryLabelmapToClosedSurfaceConversionRule" in rules
    assert slicer.app.layoutManager() is None  # batch mode: no views


def test_a_ct_loaded_by_the_volumes_logic_is_the_engines_volume(mrml, nodule):
    engine = load_volume(NODULE)
    mine = nodes.volume_from_node(nodule)
    assert mine.same_grid(engine, atol=1e-4)
    np.testing.assert_array_equal(mine.array, engine.array)


# ---------------------------------------------------------------- segments


def test_one_segment_per_lesion_round_trips_exactly(mrml, nodule):
    kji = np.zeros(nodes.volume_from_node(nodule).shape[::-1], np.uint16)
    kji[5:15, 10:20, 10:20], kji[30:35, 50:60, 50:60], kji[40:42, 5:7, 70:72] = 1, 2, 3
    segmentation, ids = lesion_nodes.replace_lesion_segments(kji, 3, nodule)
    assert [segmentation.GetSegmentation().GetSegment(i).GetName() for i in ids] == [
        "Lung tumor 1",
        "Lung tumor 2",
        "Lung tumor 3",
    ]
    for number, segmentId in enumerate(ids, start=1):
        np.testing.assert_array_equal(lesion_nodes.lesion_mask(segmentation, segmentId, nodule) > 0, kji == number)


def test_segments_follow_the_ct_under_a_transform(mrml, nodule):
    transform = shift_transform((40.0, 0.0, -25.0))
    nodule.SetAndObserveTransformNodeID(transform.GetID())
    kji = np.zeros(nodes.volume_from_node(nodule).shape[::-1], np.uint8)
    kji[20:30, 30:40, 30:40] = 1
    segmentation, (segmentId,) = lesion_nodes.replace_lesion_segments(kji, 1, nodule)
    assert segmentation.GetTransformNodeID() == transform.GetID()
    np.testing.assert_array_equal(lesion_nodes.lesion_mask(segmentation, segmentId, nodule) > 0, kji > 0)


def test_a_recorded_run_gives_one_lesion_segment_with_colour_terminology_and_role(
    mrml, logic, nodule, tmp_path, recorded_nodule_run
):
    import slicer

    result = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
    assert len(result.segmentIds) == len(engine_lesions(recorded_nodule_run)) == 1
    segment = result.segmentationNode.GetSegmentation().GetSegment(result.segmentIds[0])
    assert segment.GetName() == "Lung tumor 1"
    np.testing.assert_allclose(segment.GetColor(), terminology.LUNG_TUMOR_COLOR)
    assert lesion_nodes.segment_tag(segment, lesion_segments.ROLE_TAG) == lesion_segments.LESION_ROLE
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.modules.terminologies.logic().DeserializeTerminologyEntry(
        lesion_nodes.segment_tag(segment, "TerminologyEntry"), entry
    )
    assert entry.GetTypeObject().GetCodeValue() == "108369006"  # Neoplasm
    assert entry.GetCategoryObject().GetCodeValue() == "49755003"  # Morphologically altered structure
    engine = load_volume(recorded_nodule_run["result"]["outputs"]["tumor"]).array > 0.5
    mine = lesion_nodes.lesion_mask(result.segmentationNode, result.segmentIds[0], nodule).transpose(2, 1, 0) > 0
    np.testing.assert_array_equal(mine, engine)


def test_the_entropy_map_shows_bits_with_near_zero_transparent(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    result = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
    display = result.entropyNode.GetDisplayNode()
    assert display.GetApplyThreshold() and display.GetLowerThreshold() == pytest.approx(0.05)
    assert (display.GetWindow(), display.GetLevel()) == pytest.approx((1.0, 0.5))
    assert display.GetColorNodeID() in nodes.ENTROPY_COLOR_NODE_IDS  # Iron here: Slicer's colour files are absent
    engine = load_volume(recorded_nodule_run["result"]["outputs"]["entropy"])
    np.testing.assert_allclose(nodes.volume_from_node(result.entropyNode).array, engine.array, atol=1e-6)


# ---------------------------------------------------------------- table and RECIST lines


def test_the_lesion_table_holds_numbers_under_a_title_header(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    import slicer

    result = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
    table = result.tableNode
    assert lesion_nodes.column_titles_are_header(table), "else qMRMLTableView shows the titles as data row 0"
    assert table.GetNumberOfRows() == 1 and table.GetLocked()
    (lesion,) = engine_lesions(recorded_nodule_run)
    volume = slicer.util.arrayFromTableColumn(table, "Volume (ml)")
    assert volume.dtype == np.float64 and volume[0] == pytest.approx(lesion["volume_ml"], abs=0.005)
    assert slicer.util.arrayFromTableColumn(table, "Long axis (mm)")[0] == pytest.approx(
        lesion["long_axis_mm"], abs=0.05
    )
    assert table.GetCellText(0, 0) == "Lung tumor 1"
    assert lesion_nodes.table_segment_ids(table) == result.segmentIds
    assert table.GetColumnUnitLabel("Volume (ml)") == "ml"


def test_the_deprecated_header_call_is_never_made(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    """vtkMRMLTableNode::SetUseColumnNameAsColumnHeader logs a deprecation warning on every call (Slicer >= 5.6)."""
    import vtk

    log = vtk.vtkStringOutputWindow()
    previous = vtk.vtkOutputWindow.GetInstance()
    vtk.vtkOutputWindow.SetInstance(log)
    try:
        result = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
        lesion_nodes.column_titles_are_header(result.tableNode)
    finally:
        vtk.vtkOutputWindow.SetInstance(previous)
    assert "deprecated" not in log.GetOutput(), log.GetOutput()


def test_recist_lines_end_on_the_engines_end_points_and_name_their_segment(
    mrml, logic, nodule, tmp_path, recorded_nodule_run
):
    import slicer

    result = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
    (lesion,) = engine_lesions(recorded_nodule_run)
    lines = {line.GetName(): line for line in result.lineNodes}
    assert sorted(lines) == ["Lung tumor 1 long axis", "Lung tumor 1 short axis"]
    for key, name in (("long_axis_ras", "Lung tumor 1 long axis"), ("short_axis_ras", "Lung tumor 1 short axis")):
        points = slicer.util.arrayFromMarkupsControlPoints(lines[name], world=True)
        np.testing.assert_allclose(points, np.array(lesion[key]), atol=1e-4)
        assert lines[name].GetAttribute(lesion_nodes.SEGMENT_ID_ATTRIBUTE) == result.segmentIds[0]
    long_line = lines["Lung tumor 1 long axis"]
    assert long_line.GetLineLengthWorld() == pytest.approx(lesion["long_axis_mm"], abs=1e-3)


def test_recist_lines_of_a_transformed_ct_sit_on_the_moved_lesion(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    import slicer

    shift = np.array([40.0, -10.0, 25.0])
    nodule.SetAndObserveTransformNodeID(shift_transform(shift).GetID())
    result = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
    (lesion,) = engine_lesions(recorded_nodule_run)
    for node in [result.segmentationNode, result.entropyNode, *result.lineNodes]:
        assert node.GetTransformNodeID() == nodule.GetTransformNodeID()
    long_line = next(line for line in result.lineNodes if line.GetName().endswith("long axis"))
    world = slicer.util.arrayFromMarkupsControlPoints(long_line, world=True)
    np.testing.assert_allclose(world, np.array(lesion["long_axis_ras"]) + shift, atol=1e-4)


# ---------------------------------------------------------------- subject hierarchy


def test_the_results_go_into_the_cts_study(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    import slicer

    study = mrml.place_in_study(nodule)
    result = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    for node in [result.segmentationNode, result.entropyNode, result.tableNode, *result.lineNodes]:
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study, node.GetName()


def test_results_of_a_ct_outside_any_study_stay_at_the_scene_level(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    import slicer

    result = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    item = hierarchy.GetItemByDataNode(result.segmentationNode)
    assert item and hierarchy.GetItemParent(item) == hierarchy.GetSceneItemID()


# ---------------------------------------------------------------- re-runs and other segments


def test_a_rerun_replaces_the_lesion_segments_and_keeps_the_users_other_segments(
    mrml, logic, nodule, tmp_path, recorded_nodule_run
):
    import slicer

    first = load_recorded(logic, recorded_nodule_run, nodule, tmp_path)
    segmentation = first.segmentationNode.GetSegmentation()
    lung = segmentation.AddEmptySegment("", "Left lung", [0.5, 0.5, 0.9])
    second = load_recorded(
        logic, recorded_nodule_run, nodule, tmp_path, outputSegmentation=first.segmentationNode, previous=first
    )
    assert second.segmentationNode is first.segmentationNode
    assert segmentation.GetSegment(lung) is not None and segmentation.GetNumberOfSegments() == 2
    assert lesion_nodes.lesion_segment_ids(second.segmentationNode) == second.segmentIds
    assert second.tableNode is first.tableNode and second.entropyNode is first.entropyNode
    assert len(slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")) == len(second.lineNodes) == 2


def test_segments_named_lung_tumor_count_as_lesions_and_others_do_not():
    assert lesion_segments.is_lesion_segment("Lung tumor 3") and lesion_segments.is_lesion_segment("Lung tumor")
    assert not lesion_segments.is_lesion_segment("Candidates") and not lesion_segments.is_lesion_segment("Lung")
    assert lesion_segments.is_lesion_segment("renamed by the user", role="lesion")
    assert not lesion_segments.is_lesion_segment("Lung tumor 2", role="candidates")
    assert lesion_segments.next_lesion_number(["Lung tumor 1", "Lung", "Lung tumor 4"]) == 5
    assert lesion_segments.lesion_color(1) == terminology.LUNG_TUMOR_COLOR != lesion_segments.lesion_color(2)


def test_table_values_are_rounded_numbers_or_nan():
    row = {"volume_ml": 3.14159, "long_axis_mm": None, "centroid_ras": (1.234, 2.0, 3.0), "measurable": True}
    assert helpers.table_value("volume_ml", row) == 3.14
    assert np.isnan(helpers.table_value("long_axis_mm", row))
    assert helpers.table_value("centroid_r", row) == 1.2 and helpers.table_value("measurable", row) == "yes"
