"""MRML nodes to and from the engine's types: volumes, points, the entropy map, the subject hierarchy, files.

Used by the segmentation and comparison logics (the lesion segments, table and lines are in ``lesion_nodes``);
needs ``slicer`` (MRML) and VTK, never Qt, so it runs in Slicer, in ``Slicer --python-script`` and against
slicer-core's real MRML in pytest.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
import vtk

from ..core.volume import Volume
from . import segment_helpers as helpers

# Inferno and ColdToHotRainbow are colour files Slicer loads at start-up (Base/Logic/Resources/ColorFiles); Iron is
# built into vtkMRMLColorLogic, so a scene without the files (slicer-core) still gets a heat map.
ENTROPY_COLOR_NODE_IDS = (
    "vtkMRMLColorTableNodeFileInferno.txt",
    "vtkMRMLColorTableNodeFileColdToHotRainbow.txt",
    "vtkMRMLColorTableNodeIron",
)


# ---------------------------------------------------------------- volumes and points


def ijk_to_ras_array(volumeNode):
    """The volume's 4x4 IJKToRAS matrix as a numpy array."""
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volume_from_node(volumeNode) -> Volume:
    """Engine Volume of a scalar volume node, in the node's own frame (parent transforms not applied)."""
    return helpers.volume_from_kji(slicer.util.arrayFromVolume(volumeNode), ijk_to_ras_array(volumeNode))


def volume_view(volumeNode) -> Volume:
    """Engine Volume of a node without copying its voxels (a transposed view of Slicer's array): read it only."""
    return Volume(slicer.util.arrayFromVolume(volumeNode).transpose(2, 1, 0), ijk_to_ras_array(volumeNode))


def export_volume(volumeNode, path: Path) -> Path:
    """Write the node as NRRD (its own frame) for the engine process."""
    from ..io.image_io import save_volume

    return save_volume(volume_from_node(volumeNode), path, overwrite=True)


def oriented_image(kji: np.ndarray, ijk_to_ras: np.ndarray):
    """A vtkOrientedImageData of a KJI label array (uint8, or uint16 above 255 labels) with its IJKToRAS matrix."""
    from vtk.util import numpy_support

    kji = np.asarray(kji)
    dtype = np.uint8 if kji.max(initial=0) < 256 else np.uint16
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(kji.shape[2], kji.shape[1], kji.shape[0])
    image.SetImageToWorldMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijk_to_ras, dtype=np.float64)))
    image.GetPointData().SetScalars(
        numpy_support.numpy_to_vtk(np.ascontiguousarray(kji, dtype=dtype).ravel(), deep=True)
    )
    return image


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


def write_node(node, path: Path) -> Path:
    """Write a node with its default storage node (Slicer's own writer: .seg.nrrd, .nrrd, .tsv ...).

    The storage node is temporary: the node keeps pointing where it pointed (what ``slicer.util.saveNode`` would
    change), and this works without Slicer's application (batch scripts, slicer-core).
    """
    storageNode = node.CreateDefaultStorageNode()
    storageNode.SetFileName(str(path))
    if not storageNode.WriteData(node):
        raise OSError(f"could not write {path}: {storageNode.GetWriteStateAsString()}")
    return Path(path)


# ---------------------------------------------------------------- subject hierarchy


def place_next_to(nodesToPlace, inputVolume) -> None:
    """Put result nodes in the subject hierarchy folder of the CT (its study, when loaded from DICOM).

    As MONAIAuto3DSeg and TotalSegmentator do, so that Slicer's DICOM export finds the segmentation in the CT's
    study. A node without an item yet (Slicer's Qt plugins add one for every node; slicer-core does not) gets one.
    """
    hierarchy = slicer.mrmlScene.GetSubjectHierarchyNode()
    volumeItem = hierarchy.GetItemByDataNode(inputVolume)
    parent = hierarchy.GetItemParent(volumeItem) if volumeItem else hierarchy.GetSceneItemID()
    for node in nodesToPlace:
        if node is None:
            continue
        item = hierarchy.GetItemByDataNode(node)
        if item:
            hierarchy.SetItemParent(item, parent)
        else:
            hierarchy.CreateItem(parent, node)


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


# ---------------------------------------------------------------- DICOM


def dicom_files_of_volume(volumeNode) -> list[str]:
    """The DICOM files a volume was loaded from (its ``DICOM.instanceUIDs``), or [] if not from DICOM."""
    uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split() if volumeNode is not None else []
    database = getattr(slicer, "dicomDatabase", None)
    if not uids or not database:
        return []
    files = [database.fileForInstance(uid) for uid in uids]
    return files if all(files) else []
