"""The segmentation Logic of the LungTumorSeg module: CT node in, segmentation, entropy map, table and lines out.

The CT node is exported to a temporary NRRD, ``python -m LungTumorSegLib segment --progress json`` runs in a
separate process (``engine_run``), and its outputs become MRML nodes only after success, so Cancel leaves the
scene untouched. Usable without the GUI: ``SegmentationLogic().run(volumeNode, SegmentSettings(device="cpu"))``
in Slicer, ``Slicer --python-script`` and pytest against slicer-core's MRML (no Qt needed).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import slicer

from ..model.model_names import user_models_dir
from . import candidate_nodes, lesion_nodes, report_saving
from . import dependencies as deps
from . import lesion_segments as lesions
from . import mrml_nodes as nodes
from . import segment_helpers as helpers
from . import segmentation_result as results
from .device_query import DeviceQuery, device_choices
from .engine_run import EngineRunLogic, new_work_dir
from .i18n import tr as _
from .process import python_executable
from .seed_undo import SeedUndo
from .segmentation_result import LungTumorSegResult

__all__ = ["LungTumorSegResult", "SegmentationLogic"]


class SegmentationLogic(EngineRunLogic):
    """Runs the engine in a separate process and turns its outputs into MRML nodes."""

    def __init__(self) -> None:
        EngineRunLogic.__init__(self)
        self._seedUndo: dict[str, SeedUndo] = {}

    # ---------------------------------------------------------------- environment

    def pythonExecutable(self) -> str:
        """Slicer's Python launcher (PythonSlicer) when present, else this interpreter."""
        return python_executable()

    @staticmethod
    def userModelsDir() -> Path:
        """Folder for imported bundles (the engine's user_models_dir)."""
        return user_models_dir()

    @staticmethod
    def missingDependencies() -> list[str]:
        """Distribution names of the declared requirements Slicer's Python lacks."""
        return deps.plan_install().missing_names()

    @staticmethod
    def ensureDependencies(askConfirmation: bool = True) -> bool:
        """Offer to install missing packages (never at import time); True when all are present."""
        from .dependency_install import ensureEngineDependencies

        return ensureEngineDependencies(askConfirmation=askConfirmation)

    def startDeviceQuery(self) -> DeviceQuery:
        """Ask the engine, in its own process, which GPUs torch sees (Slicer's process never imports torch)."""
        query = DeviceQuery(self.pythonExecutable())
        query.start()
        return query

    @staticmethod
    def deviceChoices(gpus: list[dict] | None = None) -> list[tuple[str, str]]:
        """(label, --device value) pairs: Auto, one entry per GPU the engine reported, CPU."""
        return device_choices(gpus)

    # ---------------------------------------------------------------- job

    def prepareJob(self, inputVolume, settings: helpers.SegmentSettings) -> dict[str, Any]:
        """Temporary folder, exported CT and the engine command line."""
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError(_("the input volume has no image data"))
        workDir = new_work_dir("LungTumorSeg-")
        stem = "ct"
        inputPath = nodes.export_volume(inputVolume, workDir / f"{stem}.nrrd")
        outputDir = workDir / "out"
        command = helpers.build_segment_command(self.pythonExecutable(), inputPath, outputDir, settings)
        logging.info("LungTumorSeg: " + " ".join(command))
        return {
            "workDir": workDir,
            "outputDir": outputDir,
            "stem": stem,
            "command": command,
            "inputPath": str(inputPath),
            "result": None,
            "error": None,
            "stderr": [],
        }

    @staticmethod
    def _handleEvent(job: dict[str, Any], event: helpers.ProgressEvent) -> None:
        if event.event == "result":
            job["result"] = event.data
        elif event.event == "error":
            job["error"] = event.message or "unknown error"
        elif event.event == "text":
            job["stderr"].append(event.message)

    @staticmethod
    def _jobError(job: dict[str, Any], exitCode: int | None) -> str | None:
        if job["error"]:
            return job["error"]
        if exitCode != 0 or not job["result"]:
            tail = "\n".join(job["stderr"][-20:])
            return _("the segmentation process ended with code {0}").format(exitCode) + (f"\n{tail}" if tail else "")
        return None

    # ---------------------------------------------------------------- process control

    def _start(self, inputVolume, settings: helpers.SegmentSettings, **options) -> dict[str, Any]:
        """Export the CT and start the engine; a scene close from now on cancels the run."""
        if self.isRunning():
            raise RuntimeError(_("a segmentation is already running"))
        job = self.prepareJob(inputVolume, settings)
        job.update(options, inputVolume=inputVolume)
        self._launch(job)
        return job

    def _readEngine(self) -> None:
        job = self._job
        for line in self._engine.read_lines():
            event = helpers.parse_progress_line(line)
            if event is None:
                continue
            self._handleEvent(job, event)
            if job.get("progressCallback"):
                job["progressCallback"](event)

    def _finish(self) -> tuple[LungTumorSegResult | None, str | None]:
        """(result, error) of the ended run; (None, None) when it was cancelled."""
        job = self._job
        exitCode, error = self._endRun([job["inputVolume"]])
        if exitCode is None:
            return None, error
        error = self._jobError(job, exitCode)
        if error:
            return None, error
        try:
            return self.loadResults(job), None
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            logging.exception("LungTumorSeg: loading the results failed")
            return None, str(exc)

    def run(
        self,
        inputVolume,
        settings: helpers.SegmentSettings | None = None,
        outputSegmentation=None,
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        showIn3D: bool = True,
        entropyOpacity: float = 0.4,
        previous: LungTumorSegResult | None = None,
        addToSegment: bool = False,
    ) -> LungTumorSegResult | None:
        """Segment and wait (scripts, tests, batch). None when cancelled (``cancel()`` from the callback).

        Raises:
            RuntimeError: the run failed (the engine's one-line message).
        """
        self._start(
            inputVolume,
            settings or helpers.SegmentSettings(),
            outputSegmentation=outputSegmentation,
            progressCallback=progressCallback,
            showIn3D=showIn3D,
            entropyOpacity=entropyOpacity,
            previous=previous,
            addToSegment=addToSegment,
        )
        return self._waitForResult()

    def runAsync(
        self,
        inputVolume,
        settings: helpers.SegmentSettings,
        outputSegmentation=None,
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        finishedCallback: Callable[[LungTumorSegResult | None, str | None], None] | None = None,
        showIn3D: bool = True,
        entropyOpacity: float = 0.4,
        previous: LungTumorSegResult | None = None,
        addToSegment: bool = False,
    ) -> None:
        """Start the engine (GUI); ``finishedCallback(result, error)`` gets (None, None) on Cancel or scene close.

        Raises:
            RuntimeError: the engine could not be started (nothing is running then).
        """
        self._start(
            inputVolume,
            settings,
            outputSegmentation=outputSegmentation,
            progressCallback=progressCallback,
            finishedCallback=finishedCallback,
            showIn3D=showIn3D,
            entropyOpacity=entropyOpacity,
            previous=previous,
            addToSegment=addToSegment,
        )
        self._startPolling()

    # ---------------------------------------------------------------- results -> nodes

    @staticmethod
    def nodesInScene(result: LungTumorSegResult | None) -> bool:
        """True while the result's segmentation, entropy and table nodes are still in the scene."""
        return results.nodes_in_scene(result)

    def loadResults(self, job: dict[str, Any]) -> LungTumorSegResult:
        """Turn the engine's files into nodes: a segment per lesion, the entropy map, the table, the RECIST lines.

        A normal run replaces the lesion segments of the target segmentation (other segments are kept); a seed run
        (``addToSegment``) adds its lesion as a new segment, or merges it into the lesion segment it overlaps, and
        can be undone (``undoLastSeed``). The nodes go into the CT's subject hierarchy folder (its study).
        """
        from ..io.image_io import load_volume

        inputVolume = job["inputVolume"]
        outputs = dict(job["result"].get("outputs", {}))
        baseName = inputVolume.GetName()
        previous = job.get("previous") if self.nodesInScene(job.get("previous")) else None
        target = job.get("outputSegmentation")
        if not nodes.in_scene(target):
            target = None  # removed during the run: a new one is created
        label = load_volume(outputs["tumor"])
        entropy = load_volume(outputs["entropy"]) if outputs.get("entropy") else None
        entropyKji = helpers.kji_from_volume(entropy)[0].astype("float32") if entropy is not None else None
        previousEntropy = previous.entropyNode if previous is not None else None

        if job.get("addToSegment"):
            segmentationNode = target or lesion_nodes.new_segmentation(inputVolume, f"{baseName} tumor")
            undo = self.seedUndo(segmentationNode)
            job["promptSegmentId"] = self.addPromptedLesion(job, undo, helpers.kji_from_volume(label)[0], inputVolume)
            entropyKji = undo.merge_entropy(previousEntropy, entropyKji)
            measurements, segmentIds = None, []
        else:
            labelled, count = lesions.lesion_label_map(label)
            segmentationNode, segmentIds = lesion_nodes.replace_lesion_segments(
                labelled.transpose(2, 1, 0),
                count,
                inputVolume,
                target,
                f"{baseName} tumor",
            )
            self._seedUndo.pop(segmentationNode.GetID(), None)  # the clicks' segments are gone
            measurements = self.readMeasurements(outputs, job["outputDir"], job["stem"], label, entropy)
            if len(helpers.lesion_rows(measurements)) != count:
                measurements = None  # not the engine's lesions: measure the segments here
        lesion_nodes.set_show_in_3d(segmentationNode, job.get("showIn3D", True))
        entropyNode = None
        if entropyKji is not None:
            entropyNode = nodes.update_entropy_volume(
                helpers.volume_from_kji(entropyKji, entropy.affine),
                f"{baseName} tumor entropy",
                inputVolume,
                previousEntropy,
            )
            slicer.util.setSliceViewerLayers(
                background=inputVolume, foreground=entropyNode, foregroundOpacity=job.get("entropyOpacity", 0.4)
            )
        segmentationNode.SetAttribute("LungTumorSeg.OutputDir", str(job["outputDir"]))
        result = LungTumorSegResult(
            segmentationNode,
            [],
            entropyNode,
            previous.tableNode if previous else None,
            previous.lineNodes if previous else [],
            outputDir=str(job["outputDir"]),
            stem=job["stem"],
            outputs=outputs,
            inputVolume=inputVolume,
            promptSegmentId=job.get("promptSegmentId", ""),
        )
        previousCandidates = previous.candidates if previous else None
        if job.get("addToSegment"):  # a click asks for one lesion: the run's candidates stay as they were
            result.candidates = previousCandidates if candidate_nodes.candidates_in_scene(previousCandidates) else None
        else:
            result.candidates = candidate_nodes.load_candidates(outputs, inputVolume, previousCandidates)
        if measurements is None:
            results.remeasure(result)
        else:
            results.show_measurements(result, measurements, segmentIds)
        if job.get("addToSegment"):
            self.seedUndo(segmentationNode).record_state()
        else:
            result.engineState = result.measuredState
        nodes.place_next_to([segmentationNode, entropyNode, result.tableNode, *result.lineNodes], inputVolume)
        Path(job["inputPath"]).unlink(missing_ok=True)  # the exported CT copy is no longer needed
        return result

    @staticmethod
    def addPromptedLesion(job: dict[str, Any], undo: SeedUndo, label_kji, inputVolume) -> str:
        """A seed click's lesion: merged into the lesion segment it overlaps, else a new segment (undoable).

        Returns the segment added or merged into ('' when the click found nothing).
        """
        return undo.click(label_kji > 0.5, inputVolume)

    @staticmethod
    def readMeasurements(outputs: dict, outputDir, stem: str, label, entropy) -> dict:
        """The engine's lesions JSON; measured here with the engine's code when the engine did not write it."""
        path = helpers.find_measurements_file(outputs, outputDir, stem)
        if path:
            return json.loads(path.read_text(encoding="utf-8"))
        from ..measurements.lesion_measurements import measure_lesions

        return measure_lesions(label, None, entropy).to_dict()

    # ---------------------------------------------------------------- after the run: edits, clicks, report

    def seedUndo(self, segmentationNode) -> SeedUndo:
        """The seed-click undo steps of a segmentation node (created on first use)."""
        undo = self._seedUndo.get(segmentationNode.GetID())
        if undo is None or undo.segmentationNode is not segmentationNode:
            undo = self._seedUndo[segmentationNode.GetID()] = SeedUndo(segmentationNode)
        return undo

    def canUndoLastSeed(self, result: LungTumorSegResult | None) -> bool:
        """True when the last seed click of the result's segmentation can be undone."""
        if result is None or not nodes.in_scene(result.segmentationNode):
            return False
        undo = self._seedUndo.get(result.segmentationNode.GetID())
        return bool(undo and undo.available())

    def undoLastSeed(self, result: LungTumorSegResult) -> bool:
        """Take back the last seed click (its segment or merge, its entropy) and re-measure; False if unavailable."""
        if not self.canUndoLastSeed(result):
            return False
        self._seedUndo[result.segmentationNode.GetID()].undo(result.inputVolume, result.entropyNode)
        results.remeasure(result)
        self._seedUndo[result.segmentationNode.GetID()].record_state()
        return True

    def acceptCandidate(self, result: LungTumorSegResult, index: int) -> str:
        """Add candidate ``index`` (its table row) as a lesion, as a seed click would (undoable); re-measure.

        Returns the lesion segment's ID. Raises ValueError when there is no such candidate or it was accepted.
        """
        candidates = result.candidates
        if not candidate_nodes.candidates_in_scene(candidates) or not 0 <= index < len(candidates.rows):
            raise ValueError(f"no candidate {index + 1} to accept")
        if candidates.rows[index]["accepted"] and candidates.rows[index]["accepted"] in lesion_nodes.segment_names(
            result.segmentationNode
        ):
            raise ValueError(f"{candidates.rows[index]['name']} is already in {candidates.rows[index]['accepted']}")
        undo = self.seedUndo(result.segmentationNode)
        segmentId = undo.click(candidate_nodes.candidate_mask(candidates, index), result.inputVolume)
        results.remeasure(result)
        undo.record_state()
        segment = result.segmentationNode.GetSegmentation().GetSegment(segmentId)
        candidate_nodes.mark_accepted(candidates, index, segment.GetName() if segment else "")
        return segmentId

    @staticmethod
    def isStale(result: LungTumorSegResult | None) -> bool:
        """True when the lesion segments were edited since the table and the RECIST lines were measured."""
        return results.is_stale(result)

    @staticmethod
    def remeasure(result: LungTumorSegResult) -> LungTumorSegResult:
        """Measure the lesion segments as they are now; table, RECIST lines and summary follow."""
        results.remeasure(result)
        return result

    @staticmethod
    def saveDicomOutputs(result: LungTumorSegResult, folder, base: str, overwrite: bool = False) -> list[Path]:
        """DICOM SEG and SR of the lesion segments on the CT's source series ([] when not loaded from DICOM)."""
        return report_saving.save_dicom_outputs(result, folder, base, overwrite)

    @staticmethod
    def saveReport(
        result: LungTumorSegResult, folder: str | Path, askOverwrite: Callable[[str], bool] | None = None
    ) -> list[Path]:
        """Measure the segments as they are and write tables, overlay, HTML, .seg.nrrd (and SEG/SR) into ``folder``."""
        return report_saving.save_report(result, folder, askOverwrite)
