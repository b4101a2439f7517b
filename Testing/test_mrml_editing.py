"""After a run, against real MRML (slicer-core): seed clicks and their undo, Segment Editor edits, re-measuring,
the saved report, and the seed markers.

Seed runs are recorded once per session (``recorded_seed_run``: the engine with ``--point`` on the demo nodule);
a click on "another lesion" is the same recorded run with its label moved to a corner of the CT.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from slicer_mrml.fixtures import SAMPLE_DIR, SKIP_REASON, job_from_record

pytest.importorskip("slicer_core", reason=SKIP_REASON)  # the modules below import slicer (MRML)

from LungTumorSegLib.io.image_io import load_volume, save_volume
from LungTumorSegLib.slicer_glue import lesion_nodes, seed_points
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes

CORNER = (slice(4, 12), slice(4, 12), slice(4, 10))  # engine [i, j, k] box far from the nodule


def click(logic, record, volume, tmp_path, previous=None, moved_to_corner=False):
    """Load a recorded seed run as a click's result (optionally its lesion moved to a corner of the CT)."""
    job = job_from_record(
        record,
        volume,
        tmp_path,
        addToSegment=True,
        previous=previous,
        outputSegmentation=previous.segmentationNode if previous else None,
    )
    if moved_to_corner:
        outputs = job["result"]["outputs"]
        label, entropy = load_volume(outputs["tumor"]), load_volume(outputs["entropy"])
        moved = np.zeros(label.shape, np.uint8)
        moved[CORNER] = 1
        heat = np.zeros(entropy.shape, np.float32)
        heat[CORNER] = 0.7
        save_volume(label.with_array(moved), outputs["tumor"], overwrite=True)
        save_volume(entropy.with_array(heat), outputs["entropy"], overwrite=True)
    return logic.loadResults(job)


def voxels(result, segmentId) -> int:
    return int(np.count_nonzero(lesion_nodes.lesion_mask(result.segmentationNode, segmentId, result.inputVolume)))


def erode_segment(result, segmentId):
    """What a Segment Editor edit does to the segment's labelmap: here, remove its outer layer of voxels."""
    import slicer
    from scipy import ndimage

    mask = lesion_nodes.lesion_mask(result.segmentationNode, segmentId, result.inputVolume) > 0
    eroded = ndimage.binary_erosion(mask).astype(np.uint8)
    slicer.util.updateSegmentBinaryLabelmapFromArray(eroded, result.segmentationNode, segmentId, result.inputVolume)
    return int(mask.sum()), int(eroded.sum())


# ---------------------------------------------------------------- seed clicks


def test_a_click_on_a_new_lesion_adds_its_own_segment(mrml, logic, nodule, tmp_path, recorded_seed_run):
    first = click(logic, recorded_seed_run, nodule, tmp_path)
    second = click(logic, recorded_seed_run, nodule, tmp_path, previous=first, moved_to_corner=True)
    assert second.segmentationNode is first.segmentationNode
    names = [second.segmentationNode.GetSegmentation().GetSegment(i).GetName() for i in second.segmentIds]
    assert names == ["Lung tumor 1", "Lung tumor 2"]
    assert voxels(second, second.segmentIds[1]) == 8 * 8 * 6
    assert [row["segment_id"] for row in second.rows] == second.segmentIds and second.tableNode.GetNumberOfRows() == 2
    assert second.entropyNode is first.entropyNode and second.tableNode is first.tableNode


def test_a_second_click_on_the_same_lesion_merges_into_its_segment(mrml, logic, nodule, tmp_path, recorded_seed_run):
    first = click(logic, recorded_seed_run, nodule, tmp_path)
    before = voxels(first, first.segmentIds[0])
    second = click(logic, recorded_seed_run, nodule, tmp_path, previous=first)
    assert second.segmentIds == first.segmentIds and voxels(second, second.segmentIds[0]) == before
    assert len(second.rows) == 1


def test_undo_takes_back_the_last_click_and_its_entropy(mrml, logic, nodule, tmp_path, recorded_seed_run):
    import slicer

    first = click(logic, recorded_seed_run, nodule, tmp_path)
    entropy_before = slicer.util.arrayFromVolume(first.entropyNode).copy()
    second = click(logic, recorded_seed_run, nodule, tmp_path, previous=first, moved_to_corner=True)
    assert slicer.util.arrayFromVolume(second.entropyNode)[4:10, 4:12, 4:12].min() == pytest.approx(0.7)
    assert logic.canUndoLastSeed(second)
    assert logic.undoLastSeed(second)
    assert len(second.segmentIds) == 1 and second.tableNode.GetNumberOfRows() == 1
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(second.entropyNode), entropy_before)
    assert logic.undoLastSeed(second), "the first click can be undone too"
    assert second.segmentIds == [] and second.tableNode.GetNumberOfRows() == 0
    assert not logic.canUndoLastSeed(second)


