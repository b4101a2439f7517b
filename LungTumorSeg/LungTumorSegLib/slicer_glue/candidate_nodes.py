"""Candidates in the scene: the regions the run's sensitivity preset did not report as lesions.

The engine lists them in ``<stem>_candidates.json`` with a label map (value k = candidate k, strongest first). Here
they become their own segmentation node ("<CT> candidates", one outlined segment per candidate, never measured as
lesions) and a table (peak probability, volume, centre). Accepting one adds its voxels as a lesion segment exactly
as a seed click does (a new "Lung tumor N", or merged into the lesion it overlaps), so "Undo last addition" takes it
back. Needs ``slicer`` (MRML) and VTK, never Qt (slicer-core in pytest).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import slicer

from . import lesion_nodes
from . import lesion_segments as lesions
from . import mrml_nodes as nodes
from . import segment_helpers as helpers

CANDIDATE_ROLE = "candidate"
CANDIDATE_COLOR = (1.0, 0.85, 0.1)  # yellow outlines: not a lesion until accepted
ROLE_ATTRIBUTE = "LungTumorSeg.Role"  # on the candidates segmentation and table nodes
TABLE_COLUMNS = (
    ("name", "Candidate", "", "string"),
    ("peak_probability", "Peak probability", "", "double"),
    ("volume_ml", "Volume", "ml", "double"),
    ("r", "R", "mm", "double"),
    ("a", "A", "mm", "double"),
    ("s", "S", "mm", "double"),
    ("accepted", "Accepted as", "", "string"),
)


@dataclass
class CandidateSet:
    """The candidates of one run in the scene.

    Attributes:
        rows: per candidate (strongest first) the engine's ``candidate_rows`` plus ``name``, ``segment_id`` and
            ``accepted`` (the lesion segment it was added to, '' until then); table row n is ``rows[n]``.
        preset: the sensitivity preset the run used (``{"preset", "candidate_min_peak", ...}``; {} if unknown).
    """

    segmentationNode: Any
    tableNode: Any
    rows: list = field(default_factory=list)
    preset: dict = field(default_factory=dict)
    inputVolume: Any = None

    def summary(self) -> str:
        """One line for the panel: how many candidates, at which preset."""
        preset = self.preset.get("preset")
        level = self.preset.get("candidate_min_peak")
        where = f" (preset {preset}, probability ≥ {level:g})" if preset and isinstance(level, (int, float)) else ""
        accepted = sum(1 for row in self.rows if row["accepted"])
        done = f", {accepted} accepted" if accepted else ""
        return f"{len(self.rows)} candidate(s){where}{done}"


def candidates_in_scene(candidates: CandidateSet | None) -> bool:
    """True while the candidates' segmentation and table are still in the scene."""
    if candidates is None:
        return False
    return nodes.in_scene(candidates.segmentationNode) and nodes.in_scene(candidates.tableNode)


def remove_candidates(candidates: CandidateSet | None) -> None:
    """Take a run's candidate nodes out of the scene (a new run replaces them)."""
    if candidates is None:
        return
    for node in (candidates.segmentationNode, candidates.tableNode):
        if nodes.in_scene(node):
            slicer.mrmlScene.RemoveNode(node)


