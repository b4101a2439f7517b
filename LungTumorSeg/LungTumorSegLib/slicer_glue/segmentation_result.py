"""A segmentation result in the scene, and keeping its table and RECIST lines in step with its lesion segments.

A result is the segmentation node (one segment per lesion), the entropy map, the lesion table and the RECIST line
nodes, plus the measurements they show. ``measuredState`` records the lesion segments as they were when measured:
an edit in the Segment Editor, a seed click or an undo changes them, ``isStale`` says so, and ``remeasure``
measures the segments as they are now (the engine's own measurement code) and updates the table, the lines and the
summary. Qt-free (slicer-core in pytest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import slicer

from . import lesion_nodes
from . import lesion_segments as lesions
from . import mrml_nodes as nodes
from . import segment_helpers as helpers

if TYPE_CHECKING:  # nibabel, which the measurement code needs, is installed on first use
    from ..measurements.lesion_measurements import CaseMeasurements


@dataclass
class LungTumorSegResult:
    """The nodes of one result, the measurements shown, and where the engine's files are.

    Attributes:
        segmentIds: the lesion segments, one per table row (row n measures ``segmentIds[n]``).
        measurements: what the table shows, as the engine's measurements JSON (``{"case", "lesions"}``).
        measuredState: ``lesion_nodes.segments_state`` when the measurements were taken.
        engineState: the state right after the engine's output was loaded (the engine's pictures still fit
            while the segments are unchanged).
        promptSegmentId: the segment a seed click or a box added, merged into or replaced ('' otherwise).
        candidates: the run's candidates in the scene (``candidate_nodes.CandidateSet``; None without any).
    """

    segmentationNode: Any
    segmentIds: list
    entropyNode: Any
    tableNode: Any
    lineNodes: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    summaryText: str = ""
    outputDir: str = ""
    stem: str = ""
    outputs: dict = field(default_factory=dict)
    inputVolume: Any = None
    measurements: dict = field(default_factory=dict)
    measuredState: tuple = ()
    engineState: tuple = ()
    promptSegmentId: str = ""
    candidates: Any = None

    @property
    def segmentId(self) -> str:
        """The first lesion segment ('' when nothing was found)."""
        return self.segmentIds[0] if self.segmentIds else ""


def nodes_in_scene(result: LungTumorSegResult | None) -> bool:
    """True while the result's segmentation, entropy and table nodes are still in the scene."""
    if result is None:
        return False
    required = [result.segmentationNode, result.tableNode] + ([result.entropyNode] if result.entropyNode else [])
    return all(nodes.in_scene(node) for node in required)


def measure_lesion_segments(segmentationNode, inputVolume, entropyNode=None) -> tuple[CaseMeasurements, list[str]]:
    """Measure every non-empty lesion segment as one lesion: (measurements, the measured segment IDs)."""
    ids = lesion_nodes.lesion_segment_ids(segmentationNode)
    masks = [lesion_nodes.lesion_mask(segmentationNode, segmentId, inputVolume).transpose(2, 1, 0) for segmentId in ids]
    ct = nodes.volume_view(inputVolume)
    entropy = nodes.volume_view(entropyNode) if entropyNode is not None and nodes.in_scene(entropyNode) else None
    if entropy is not None and not entropy.same_grid(ct):
        entropy = None
    case, measured = lesions.measure_segments(masks, ct.affine, ct, entropy)
    return case, [ids[index] for index in measured]


def rows_of(measurements: dict, segmentationNode, segmentIds: list[str]) -> list[dict]:
    """Table rows of the measurements, each with its segment's ID and name."""
    rows = helpers.lesion_rows(measurements)
    segmentation = segmentationNode.GetSegmentation()
    for row, segmentId in zip(rows, segmentIds):
        segment = segmentation.GetSegment(segmentId)
        row["segment_id"], row["segment_name"] = segmentId, segment.GetName() if segment else ""
    return rows


def show_measurements(result: LungTumorSegResult, measurements: dict, segmentIds: list[str]) -> LungTumorSegResult:
    """Put measurements in the result: rows, summary, lesion table and RECIST lines (nodes reused), state."""
    baseName = result.inputVolume.GetName()
    result.measurements, result.segmentIds = measurements, list(segmentIds)
    result.rows = rows_of(measurements, result.segmentationNode, result.segmentIds)
    result.summaryText = helpers.case_summary_text(measurements)
    tableNode = result.tableNode if nodes.in_scene(result.tableNode) else None
    result.tableNode = lesion_nodes.update_lesion_table(
        result.rows, f"{baseName} tumor lesions", result.summaryText, tableNode
    )
    result.lineNodes = lesion_nodes.update_recist_lines(result.rows, result.inputVolume, result.lineNodes)
    result.measuredState = lesion_nodes.segments_state(result.segmentationNode)
    return result


def is_stale(result: LungTumorSegResult | None) -> bool:
    """True when the lesion segments changed since they were measured (edits, added or removed segments)."""
    if result is None or not nodes.in_scene(result.segmentationNode):
        return False
    return lesion_nodes.segments_state(result.segmentationNode) != result.measuredState


def remeasure(result: LungTumorSegResult) -> CaseMeasurements:
    """Measure the lesion segments as they are now and update the table, the RECIST lines and the summary."""
    case, ids = measure_lesion_segments(result.segmentationNode, result.inputVolume, result.entropyNode)
    show_measurements(result, case.to_dict(), ids)
    return case


def segments_label(result: LungTumorSegResult) -> np.ndarray:
    """The union of the lesion segments on the CT grid (KJI uint8): what the saved SEG and report show."""
    shape = slicer.util.arrayFromVolume(result.inputVolume).shape
    union = np.zeros(shape, dtype=np.uint8)
    for segmentId in lesion_nodes.lesion_segment_ids(result.segmentationNode):
        union |= (lesion_nodes.lesion_mask(result.segmentationNode, segmentId, result.inputVolume) > 0).astype(np.uint8)
    return union