def test_after_an_edit_undo_is_left_to_the_segment_editor(mrml, logic, nodule, tmp_path, recorded_seed_run):
    result = click(logic, recorded_seed_run, nodule, tmp_path)
    erode_segment(result, result.segmentIds[0])
    assert not logic.canUndoLastSeed(result) and not logic.undoLastSeed(result)
    assert voxels(result, result.segmentIds[0]) > 0, "the edit is kept"


def test_a_normal_run_ends_the_clicks_undo(mrml, logic, nodule, tmp_path, recorded_seed_run, recorded_nodule_run):
    first = click(logic, recorded_seed_run, nodule, tmp_path)
    rerun = logic.loadResults(
        job_from_record(
            recorded_nodule_run, nodule, tmp_path, outputSegmentation=first.segmentationNode, previous=first
        )
    )
    assert not logic.canUndoLastSeed(rerun)


# ---------------------------------------------------------------- edits and re-measuring


def test_an_edit_makes_the_table_stale_until_remeasured(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    import slicer

    result = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    volume_before = result.rows[0]["volume_ml"]
    long_line = next(line for line in result.lineNodes if line.GetName().endswith("long axis"))
    length_before = long_line.GetLineLengthWorld()
    assert not logic.isStale(result)
    before, after = erode_segment(result, result.segmentIds[0])
    assert logic.isStale(result)
    logic.remeasure(result)
    assert not logic.isStale(result)
    voxel_ml = float(np.prod(nodes.volume_from_node(nodule).spacing)) / 1000.0
    assert result.rows[0]["volume_ml"] == pytest.approx(after * voxel_ml, rel=1e-6)
    assert result.rows[0]["volume_ml"] < volume_before
    assert slicer.util.arrayFromTableColumn(result.tableNode, "Volume (ml)")[0] == pytest.approx(
        result.rows[0]["volume_ml"], abs=0.005
    )
    long_line = next(line for line in result.lineNodes if line.GetName().endswith("long axis"))
    assert long_line.GetLineLengthWorld() == pytest.approx(result.rows[0]["long_axis_mm"], abs=1e-3)
    assert long_line.GetLineLengthWorld() < length_before


def test_a_segment_added_in_the_segment_editor_is_measured_when_named_as_a_lesion(
    mrml, logic, nodule, tmp_path, recorded_nodule_run
):
    import slicer

    result = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    segmentation = result.segmentationNode.GetSegmentation()
    drawn = segmentation.AddEmptySegment("", "Lung tumor 2", [0, 0, 1])
    other = segmentation.AddEmptySegment("", "Airway", [0, 1, 1])
    mask = np.zeros(slicer.util.arrayFromVolume(nodule).shape, np.uint8)
    mask[4:10, 4:12, 4:12] = 1
    for segmentId in (drawn, other):
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask, result.segmentationNode, segmentId, nodule)
    assert logic.isStale(result)
    logic.remeasure(result)
    assert [row["segment_name"] for row in result.rows] == ["Lung tumor 1", "Lung tumor 2"]


def test_the_saved_report_is_the_segments_as_saved(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    result = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    unchanged = {path.name for path in logic.saveReport(result, tmp_path / "first")}
    assert "demo_nodule_tumor_snapshot.png" in unchanged, "the engine's 3D picture fits unedited segments"
    _, after = erode_segment(result, result.segmentIds[0])
    written = logic.saveReport(result, tmp_path / "report")
    names = {path.name for path in written}
    base = "demo_nodule_tumor"
    assert {f"{base}_measurements.json", f"{base}_lesions.csv", f"{base}_report.html", f"{base}.seg.nrrd"} <= names
    assert f"{base}_snapshot.png" not in names, "the engine's 3D picture shows the unedited lesion"
    assert not logic.isStale(result), "saving re-measured the table"
    saved = json.loads((tmp_path / "report" / f"{base}_measurements.json").read_text())["lesions"][0]
    assert saved["voxel_count"] == after and saved["volume_ml"] == pytest.approx(result.rows[0]["volume_ml"])
    with open(tmp_path / "report" / f"{base}_lesions.csv", newline="") as handle:
        (row,) = list(csv.DictReader(handle))
    assert float(row["long_axis_mm"]) == pytest.approx(result.rows[0]["long_axis_mm"])
    html = (tmp_path / "report" / f"{base}_report.html").read_text()
    assert f"{result.rows[0]['volume_ml']:.2f}" in html and "edited after the engine" in html


def test_the_saved_segmentation_reads_back_with_names_and_terminology(
    mrml, logic, nodule, tmp_path, recorded_nodule_run
):
    import slicer

    result = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    logic.saveReport(result, tmp_path / "report")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(tmp_path / "report" / "demo_nodule_tumor.seg.nrrd"))
    loaded = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    assert storage.ReadData(loaded)
    segment = loaded.GetSegmentation().GetNthSegment(0)
    assert segment.GetName() == "Lung tumor 1"
    assert lesion_nodes.segment_tag(segment, "TerminologyEntry") == lesion_nodes.terminology.LUNG_TUMOR_TERMINOLOGY


