"""The lesion nodes of a result: one segment per lesion, the lesion table and the RECIST lines tied to the segments.

Needs ``slicer`` (MRML) and VTK, never Qt: it runs in Slicer, ``Slicer --python-script`` and against slicer-core's
real MRML in pytest. Which segments are lesions, their names and colours: ``lesion_segments``.
"""

from __future__ import annotations

import json

import numpy as np
import slicer
import vtk

from ..clinical import terminology
from . import lesion_segments as lesions
from . import mrml_nodes as nodes
from . import segment_helpers as helpers

SEGMENT_ID_ATTRIBUTE = "LungTumorSeg.SegmentID"  # on each RECIST line node: the lesion segment it measures
TABLE_SEGMENTS_ATTRIBUTE = "LungTumorSeg.SegmentIDs"  # on the lesion table: JSON list, one segment ID per row
SUMMARY_ATTRIBUTE = "LungTumorSeg.CaseSummary"
RECIST_LINE_STYLES = (("long_axis_ras", "long", (1.0, 0.9, 0.1)), ("short_axis_ras", "short", (0.2, 0.8, 1.0)))


# ---------------------------------------------------------------- segments


def segment_tag(segment, tag: str) -> str:
    """A segment's tag value ('' when unset)."""
    value = vtk.mutable("")
    return str(value) if segment.GetTag(tag, value) else ""


def lesion_segment_ids(segmentationNode) -> list[str]:
    """IDs of the lesion segments (``lesion_segments.is_lesion_segment``), in the segmentation's order."""
    if segmentationNode is None:
        return []
    segmentation = segmentationNode.GetSegmentation()
    ids = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(index)
        if lesions.is_lesion_segment(segment.GetName(), segment_tag(segment, lesions.ROLE_TAG)):
            ids.append(segmentation.GetNthSegmentID(index))
    return ids


def new_segmentation(inputVolume, name: str):
    """A segmentation node on the CT's geometry, under the CT's parent transform, with display nodes."""
    segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
    return segmentationNode


def add_lesion_segment(segmentationNode, number: int) -> str:
    """An empty segment "Lung tumor <number>" with its colour, the neoplasm terminology and the lesion role."""
    segmentation = segmentationNode.GetSegmentation()
    color = lesions.lesion_color(number)
    segmentId = segmentation.AddEmptySegment("", lesions.lesion_segment_name(number), list(color))
    segment = segmentation.GetSegment(segmentId)
    segment.SetColor(*color)
    segment.SetTag("TerminologyEntry", terminology.LUNG_TUMOR_TERMINOLOGY)
    segment.SetTag(lesions.ROLE_TAG, lesions.LESION_ROLE)
    return segmentId


def import_labels(segmentationNode, labelled_kji: np.ndarray, segmentIds: list[str], inputVolume) -> None:
    """Label value n of ``labelled_kji`` (the CT grid) becomes segment ``segmentIds[n - 1]`` (replacing its voxels).

    The image is given in the CT's own frame, the segmentation's frame too (both under the same parent transform),
    as vtkSlicerSegmentationsModuleLogic::ImportLabelmapToSegmentationNode expects.
    """
    if not segmentIds:
        return
    ids = vtk.vtkStringArray()
    for segmentId in segmentIds:
        ids.InsertNextValue(segmentId)
    image = nodes.oriented_image(labelled_kji, nodes.ijk_to_ras_array(inputVolume))
    if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(image, segmentationNode, ids):
        raise RuntimeError(f"could not import the lesions into '{segmentationNode.GetName()}'")


def replace_lesion_segments(labelled_kji: np.ndarray, count: int, inputVolume, segmentationNode=None, name: str = ""):
    """Lesion n of ``labelled_kji`` (values 1..count) into segment "Lung tumor n"; earlier lesion segments removed.

    Other segments of an existing segmentation are kept. Returns (segmentation node, lesion segment IDs).
    """
    if segmentationNode is None:
        segmentationNode = new_segmentation(inputVolume, name or f"{inputVolume.GetName()} tumor")
    else:
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
    segmentation = segmentationNode.GetSegmentation()
    wasModifying = segmentationNode.StartModify()
    try:
        for segmentId in lesion_segment_ids(segmentationNode):
            segmentation.RemoveSegment(segmentId)
        segmentIds = [add_lesion_segment(segmentationNode, number) for number in range(1, count + 1)]
        import_labels(segmentationNode, labelled_kji, segmentIds, inputVolume)
    finally:
        segmentationNode.EndModify(wasModifying)
    return segmentationNode, segmentIds


def segment_names(segmentationNode) -> list[str]:
    """Names of every segment."""
    segmentation = segmentationNode.GetSegmentation()
    return [segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())]


def add_or_merge_lesion(segmentationNode, mask_kji: np.ndarray, inputVolume) -> tuple[str, np.ndarray | None]:
    """A seed click's lesion: merged into the lesion segment it overlaps most, else a new "Lung tumor N".

    Returns (segment ID, the segment's mask before the merge; None when a new segment was added).
    """
    ids = lesion_segment_ids(segmentationNode)
    existing = [lesion_mask(segmentationNode, segmentId, inputVolume) for segmentId in ids]
    index = lesions.overlapping_lesion(mask_kji > 0, existing)
    if index is None:
        segmentId = add_lesion_segment(segmentationNode, lesions.next_lesion_number(segment_names(segmentationNode)))
        import_labels(segmentationNode, (mask_kji > 0).astype(np.uint8), [segmentId], inputVolume)
        return segmentId, None
    merged = ((mask_kji > 0) | (existing[index] > 0)).astype(np.uint8)
    import_labels(segmentationNode, merged, [ids[index]], inputVolume)
    return ids[index], existing[index]


