"""MRML nodes to and from the engine's types: volumes, segments, the entropy map, lesion tables, RECIST lines.

Used by the segmentation and comparison logics; needs ``slicer`` (MRML) and VTK, never Qt, so it runs in Slicer,
in ``Slicer --python-script`` and against slicer-core's real MRML in pytest.
"""

from __future__ import annotations

from pathlib import Path

import slicer
import vtk

from ..clinical import terminology
from ..core.volume import Volume
from . import segment_helpers as helpers

ENTROPY_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
RECIST_LINE_STYLES = (("long_axis_ras", "long", (1.0, 0.9, 0.1)), ("short_axis_ras", "short", (0.2, 0.8, 1.0)))


# ---------------------------------------------------------------- volumes and points


def ijk_to_ras_array(volumeNode):
    """The volume's 4x4 IJKToRAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volume_from_node(volumeNode) -> Volume:
    """Engine Volume of a scalar volume node, in the node's own frame (parent transforms not applied)."""
    return helpers.volume_from_kji(slicer.util.arrayFromVolume(volumeNode), ijk_to_ras_array(volumeNode))


def export_volume(volumeNode, path: Path) -> Path:
    """Write the node as NRRD (its own frame) for the engine process."""
    from ..io.image_io import save_volume

    return save_volume(volume_from_node(volumeNode), path, overwrite=True)


def world_to_volume(volumeNode, point) -> list[float]:
    """A world (scene) point in the volume's own frame, where the engine works (parent transforms undone)."""
    local = [0.0, 0.0, 0.0]
    volumeNode.TransformPointFromWorld([float(v) for v in point], local)
    return local


def volume_to_world(volumeNode, point) -> list[float]:
    """A point of the volume's own frame in world (scene) coordinates."""
    world = [0.0, 0.0, 0.0]
    volumeNode.TransformPointToWorld([float(v) for v in point], world)
    return world


def jump_to_location(ras, volumeNode=None) -> None:
    """Centre the slice views on a point of the CT's frame (its parent transform applied)."""
    world = volume_to_world(volumeNode, ras) if volumeNode is not None else [float(v) for v in ras]
    slicer.modules.markups.logic().JumpSlicesToLocation(world[0], world[1], world[2], True)


def in_scene(node) -> bool:
    """True while ``node`` is in Slicer's scene."""
    return node is not None and node.GetScene() is slicer.mrmlScene


# ---------------------------------------------------------------- segmentation


def segment_array(segmentationNode, referenceVolume, segmentName: str = terminology.LUNG_TUMOR_SEGMENT_NAME):
    """A segment on the CT grid (KJI array), None when there is none."""
    if segmentationNode is None:
        return None
    segmentId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(segmentName)
    if not segmentId:
        return None
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolume)


def update_segmentation(label: Volume, inputVolume, segmentationNode=None, baseName: str = "CT"):
    """Put the tumour label into segment 'Lung tumor' (created if needed) of a new or given node.

    Returns (segmentation node, segment ID). A new node follows the CT's parent transform.
    """
    kji, _matrix = helpers.kji_from_volume(label)
    if segmentationNode is None:
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{baseName} tumor")
        segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
    segmentationNode.CreateDefaultDisplayNodes()
    segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
    segmentation = segmentationNode.GetSegmentation()
    segmentId = segmentation.GetSegmentIdBySegmentName(terminology.LUNG_TUMOR_SEGMENT_NAME)
    if not segmentId:
        segmentId = segmentation.AddEmptySegment(
            "", terminology.LUNG_TUMOR_SEGMENT_NAME, list(terminology.LUNG_TUMOR_COLOR)
        )
    segment = segmentation.GetSegment(segmentId)
    segment.SetColor(*terminology.LUNG_TUMOR_COLOR)
    segment.SetTag("TerminologyEntry", terminology.LUNG_TUMOR_TERMINOLOGY)
    slicer.util.updateSegmentBinaryLabelmapFromArray(
        (kji > 0.5).astype("uint8"), segmentationNode, segmentId, inputVolume
    )
    return segmentationNode, segmentId