def test_saving_never_replaces_files_without_asking(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    result = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    folder = tmp_path / "report"
    folder.mkdir()
    mine = folder / "demo_nodule_tumor_report.html"
    mine.write_text("my notes")
    assert logic.saveReport(result, folder) == []
    assert logic.saveReport(result, folder, askOverwrite=lambda question: False) == []
    assert mine.read_text() == "my notes" and sorted(p.name for p in folder.iterdir()) == [mine.name]
    asked = []
    assert logic.saveReport(result, folder, askOverwrite=lambda question: asked.append(question) or True)
    assert str(mine) in asked[0] and mine.read_text() != "my notes"


# ---------------------------------------------------------------- seed markers


def test_a_clicks_marker_is_read_in_the_cts_frame_and_removed_after_its_run(mrml, nodule):
    import slicer

    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    transform.SetMatrixTransformToParent(
        slicer.util.vtkMatrixFromArray(np.array([[1, 0, 0, 10.0], [0, 1, 0, 0], [0, 0, 1, -5.0], [0, 0, 0, 1]]))
    )
    nodule.SetAndObserveTransformNodeID(transform.GetID())
    seeds = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "LungTumorSeg seed")
    seeds.AddControlPointWorld([1.0, 2.0, 3.0])
    seeds.AddControlPointWorld([4.0, 5.0, 6.0])
    first = seed_points.last_click(seeds, nodule)
    assert first.pointRas == pytest.approx((4.0 - 10.0, 5.0, 6.0 + 5.0))
    seeds.RemoveNthControlPoint(0)  # the user deletes an older marker meanwhile: the index shifts
    assert seed_points.remove_click(seeds, first) and seeds.GetNumberOfControlPoints() == 0
    assert not seed_points.remove_click(seeds, first)


# ---------------------------------------------------------------- the batch script's files


def test_the_batch_script_writes_a_cases_files_with_slicers_writers(mrml, logic, nodule, tmp_path, recorded_nodule_run):
    import importlib.util
    import sys

    import slicer

    script = SAMPLE_DIR.parents[1] / "Scripts" / "lungtumorseg_slicer_batch.py"
    spec = importlib.util.spec_from_file_location("lungtumorseg_slicer_batch", script)
    batch = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(batch)
    result = logic.loadResults(job_from_record(recorded_nodule_run, nodule, tmp_path))
    out = tmp_path / "batch"
    written = batch.save_case(result, "series2_chest_CT", out, overwrite=False)
    names = {path.name for path in written}
    assert {"series2_chest_CT.seg.nrrd", "series2_chest_CT_entropy.nrrd", "series2_chest_CT_lesion_table.tsv"} <= names
    assert "series2_chest_CT_report.html" in names and "series2_chest_CT_lesion_table.schema.tsv" in names
    assert names == {path.name for path in out.iterdir()}, "every file written is listed"
    with pytest.raises(FileExistsError):
        batch.save_case(result, "series2_chest_CT", out, overwrite=False)
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode")
    storage = slicer.vtkMRMLTableStorageNode()
    storage.SetFileName(str(out / "series2_chest_CT_lesion_table.tsv"))
    assert storage.ReadData(table) and table.GetNumberOfRows() == 1
    assert table.GetCellText(0, 0) == "Lung tumor 1"
    assert float(table.GetCellText(0, 1)) == pytest.approx(result.rows[0]["volume_ml"], abs=0.005)
    assert sys.modules.get("qt") is None, "the script's case writing needs no Qt"


def test_a_click_that_finds_nothing_adds_no_segment_and_undoes_its_entropy(
    mrml, logic, nodule, tmp_path, recorded_seed_run
):
    import slicer

    first = click(logic, recorded_seed_run, nodule, tmp_path)
    before = slicer.util.arrayFromVolume(first.entropyNode).copy()
    job = job_from_record(
        recorded_seed_run,
        nodule,
        tmp_path,
        addToSegment=True,
        previous=first,
        outputSegmentation=first.segmentationNode,
    )
    outputs = job["result"]["outputs"]
    label, entropy = load_volume(outputs["tumor"]), load_volume(outputs["entropy"])
    save_volume(label.with_array(np.zeros(label.shape, np.uint8)), outputs["tumor"], overwrite=True)
    heat = np.zeros(entropy.shape, np.float32)
    heat[CORNER] = 0.3
    save_volume(entropy.with_array(heat), outputs["entropy"], overwrite=True)
    empty = logic.loadResults(job)
    assert empty.segmentIds == first.segmentIds, "no empty segment for a click that found nothing"
    assert logic.undoLastSeed(empty)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(empty.entropyNode), before)
    assert empty.segmentIds == first.segmentIds
