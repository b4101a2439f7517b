"""The "Compare with baseline" Logic: align a follow-up to its baseline, match lesions, assess RECIST 1.1.

Runs ``lungtumorseg compare`` in a separate process like segmentation (``engine_run``); nothing is added to the
scene before the run succeeded. Qt-free, so it runs in Slicer and in pytest against slicer-core's MRML.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slicer

from . import compare_helpers, lesion_nodes
from . import lesion_segments as lesions
from . import mrml_nodes as nodes
from . import segment_helpers as helpers
from .engine_run import EngineRunLogic, new_work_dir
from .i18n import tr as _
from .process import python_executable

ALIGNMENT_ATTRIBUTE = "LungTumorSeg.Alignment"  # on the transforms this logic creates


@dataclass
class LungTumorSegComparison:
    """The nodes and data of one comparison (``comparison.json`` as ``data``)."""

    data: dict
    summaryText: str
    tableNode: Any
    rows: list
    transformNode: Any
    segmentationNodes: dict
    outputDir: str
    outputs: dict


class CompareLogic(EngineRunLogic):
    """Runs ``lungtumorseg compare`` in a separate process; shows both scans side by side, linked and aligned.

    The engine runs as segmentation does (``engine_run``: own session, tree kill on Cancel, scene close or module
    reload); nothing is added to the scene before the run succeeded.
    Usable without the GUI: ``CompareLogic().run(baseline, followup, CompareSettings())``.
    """

    def pythonExecutable(self) -> str:
        """Slicer's Python launcher (PythonSlicer) when present, else this interpreter."""
        return python_executable()

    @staticmethod
    def exportLabel(segmentationNode, referenceVolume, path: Path) -> Path:
        """The tumour segments (compare_helpers.tumor_segment_ids) as one label on the volume's grid."""
        import numpy as np

        from ..io.image_io import save_volume

        segmentation = segmentationNode.GetSegmentation()
        segments = []
        for n in range(segmentation.GetNumberOfSegments()):
            segment = segmentation.GetNthSegment(n)
            role = lesion_nodes.segment_tag(segment, lesions.ROLE_TAG)
            segments.append((segmentation.GetNthSegmentID(n), segment.GetName(), role))
        label = None
        for segmentId in compare_helpers.tumor_segment_ids(segments):
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolume) > 0
            label = mask if label is None else label | mask
        if label is None:
            raise ValueError(_("the segmentation '{0}' has no segment").format(segmentationNode.GetName()))
        volume = helpers.volume_from_kji(label.astype(np.uint8), nodes.ijk_to_ras_array(referenceVolume))
        return save_volume(volume, path, overwrite=True)

    @staticmethod
    def followupTransformToReplace(followupVolume, followupSegmentation=None):
        """The user's transform the alignment would replace on the follow-up (or its segmentation), else None.

        The engine aligns the scans in their own frames, so the follow-up must hang under the alignment alone;
        an earlier alignment of this module is replaced without asking, anybody else's transform only when the
        caller says so (``replaceFollowupTransform``).
        """
        for node in (followupVolume, followupSegmentation):
            transform = node.GetParentTransformNode() if node is not None else None
            if transform is not None and transform.GetAttribute(ALIGNMENT_ATTRIBUTE) != "1":
                return transform
        return None

    def prepareJob(
        self,
        baselineVolume,
        followupVolume,
        settings,
        baselineSegmentation=None,
        followupSegmentation=None,
        replaceFollowupTransform: bool = False,
    ) -> dict[str, Any]:
        """Temporary folder, exported CTs and labels, and the engine command line.

        Raises:
            ValueError: no two different CTs, or the follow-up is under a transform of the user's and
                ``replaceFollowupTransform`` is false (nothing is started then).
        """
        from ..io.image_io import save_volume

        for node in (baselineVolume, followupVolume):
            if node is None or node.GetImageData() is None:
                raise ValueError(_("pick a baseline and a follow-up CT volume"))
        if baselineVolume == followupVolume:
            raise ValueError(_("the baseline and the follow-up are the same volume"))
        transform = self.followupTransformToReplace(followupVolume, followupSegmentation)
        if transform is not None and not replaceFollowupTransform:
            raise ValueError(
                _("the follow-up is under the transform '{0}', which the alignment would replace").format(
                    transform.GetName()
                )
            )
        workDir = new_work_dir("LungTumorSegCompare-")
        paths = {}
        for name, volume, segmentation in (
            ("baseline", baselineVolume, baselineSegmentation),
            ("followup", followupVolume, followupSegmentation),
        ):
            paths[name] = save_volume(nodes.volume_from_node(volume), workDir / f"{name}.nrrd")
            if segmentation is not None:
                paths[f"{name}_label"] = self.exportLabel(segmentation, volume, workDir / f"{name}_label.nrrd")
        outputDir = workDir / "out"
        command = compare_helpers.build_compare_command(
            self.pythonExecutable(),
            paths["baseline"],
            paths["followup"],
            outputDir,
            settings,
            paths.get("baseline_label"),
            paths.get("followup_label"),
        )
        logging.info("LungTumorSeg compare: " + " ".join(command))
        return {
            "workDir": workDir,
            "outputDir": outputDir,
            "command": command,
            "nodes": (baselineVolume, followupVolume, baselineSegmentation, followupSegmentation),
        }

    def _start(
        self,
        baselineVolume,
        followupVolume,
        settings,
        baselineSegmentation,
        followupSegmentation,
        replaceFollowupTransform=False,
        **options,
    ):
        """Export the inputs and start the engine; a scene close from now on cancels the run."""
        if self.isRunning():
            raise RuntimeError(_("a comparison is already running"))
        job = self.prepareJob(
            baselineVolume,
            followupVolume,
            settings,
            baselineSegmentation,
            followupSegmentation,
            replaceFollowupTransform,
        )
        job.update(options, run=compare_helpers.EngineRun(exit_code=-1))
        self._launch(job)

    def _readEngine(self) -> None:
        compare_helpers.read_events(self._engine, self._job["run"], self._job.get("progressCallback"))

    def _finish(self) -> tuple[LungTumorSegComparison | None, str | None]:
        """(result, error) of the ended run; (None, None) when it was cancelled."""
        job = self._job
        exitCode, error = self._endRun(list(job["nodes"]))
        if exitCode is None:
            return None, error
        job["run"].exit_code = exitCode
        error = job["run"].failure()
        if error:
            return None, error
        try:
            return self.loadComparison(job), None
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            logging.exception("LungTumorSeg: loading the comparison failed")
            return None, str(exc)

    def run(
        self,
        baselineVolume,
        followupVolume,
        settings: compare_helpers.CompareSettings | None = None,
        baselineSegmentation=None,
        followupSegmentation=None,
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        replaceFollowupTransform: bool = False,
    ) -> LungTumorSegComparison | None:
        """Compare and wait. Returns None when cancelled (``cancel()`` from the callback); raises on failure.

        Raises:
            ValueError: bad inputs, or a transform of the user's on the follow-up (``followupTransformToReplace``).
            RuntimeError: the engine failed.
        """
        self._start(
            baselineVolume,
            followupVolume,
            settings or compare_helpers.CompareSettings(),
            baselineSegmentation,
            followupSegmentation,
            replaceFollowupTransform,
            progressCallback=progressCallback,
        )
        return self._waitForResult()

    def runAsync(
        self,
        baselineVolume,
        followupVolume,
        settings: compare_helpers.CompareSettings,
        baselineSegmentation=None,
        followupSegmentation=None,
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        finishedCallback: Callable[[LungTumorSegComparison | None, str | None], None] | None = None,
        replaceFollowupTransform: bool = False,
    ) -> None:
        """Start the engine; ``finishedCallback(result, error)`` gets (None, None) on Cancel or scene close.

        Raises:
            ValueError: bad inputs, or a transform of the user's on the follow-up (nothing is running then).
            RuntimeError: the engine could not be started (nothing is running then).
        """
        self._start(
            baselineVolume,
            followupVolume,
            settings,
            baselineSegmentation,
            followupSegmentation,
            replaceFollowupTransform,
            progressCallback=progressCallback,
            finishedCallback=finishedCallback,
        )
        self._startPolling()

    def loadComparison(self, job: dict[str, Any]) -> LungTumorSegComparison:
        """Segmentations made by the engine, the alignment transform (applied to the follow-up), the table."""
        from ..io.image_io import load_volume

        baselineVolume, followupVolume, baselineSegmentation, followupSegmentation = job["nodes"]
        outputs = dict(job["run"].result.get("outputs", {}))
        data = json.loads(Path(outputs["comparison_json"]).read_text(encoding="utf-8"))
        segmentations = {"baseline": baselineSegmentation, "followup": followupSegmentation}
        for name, volume in (("baseline", baselineVolume), ("followup", followupVolume)):
            if segmentations[name] is None and outputs.get(f"{name}_tumor"):
                labelled, count = lesions.lesion_label_map(load_volume(outputs[f"{name}_tumor"]))
                segmentations[name] = lesion_nodes.replace_lesion_segments(
                    labelled.transpose(2, 1, 0), count, volume, None, f"{volume.GetName()} tumor"
                )[0]
                nodes.place_next_to([segmentations[name]], volume)
        transformNode = slicer.modules.transforms.logic().AddTransform(outputs["transform"], slicer.mrmlScene)
        if transformNode is None:
            raise RuntimeError(_("could not read the alignment {0}").format(outputs["transform"]))
        transformNode.SetName(f"{followupVolume.GetName()} to {baselineVolume.GetName()}")
        transformNode.SetAttribute(ALIGNMENT_ATTRIBUTE, "1")
        transformNode.SetAndObserveTransformNodeID(baselineVolume.GetTransformNodeID())
        for node in (followupVolume, segmentations["followup"]):
            if node is not None:
                node.SetAndObserveTransformNodeID(transformNode.GetID())
        rows = compare_helpers.comparison_rows(data)
        tableNode = self.createComparisonTable(rows, f"{followupVolume.GetName()} vs {baselineVolume.GetName()}")
        nodes.place_next_to([transformNode, tableNode], baselineVolume)
        self.showSideBySide(baselineVolume, followupVolume, segmentations)
        return LungTumorSegComparison(
            data,
            compare_helpers.response_summary_text(data),
            tableNode,
            rows,
            transformNode,
            segmentations,
            str(job["outputDir"]),
            outputs,
        )

    @staticmethod
    def createComparisonTable(rows: list[dict], name: str):
        """vtkMRMLTableNode, one row per match (compare_helpers.COMPARE_TABLE_COLUMNS), titles as the header."""
        tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
        wasModifying = tableNode.StartModify()
        lesion_nodes.fill_table(
            tableNode, compare_helpers.COMPARE_TABLE_COLUMNS, rows, compare_helpers.compare_table_value
        )
        lesion_nodes.set_column_titles_as_header(tableNode)
        tableNode.SetLocked(True)
        tableNode.EndModify(wasModifying)
        return tableNode

    @staticmethod
    def showSideBySide(baselineVolume, followupVolume, segmentations: dict) -> None:
        """Baseline in the Red view, aligned follow-up in the Yellow view, slices linked; each scan's tumours."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # batch mode (no main window), slicer-core
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
        for viewName, volume, segmentation in (
            ("Red", baselineVolume, segmentations.get("baseline")),
            ("Yellow", followupVolume, segmentations.get("followup")),
        ):
            compositeNode = layoutManager.sliceWidget(viewName).sliceLogic().GetSliceCompositeNode()
            compositeNode.SetBackgroundVolumeID(volume.GetID())
            compositeNode.SetForegroundVolumeID(None)
            compositeNode.SetLinkedControl(True)
            if segmentation is not None and segmentation.GetDisplayNode() is not None:
                segmentation.GetDisplayNode().AddViewNodeID(f"vtkMRMLSliceNode{viewName}")
        slicer.util.resetSliceViews()
