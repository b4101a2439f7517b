"""LungTumorSeg: lung tumour segmentation in chest CT (3D Slicer >= 5.4).

A thin layer over the Slicer-free engine (LungTumorSegLib): the CT node is exported to a temporary
NRRD, ``python -m LungTumorSegLib segment --progress json`` runs in a separate process, its JSON-line
progress drives the GUI, and the outputs are loaded back into MRML nodes only after success, so
Cancel (a process kill) leaves the scene untouched.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LungTumorSegLib import slicer_compare_helpers as compare_helpers
from LungTumorSegLib import slicer_helpers as helpers

MODULE_DIR = Path(__file__).resolve().parent
REQUIREMENTS = ("torch", "monai", "nibabel", "pynrrd", "safetensors", "scipy", "tqdm")
IMPORT_NAMES = {"pynrrd": "nrrd"}
ENTROPY_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
TTA_CHOICES = ((_("Model default"), None), (_("Off"), 1), (_("4 flips"), 4), (_("8 flips"), 8))


class LungTumorSeg(ScriptedLoadableModule):
    """Module description."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Lung Tumor Segmentation")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LungTumorSeg developers"]
        self.parent.helpText = _(
            "Segments lung tumours in chest CT with a MONAI ensemble, shows the voxel-wise uncertainty "
            "(entropy) and RECIST measurements per lesion. For research use only; not a medical device."
        )
        self.parent.acknowledgementText = _("Built on 3D Slicer, MONAI and PyTorch.")


# ------------------------------------------------------------------------------------------ parameters