def read_candidates(outputs: dict) -> tuple[list[dict], dict, Path | None]:
    """(candidate rows, the preset, the label map) from an engine run's outputs; ([], {}, None) without any."""
    document_path, map_path = outputs.get("candidates_json"), outputs.get("candidates")
    if not document_path or not Path(document_path).is_file():
        return [], {}, None
    try:
        document = json.loads(Path(document_path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [], {}, None
    rows = helpers.candidate_rows(document)
    preset = document.get("sensitivity") if isinstance(document.get("sensitivity"), dict) else {}
    if not rows or not map_path or not Path(map_path).is_file():
        return [], preset, None
    return rows, preset, Path(map_path)


def load_candidates(outputs: dict, inputVolume, previous: CandidateSet | None = None) -> CandidateSet | None:
    """Show a run's candidates (the previous run's candidate nodes are replaced); None when it listed none."""
    from ..io.image_io import load_volume

    rows, preset, map_path = read_candidates(outputs)
    if not rows:
        remove_candidates(previous)
        return None
    labels_kji = helpers.kji_from_volume(load_volume(map_path))[0]
    reuse = previous if candidates_in_scene(previous) else None
    name = f"{inputVolume.GetName()} candidates"
    segmentationNode = reuse.segmentationNode if reuse else lesion_nodes.new_segmentation(inputVolume, name)
    segmentationNode.SetAttribute(ROLE_ATTRIBUTE, CANDIDATE_ROLE)
    segmentation = segmentationNode.GetSegmentation()
    wasModifying = segmentationNode.StartModify()
    try:
        segmentation.RemoveAllSegments()
        values = []
        for number, row in enumerate(rows, start=1):
            row["name"], row["accepted"] = f"Candidate {number}", ""
            row["segment_id"] = segmentation.AddEmptySegment("", row["name"], list(CANDIDATE_COLOR))
            segmentation.GetSegment(row["segment_id"]).SetTag(lesions.ROLE_TAG, CANDIDATE_ROLE)
            values.append(row["label"])
        relabelled = np.zeros(labels_kji.shape, np.uint8)
        for number, value in enumerate(values, start=1):
            relabelled[labels_kji == value] = number
        lesion_nodes.import_labels(segmentationNode, relabelled, [row["segment_id"] for row in rows], inputVolume)
    finally:
        segmentationNode.EndModify(wasModifying)
    displayNode = segmentationNode.GetDisplayNode()
    if displayNode:
        displayNode.SetOpacity2DFill(0.0)  # outlines only: a candidate must not look like a lesion
        displayNode.SetVisibility3D(False)
    tableNode = reuse.tableNode if reuse else slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    tableNode.SetAttribute(ROLE_ATTRIBUTE, CANDIDATE_ROLE)
    candidates = CandidateSet(segmentationNode, tableNode, rows, dict(preset), inputVolume)
    update_table(candidates)
    nodes.place_next_to([segmentationNode, tableNode], inputVolume)
    return candidates


def table_value(key: str, row: dict) -> Any:
    """A table cell of a candidate row."""
    if key in ("r", "a", "s"):
        return row["centroid_ras"]["ras".index(key)]
    value = row.get(key)
    return value if value is not None else ("" if key in ("name", "accepted") else float("nan"))


def update_table(candidates: CandidateSet) -> None:
    """Refill the candidates table from ``candidates.rows`` (numbers as numbers, titles as the header, locked)."""
    tableNode = candidates.tableNode
    wasModifying = tableNode.StartModify()
    tableNode.SetLocked(False)
    tableNode.RemoveAllColumns()
    lesion_nodes.fill_table(tableNode, TABLE_COLUMNS, candidates.rows, table_value)
    lesion_nodes.set_column_titles_as_header(tableNode)
    tableNode.SetLocked(True)
    tableNode.EndModify(wasModifying)


def candidate_mask(candidates: CandidateSet, index: int) -> np.ndarray:
    """Candidate ``index`` (0-based row) on the CT grid (KJI uint8)."""
    row = candidates.rows[index]
    return lesion_nodes.lesion_mask(candidates.segmentationNode, row["segment_id"], candidates.inputVolume)


def mark_accepted(candidates: CandidateSet, index: int, lesionSegmentName: str) -> None:
    """Hide an accepted candidate's outline and name the lesion segment it went into in the table."""
    row = candidates.rows[index]
    row["accepted"] = lesionSegmentName
    displayNode = candidates.segmentationNode.GetDisplayNode()
    if displayNode:
        displayNode.SetSegmentVisibility(row["segment_id"], False)
    update_table(candidates)
