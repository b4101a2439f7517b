"""The box tool's Logic against real MRML (slicer-core): ROI to corners (also under transforms), the box's lesion as
a new segment or replacing a chosen one, undo, the lesion table, "Start from selected lesion", and the engine
process (cancel here; a whole run behind ``-m slow``).

The box run is recorded once per session (``recorded_box_run``: ``lungtumorseg segment --box`` on the demo nodule,
LiteMedSAM); the Logic loads copies of its files as it loads the files of its own engine process.
"""

from __future__ import annotations

import numpy as np
import pytest
from slicer_mrml.fixtures import SAMPLE_DIR, SKIP_REASON, job_from_record, nodule_box_corners

pytest.importorskip("slicer_core", reason=SKIP_REASON)  # the modules below import slicer (MRML)

from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.slicer_glue import box_helpers as boxes
from LungTumorSegLib.slicer_glue import box_tool_logic, lesion_nodes
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes
from LungTumorSegLib.slicer_glue.process import descendant_pids, pid_running

NODULE = SAMPLE_DIR / "demo_nodule.nii.gz"
CORNER = (slice(4, 10), slice(4, 12), slice(4, 12))  # KJI box far from the nodule: a hand-drawn "Lung tumor 2"


@pytest.fixture
def logic(mrml):
    return box_tool_logic.BoxToolLogic()


@pytest.fixture
def nodule(mrml):
    return mrml.load_volume(NODULE)


def translation(dr: float, da: float, ds: float):
    import slicer

    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, 3] = (dr, da, ds)
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    return node


def roi(center, size, transform=None):
    node = box_tool_logic.new_roi()
    if transform is not None:
        node.SetAndObserveTransformNodeID(transform.GetID())
    node.SetCenter(list(center))
    node.SetSize(list(size))
    return node


def box_job(logic, record, volume, tmp_path, previous=None, target=None, replace=""):
    return job_from_record(
        record,
        volume,
        tmp_path,
        addToSegment=True,
        box=True,
        replaceSegmentId=replace,
        previous=previous,
        outputSegmentation=target if target is not None else (previous.segmentationNode if previous else None),
    )


def engine_label_kji(job) -> np.ndarray:
    """The box run's lesion (label value 1) on the CT grid, as Slicer indexes it (KJI)."""
    return load_volume(job["result"]["outputs"]["tumor"]).array.transpose(2, 1, 0) == 1


def mask(result, segmentId) -> np.ndarray:
    return lesion_nodes.lesion_mask(result.segmentationNode, segmentId, result.inputVolume) > 0


def voxel_ml(volume) -> float:
    return float(np.prod(nodes.volume_from_node(volume).spacing)) / 1000.0


# ---------------------------------------------------------------- ROI -> corners


def test_the_roi_gives_its_two_corners(mrml, nodule):
    corners = box_tool_logic.roi_corners_in_volume(roi((80.0, 170.0, 206.0), (30.0, 34.0, 4.0)), nodule)
    np.testing.assert_allclose(corners, [(65.0, 153.0, 204.0), (95.0, 187.0, 208.0)])


