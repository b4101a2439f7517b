"""Sensitivity presets and candidates in the scene, against real MRML (slicer-core).

The engine segments the demo nodule once per session with a copy of the shipped bundle that has two presets:
``high`` (the nodule is a lesion) and ``strict`` as ``specific`` with ``min_peak_probability`` 1.0, so that the
same nodule is only a candidate. Each test loads those recorded outputs with the Logic's own ``loadResults``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from slicer_mrml.fixtures import SAMPLE_DIR, SKIP_REASON, job_from_record, record_segment_run

pytest.importorskip("slicer_core", reason=SKIP_REASON)  # the modules below import slicer (MRML)

from LungTumorSegLib.io.image_io import load_volume
from LungTumorSegLib.slicer_glue import candidate_nodes, lesion_nodes
from LungTumorSegLib.slicer_glue import segment_helpers as helpers

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "LungTumorSeg" / "Resources" / "Models" / "lungtumorseg-ensemble"
NODULE = SAMPLE_DIR / "demo_nodule.nii.gz"


@pytest.fixture(scope="session")
def preset_bundle(tmp_path_factory) -> Path:
    """The shipped bundle with two presets: ``high`` reports the nodule, ``specific`` (peak 1.0) only lists it."""
    folder = tmp_path_factory.mktemp("bundle") / "presets"
    shutil.copytree(SHIPPED, folder)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    manifest["output"]["sensitivity"] = {
        "default": "high",
        "presets": {
            "high": {"min_peak_probability": 0.5, "candidate_min_peak": 0.1, "max_candidates": 10},
            "specific": {"min_peak_probability": 1.0, "candidate_min_peak": 0.5, "max_candidates": 5},
        },
    }
    (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def candidate_run(tmp_path_factory, preset_bundle) -> dict:
    """The demo nodule at the ``specific`` preset: no lesion, one candidate."""
    out = tmp_path_factory.mktemp("candidate-run")
    return record_segment_run(NODULE, out, "--tta", "1", "--model", str(preset_bundle), "--sensitivity", "specific")


@pytest.fixture(scope="session")
def lesion_run(tmp_path_factory, preset_bundle) -> dict:
    """The demo nodule at the ``high`` preset: one lesion, no candidate."""
    out = tmp_path_factory.mktemp("lesion-run")
    return record_segment_run(NODULE, out, "--tta", "1", "--model", str(preset_bundle), "--sensitivity", "high")


def engine_candidates(record) -> dict:
    return json.loads(Path(record["result"]["outputs"]["candidates_json"]).read_text(encoding="utf-8"))


def nodes_named(name: str) -> list:
    import slicer

    collection = slicer.mrmlScene.GetNodesByName(name)
    return [collection.GetItemAsObject(index) for index in range(collection.GetNumberOfItems())]


def test_candidates_get_their_own_outlined_segmentation_and_a_numeric_table(
    mrml, logic, nodule, tmp_path, candidate_run
):
    result = logic.loadResults(job_from_record(candidate_run, nodule, tmp_path))
    document = engine_candidates(candidate_run)
    assert document["sensitivity"]["preset"] == "specific" and len(document["candidates"]) == 1
    assert result.segmentIds == [] and result.candidates is not None
    candidates = result.candidates
    segmentation = candidates.segmentationNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1 and segmentation.GetNthSegment(0).GetName() == "Candidate 1"
    assert lesion_nodes.lesion_segment_ids(candidates.segmentationNode) == []  # never measured as a lesion
    assert candidates.segmentationNode is not result.segmentationNode
    mask = candidate_nodes.candidate_mask(candidates, 0)
    engine_map = load_volume(candidate_run["result"]["outputs"]["candidates"])
    assert np.count_nonzero(mask) == document["candidates"][0]["voxels"] == np.count_nonzero(engine_map.array == 1)
    display = candidates.segmentationNode.GetDisplayNode()
    assert display.GetOpacity2DFill() == 0.0 and not display.GetVisibility3D()
    table = candidates.tableNode.GetTable()
    assert table.GetNumberOfRows() == 1 and lesion_nodes.column_titles_are_header(candidates.tableNode)
    peak = table.GetColumnByName("Peak probability")
    assert peak.GetDataTypeAsString() == "double"
    assert peak.GetValue(0) == pytest.approx(document["candidates"][0]["peak_probability"])
    assert table.GetColumnByName("S (mm)").GetValue(0) == pytest.approx(document["candidates"][0]["centroid_ras"][2])
    assert candidates.summary() == "1 candidate(s) (preset specific, probability ≥ 0.5)"


def test_candidates_go_into_the_cts_study(mrml, logic, nodule, tmp_path, candidate_run):
    import slicer

    study = mrml.place_in_study(nodule)
    candidates = logic.loadResults(job_from_record(candidate_run, nodule, tmp_path)).candidates
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    for node in (candidates.segmentationNode, candidates.tableNode):
        assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study, node.GetName()


def test_accepting_a_candidate_adds_a_measured_lesion_that_undo_takes_back(
    mrml, logic, nodule, tmp_path, candidate_run
):
    result = logic.loadResults(job_from_record(candidate_run, nodule, tmp_path))
    candidate = candidate_nodes.candidate_mask(result.candidates, 0)
    segmentId = logic.acceptCandidate(result, 0)
    assert result.segmentIds == [segmentId] and result.rows[0]["segment_name"] == "Lung tumor 1"
    lesion = lesion_nodes.lesion_mask(result.segmentationNode, segmentId, nodule)
    assert np.array_equal(lesion > 0, candidate > 0)
    volume_ml = engine_candidates(candidate_run)["candidates"][0]["volume_ml"]
    assert result.rows[0]["volume_ml"] == pytest.approx(volume_ml, rel=0.01)
    assert result.tableNode.GetTable().GetNumberOfRows() == 1 and not logic.isStale(result)
    row = result.candidates.rows[0]
    assert row["accepted"] == "Lung tumor 1"
    assert not result.candidates.segmentationNode.GetDisplayNode().GetSegmentVisibility(row["segment_id"])
    assert result.candidates.tableNode.GetTable().GetColumnByName("Accepted as").GetValue(0) == "Lung tumor 1"
    with pytest.raises(ValueError, match="already in Lung tumor 1"):
        logic.acceptCandidate(result, 0)
    with pytest.raises(ValueError, match="no candidate 2"):
        logic.acceptCandidate(result, 1)
    assert logic.undoLastSeed(result)
    assert lesion_nodes.lesion_segment_ids(result.segmentationNode) == [] and result.rows == []
    assert logic.acceptCandidate(result, 0)  # after the undo it can be accepted again


def test_a_new_run_replaces_the_candidates_and_a_seed_click_keeps_them(
    mrml, logic, nodule, tmp_path, candidate_run, lesion_run, recorded_seed_run
):
    first = logic.loadResults(job_from_record(candidate_run, nodule, tmp_path))
    name = first.candidates.segmentationNode.GetName()
    again = logic.loadResults(job_from_record(candidate_run, nodule, tmp_path, previous=first))
    assert again.candidates.segmentationNode is first.candidates.segmentationNode and len(nodes_named(name)) == 2
    click = logic.loadResults(
        job_from_record(
            recorded_seed_run,
            nodule,
            tmp_path,
            addToSegment=True,
            previous=again,
            outputSegmentation=again.segmentationNode,
        )
    )
    assert click.candidates is again.candidates  # a click asks for one lesion: the list stays
    reported = logic.loadResults(job_from_record(lesion_run, nodule, tmp_path, previous=click))
    assert engine_candidates(lesion_run)["candidates"] == [] and reported.candidates is None
    assert nodes_named(name) == []  # the segmentation and the table of the old candidates are gone
    assert len(reported.segmentIds) == 1


def test_box_around_a_candidate_holds_it_for_the_box_tool(mrml, nodule, tmp_path, candidate_run):
    """'Box around it' sets the box tool's ROI from the candidate's voxels grown by 10 %, in the CT's frame."""
    import slicer

    from LungTumorSegLib.slicer_glue.box_tool_logic import BoxToolLogic

    logic = BoxToolLogic()
    result = logic.loadResults(job_from_record(candidate_run, nodule, tmp_path))
    row = result.candidates.rows[0]
    roi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    assert logic.setRoiFromLesion(roi, result.candidates.segmentationNode, row["segment_id"], nodule)
    low, high = (np.asarray(corner) for corner in logic.roiCorners(roi, nodule))
    box_low, box_high = np.asarray(row["box_ras_min"]), np.asarray(row["box_ras_max"])
    assert np.all(low < box_low) and np.all(high > box_high)  # the candidate's voxel centres, inside with margin
    assert np.all(low > box_low - 0.25 * (box_high - box_low) - 1.0)
    assert np.all(high < box_high + 0.25 * (box_high - box_low) + 1.0)


def test_the_panels_preset_choice_comes_from_the_model(preset_bundle):
    rows, default = helpers.model_presets(helpers.read_manifest(preset_bundle))
    assert [row["name"] for row in rows] == ["high", "specific"] and default == "high"
    command = helpers.build_segment_command("python", "ct.nrrd", "out", helpers.SegmentSettings(sensitivity="specific"))
    assert command[command.index("--sensitivity") + 1] == "specific"
