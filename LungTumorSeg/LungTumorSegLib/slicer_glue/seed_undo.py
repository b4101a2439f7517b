"""Undo for seed clicks: what each click changed (the segment it added, or the part of the segment it merged into)
and the part of the entropy map it raised.

Undo is offered only while the segments are exactly as the last click left them: after an edit in the Segment
Editor, its own undo is the one that knows the order of changes. Qt-free (slicer-core in pytest).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import slicer

from . import lesion_nodes
from . import mrml_nodes as nodes
from .lesion_segments import bounding_box


@dataclass
class SeedStep:
    """One click that can be undone.

    Attributes:
        segmentId: the segment the click added or merged into.
        added: True when the click added the segment (undo removes it).
        region: the index box (KJI) of the click's lesion; ``maskBefore`` is the merged segment there before.
        entropyRegion: the index box of the entropy map the click raised; ``entropyBefore`` its values before.
        stateAfter: ``lesion_nodes.segments_state`` right after the click (or after the last undo).
    """

    segmentId: str
    added: bool
    region: tuple | None = None
    maskBefore: np.ndarray | None = None
    entropyRegion: tuple | None = None
    entropyBefore: np.ndarray | None = None
    stateAfter: tuple = ()


class SeedUndo:
    """The clicks of one segmentation node that can still be undone, last first."""

    def __init__(self, segmentationNode) -> None:
        self.segmentationNode = segmentationNode
        self.steps: list[SeedStep] = []

    def click(self, mask_kji: np.ndarray, inputVolume) -> str:
        """Add the click's lesion (a new segment, or merged into the one it overlaps) and remember how to undo it.

        A click that found no lesion changes no segment ('' is returned); its step still undoes its entropy.
        """
        if bounding_box(mask_kji) is None:
            self.steps.append(SeedStep("", added=False))
            return ""
        segmentId, before = lesion_nodes.add_or_merge_lesion(self.segmentationNode, mask_kji, inputVolume)
        step = SeedStep(segmentId, added=before is None)
        if before is not None:
            step.region = bounding_box(mask_kji > 0)
            step.maskBefore = before[step.region].copy() if step.region is not None else None
        self.steps.append(step)
        return segmentId

    def merge_entropy(self, entropyNode: Any, newEntropy_kji: np.ndarray | None) -> np.ndarray | None:
        """The map to show after the click: the voxel-wise maximum with the earlier map (kept for undo).

        A seed run covers only its region, so the earlier clicks' uncertainty stays visible.
        """
        if newEntropy_kji is None or entropyNode is None or not nodes.in_scene(entropyNode):
            return newEntropy_kji
        previous = slicer.util.arrayFromVolume(entropyNode)
        if previous.shape != newEntropy_kji.shape:
            return newEntropy_kji
        if self.steps:
            region = bounding_box(newEntropy_kji > previous)
            self.steps[-1].entropyRegion = region
            self.steps[-1].entropyBefore = previous[region].copy() if region is not None else None
        return np.maximum(previous, newEntropy_kji)

    def record_state(self) -> None:
        """The segments as the last click (or undo) left them: an edit after this makes undo unavailable."""
        if self.steps:
            self.steps[-1].stateAfter = lesion_nodes.segments_state(self.segmentationNode)

    def available(self) -> bool:
        """True when the last click can be undone (no other change to the segments since)."""
        return bool(
            self.steps
            and nodes.in_scene(self.segmentationNode)
            and lesion_nodes.segments_state(self.segmentationNode) == self.steps[-1].stateAfter
        )

    def undo(self, inputVolume, entropyNode: Any = None) -> bool:
        """Put back the segments (and the entropy) as they were before the last click; False when unavailable."""
        if not self.available():
            return False
        step = self.steps.pop()
        segmentation = self.segmentationNode.GetSegmentation()
        if step.added and step.segmentId:
            segmentation.RemoveSegment(step.segmentId)
        elif step.region is not None:
            mask = lesion_nodes.lesion_mask(self.segmentationNode, step.segmentId, inputVolume)
            mask[step.region] = step.maskBefore
            lesion_nodes.import_labels(
                self.segmentationNode, (mask > 0).astype(np.uint8), [step.segmentId], inputVolume
            )
        if step.entropyRegion is not None and entropyNode is not None and nodes.in_scene(entropyNode):
            array = slicer.util.arrayFromVolume(entropyNode)
            array[step.entropyRegion] = step.entropyBefore
            slicer.util.arrayFromVolumeModified(entropyNode)
        return True