def test_under_transforms_the_corners_are_world_coordinates_in_the_cts_frame(mrml, nodule):
    import slicer

    nodule.SetAndObserveTransformNodeID(translation(10.0, 0.0, -5.0).GetID())
    moved = roi((80.0, 170.0, 206.0), (30.0, 34.0, 4.0), translation(0.0, 3.0, 0.0))
    corners = box_tool_logic.roi_corners_in_volume(moved, nodule)
    # world = ROI + (0, 3, 0); the CT's frame = world - (10, 0, -5)
    np.testing.assert_allclose(corners, [(55.0, 156.0, 209.0), (85.0, 190.0, 213.0)])
    quarter_turn = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    quarter_turn.SetMatrixTransformToParent(
        slicer.util.vtkMatrixFromArray(np.array([[0, -1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]))
    )
    turned = roi((0.0, 0.0, 0.0), (30.0, 10.0, 4.0), quarter_turn)
    low, high = box_tool_logic.roi_corners_in_volume(turned, nodule)
    np.testing.assert_allclose(np.subtract(high, low), (10.0, 30.0, 4.0), atol=1e-9)  # R and A swap


def test_the_engine_gets_the_corners_on_its_command_line(mrml, nodule):
    corners = box_tool_logic.roi_corners_in_volume(roi((80.0, 170.0, 206.0), (30.0, 34.0, 4.0)), nodule)
    command = boxes.build_box_command("python", "ct.nrrd", "out", boxes.BoxSettings(corners, device="cpu"))
    box = command.index("--box")
    assert command[box + 1 : box + 7] == ["65.000", "153.000", "204.000", "95.000", "187.000", "208.000"]
    assert command[command.index("--progress") + 1] == "json" and command[command.index("--hu-gate") + 1] == "auto"
    with pytest.raises(ValueError, match="HU gate"):
        boxes.build_box_command("python", "ct.nrrd", "out", boxes.BoxSettings(corners, hu_gate="maybe"))


def test_a_new_box_is_centred_on_the_slice_view(mrml, nodule):
    import slicer

    sliceNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSliceNode")
    matrix = sliceNode.GetSliceToRAS()
    for row, value in enumerate((90.0, 175.0, 207.0)):
        matrix.SetElement(row, 3, value)
    nodule.SetAndObserveTransformNodeID(translation(10.0, 0.0, 0.0).GetID())
    box = box_tool_logic.roi_at_slice_view_centre(nodule, sliceNode)
    assert box.GetNumberOfControlPoints() == 1, "the ROI is placed"
    corners = box_tool_logic.roi_corners_in_volume(box, nodule)
    np.testing.assert_allclose(corners, [(60.0, 155.0, 187.0), (100.0, 195.0, 227.0)])  # 4 cm, CT frame
    centre = [0.0, 0.0, 0.0]
    box.GetCenterWorld(centre)
    np.testing.assert_allclose(centre, (90.0, 175.0, 207.0))


# ---------------------------------------------------------------- results


def test_a_box_adds_a_new_lesion_with_the_engines_voxels_and_its_row(
    mrml, logic, nodule, tmp_path, recorded_nodule_run, recorded_box_run
):
    import slicer

    automatic = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    first_voxels = mask(automatic, automatic.segmentIds[0]).copy()
    job = box_job(logic, recorded_box_run, nodule, tmp_path, previous=automatic)
    result = logic.loadResults(job)
    assert result.segmentationNode is automatic.segmentationNode and result.tableNode is automatic.tableNode
    names = [result.segmentationNode.GetSegmentation().GetSegment(i).GetName() for i in result.segmentIds]
    assert names == ["Lung tumor 1", "Lung tumor 2"] and result.promptSegmentId == result.segmentIds[1]
    expected = engine_label_kji(job)
    assert expected.sum() > 50
    np.testing.assert_array_equal(mask(result, result.promptSegmentId), expected)
    np.testing.assert_array_equal(mask(result, result.segmentIds[0]), first_voxels)
    segment = result.segmentationNode.GetSegmentation().GetSegment(result.promptSegmentId)
    assert lesion_nodes.segment_tag(segment, "LungTumorSeg.Role") == "lesion"
    assert result.tableNode.GetNumberOfRows() == 2
    row = next(r for r in result.rows if r["segment_id"] == result.promptSegmentId)
    assert row["volume_ml"] == pytest.approx(expected.sum() * voxel_ml(nodule), rel=1e-6)
    volumes = slicer.util.arrayFromTableColumn(result.tableNode, "Volume (ml)")
    assert volumes[result.rows.index(row)] == pytest.approx(row["volume_ml"], abs=0.005)
    assert any(line.GetName() == "Lung tumor 2 long axis" for line in result.lineNodes)
    assert not logic.isStale(result)


def test_a_box_on_an_empty_scene_makes_the_segmentation(mrml, logic, nodule, tmp_path, recorded_box_run):
    result = logic.loadResults(box_job(logic, recorded_box_run, nodule, tmp_path))
    assert [row["segment_name"] for row in result.rows] == ["Lung tumor 1"] and result.entropyNode is not None
    assert result.segmentationNode.GetName() == "demo_nodule tumor"


def test_replace_changes_only_the_chosen_segment_and_undo_restores_it(
    mrml, logic, nodule, tmp_path, recorded_nodule_run, recorded_box_run
):
    import slicer

    automatic = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    segmentation = automatic.segmentationNode
    drawn = lesion_nodes.add_lesion_segment(segmentation, 2)
    corner = np.zeros(slicer.util.arrayFromVolume(nodule).shape, np.uint8)
    corner[CORNER] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(corner, segmentation, drawn, nodule)
    logic.remeasure(automatic)
    chosen = automatic.segmentIds[0]
    before = {segmentId: mask(automatic, segmentId).copy() for segmentId in (chosen, drawn)}
    volumes_before = [row["volume_ml"] for row in automatic.rows]
    color_before = segmentation.GetSegmentation().GetSegment(chosen).GetColor()

    job = box_job(logic, recorded_box_run, nodule, tmp_path, previous=automatic, replace=chosen)
    result = logic.loadResults(job)
    assert result.segmentIds == [chosen, drawn] and result.promptSegmentId == chosen, "no segment added"
    np.testing.assert_array_equal(mask(result, chosen), engine_label_kji(job))
    assert not np.array_equal(mask(result, chosen), before[chosen]), "the box's outline differs from the model's"
    np.testing.assert_array_equal(mask(result, drawn), before[drawn])
    segment = segmentation.GetSegmentation().GetSegment(chosen)
    assert segment.GetName() == "Lung tumor 1" and segment.GetColor() == pytest.approx(color_before)
    assert result.rows[0]["volume_ml"] == pytest.approx(engine_label_kji(job).sum() * voxel_ml(nodule), rel=1e-6)

    assert logic.canUndoLastSeed(result) and logic.undoLastSeed(result)
    for segmentId, voxels in before.items():
        np.testing.assert_array_equal(mask(result, segmentId), voxels)
    assert [row["volume_ml"] for row in result.rows] == pytest.approx(volumes_before)
    assert not logic.canUndoLastSeed(result)


def test_undo_takes_back_a_new_box_lesion(mrml, logic, nodule, tmp_path, recorded_nodule_run, recorded_box_run):
    automatic = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    result = logic.loadResults(box_job(logic, recorded_box_run, nodule, tmp_path, previous=automatic))
    assert len(result.segmentIds) == 2
    assert logic.undoLastSeed(result)
    assert result.segmentIds == automatic.segmentIds[:1] and result.tableNode.GetNumberOfRows() == 1


def test_a_replaced_segment_that_is_gone_is_added_as_a_new_lesion(
    mrml, logic, nodule, tmp_path, recorded_nodule_run, recorded_box_run
):
    automatic = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    job = box_job(logic, recorded_box_run, nodule, tmp_path, previous=automatic, replace="NoSuchSegment")
    result = logic.loadResults(job)
    assert len(result.segmentIds) == 2 and result.promptSegmentId == result.segmentIds[1]


# ---------------------------------------------------------------- start from a lesion


def test_start_from_lesion_sets_the_roi_to_its_bounds_grown_by_ten_percent(
    mrml, logic, nodule, tmp_path, recorded_nodule_run
):
    nodule.SetAndObserveTransformNodeID(translation(-20.0, 5.0, 3.0).GetID())
    result = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    segmentId = result.segmentIds[0]
    voxels = np.argwhere(mask(result, segmentId))  # KJI
    ijk = np.array([voxels.min(axis=0)[::-1] - 0.5, voxels.max(axis=0)[::-1] + 0.5])
    ras = (np.c_[ijk, np.ones(2)] @ nodes.ijk_to_ras_array(nodule).T)[:, :3]
    low, high = ras.min(axis=0), ras.max(axis=0)
    grow = 0.1 * (high - low)
    box = box_tool_logic.new_roi()
    assert logic.setRoiFromLesion(box, result.segmentationNode, segmentId, nodule)
    np.testing.assert_allclose(logic.roiCorners(box, nodule), [low - grow, high + grow], atol=1e-6)
    assert box.GetTransformNodeID() == nodule.GetTransformNodeID(), "drawn in the CT's frame"
    empty = lesion_nodes.add_lesion_segment(result.segmentationNode, 2)
    assert not logic.setRoiFromLesion(box, result.segmentationNode, empty, nodule)


# ---------------------------------------------------------------- the engine process


def test_cancelling_a_box_run_kills_the_engine_and_leaves_the_scene(mrml, logic, nodule):
    import slicer

    before = slicer.mrmlScene.GetNumberOfNodes()
    pids = []

    def cancel_on_first_progress(event):
        if event.event == "progress" and not pids:
            pids.extend([logic._engine.pid, *descendant_pids(logic._engine.pid)])
            logic.cancel()

    settings = boxes.BoxSettings(tuple(map(tuple, nodule_box_corners())), device="cpu")
    assert logic.runBox(nodule, settings, progressCallback=cancel_on_first_progress) is None
    assert slicer.mrmlScene.GetNumberOfNodes() == before and not logic.isRunning()
    assert pids and not any(pid_running(pid) for pid in pids)


def test_a_bad_box_is_the_engines_one_line_error_and_changes_nothing(mrml, logic, nodule):
    import slicer

    before = slicer.mrmlScene.GetNumberOfNodes()
    settings = boxes.BoxSettings(((500.0, 500.0, 500.0), (520.0, 520.0, 520.0)), device="cpu")
    with pytest.raises(RuntimeError, match="outside the image"):
        logic.runBox(nodule, settings)
    assert slicer.mrmlScene.GetNumberOfNodes() == before


@pytest.mark.slow
def test_run_box_segments_the_demo_nodule_in_its_own_process(mrml, logic, nodule):
    steps = []
    settings = boxes.BoxSettings(tuple(map(tuple, nodule_box_corners())), device="cpu")
    result = logic.runBox(nodule, settings, progressCallback=lambda event: steps.append(event.data.get("step")))
    assert {"load model", "segment", "measure", "write"} <= set(steps)
    label = load_volume(result.outputs["tumor"]).array.transpose(2, 1, 0) == 1
    np.testing.assert_array_equal(mask(result, result.promptSegmentId), label)
    reference = load_volume(SAMPLE_DIR / "demo_nodule_mask.nii.gz").array.transpose(2, 1, 0) > 0
    assert np.count_nonzero(label & reference) > 0.7 * label.sum(), "the box's lesion is the readers' nodule"
