"""The segmentation Logic of the LungTumorSeg module: CT node in, segmentation, entropy map, table and lines out.

The CT node is exported to a temporary NRRD, ``python -m LungTumorSegLib segment --progress json`` runs in a
separate process (``engine_run``), and its outputs become MRML nodes only after success, so Cancel leaves the
scene untouched. Usable without the GUI: ``SegmentationLogic().run(volumeNode, SegmentSettings(device="cpu"))``
in Slicer, ``Slicer --python-script`` and pytest against slicer-core's MRML (no Qt needed).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slicer

from ..model.model_names import user_models_dir
from . import dependencies as deps
from . import mrml_nodes as nodes
from . import segment_helpers as helpers
from .engine_run import EngineRunLogic, new_work_dir
from .i18n import tr as _
from .process import python_executable


@dataclass
class LungTumorSegResult:
    """The nodes created for one run and where the engine's files are."""

    segmentationNode: Any
    segmentId: str
    entropyNode: Any
    tableNode: Any
    lineNodes: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    summaryText: str = ""
    outputDir: str = ""
    stem: str = ""
    outputs: dict = field(default_factory=dict)
    inputVolume: Any = None


class SegmentationLogic(EngineRunLogic):
    """Runs the engine in a separate process and turns its outputs into MRML nodes."""

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

    @staticmethod
    def deviceChoices() -> list[tuple[str, str]]:
        """(label, --device value) pairs; the GPU entry names the GPU when torch sees one."""
        choices = [(_("Auto"), "auto")]
        try:
            if importlib.util.find_spec("torch") is not None:
                import torch

                if torch.cuda.is_available():
                    choices.append((_("GPU ({0})").format(torch.cuda.get_device_name(0)), "cuda"))
        except Exception as exc:  # noqa: BLE001 - a broken torch must not break the panel
            logging.warning(f"LungTumorSeg: could not query CUDA: {exc}")
        choices.append((_("CPU"), "cpu"))
        return choices

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
        if result is None:
            return False
        required = [result.segmentationNode, result.tableNode] + ([result.entropyNode] if result.entropyNode else [])
        return all(nodes.in_scene(node) for node in required)

    def loadResults(self, job: dict[str, Any]) -> LungTumorSegResult:
        """Create (or update the previous run's) segmentation, entropy, table and RECIST line nodes."""
        from ..io.image_io import load_volume
        from ..measurements.lesion_measurements import measure_lesions

        inputVolume = job["inputVolume"]
        outputs = dict(job["result"].get("outputs", {}))
        baseName = inputVolume.GetName()
        previous = job.get("previous") if self.nodesInScene(job.get("previous")) else None
        target = job.get("outputSegmentation")
        if not nodes.in_scene(target):
            target = None  # removed during the run: a new one is created
        label = load_volume(outputs["tumor"])
        entropy = load_volume(outputs["entropy"]) if outputs.get("entropy") else None

        measurements = None
        existing = nodes.segment_array(target, inputVolume) if job.get("addToSegment") else None
        if existing is not None and existing.any():  # a seed click adds its lesion to those already there
            label = helpers.union_label(label, existing)
            if entropy is not None and previous is not None and previous.entropyNode is not None:
                entropy = helpers.merged_entropy(entropy, slicer.util.arrayFromVolume(previous.entropyNode))
            measurements = measure_lesions(label, nodes.volume_from_node(inputVolume), entropy).to_dict()
        if measurements is None:
            measurements = self.readMeasurements(outputs, job["outputDir"], job["stem"], label, entropy)

        segmentationNode, segmentId = nodes.update_segmentation(label, inputVolume, target, baseName)
        nodes.set_show_in_3d(segmentationNode, job.get("showIn3D", True))
        entropyNode = None
        if entropy is not None:
            entropyNode = nodes.update_entropy_volume(
                entropy, f"{baseName} tumor entropy", inputVolume, previous.entropyNode if previous else None
            )
            slicer.util.setSliceViewerLayers(
                background=inputVolume, foreground=entropyNode, foregroundOpacity=job.get("entropyOpacity", 0.4)
            )
        rows = helpers.lesion_rows(measurements)
        summaryText = helpers.case_summary_text(measurements)
        tableNode = nodes.update_lesion_table(
            rows, f"{baseName} tumor lesions", summaryText, previous.tableNode if previous else None
        )
        lineNodes = nodes.update_recist_lines(rows, baseName, inputVolume, previous.lineNodes if previous else [])
        segmentationNode.SetAttribute("LungTumorSeg.OutputDir", str(job["outputDir"]))
        Path(job["inputPath"]).unlink(missing_ok=True)  # the exported CT copy is no longer needed
        return LungTumorSegResult(
            segmentationNode,
            segmentId,
            entropyNode,
            tableNode,
            lineNodes,
            rows,
            summaryText,
            str(job["outputDir"]),
            job["stem"],
            outputs,
            inputVolume,
        )

    @staticmethod
    def readMeasurements(outputs: dict, outputDir, stem: str, label, entropy) -> dict:
        """The engine's lesions JSON; measured here with the engine's code when the engine did not write it."""
        path = helpers.find_measurements_file(outputs, outputDir, stem)
        if path:
            return json.loads(path.read_text(encoding="utf-8"))
        from ..measurements.lesion_measurements import measure_lesions

        return measure_lesions(label, None, entropy).to_dict()

    # ---------------------------------------------------------------- report

    def saveDicomOutputs(self, result: LungTumorSegResult, folder, base: str, overwrite: bool = False) -> list[Path]:
        """``<base>_seg.dcm`` (DICOM SEG) and ``<base>_sr.dcm`` (TID 1500) of the segment, on the source series.

        Written by the engine (highdicom) from the segment as it is now, when the CT was loaded from DICOM;
        returns [] otherwise, or when the series cannot take the segmentation (logged).
        """
        from ..clinical.clinical_outputs import engine_run_info, write_dicom_outputs
        from ..core.errors import LungTumorSegError

        segmentationNode = result.segmentationNode
        volumeNode = segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
        files = nodes.dicom_files_of_volume(volumeNode)
        if not files:
            return []
        kji = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, result.segmentId, volumeNode)
        label = helpers.volume_from_kji(kji, nodes.ijk_to_ras_array(volumeNode))
        info = engine_run_info(result.outputs["summary"]) if result.outputs.get("summary") else {}
        try:
            return list(write_dicom_outputs(label, files, Path(folder), base, info, overwrite).values())
        except LungTumorSegError as exc:
            logging.warning(f"LungTumorSeg: DICOM SEG not written: {exc}")
            return []

    def saveReport(
        self, result: LungTumorSegResult, folder: str | Path, askOverwrite: Callable[[str], bool] | None = None
    ) -> list[Path]:
        """Copy the engine's report files, the segmentation and a 3D view screenshot into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        base = result.segmentationNode.GetName().replace(" ", "_")
        sources = helpers.report_files(result.outputDir, result.stem)
        targets = [folder / f"{base}{src.name[len(result.stem) :]}" for src in sources]
        screenshot = folder / f"{base}_3d_view.png"
        clinical = [folder / f"{base}{suffix}" for suffix in (".seg.nrrd", "_seg.dcm", "_sr.dcm")]
        existing = [t for t in targets + [screenshot] + clinical if t.exists()]
        if existing and not (
            askOverwrite and askOverwrite(_("Replace existing files?\n") + "\n".join(map(str, existing)))
        ):
            return []
        for src, dst in zip(sources, targets):
            shutil.copyfile(src, dst)
        written = list(targets)
        if not slicer.util.saveNode(result.segmentationNode, str(clinical[0])):
            raise OSError(f"could not write {clinical[0]}")
        written.append(clinical[0])
        written += self.saveDicomOutputs(result, folder, base, overwrite=True)
        layoutManager = slicer.app.layoutManager() if hasattr(slicer.app, "layoutManager") else None
        if layoutManager is not None:
            import ScreenCapture

            view = layoutManager.threeDWidget(0).threeDView()
            ScreenCapture.ScreenCaptureLogic().captureImageFromView(view, str(screenshot))
            written.append(screenshot)
        return written