def set_show_in_3d(segmentationNode, on: bool) -> None:
    """Show the segmentation as a surface in the 3D view (or hide it there)."""
    if on:
        segmentationNode.CreateClosedSurfaceRepresentation()
    displayNode = segmentationNode.GetDisplayNode()
    if displayNode:
        displayNode.SetVisibility3D(on)


# ---------------------------------------------------------------- entropy map


def update_entropy_volume(entropy: Volume, name: str, inputVolume, node=None):
    """Entropy volume under the CT's transform: Inferno, window 0..1 bit, near-zero entropy transparent."""
    kji, matrix = helpers.kji_from_volume(entropy)
    if node is None:
        node = slicer.util.addVolumeFromArray(kji.astype("float32"), slicer.util.vtkMatrixFromArray(matrix), name)
    else:
        slicer.util.updateVolumeFromArray(node, kji.astype("float32"))
        node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    node.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
    node.CreateDefaultDisplayNodes()
    displayNode = node.GetDisplayNode()
    for colorId in ENTROPY_COLOR_NODE_IDS:
        if slicer.mrmlScene.GetNodeByID(colorId):
            displayNode.SetAndObserveColorNodeID(colorId)
            break
    displayNode.SetAutoWindowLevel(False)
    displayNode.SetWindowLevelMinMax(0.0, 1.0)
    displayNode.SetAutoThreshold(False)
    displayNode.SetThreshold(*helpers.ENTROPY_DISPLAY_RANGE)  # Inferno's 0 is opaque black: hide it
    displayNode.SetApplyThreshold(True)
    return node


# ---------------------------------------------------------------- lesion table and RECIST lines


def update_lesion_table(rows: list[dict], name: str, summaryText: str = "", tableNode=None):
    """vtkMRMLTableNode, one row per lesion (column names as header, centroid columns to jump to a lesion)."""
    if tableNode is None:
        tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
    tableNode.SetLocked(False)
    tableNode.RemoveAllColumns()
    table = tableNode.GetTable()
    for key, title, unit in helpers.table_columns():
        array = vtk.vtkStringArray()
        array.SetName(f"{title} ({unit})" if unit else title)
        for row in rows:
            array.InsertNextValue(helpers.table_cell(key, row))
        table.AddColumn(array)
    tableNode.SetUseColumnNameAsColumnHeader(True)  # else the view shows the names as data row 0
    tableNode.SetAttribute("LungTumorSeg.CaseSummary", summaryText)
    tableNode.SetLocked(True)
    tableNode.Modified()
    return tableNode


def update_recist_lines(rows: list[dict], baseName: str, inputVolume, lineNodes=()) -> list:
    """One line node per RECIST long and short axis, under the CT's transform; old lines reused or removed."""
    reusable = [n for n in lineNodes if in_scene(n)]
    nodes = []
    for row in rows:
        for key, label, color in RECIST_LINE_STYLES:
            segment = row.get(key)
            if not segment:
                continue
            line = reusable.pop(0) if reusable else slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode")
            line.SetName(f"{baseName} lesion {row['lesion_id']} {label} axis")
            line.SetLocked(False)
            line.RemoveAllControlPoints()
            line.AddControlPoint(list(segment[0]))
            line.AddControlPoint(list(segment[1]))
            line.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
            line.SetLocked(True)
            line.CreateDefaultDisplayNodes()
            displayNode = line.GetDisplayNode()
            if displayNode:
                displayNode.SetSelectedColor(*color)
            nodes.append(line)
    for unused in reusable:
        slicer.mrmlScene.RemoveNode(unused)
    return nodes


# ---------------------------------------------------------------- DICOM


def dicom_files_of_volume(volumeNode) -> list[str]:
    """The DICOM files a volume was loaded from (its ``DICOM.instanceUIDs``), or [] if not from DICOM."""
    uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split() if volumeNode is not None else []
    database = getattr(slicer, "dicomDatabase", None)
    if not uids or not database:
        return []
    files = [database.fileForInstance(uid) for uid in uids]
    return files if all(files) else []