@parameterNodeWrapper
class LungTumorSegParameterNode:
    """Module settings stored in the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    seedPoints: vtkMRMLMarkupsFiducialNode
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = 0.5
    minLesionMl: Annotated[float, WithinRange(0.0, 1000.0)] = 0.1
    roiMm: Annotated[float, WithinRange(20.0, 300.0)] = 80.0
    showIn3D: bool = True
    entropyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4


# ------------------------------------------------------------------------------------------ widget


class LungTumorSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: LungTumorSegLogic | None = None
        self._parameterNode: LungTumorSegParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._result: LungTumorSegResult | None = None
        self._observedSeedNode = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungTumorSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.resultsTableView):
            widget.setMRMLScene(slicer.mrmlScene)
        self.ui.seedPlaceWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LungTumorSegLogic()

        for text, value in TTA_CHOICES:
            self.ui.ttaComboBox.addItem(text, value)
        for text, value in self.logic.deviceChoices():
            self.ui.deviceComboBox.addItem(text, value)
        self.refreshModels()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.importModelButton.connect("clicked(bool)", self.onImportModel)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChanged)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)
        self.ui.show3DCheckBox.connect("toggled(bool)", self.onShow3DToggled)
        self.ui.entropyOpacitySlider.connect("valueChanged(double)", self.onEntropyOpacityChanged)
        self.ui.seedModeCheckBox.connect("toggled(bool)", self.onSeedModeToggled)
        self.ui.resultsTableView.connect("clicked(QModelIndex)", self.onTableRowClicked)
        self.ui.inputVolumeSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateGuiState)

        self.ui.cancelButton.enabled = False
        self.ui.saveReportButton.enabled = False
        self.ui.progressBar.setValue(0)
        self.initializeParameterNode()
        self.setupCompareSection()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic:
            self.logic.cancel()
        if getattr(self, "compareLogic", None):
            self.compareLogic.cancel()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._result = None

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                self._parameterNode.inputVolume = first

    def setParameterNode(self, node: LungTumorSegParameterNode | None) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = node
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
        self.updateGuiState()

    def updateGuiState(self, *args) -> None:
        running = bool(self.logic and self.logic.isRunning())
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = hasInput and not running and self.ui.modelComboBox.count > 0
        self.ui.applyButton.toolTip = _("Segment the CT") if hasInput else _("Select a CT volume first")
        self.ui.cancelButton.enabled = running

    # ---------------------------------------------------------------- models

    def refreshModels(self, select: str | None = None) -> None:
        self.ui.modelComboBox.clear()
        for name, folder in helpers.available_models().items():
            self.ui.modelComboBox.addItem(name, str(folder))
        if select:
            index = self.ui.modelComboBox.findText(select)
            if index >= 0:
                self.ui.modelComboBox.currentIndex = index
        self.onModelChanged()

    def onModelChanged(self, *args) -> None:
        folder = self.ui.modelComboBox.currentData
        if not folder:
            self.ui.modelInfoLabel.text = _("No model installed: use 'Import model…'.")
            return
        try:
            manifest = helpers.read_manifest(folder)
        except ValueError as exc:
            self.ui.modelInfoLabel.text = str(exc)
            return
        self.ui.modelInfoLabel.text = f"v{manifest.get('version', '?')}: {helpers.describe_members(manifest)}"
        self.ui.modelInfoLabel.toolTip = "\n".join(filter(None, (manifest.get("description"), str(folder))))
        threshold = manifest.get("output", {}).get("threshold")
        if threshold is not None and self._parameterNode:
            self._parameterNode.threshold = float(threshold)

    def onImportModel(self) -> None:
        source = qt.QFileDialog.getExistingDirectory(None, _("Model bundle folder (Cancel to pick a .zip)"))
        if not source:
            source = qt.QFileDialog.getOpenFileName(None, _("Model bundle archive"), "", "Zip archives (*.zip)")
        if not source:
            return
        modelsDir = self.logic.userModelsDir()
        try:
            target = helpers.install_bundle(source, modelsDir)
        except FileExistsError as exc:
            if not slicer.util.confirmYesNoDisplay(f"{exc}.\n\n" + _("Replace the installed model?")):
                return
            target = helpers.install_bundle(source, modelsDir, overwrite=True)
        except (ValueError, OSError) as exc:
            slicer.util.errorDisplay(_("Could not import the model: ") + str(exc))
            return
        self.refreshModels(select=target.name)
        self.log(_("Model installed in ") + str(target))

    # ---------------------------------------------------------------- run

    def currentSettings(self, pointRas=None) -> helpers.SegmentSettings:
        p = self._parameterNode
        return helpers.SegmentSettings(
            model=str(self.ui.modelComboBox.currentData or ""),
            tta=self.ui.ttaComboBox.currentData,
            device=str(self.ui.deviceComboBox.currentData or "auto"),
            threshold=p.threshold,
            min_lesion_ml=p.minLesionMl,
            point_ras=pointRas,
            roi_mm=p.roiMm,
        )

    def onApplyButton(self, *args, pointRas=None) -> None:
        p = self._parameterNode
        if not p or not p.inputVolume:
            slicer.util.errorDisplay(_("Select a CT volume first."))
            return
        if not self.logic.ensureDependencies(askConfirmation=True):
            return
        outputSegmentation = p.outputSegmentation
        hasSegments = bool(outputSegmentation and outputSegmentation.GetSegmentation().GetNumberOfSegments() > 0)
        question = _("The segmentation '{name}' already has segments. Replace its 'Lung tumor' segment?")
        if hasSegments and not slicer.util.confirmYesNoDisplay(question.format(name=outputSegmentation.GetName())):
            return
        self.ui.detailsTextEdit.clear()
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("Starting…")
        try:
            self.logic.runAsync(
                p.inputVolume,
                self.currentSettings(pointRas),
                outputSegmentation=outputSegmentation,
                progressCallback=self.onProgress,
                finishedCallback=self.onFinished,
                showIn3D=p.showIn3D,
                entropyOpacity=p.entropyOpacity,
            )
        except Exception as exc:  # noqa: BLE001 - shown to the user
            slicer.util.errorDisplay(_("Could not start the segmentation: ") + str(exc))
        self.updateGuiState()

    def onCancelButton(self) -> None:
        self.logic.cancel()
        self.ui.statusLabel.text = _("Cancelled: the scene was not changed.")
        self.updateGuiState()

    def log(self, text: str) -> None:
        self.ui.detailsTextEdit.appendPlainText(text)

    def onProgress(self, event: helpers.ProgressEvent) -> None:
        if event.event == "progress":
            if event.fraction is not None:
                self.ui.progressBar.setValue(int(round(100 * event.fraction)))
            self.ui.statusLabel.text = f"{event.step_label}: {event.message}".rstrip(": ")
        elif event.event in ("log", "text", "error"):
            level = event.data.get("level", event.event)
            self.log(f"[{level}] {event.message}")

    def onFinished(self, result: LungTumorSegResult | None, error: str | None) -> None:
        self.updateGuiState()
        if error:
            self.ui.statusLabel.text = _("Failed: ") + error.splitlines()[0]
            self.log(error)
            slicer.util.errorDisplay(_("Segmentation failed: ") + error)
            return
        if result is None:
            self.ui.statusLabel.text = _("Cancelled: the scene was not changed.")
            return
        self._result = result
        self.ui.progressBar.setValue(100)
        self.ui.statusLabel.text = _("Done: ") + result.summaryText
        self.ui.summaryLabel.text = result.summaryText
        self.ui.resultsTableView.setMRMLTableNode(result.tableNode)
        self.ui.saveReportButton.enabled = True
        if self._parameterNode and not self._parameterNode.outputSegmentation:
            self._parameterNode.outputSegmentation = result.segmentationNode

    # ---------------------------------------------------------------- display

    def onShow3DToggled(self, on: bool) -> None:
        if self._result:
            self.logic.setShowIn3D(self._result.segmentationNode, on)

    def onEntropyOpacityChanged(self, value: float) -> None:
        if self._result and self._result.entropyNode:
            slicer.util.setSliceViewerLayers(foregroundOpacity=float(value))

    def onTableRowClicked(self, index) -> None:
        if not self._result or not 0 <= index.row() < len(self._result.rows):
            return
        centroid = self._result.rows[index.row()].get("centroid_ras")
        if centroid:
            self.logic.jumpToLocation(centroid)

    def onSaveReport(self) -> None:
        if not self._result:
            return
        folder = qt.QFileDialog.getExistingDirectory(None, _("Save the report into"))
        if not folder:
            return
        try:
            written = self.logic.saveReport(self._result, folder, askOverwrite=slicer.util.confirmYesNoDisplay)
        except OSError as exc:
            slicer.util.errorDisplay(_("Could not save the report: ") + str(exc))
            return
        self.log(_("Report saved: ") + ", ".join(p.name for p in written))

    # ---------------------------------------------------------------- seed point

    def onSeedModeToggled(self, on: bool) -> None:
        p = self._parameterNode
        if self._observedSeedNode:
            self.removeObserver(
                self._observedSeedNode, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onSeed
            )
            self._observedSeedNode = None
        if not on:
            self.ui.seedPlaceWidget.setPlaceModeEnabled(False)
            return
        if not p.seedPoints:
            p.seedPoints = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "LungTumorSeg seed")
        self.ui.seedPlaceWidget.setCurrentNode(p.seedPoints)
        self.ui.seedPlaceWidget.setPlaceModeEnabled(True)
        self._observedSeedNode = p.seedPoints
        self.addObserver(p.seedPoints, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onSeed)

    def onSeed(self, caller, event) -> None:
        count = caller.GetNumberOfControlPoints()
        if count == 0 or self.logic.isRunning():
            return
        position = [0.0, 0.0, 0.0]
        caller.GetNthControlPointPositionWorld(count - 1, position)
        self.log(_("Seed point at RAS ({0:.1f}, {1:.1f}, {2:.1f})").format(*position))
        self.onApplyButton(pointRas=tuple(position))

    # ---------------------------------------------------------------- compare with baseline

    def setupCompareSection(self) -> None:
        """The "Compare with baseline" section: its own .ui, run by LungTumorSegCompareLogic."""
        sectionWidget = slicer.util.loadUI(self.resourcePath("UI/LungTumorSegCompare.ui"))
        self.layout.addWidget(sectionWidget)
        self.compareUi = slicer.util.childWidgetVariables(sectionWidget)
        sectionWidget.setMRMLScene(slicer.mrmlScene)
        ui = self.compareUi
        for selector in (
            ui.baselineVolumeSelector,
            ui.baselineSegmentationSelector,
            ui.followupVolumeSelector,
            ui.followupSegmentationSelector,
            ui.compareTableView,
        ):
            selector.setMRMLScene(slicer.mrmlScene)
        for text, value in compare_helpers.REGISTRATION_CHOICES:
            ui.registrationComboBox.addItem(_(text), value)
        self.compareLogic = LungTumorSegCompareLogic()
        self._comparison: LungTumorSegComparison | None = None
        ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        ui.compareCancelButton.connect("clicked(bool)", self.onCompareCancel)
        ui.compareTableView.connect("clicked(QModelIndex)", self.onCompareTableRowClicked)
        ui.openCompareReportButton.connect("clicked(bool)", self.onOpenCompareReport)
        for selector in (ui.baselineVolumeSelector, ui.followupVolumeSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateCompareState)
        self.updateCompareState()

    def updateCompareState(self, *args) -> None:
        ui = self.compareUi
        running = self.compareLogic.isRunning()
        baseline, followup = ui.baselineVolumeSelector.currentNode(), ui.followupVolumeSelector.currentNode()
        ready = bool(baseline and followup and baseline != followup)
        ui.compareButton.enabled = ready and not running
        ui.compareButton.toolTip = (
            _("Align, match the lesions and assess the RECIST 1.1 response")
            if ready
            else _("Pick two different CT volumes")
        )
        ui.compareCancelButton.enabled = running

    def compareSettings(self) -> compare_helpers.CompareSettings:
        """The alignment chosen here; model, device and TTA as chosen for segmentation above."""
        return compare_helpers.CompareSettings(
            registration=str(self.compareUi.registrationComboBox.currentData or "rigid"),
            model=str(self.ui.modelComboBox.currentData or ""),
            device=str(self.ui.deviceComboBox.currentData or "auto"),
            tta=self.ui.ttaComboBox.currentData,
        )

    def onCompareButton(self, *args) -> None:
        ui = self.compareUi
        baselineSegmentation = ui.baselineSegmentationSelector.currentNode()
        followupSegmentation = ui.followupSegmentationSelector.currentNode()
        needsModel = baselineSegmentation is None or followupSegmentation is None
        if needsModel and not self.logic.ensureDependencies(askConfirmation=True):
            return
        ui.compareProgressBar.setValue(0)
        ui.compareStatusLabel.text = _("Starting…")
        ui.compareSummaryLabel.text = ""
        try:
            self.compareLogic.runAsync(
                ui.baselineVolumeSelector.currentNode(),
                ui.followupVolumeSelector.currentNode(),
                self.compareSettings(),
                baselineSegmentation,
                followupSegmentation,
                progressCallback=self.onCompareProgress,
                finishedCallback=self.onCompareFinished,
            )
        except Exception as exc:  # noqa: BLE001 - shown to the user
            slicer.util.errorDisplay(_("Could not start the comparison: ") + str(exc))
        self.updateCompareState()

    def onCompareCancel(self) -> None:
        self.compareLogic.cancel()
        self.compareUi.compareStatusLabel.text = _("Cancelled: the scene was not changed.")
        self.updateCompareState()

    def onCompareProgress(self, event: helpers.ProgressEvent) -> None:
        if event.event == "progress":
            if event.fraction is not None:
                self.compareUi.compareProgressBar.setValue(int(round(100 * event.fraction)))
            self.compareUi.compareStatusLabel.text = f"{event.step_label}: {event.message}".rstrip(": ")
        elif event.event in ("log", "error"):
            self.log(f"[compare {event.data.get('level', event.event)}] {event.message}")

    def onCompareFinished(self, result: LungTumorSegComparison | None, error: str | None) -> None:
        ui = self.compareUi
        self.updateCompareState()
        if error:
            ui.compareStatusLabel.text = _("Failed: ") + error.splitlines()[0]
            self.log(error)
            slicer.util.errorDisplay(_("Comparison failed: ") + error)
            return
        if result is None:
            ui.compareStatusLabel.text = _("Cancelled: the scene was not changed.")
            return
        self._comparison = result
        ui.compareProgressBar.setValue(100)
        ui.compareStatusLabel.text = _("Done: the follow-up is aligned to the baseline (views linked)")
        ui.compareSummaryLabel.text = result.summaryText
        ui.compareTableView.setMRMLTableNode(result.tableNode)
        ui.openCompareReportButton.enabled = bool(result.outputs.get("report"))

    def onCompareTableRowClicked(self, index) -> None:
        if self._comparison and 0 <= index.row() < len(self._comparison.rows):
            location = self._comparison.rows[index.row()].get("location_ras")
            if location:
                LungTumorSegLogic.jumpToLocation(location)

    def onOpenCompareReport(self) -> None:
        if self._comparison and self._comparison.outputs.get("report"):
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(self._comparison.outputs["report"]))


# ------------------------------------------------------------------------------------------ logic


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


class LungTumorSegLogic(ScriptedLoadableModuleLogic):
    """Runs the engine in a separate process and turns its outputs into MRML nodes.

    Usable without the GUI: ``LungTumorSegLogic().run(volumeNode, SegmentSettings(device="cpu"))``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._process = None  # qt.QProcess (asynchronous runs)
        self._popen: subprocess.Popen | None = None  # blocking runs
        self._cancelled = False
        self._job: dict[str, Any] = {}

    def getParameterNode(self) -> LungTumorSegParameterNode:
        return LungTumorSegParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------- environment

    @staticmethod
    def pythonExecutable() -> str:
        """Slicer's Python launcher (PythonSlicer) when present, else this interpreter."""
        return shutil.which("PythonSlicer") or sys.executable

    @staticmethod
    def userModelsDir() -> Path:
        """Folder for imported bundles (the engine's user_models_dir)."""
        env = os.environ.get("LUNGTUMORSEG_MODELS")
        return Path(env) if env else Path.home() / ".lungtumorseg" / "models"

    @staticmethod
    def missingDependencies() -> list[str]:
        """Requirement names whose modules cannot be imported."""
        return [r for r in REQUIREMENTS if importlib.util.find_spec(IMPORT_NAMES.get(r, r)) is None]

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Offer to install missing packages (never at import time); True when all are present."""
        missing = self.missingDependencies()
        if not missing:
            return True
        message = _(
            "LungTumorSeg needs these Python packages, which are not installed in Slicer: {0}.\n\n"
            "Install them now? This downloads several hundred MB (PyTorch) and may take minutes."
        ).format(", ".join(missing))
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(message):
            return False
        if "torch" in missing:
            try:
                import PyTorchUtils  # the PyTorch extension picks the right CUDA/CPU build

                torchLogic = PyTorchUtils.PyTorchUtilsLogic()
                if not torchLogic.torchInstalled():
                    torchLogic.installTorch(askConfirmation=False)
            except ImportError:
                slicer.util.pip_install("torch")
            missing.remove("torch")
        if missing:
            if hasattr(slicer, "packaging") and hasattr(slicer.packaging, "pip_ensure"):  # Slicer >= 5.12
                from packaging.requirements import Requirement

                slicer.packaging.pip_ensure(
                    [Requirement(r) for r in missing], prompt_install=False, requester="LungTumorSeg"
                )
            else:
                # never replace Slicer's own numpy: pip fails instead of upgrading it
                import numpy

                constraints = Path(slicer.app.temporaryPath) / "LungTumorSeg-constraints.txt"
                constraints.write_text(f"numpy=={numpy.__version__}\n", encoding="utf-8")
                slicer.util.pip_install(" ".join([*missing, "-c", str(constraints)]))
        importlib.invalidate_caches()
        return not self.missingDependencies()

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

    # ---------------------------------------------------------------- node <-> engine

    @staticmethod
    def volumeFromNode(volumeNode):
        """Engine Volume of a scalar volume node (parent transforms are not applied: harden them first)."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return helpers.volume_from_kji(slicer.util.arrayFromVolume(volumeNode), slicer.util.arrayFromVTKMatrix(matrix))

    def exportVolume(self, volumeNode, path: Path) -> Path:
        """Write the node as NRRD for the engine process."""
        from LungTumorSegLib.image_io import save_volume

        return save_volume(self.volumeFromNode(volumeNode), path, overwrite=True)

    def prepareJob(self, inputVolume, settings: helpers.SegmentSettings) -> dict[str, Any]:
        """Temporary folder, exported CT and the engine command line."""
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError(_("the input volume has no image data"))
        workDir = Path(tempfile.mkdtemp(prefix="LungTumorSeg-", dir=slicer.app.temporaryPath))
        stem = "ct"
        inputPath = self.exportVolume(inputVolume, workDir / f"{stem}.nrrd")
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
    def _jobError(job: dict[str, Any], exitCode: int) -> str | None:
        if job["error"]:
            return job["error"]
        if exitCode != 0 or not job["result"]:
            tail = "\n".join(job["stderr"][-20:])
            return _("the segmentation process ended with code {0}").format(exitCode) + (f"\n{tail}" if tail else "")
        return None

    # ---------------------------------------------------------------- blocking run (scripts, tests, batch)

    def run(
        self,
        inputVolume,
        settings: helpers.SegmentSettings | None = None,
        outputSegmentation=None,
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        showIn3D: bool = True,
        entropyOpacity: float = 0.4,
        keepFiles: bool = True,
    ) -> LungTumorSegResult | None:
        """Segment and wait. Returns None when cancelled (``cancel()`` from the callback); raises on failure."""
        settings = settings or helpers.SegmentSettings()
        self._cancelled = False
        job = self.prepareJob(inputVolume, settings)
        stderrFile = open(job["workDir"] / "stderr.log", "w+", encoding="utf-8")  # noqa: SIM115
        try:
            self._popen = subprocess.Popen(
                job["command"],
                stdout=subprocess.PIPE,
                stderr=stderrFile,
                env=helpers.engine_environment(),
                cwd=str(MODULE_DIR),
                text=True,
                encoding="utf-8",
                errors="replace",
            )
            for line in self._popen.stdout:
                event = helpers.parse_progress_line(line)
                if event is None:
                    continue
                self._handleEvent(job, event)
                if progressCallback:
                    progressCallback(event)
                if self._cancelled:
                    break
            if self._cancelled:
                self._popen.kill()
            exitCode = self._popen.wait()
            stderrFile.seek(0)
            job["stderr"] += stderrFile.read().splitlines()
        finally:
            stderrFile.close()
            self._popen = None
        if self._cancelled:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            return None
        error = self._jobError(job, exitCode)
        if error:
            raise RuntimeError(error)
        return self.loadResults(inputVolume, job, outputSegmentation, showIn3D, entropyOpacity)

    # ---------------------------------------------------------------- asynchronous run (GUI)

    def isRunning(self) -> bool:
        return self._process is not None or self._popen is not None

    def runAsync(
        self,
        inputVolume,
        settings: helpers.SegmentSettings,
        outputSegmentation=None,
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        finishedCallback: Callable[[LungTumorSegResult | None, str | None], None] | None = None,
        showIn3D: bool = True,
        entropyOpacity: float = 0.4,
    ) -> None:
        """Start the engine with qt.QProcess; ``finishedCallback(result, error)`` gets (None, None) on Cancel."""
        if self.isRunning():
            raise RuntimeError(_("a segmentation is already running"))
        self._cancelled = False
        job = self.prepareJob(inputVolume, settings)
        job.update(
            inputVolume=inputVolume,
            outputSegmentation=outputSegmentation,
            showIn3D=showIn3D,
            entropyOpacity=entropyOpacity,
            progressCallback=progressCallback,
            finishedCallback=finishedCallback,
            stdout=helpers.LineBuffer(),
            stderrBuffer=helpers.LineBuffer(),
        )
        self._job = job
        process = qt.QProcess()
        environment = qt.QProcessEnvironment.systemEnvironment()
        for key, value in helpers.engine_environment().items():
            environment.insert(key, value)
        process.setProcessEnvironment(environment)
        process.setWorkingDirectory(str(MODULE_DIR))
        process.connect("readyReadStandardOutput()", self._onStdout)
        process.connect("readyReadStandardError()", self._onStderr)
        process.connect("finished(int,QProcess::ExitStatus)", self._onProcessFinished)
        self._process = process
        process.start(job["command"][0], job["command"][1:])

    def _emit(self, events: list[helpers.ProgressEvent]) -> None:
        for event in events:
            self._handleEvent(self._job, event)
            if self._job.get("progressCallback"):
                self._job["progressCallback"](event)

    def _onStdout(self) -> None:
        if self._process:
            self._emit(self._job["stdout"].feed(self._process.readAllStandardOutput().data()))

    def _onStderr(self) -> None:
        if self._process:
            for event in self._job["stderrBuffer"].feed(self._process.readAllStandardError().data()):
                self._job["stderr"].append(event.message)

    def _onProcessFinished(self, exitCode: int, exitStatus) -> None:
        self._onStdout()
        self._emit(self._job["stdout"].flush())
        job, self._process = self._job, None
        callback = job.get("finishedCallback")
        if self._cancelled:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            if callback:
                callback(None, None)
            return
        error = self._jobError(job, exitCode)
        result = None
        if not error:
            try:
                result = self.loadResults(
                    job["inputVolume"], job, job["outputSegmentation"], job["showIn3D"], job["entropyOpacity"]
                )
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                logging.exception("LungTumorSeg: loading the results failed")
                error = str(exc)
        if callback:
            callback(result, error)

    def cancel(self) -> None:
        """Kill the running engine process; no node is created for that run."""
        self._cancelled = True
        if self._process is not None:
            self._process.kill()
        if self._popen is not None and self._popen.poll() is None:
            self._popen.kill()

    # ---------------------------------------------------------------- results -> nodes

    def loadResults(
        self,
        inputVolume,
        job: dict[str, Any],
        outputSegmentation=None,
        showIn3D: bool = True,
        entropyOpacity: float = 0.4,
    ) -> LungTumorSegResult:
        """Create the segmentation, entropy, table and RECIST line nodes from the engine's outputs."""
        from LungTumorSegLib.image_io import load_volume

        outputs = dict(job["result"].get("outputs", {}))
        baseName = inputVolume.GetName()
        label = load_volume(outputs["tumor"])
        entropy = load_volume(outputs["entropy"]) if outputs.get("entropy") else None

        segmentationNode, segmentId = self.updateSegmentation(label, inputVolume, outputSegmentation, baseName)
        self.setShowIn3D(segmentationNode, showIn3D)
        entropyNode = self.addEntropyVolume(entropy, f"{baseName} tumor entropy") if entropy is not None else None
        if entropyNode is not None:
            slicer.util.setSliceViewerLayers(
                background=inputVolume, foreground=entropyNode, foregroundOpacity=entropyOpacity
            )

        measurements = self.readMeasurements(outputs, job["outputDir"], job["stem"], label, entropy)
        rows = helpers.lesion_rows(measurements)
        summaryText = helpers.case_summary_text(measurements)
        tableNode = self.createLesionTable(rows, f"{baseName} tumor lesions", summaryText)
        lineNodes = self.createRecistLines(rows, baseName)
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
        )

    @staticmethod
    def updateSegmentation(label, inputVolume, segmentationNode=None, baseName: str = "CT"):
        """Put the tumour label into segment 'Lung tumor' (created if needed) of a new or given node."""
        kji, _matrix = helpers.kji_from_volume(label)
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{baseName} tumor")
        segmentationNode.CreateDefaultDisplayNodes()
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        segmentation = segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(helpers.LUNG_TUMOR_SEGMENT_NAME)
        if not segmentId:
            segmentId = segmentation.AddEmptySegment(
                "", helpers.LUNG_TUMOR_SEGMENT_NAME, list(helpers.LUNG_TUMOR_COLOR)
            )
        segment = segmentation.GetSegment(segmentId)
        segment.SetColor(*helpers.LUNG_TUMOR_COLOR)
        segment.SetTag("TerminologyEntry", helpers.LUNG_TUMOR_TERMINOLOGY)
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            (kji > 0.5).astype("uint8"), segmentationNode, segmentId, inputVolume
        )
        return segmentationNode, segmentId

    @staticmethod
    def setShowIn3D(segmentationNode, on: bool) -> None:
        if on:
            segmentationNode.CreateClosedSurfaceRepresentation()
        displayNode = segmentationNode.GetDisplayNode()
        if displayNode:
            displayNode.SetVisibility3D(on)

    @staticmethod
    def addEntropyVolume(entropy, name: str):
        """Scalar volume with a heat colour table, window 0..1 bit."""
        kji, matrix = helpers.kji_from_volume(entropy)
        node = slicer.util.addVolumeFromArray(kji.astype("float32"), slicer.util.vtkMatrixFromArray(matrix), name)
        node.CreateDefaultDisplayNodes()
        displayNode = node.GetDisplayNode()
        for colorId in ENTROPY_COLOR_NODE_IDS:
            if slicer.mrmlScene.GetNodeByID(colorId):
                displayNode.SetAndObserveColorNodeID(colorId)
                break
        displayNode.SetAutoWindowLevel(False)
        displayNode.SetWindowLevelMinMax(0.0, 1.0)
        return node

    @staticmethod
    def readMeasurements(outputs: dict, outputDir, stem: str, label, entropy) -> dict:
        """The engine's lesions JSON; measured here with the engine's code when the engine did not write it."""
        path = helpers.find_measurements_file(outputs, outputDir, stem)
        if path:
            return json.loads(path.read_text(encoding="utf-8"))
        from LungTumorSegLib.measurements import measure_lesions

        return measure_lesions(label, None, entropy).to_dict()

    @staticmethod
    def createLesionTable(rows: list[dict], name: str, summaryText: str = ""):
        """vtkMRMLTableNode, one row per lesion (and centroid columns used to jump to a lesion)."""
        tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
        table = tableNode.GetTable()
        columns = list(helpers.TABLE_COLUMNS) + [(f"centroid_{a}", f"Centroid {a.upper()}", "mm") for a in "ras"]
        for key, title, unit in columns:
            array = vtk.vtkStringArray()
            array.SetName(f"{title} ({unit})" if unit else title)
            for row in rows:
                if key.startswith("centroid_"):
                    point = row.get("centroid_ras")
                    array.InsertNextValue(f"{point['ras'.index(key[-1])]:.1f}" if point else "")
                else:
                    array.InsertNextValue(helpers.format_cell(key, row.get(key)))
            table.AddColumn(array)
        tableNode.SetAttribute("LungTumorSeg.CaseSummary", summaryText)
        tableNode.SetLocked(True)
        tableNode.Modified()
        return tableNode

    @staticmethod
    def createRecistLines(rows: list[dict], baseName: str) -> list:
        """One line node per RECIST long and short axis."""
        nodes = []
        for row in rows:
            for key, label, color in (
                ("long_axis_ras", "long", (1.0, 0.9, 0.1)),
                ("short_axis_ras", "short", (0.2, 0.8, 1.0)),
            ):
                segment = row.get(key)
                if not segment:
                    continue
                line = slicer.mrmlScene.AddNewNodeByClass(
                    "vtkMRMLMarkupsLineNode", f"{baseName} lesion {row['lesion_id']} {label} axis"
                )
                line.AddControlPoint(list(segment[0]))
                line.AddControlPoint(list(segment[1]))
                line.SetLocked(True)
                displayNode = line.GetDisplayNode()
                if displayNode:
                    displayNode.SetSelectedColor(*color)
                nodes.append(line)
        return nodes

    @staticmethod
    def jumpToLocation(ras) -> None:
        """Centre the slice views on a RAS point."""
        slicer.modules.markups.logic().JumpSlicesToLocation(float(ras[0]), float(ras[1]), float(ras[2]), True)

    def saveReport(
        self, result: LungTumorSegResult, folder: str | Path, askOverwrite: Callable[[str], bool] | None = None
    ) -> list[Path]:
        """Copy the engine's report files and a 3D view screenshot into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        base = result.segmentationNode.GetName().replace(" ", "_")
        sources = helpers.report_files(result.outputDir, result.stem)
        targets = [folder / f"{base}{src.name[len(result.stem) :]}" for src in sources]
        screenshot = folder / f"{base}_3d_view.png"
        existing = [t for t in targets + [screenshot] if t.exists()]
        if existing and not (
            askOverwrite and askOverwrite(_("Replace existing files?\n") + "\n".join(map(str, existing)))
        ):
            return []
        for src, dst in zip(sources, targets):
            shutil.copyfile(src, dst)
        written = list(targets)
        if slicer.app.layoutManager() is not None:
            import ScreenCapture

            view = slicer.app.layoutManager().threeDWidget(0).threeDView()
            ScreenCapture.ScreenCaptureLogic().captureImageFromView(view, str(screenshot))
            written.append(screenshot)
        return written


# ------------------------------------------------------------------------------------------ compare logic


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


class LungTumorSegCompareLogic(ScriptedLoadableModuleLogic):
    """Runs ``lungtumorseg compare`` in a separate process; shows both scans side by side, linked and aligned.

    Usable without the GUI: ``LungTumorSegCompareLogic().run(baseline, followup, CompareSettings())``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._process = None  # qt.QProcess (asynchronous runs)
        self._cancelled = False
        self._job: dict[str, Any] = {}

    @staticmethod
    def exportLabel(segmentationNode, referenceVolume, path: Path) -> Path:
        """The tumour segments (compare_helpers.tumor_segment_ids) as one label on the volume's grid."""
        import numpy as np

        from LungTumorSegLib.image_io import save_volume

        segmentation = segmentationNode.GetSegmentation()
        segments = [
            (segmentation.GetNthSegmentID(n), segmentation.GetNthSegment(n).GetName())
            for n in range(segmentation.GetNumberOfSegments())
        ]
        label = None
        for segmentId in compare_helpers.tumor_segment_ids(segments):
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolume) > 0
            label = mask if label is None else label | mask
        if label is None:
            raise ValueError(_("the segmentation '{0}' has no segment").format(segmentationNode.GetName()))
        matrix = vtk.vtkMatrix4x4()
        referenceVolume.GetIJKToRASMatrix(matrix)
        volume = helpers.volume_from_kji(label.astype(np.uint8), slicer.util.arrayFromVTKMatrix(matrix))
        return save_volume(volume, path, overwrite=True)

    def prepareJob(
        self, baselineVolume, followupVolume, settings, baselineSegmentation=None, followupSegmentation=None
    ) -> dict[str, Any]:
        """Temporary folder, exported CTs and labels, and the engine command line."""
        from LungTumorSegLib.image_io import save_volume

        for node in (baselineVolume, followupVolume):
            if node is None or node.GetImageData() is None:
                raise ValueError(_("pick a baseline and a follow-up CT volume"))
        if baselineVolume == followupVolume:
            raise ValueError(_("the baseline and the follow-up are the same volume"))
        workDir = Path(tempfile.mkdtemp(prefix="LungTumorSegCompare-", dir=slicer.app.temporaryPath))
        paths = {}
        for name, volume, segmentation in (
            ("baseline", baselineVolume, baselineSegmentation),
            ("followup", followupVolume, followupSegmentation),
        ):
            paths[name] = save_volume(LungTumorSegLogic.volumeFromNode(volume), workDir / f"{name}.nrrd")
            if segmentation is not None:
                paths[f"{name}_label"] = self.exportLabel(segmentation, volume, workDir / f"{name}_label.nrrd")
        outputDir = workDir / "out"
        command = compare_helpers.build_compare_command(
            LungTumorSegLogic.pythonExecutable(),
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
            "result": None,
            "error": None,
            "stderr": [],
        }

    def run(
        self,
        baselineVolume,
        followupVolume,
        settings: compare_helpers.CompareSettings | None = None,
        baselineSegmentation=None,
        followupSegmentation=None,
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
    ) -> LungTumorSegComparison | None:
        """Compare and wait. Returns None when cancelled (``cancel()`` from the callback); raises on failure."""
        self._cancelled = False
        job = self.prepareJob(
            baselineVolume,
            followupVolume,
            settings or compare_helpers.CompareSettings(),
            baselineSegmentation,
            followupSegmentation,
        )
        finished = compare_helpers.run_engine(
            job["command"],
            env=helpers.engine_environment(),
            cwd=str(MODULE_DIR),
            on_event=progressCallback,
            should_cancel=lambda: self._cancelled,
        )
        if finished.cancelled:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            return None
        error = finished.failure()
        if error:
            raise RuntimeError(error)
        job["result"] = finished.result
        return self.loadComparison(job)

    def isRunning(self) -> bool:
        return self._process is not None

    def runAsync(
        self,
        baselineVolume,
        followupVolume,
        settings: compare_helpers.CompareSettings,
        baselineSegmentation=None,
        followupSegmentation=None,
        progressCallback: Callable[[helpers.ProgressEvent], None] | None = None,
        finishedCallback: Callable[[LungTumorSegComparison | None, str | None], None] | None = None,
    ) -> None:
        """Start the engine with qt.QProcess; ``finishedCallback(result, error)`` gets (None, None) on Cancel."""
        if self.isRunning():
            raise RuntimeError(_("a comparison is already running"))
        self._cancelled = False
        job = self.prepareJob(baselineVolume, followupVolume, settings, baselineSegmentation, followupSegmentation)
        job.update(
            progressCallback=progressCallback,
            finishedCallback=finishedCallback,
            stdout=helpers.LineBuffer(),
            stderrBuffer=helpers.LineBuffer(),
        )
        self._job = job
        process = qt.QProcess()
        environment = qt.QProcessEnvironment.systemEnvironment()
        for key, value in helpers.engine_environment().items():
            environment.insert(key, value)
        process.setProcessEnvironment(environment)
        process.setWorkingDirectory(str(MODULE_DIR))
        process.connect("readyReadStandardOutput()", self._onStdout)
        process.connect("readyReadStandardError()", self._onStderr)
        process.connect("finished(int,QProcess::ExitStatus)", self._onProcessFinished)
        self._process = process
        process.start(job["command"][0], job["command"][1:])

    def _emit(self, events: list[helpers.ProgressEvent]) -> None:
        for event in events:
            if event.event == "result":
                self._job["result"] = event.data
            elif event.event == "error":
                self._job["error"] = event.message or "unknown error"
            if self._job.get("progressCallback"):
                self._job["progressCallback"](event)

    def _onStdout(self) -> None:
        if self._process:
            self._emit(self._job["stdout"].feed(self._process.readAllStandardOutput().data()))

    def _onStderr(self) -> None:
        if self._process:
            self._job["stderr"] += [
                e.message for e in self._job["stderrBuffer"].feed(self._process.readAllStandardError().data())
            ]

    def _onProcessFinished(self, exitCode: int, exitStatus) -> None:
        self._onStdout()
        self._emit(self._job["stdout"].flush())
        job, self._process = self._job, None
        callback = job.get("finishedCallback")
        if self._cancelled:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            if callback:
                callback(None, None)
            return
        finished = compare_helpers.EngineRun(exitCode, job["result"], job["error"], job["stderr"])
        error, result = finished.failure(), None
        if not error:
            try:
                result = self.loadComparison(job)
            except Exception as exc:  # noqa: BLE001 - reported to the caller
                logging.exception("LungTumorSeg: loading the comparison failed")
                error = str(exc)
        if callback:
            callback(result, error)

    def cancel(self) -> None:
        """Kill the running engine process; no node is created or changed for that run."""
        self._cancelled = True
        if self._process is not None:
            self._process.kill()

    def loadComparison(self, job: dict[str, Any]) -> LungTumorSegComparison:
        """Segmentations made by the engine, the alignment transform (applied to the follow-up), the table."""
        from LungTumorSegLib.image_io import load_volume

        baselineVolume, followupVolume, baselineSegmentation, followupSegmentation = job["nodes"]
        outputs = dict(job["result"].get("outputs", {}))
        data = json.loads(Path(outputs["comparison_json"]).read_text(encoding="utf-8"))
        segmentations = {"baseline": baselineSegmentation, "followup": followupSegmentation}
        for name, volume in (("baseline", baselineVolume), ("followup", followupVolume)):
            if segmentations[name] is None and outputs.get(f"{name}_tumor"):
                label = load_volume(outputs[f"{name}_tumor"])
                segmentations[name] = LungTumorSegLogic.updateSegmentation(label, volume, None, volume.GetName())[0]
        transformNode = slicer.util.loadTransform(outputs["transform"])
        transformNode.SetName(f"{followupVolume.GetName()} to {baselineVolume.GetName()}")
        transformNode.SetAndObserveTransformNodeID(baselineVolume.GetTransformNodeID())
        for node in (followupVolume, segmentations["followup"]):
            if node is not None:
                node.SetAndObserveTransformNodeID(transformNode.GetID())
        rows = compare_helpers.comparison_rows(data)
        tableNode = self.createComparisonTable(rows, f"{followupVolume.GetName()} vs {baselineVolume.GetName()}")
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
        """vtkMRMLTableNode, one row per match (compare_helpers.COMPARE_TABLE_COLUMNS)."""
        tableNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", name)
        table = tableNode.GetTable()
        for key, title, unit in compare_helpers.COMPARE_TABLE_COLUMNS:
            array = vtk.vtkStringArray()
            array.SetName(f"{title} ({unit})" if unit else title)
            for row in rows:
                array.InsertNextValue(compare_helpers.format_compare_cell(key, row.get(key)))
            table.AddColumn(array)
        tableNode.SetLocked(True)
        tableNode.Modified()
        return tableNode

    @staticmethod
    def showSideBySide(baselineVolume, followupVolume, segmentations: dict) -> None:
        """Baseline in the Red view, aligned follow-up in the Yellow view, slices linked; each scan's tumours."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:  # batch mode
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


# ------------------------------------------------------------------------------------------ self-test


class LungTumorSegTest(ScriptedLoadableModuleTest):
    """Runs in Slicer: Developer mode → Reload and Test, or ``slicer.selfTests['LungTumorSeg']()``."""

    SAMPLE_DIR = MODULE_DIR / "Resources" / "Sample"

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_SegmentDemoCT()
        self.setUp()
        self.test_SegmentDemoNodule()
        self.setUp()
        self.test_CancelLeavesSceneUntouched()
        self.setUp()
        self.test_CompareWithBaseline()

    def _loadDemo(self):
        return slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_ct.nii.gz"))

    def _modelFindsDemoTumour(self) -> bool:
        from LungTumorSegLib.model_names import default_model, finds_demo_tumour

        models = helpers.available_models()
        name = default_model(models)
        return bool(name and finds_demo_tumour(helpers.read_manifest(models[name])))

    def test_SegmentDemoCT(self) -> None:
        import numpy as np

        self.delayDisplay("Segmenting the demo CT on CPU (blocking)")
        ctNode = self._loadDemo()
        logic = LungTumorSegLogic()
        result = logic.run(ctNode, helpers.SegmentSettings(device="cpu", tta=1))
        self.assertIsNotNone(result)

        segmentation = result.segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(helpers.LUNG_TUMOR_SEGMENT_NAME)
        self.assertTrue(segmentId)
        tag = vtk.mutable("")
        segmentation.GetSegment(segmentId).GetTag("TerminologyEntry", tag)
        self.assertEqual(str(tag), helpers.LUNG_TUMOR_TERMINOLOGY)

        entropy = slicer.util.arrayFromVolume(result.entropyNode)
        self.assertGreaterEqual(float(entropy.min()), 0.0)
        self.assertLessEqual(float(entropy.max()), 1.0 + 1e-6)

        mask = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, segmentId, ctNode)
        if not self._modelFindsDemoTumour():
            # The default model's manifest does not report finding the whole-volume 4D-Lung GTV (the demo
            # CT's tumour): the location checks below run for models whose metrics say they do.
            self.delayDisplay("Default model not validated on the demo tumour: skipping the location check")
            return
        self.assertGreater(int(np.count_nonzero(mask)), 0)
        gtv = slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_ct_gtv.nii.gz"))
        gtvArray = slicer.util.arrayFromVolume(gtv) > 0
        overlap = np.count_nonzero(mask.astype(bool) & gtvArray) / max(1, np.count_nonzero(gtvArray))
        self.assertGreater(overlap, 0.5, "the segmentation should cover most of the demo GTV")

        table = result.tableNode.GetTable()
        self.assertEqual(table.GetNumberOfRows(), len(result.rows))
        self.assertGreaterEqual(table.GetNumberOfRows(), 1)
        for row in result.rows:
            self.assertGreater(row["volume_ml"], 0.0)
        self.assertGreaterEqual(len(result.lineNodes), 1)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")), len(result.lineNodes))
        self.delayDisplay("Segmentation test passed")

    def test_SegmentDemoNodule(self) -> None:
        """The held-out LIDC-IDRI nodule sample: one lesion over the reference mask, measured with line markups."""
        import numpy as np

        self.delayDisplay("Segmenting the demo nodule on CPU (blocking)")
        ctNode = slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_nodule.nii.gz"))
        result = LungTumorSegLogic().run(ctNode, helpers.SegmentSettings(device="cpu", tta=1))
        self.assertIsNotNone(result)
        segmentation = result.segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(helpers.LUNG_TUMOR_SEGMENT_NAME)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, segmentId, ctNode) > 0
        reference = slicer.util.arrayFromVolume(
            slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_nodule_mask.nii.gz"))
        )
        reference = reference > 0
        dice = 2.0 * np.count_nonzero(mask & reference) / max(1, np.count_nonzero(mask) + np.count_nonzero(reference))
        self.assertGreater(dice, 0.7, "the segmentation should match the radiologists' nodule mask")
        self.assertGreaterEqual(len(result.rows), 1)
        self.assertGreaterEqual(len(result.lineNodes), 1)
        self.delayDisplay(f"Demo nodule test passed (Dice {dice:.2f})")

    def test_CancelLeavesSceneUntouched(self) -> None:
        self.delayDisplay("Cancelling a run mid-way")
        ctNode = self._loadDemo()
        before = slicer.mrmlScene.GetNumberOfNodes()
        logic = LungTumorSegLogic()

        def cancelOnProgress(event: helpers.ProgressEvent) -> None:
            if event.event == "progress":
                logic.cancel()

        result = logic.run(ctNode, helpers.SegmentSettings(device="cpu", tta=1), progressCallback=cancelOnProgress)
        self.assertIsNone(result)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.assertFalse(logic.isRunning())
        self.delayDisplay("Cancel test passed")

    def test_CompareWithBaseline(self) -> None:
        """The demo CT against a copy moved by 8, -5, 3 mm, with the demo GTV as both labels: SD, one match."""
        import numpy as np

        self.delayDisplay("Comparing the demo CT with a moved copy (blocking)")
        baseline = self._loadDemo()
        gtv = slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_ct_gtv.nii.gz"))
        shift = np.array([8.0, -5.0, 3.0])
        matrix = vtk.vtkMatrix4x4()
        baseline.GetIJKToRASMatrix(matrix)
        movedMatrix = slicer.util.arrayFromVTKMatrix(matrix)
        movedMatrix[:3, 3] += shift  # the same voxels, the patient 8, -5, 3 mm further in RAS
        followup = slicer.util.addVolumeFromArray(
            slicer.util.arrayFromVolume(baseline).copy(), slicer.util.vtkMatrixFromArray(movedMatrix), "follow-up"
        )
        followupGtv = slicer.util.addVolumeFromArray(
            slicer.util.arrayFromVolume(gtv).copy(),
            slicer.util.vtkMatrixFromArray(movedMatrix),
            "follow-up GTV",
            nodeClassName="vtkMRMLLabelMapVolumeNode",
        )
        segmentations = []
        for name, labelNode in (("baseline GTV", gtv), ("follow-up GTV", followupGtv)):
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
            slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelNode, segmentationNode)
            segmentations.append(segmentationNode)

        logic = LungTumorSegCompareLogic()
        result = logic.run(baseline, followup, compare_helpers.CompareSettings(device="cpu"), *segmentations)
        self.assertIsNotNone(result)
        self.assertEqual(result.data["response"]["category"], "SD")
        self.assertEqual([row["match_type"] for row in result.rows], ["matched"])
        self.assertEqual(result.tableNode.GetTable().GetNumberOfRows(), 1)
        self.assertIn("SD", result.summaryText)
        self.assertEqual(followup.GetTransformNodeID(), result.transformNode.GetID())
        fromParent = vtk.vtkMatrix4x4()
        result.transformNode.GetMatrixTransformFromParent(fromParent)  # baseline (world) -> follow-up point
        translation = np.array([fromParent.GetElement(i, 3) for i in range(3)])
        self.assertLess(float(np.linalg.norm(translation - shift)), 1.0, f"alignment {translation} vs {shift}")
        layoutManager = slicer.app.layoutManager()
        if layoutManager is not None:
            self.assertEqual(layoutManager.layout, slicer.vtkMRMLLayoutNode.SlicerLayoutSideBySideView)
            for viewName, volume in (("Red", baseline), ("Yellow", followup)):
                compositeNode = layoutManager.sliceWidget(viewName).sliceLogic().GetSliceCompositeNode()
                self.assertEqual(compositeNode.GetBackgroundVolumeID(), volume.GetID())
                self.assertTrue(compositeNode.GetLinkedControl())
        self.delayDisplay("Compare test passed")
