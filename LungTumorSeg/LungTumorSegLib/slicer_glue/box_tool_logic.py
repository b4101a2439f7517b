"""The box tool's Logic: an ROI markup around a lesion in, LiteMedSAM's lesion out as a lesion segment.

The ROI's two corners (world coordinates, taken into the CT's own frame) go to ``lungtumorseg segment --box``,
run in its own process exactly as *Apply* runs the automatic model (``EngineRunLogic``: progress, Cancel, a scene
close cancels, nodes only after success). The lesion (label value 1: the first and only box) becomes a new
segment "Lung tumor N" with the next free N, or replaces the voxels of a lesion segment the user chose; either is
one undo step (``SeedUndo``, shared with the seed clicks). The table and RECIST lines are re-measured over all
lesion segments. Qt-free: tested in pytest against slicer-core's real MRML.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import slicer
import vtk

from . import box_helpers as boxes
from . import lesion_nodes
from . import lesion_segments as lesions
from . import mrml_nodes as nodes
from . import segment_helpers as helpers
from .engine_run import new_work_dir
from .seed_undo import SeedUndo
from .segmentation_logic import SegmentationLogic
from .segmentation_result import LungTumorSegResult

DEFAULT_ROI_SIZE_MM = 40.0  # a new ROI at the slice view's centre: a 4 cm cube, to be adjusted by the user
ROI_NAME = "LungTumorSeg box"


# ---------------------------------------------------------------- ROI geometry


def roi_corners_in_volume(roiNode, volumeNode) -> boxes.Corners:
    """The ROI as two opposite corners in the CT's own frame (where the engine works).

    The ROI's eight corners (its own axes, its parent transform applied: world coordinates) are taken into the
    CT's frame (the CT's parent transform undone); the box is the axis-aligned box around them, so a rotated ROI
    or a rotation between the two frames gives the box that holds the whole ROI.
    """
    bounds = [0.0] * 6
    roiNode.GetBounds(bounds)  # node coordinates: the ROI's own rotation (ObjectToNode) included
    local = []
    for corner in boxes.bounds_corners(bounds):
        world = [0.0, 0.0, 0.0]
        roiNode.TransformPointToWorld(list(corner), world)
        local.append(nodes.world_to_volume(volumeNode, world))
    return boxes.enclosing_corners(np.array(local))


def lesion_corners_in_volume(segmentationNode, segmentId: str, volumeNode) -> boxes.Corners | None:
    """The box around a segment's voxels (voxel edges included), in the CT's frame; None when it is empty."""
    mask = lesion_nodes.lesion_mask(segmentationNode, segmentId, volumeNode)
    region = lesions.bounding_box(mask > 0)
    if region is None:
        return None
    return boxes.enclosing_corners(boxes.voxel_box_corners(region, nodes.ijk_to_ras_array(volumeNode)))


def set_roi_box(roiNode, corners: boxes.Corners, volumeNode) -> None:
    """Make the ROI exactly the box ``corners`` of the CT's frame: under the CT's transform, along its axes."""
    low, high = np.asarray(corners[0], float), np.asarray(corners[1], float)
    wasModifying = roiNode.StartModify()
    roiNode.SetAndObserveTransformNodeID(volumeNode.GetTransformNodeID())
    roiNode.SetAndObserveObjectToNodeMatrix(vtk.vtkMatrix4x4())  # identity: the ROI's axes are the CT frame's
    roiNode.SetCenter(list((low + high) / 2.0))
    roiNode.SetSize(list(high - low))
    roiNode.EndModify(wasModifying)


def new_roi(name: str = ROI_NAME):
    """An ROI markup node with its display node (nothing placed yet)."""
    roiNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsROINode", name)
    roiNode.CreateDefaultDisplayNodes()
    return roiNode


def slice_view_centre(sliceNode) -> list[float]:
    """The world point at the centre of a slice view (its SliceToRAS origin)."""
    matrix = sliceNode.GetSliceToRAS()
    return [matrix.GetElement(row, 3) for row in range(3)]


def roi_at_slice_view_centre(volumeNode, sliceNode, roiNode=None, size_mm: float = DEFAULT_ROI_SIZE_MM):
    """An ROI (``roiNode`` or a new one) of ``size_mm`` per side centred where the slice view is centred."""
    roiNode = roiNode or new_roi()
    centre = nodes.world_to_volume(volumeNode, slice_view_centre(sliceNode))
    half = np.full(3, size_mm / 2.0)
    set_roi_box(roiNode, (tuple(centre - half), tuple(centre + half)), volumeNode)
    return roiNode


# ---------------------------------------------------------------- the Logic


class BoxToolLogic(SegmentationLogic):
    """The segmentation Logic with box prompts (one engine run at a time, shared with *Apply* and seed clicks)."""

    @staticmethod
    def boxAvailability() -> boxes.BoxAvailability:
        """Whether this Slicer's Python can run the box tool (>= 3.10) and whether LiteMedSAM is installed yet."""
        return boxes.box_tool_availability()

    @staticmethod
    def roiCorners(roiNode, volumeNode) -> boxes.Corners:
        """The ROI's two corners in the CT's frame (see ``roi_corners_in_volume``)."""
        return roi_corners_in_volume(roiNode, volumeNode)

    @staticmethod
    def setRoiFromLesion(roiNode, segmentationNode, segmentId: str, volumeNode, margin: float = boxes.START_MARGIN):
        """Set the ROI to the lesion segment's box grown by ``margin`` (10 %) per side; False when it is empty."""
        corners = lesion_corners_in_volume(segmentationNode, segmentId, volumeNode)
        if corners is None:
            return False
        set_roi_box(roiNode, boxes.grow_corners(corners, margin), volumeNode)
        return True

    def prepareJob(self, inputVolume, settings) -> dict[str, Any]:
        """As for *Apply*; a ``BoxSettings`` gives the ``--box`` command line."""
        if not isinstance(settings, boxes.BoxSettings):
            return SegmentationLogic.prepareJob(self, inputVolume, settings)
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError("the input volume has no image data")
        workDir = new_work_dir("LungTumorSeg-box-")
        inputPath = nodes.export_volume(inputVolume, workDir / "ct.nrrd")
        command = boxes.build_box_command(self.pythonExecutable(), inputPath, workDir / "out", settings)
        logging.info("LungTumorSeg: " + " ".join(command))
        return {
            "workDir": workDir,
            "outputDir": workDir / "out",
            "stem": "ct",
            "command": command,
            "inputPath": str(inputPath),
            "result": None,
            "error": None,
            "stderr": [],
        }

    def _boxOptions(self, segmentationNode, replaceSegmentId: str, **options) -> dict[str, Any]:
        """The job options of a box run: a prompted lesion (undoable), added or replacing ``replaceSegmentId``."""
        options.update(outputSegmentation=segmentationNode, addToSegment=True, box=True)
        return dict(options, replaceSegmentId=replaceSegmentId)

    def runBox(
        self,
        inputVolume,
        settings: boxes.BoxSettings,
        outputSegmentation=None,
        replaceSegmentId: str = "",
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        previous: LungTumorSegResult | None = None,
        showIn3D: bool = True,
        entropyOpacity: float = 0.4,
    ) -> LungTumorSegResult | None:
        """Segment the box and wait (scripts, tests). None when cancelled.

        Args:
            outputSegmentation: the segmentation that gets the lesion (a new one when None).
            replaceSegmentId: a lesion segment of it whose voxels the box's lesion replaces ('' adds a new lesion).
            previous: the result shown (its table, entropy map and RECIST lines are updated in place).

        Raises:
            RuntimeError: the run failed (the engine's one-line message).
        """
        self._start(
            inputVolume,
            settings,
            **self._boxOptions(
                outputSegmentation,
                replaceSegmentId,
                progressCallback=progressCallback,
                previous=previous,
                showIn3D=showIn3D,
                entropyOpacity=entropyOpacity,
            ),
        )
        return self._waitForResult()

    def runBoxAsync(
        self,
        inputVolume,
        settings: boxes.BoxSettings,
        outputSegmentation=None,
        replaceSegmentId: str = "",
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        finishedCallback: Callable[[LungTumorSegResult | None, str | None], None] | None = None,
        previous: LungTumorSegResult | None = None,
        showIn3D: bool = True,
        entropyOpacity: float = 0.4,
    ) -> None:
        """Start the box run (GUI); ``finishedCallback(result, error)`` gets (None, None) on Cancel or scene close.

        Raises:
            RuntimeError: the engine could not be started (nothing is running then).
        """
        self._start(
            inputVolume,
            settings,
            **self._boxOptions(
                outputSegmentation,
                replaceSegmentId,
                progressCallback=progressCallback,
                finishedCallback=finishedCallback,
                previous=previous,
                showIn3D=showIn3D,
                entropyOpacity=entropyOpacity,
            ),
        )
        self._startPolling()

    @staticmethod
    def addPromptedLesion(job: dict[str, Any], undo: SeedUndo, label_kji, inputVolume) -> str:
        """A box's lesion (label value 1) as a new lesion segment or into the chosen one; seed clicks as before."""
        if not job.get("box"):
            return SegmentationLogic.addPromptedLesion(job, undo, label_kji, inputVolume)
        mask = np.asarray(label_kji) == 1
        segmentId = job.get("replaceSegmentId") or ""
        if segmentId and segmentId not in lesion_nodes.lesion_segment_ids(undo.segmentationNode):
            logging.warning("LungTumorSeg: the segment to replace is gone; the box's lesion is added as a new one")
            segmentId = ""
        if segmentId:
            return undo.replace_lesion(segmentId, mask, inputVolume)
        return undo.add_lesion(mask, inputVolume)
