"""The "Compare with baseline" Logic with the real engine, against real MRML (slicer-core).

The demo nodule (a real LIDC crop) and a copy of it moved by (6, -4, 3) mm, as baseline and follow-up: the engine
aligns them (SimpleITK, rigid), matches the lesion and assesses RECIST 1.1. With the radiologists' mask as both
labels the response is stable disease with one matched lesion.
"""

from __future__ import annotations

import numpy as np
import pytest
from slicer_mrml.fixtures import SAMPLE_DIR, SKIP_REASON

pytest.importorskip("slicer_core", reason=SKIP_REASON)  # the modules below import slicer (MRML)

from LungTumorSegLib.slicer_glue import compare_helpers, lesion_nodes
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes

SHIFT = np.array([6.0, -4.0, 3.0])
CPU = compare_helpers.CompareSettings(device="cpu", tta=1, pictures=False)


@pytest.fixture
def logic(mrml):
    from LungTumorSegLib.slicer_glue.compare_logic import CompareLogic

    return CompareLogic()


@pytest.fixture
def pair(mrml):
    """(baseline, follow-up, baseline mask segmentation, follow-up mask segmentation) in the scene."""
    import slicer

    baseline = mrml.load_volume(SAMPLE_DIR / "demo_nodule.nii.gz", "baseline")
    matrix = nodes.ijk_to_ras_array(baseline)
    matrix[:3, 3] += SHIFT  # the same voxels, the patient moved
    followup = slicer.util.addVolumeFromArray(
        slicer.util.arrayFromVolume(baseline).copy(), slicer.util.vtkMatrixFromArray(matrix), "follow-up"
    )
    mask = mrml.load_volume(SAMPLE_DIR / "demo_nodule_mask.nii.gz", "mask", label=True)
    segmentations = []
    for name, volume in (("baseline mask", baseline), ("follow-up mask", followup)):
        kji = (slicer.util.arrayFromVolume(mask) > 0).astype(np.uint8)
        segmentation, _ = lesion_nodes.replace_lesion_segments(kji, 1, volume, None, name)
        segmentations.append(segmentation)
    slicer.mrmlScene.RemoveNode(mask)
    return baseline, followup, *segmentations


def test_compare_aligns_matches_and_fills_a_numeric_table_under_a_title_header(mrml, logic, pair):
    import slicer
    import vtk

    baseline, followup, baseline_mask, followup_mask = pair
    result = logic.run(baseline, followup, CPU, baseline_mask, followup_mask)
    assert result.data["response"]["category"] == "SD" and [r["match_type"] for r in result.rows] == ["matched"]
    table = result.tableNode
    assert lesion_nodes.column_titles_are_header(table) and table.GetNumberOfRows() == 1
    assert table.GetCellText(0, 0) == "matched"
    change = slicer.util.arrayFromTableColumn(table, "Change (%)")
    assert change.dtype == np.float64 and abs(change[0]) < 5.0
    assert followup.GetTransformNodeID() == result.transformNode.GetID()
    assert followup_mask.GetTransformNodeID() == result.transformNode.GetID()
    from_parent = vtk.vtkMatrix4x4()
    result.transformNode.GetMatrixTransformFromParent(from_parent)
    translation = np.array([from_parent.GetElement(i, 3) for i in range(3)])
    assert np.linalg.norm(translation - SHIFT) < 1.0, translation


def test_a_clicked_row_is_where_the_baseline_lesion_is(mrml, logic, pair):
    baseline, followup, baseline_mask, followup_mask = pair
    result = logic.run(baseline, followup, CPU, baseline_mask, followup_mask)
    (row,) = result.rows
    lesion = result.data["baseline"]["lesions"][row["baseline_ids"][0] - 1]
    assert row["location_ras"] == pytest.approx(lesion["centroid_ras"])
    nodes.jump_to_location(row["location_ras"])  # the markups logic's JumpSlicesToLocation (no views here)


def test_the_engines_segmentations_get_one_segment_per_lesion_next_to_their_ct(mrml, logic, pair):
    import slicer

    baseline, followup, _, _ = pair
    study = mrml.place_in_study(baseline)
    result = logic.run(baseline, followup, CPU)
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    for name in ("baseline", "followup"):
        segmentation = result.segmentationNodes[name]
        assert lesion_nodes.lesion_segment_ids(segmentation), name
        assert segmentation.GetSegmentation().GetNthSegment(0).GetName() == "Lung tumor 1"
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(result.segmentationNodes["baseline"])) == study
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(result.tableNode)) == study
    assert result.segmentationNodes["followup"].GetTransformNodeID() == result.transformNode.GetID()


def test_a_users_transform_on_the_follow_up_is_never_replaced_silently(mrml, logic, pair):
    import slicer

    baseline, followup, baseline_mask, followup_mask = pair
    mine = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "my manual alignment")
    followup.SetAndObserveTransformNodeID(mine.GetID())
    assert logic.followupTransformToReplace(followup, followup_mask) is mine
    before = slicer.mrmlScene.GetNumberOfNodes()
    with pytest.raises(ValueError, match="my manual alignment"):
        logic.run(baseline, followup, CPU, baseline_mask, followup_mask)
    assert followup.GetTransformNodeID() == mine.GetID() and slicer.mrmlScene.GetNumberOfNodes() == before
    result = logic.run(baseline, followup, CPU, baseline_mask, followup_mask, replaceFollowupTransform=True)
    assert followup.GetTransformNodeID() == result.transformNode.GetID()
    assert slicer.mrmlScene.GetNodeByID(mine.GetID()) is mine, "the user's transform node stays in the scene"
    assert logic.followupTransformToReplace(followup, followup_mask) is None, "an earlier alignment is ours to replace"


def test_closing_the_scene_during_a_comparison_cancels_it(mrml, logic, pair):
    import slicer

    baseline, followup, baseline_mask, followup_mask = pair

    def close(event):
        if event.event == "progress" and logic.isRunning():
            slicer.mrmlScene.Clear()

    assert logic.run(baseline, followup, CPU, baseline_mask, followup_mask, progressCallback=close) is None
    assert slicer.util.getNodesByClass("vtkMRMLTableNode") == [] and not logic.isRunning()