def lesion_mask(segmentationNode, segmentId: str, referenceVolume) -> np.ndarray:
    """A segment on the CT grid (KJI uint8 array)."""
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolume)


def segments_state(segmentationNode) -> tuple:
    """What changes when a lesion segment is edited, added, removed or renamed (cheap: modified times, no voxels)."""
    if not nodes.in_scene(segmentationNode):
        return ()
    segmentation = segmentationNode.GetSegmentation()
    labelmapName = segmentation.GetSourceRepresentationName()  # what the Segment Editor edits
    state = []
    for segmentId in lesion_segment_ids(segmentationNode):
        segment = segmentation.GetSegment(segmentId)
        labelmap = segment.GetRepresentation(labelmapName)
        state.append((segmentId, segment.GetName(), labelmap.GetMTime() if labelmap is not None else 0))
    return tuple(state)


def set_show_in_3d(segmentationNode, on: bool) -> None:
    """Show the segmentation as a surface in the 3D view (or hide it there)."""
    if on:
        segmentationNode.CreateClosedSurfaceRepresentation()
    displayNode = segmentationNode.GetDisplayNode()
    if displayNode:
        displayNode.SetVisibility3D(on)


# ---------------------------------------------------------------- lesion table


def set_column_titles_as_header(tableNode) -> None:
    """Show the column titles as the view's header, not as data row 0 (qMRMLTableModel::updateModelFromMRML).

    Slicer 5.6+ call it UseColumnTitleAsColumnHeader; 5.4 has only UseColumnNameAsColumnHeader, which later
    versions keep as a deprecated alias that logs a warning on every call (vtkMRMLTableNode.cxx).
    """
    if hasattr(tableNode, "SetUseColumnTitleAsColumnHeader"):
        tableNode.SetUseColumnTitleAsColumnHeader(True)
    else:
        tableNode.SetUseColumnNameAsColumnHeader(True)


def column_titles_are_header(tableNode) -> bool:
    """True when the view shows the column titles as its header (see ``set_column_titles_as_header``)."""
    if hasattr(tableNode, "GetUseColumnTitleAsColumnHeader"):
        return bool(tableNode.GetUseColumnTitleAsColumnHeader())
    return bool(tableNode.GetUseColumnNameAsColumnHeader())


def table_segment_ids(tableNode) -> list[str]:
    """The lesion segment ID of each row of a lesion table."""
    try:
        return list(json.loads(tableNode.GetAttribute(TABLE_SEGMENTS_ATTRIBUTE) or "[]"))
    except ValueError:
        return []


def fill_table(tableNode, columns, rows: list[dict], value_of=helpers.table_value) -> None:
    """Columns ``(key, title, unit, kind)`` (kind: ``double``, ``int`` or ``string``), ``value_of(key, row)``."""
    table = tableNode.GetTable()
    arrays = {"double": vtk.vtkDoubleArray, "int": vtk.vtkIntArray, "string": vtk.vtkStringArray}
    for key, title, unit, kind in columns:
        array = arrays[kind]()
        array.SetName(f"{title} ({unit})" if unit else title)
        for row in rows:
            value = value_of(key, row)
            array.InsertNextValue(value if kind == "string" else (int(value) if kind == "int" else float(value)))
        table.AddColumn(array)
        if unit:
            tableNode.SetColumnUnitLabel(array.GetName(), unit)


def update_lesion_table(rows: list[dict], name: str, summaryText: str = "", tableNode=None):
    """vtkMRMLTableNode with one row per lesion segment: numbers as numbers, titles as the header, locked."""
    if tableNode is None:
        tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    wasModifying = tableNode.StartModify()
    tableNode.SetLocked(False)
    tableNode.RemoveAllColumns()
    fill_table(tableNode, helpers.table_columns(), rows)
    set_column_titles_as_header(tableNode)
    tableNode.SetAttribute(TABLE_SEGMENTS_ATTRIBUTE, json.dumps([row.get("segment_id", "") for row in rows]))
    tableNode.SetAttribute(SUMMARY_ATTRIBUTE, summaryText)
    tableNode.SetLocked(True)
    tableNode.EndModify(wasModifying)
    return tableNode


# ---------------------------------------------------------------- RECIST lines


def update_recist_lines(rows: list[dict], inputVolume, lineNodes=()) -> list:
    """A line node per RECIST long and short axis of each row, named after its segment, under the CT's transform.

    Earlier line nodes are reused, the ones left over removed. Each line carries its segment ID
    (``LungTumorSeg.SegmentID``).
    """
    reusable = [n for n in lineNodes if nodes.in_scene(n)]
    created = []
    for row in rows:
        for key, label, color in RECIST_LINE_STYLES:
            segment = row.get(key)
            if not segment:
                continue
            line = reusable.pop(0) if reusable else slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode")
            wasModifying = line.StartModify()
            line.SetName(f"{row.get('segment_name') or 'lesion ' + str(row['lesion_id'])} {label} axis")
            line.SetAttribute(SEGMENT_ID_ATTRIBUTE, row.get("segment_id", ""))
            line.SetLocked(False)
            line.RemoveAllControlPoints()
            line.AddControlPoint(list(segment[0]))
            line.AddControlPoint(list(segment[1]))
            line.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
            line.SetLocked(True)
            line.EndModify(wasModifying)
            line.CreateDefaultDisplayNodes()
            displayNode = line.GetDisplayNode()
            if displayNode:
                displayNode.SetSelectedColor(*color)
            created.append(line)
    for unused in reusable:
        slicer.mrmlScene.RemoveNode(unused)
    return created
