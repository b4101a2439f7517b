"""LungTumorSeg: lung tumour segmentation in chest CT (3D Slicer 5.4 to 5.12).

A thin layer over the Slicer-free engine (LungTumorSegLib): the CT node is exported to a temporary NRRD,
``python -m LungTumorSegLib segment --progress json`` runs in a separate process (LungTumorSegLib.process: own
session, output read by a thread, Cancel kills the launcher and the engine), its JSON-line progress drives the GUI,
and the outputs are loaded back into MRML nodes only after success, so Cancel leaves the scene untouched.
Decisions that need no Slicer (dependencies, model defaults, table rows, seed merging) live in LungTumorSegLib.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import qt
import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LungTumorSegLib import dependencies as deps
from LungTumorSegLib import sample_data
from LungTumorSegLib import slicer_compare_helpers as compare_helpers
from LungTumorSegLib import slicer_helpers as helpers
from LungTumorSegLib.model_names import user_models_dir
from LungTumorSegLib.process import EngineProcess, python_executable

MODULE_DIR = Path(__file__).resolve().parent
ENTROPY_COLOR_NODE_IDS = ("vtkMRMLColorTableNodeFileInferno.txt", "vtkMRMLColorTableNodeFileColdToHotRainbow.txt")
TTA_CHOICES = ((_("Model default"), None), (_("Off"), 1), (_("4 flips"), 4), (_("8 flips"), 8))
POLL_MS = 100


class LungTumorSeg(ScriptedLoadableModule):
    """Module description."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Lung Tumor Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LungTumorSeg developers"]
        self.parent.helpText = _(
            "Segments lung tumours in chest CT with a MONAI ensemble, shows the voxel-wise uncertainty "
            "(entropy) and RECIST measurements per lesion. For research use only; not a medical device."
        )
        self.parent.acknowledgementText = _("Built on 3D Slicer, MONAI and PyTorch.")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Offer the demo samples in the Sample Data module (local files shipped with the module)."""
    import SampleData

    for source in sample_data.sample_data_sources():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)


# ------------------------------------------------------------------------------------------ dependencies


def slicerPackaging():
    """``slicer.packaging`` (Slicer >= 5.12), else None (``hasattr(slicer, "packaging")`` is False until imported)."""
    try:
        import slicer.packaging as packaging
    except ImportError:
        return None
    return packaging


def installTorch(requirement: str) -> None:
    """Install PyTorch with the PyTorch extension (it picks the CUDA or CPU build), else from PyPI."""
    try:
        import PyTorchUtils
    except ImportError:
        logging.warning("LungTumorSeg: the PyTorch extension is not installed; installing torch from PyPI")
        slicer.util.pip_install([requirement])
        return
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=deps.requirement_specifier(requirement)
    )
    if torch is None:
        raise RuntimeError(
            _(
                "PyTorch was not installed: the PyTorch extension's installer returned nothing. Install PyTorch "
                "in the PyTorch Utils module (requirement {0}), then try again."
            ).format(requirement)
        )


def installEngineDependencies(plan: deps.InstallPlan, requester: str = "LungTumorSeg") -> None:
    """Torch first (so pip never picks its own torch build), then the rest with torch and Slicer's packages pinned."""
    if plan.torch:
        installTorch(plan.torch)
    if not plan.pip:
        return
    constraints = Path(slicer.app.temporaryPath) / "LungTumorSeg-constraints.txt"
    constraints.write_text(deps.constraints_text(), encoding="utf-8")
    packaging = slicerPackaging()
    if packaging is not None:
        packaging.pip_ensure(
            plan.pip, constraints=str(constraints), prompt_install=False, requester=requester, skip_in_testing=False
        )
    else:
        slicer.util.pip_install(deps.pip_install_arguments(plan.pip, constraints))


def ensureEngineDependencies(askConfirmation: bool = True, requester: str = "LungTumorSeg") -> bool:
    """Install what the engine lacks after the user agrees (never at import time); True when all is present."""
    plan = deps.plan_install()
    for mismatch in plan.provided_mismatch:
        logging.warning(f"LungTumorSeg: Slicer's own package does not meet {mismatch}; it is not replaced")
    if not plan.needed:
        return True
    message = _(
        "{requester} needs Python packages that are not installed in Slicer yet: {names}.\n\n"
        "Install them now? PyTorch comes through the PyTorch extension (about 200 MB for the CPU build, 2-3 GB "
        "with CUDA); MONAI and the rest are about 50 MB. It takes from a few minutes to about 15 minutes, and "
        "Slicer does not respond meanwhile."
    ).format(requester=requester, names=", ".join(plan.missing_names()))
    details = "\n".join(([plan.torch] if plan.torch else []) + plan.pip)
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(message, detailedText=details):
        return False
    try:
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
            installEngineDependencies(plan, requester)
    except Exception:  # noqa: BLE001 - tryWithErrorDisplay showed it; the caller gets False
        logging.exception("LungTumorSeg: installing the dependencies failed")
        return False
    importlib.invalidate_caches()
    remaining = deps.plan_install()
    if remaining.needed:
        slicer.util.errorDisplay(
            _("Still missing after the installation: {0}. See docs/slicer-module.md, 'When the install fails'.").format(
                ", ".join(remaining.missing_names())
            )
        )
        return False
    return True


# ------------------------------------------------------------------------------------------ parameters


@parameterNodeWrapper
class LungTumorSegParameterNode:
    """Module settings stored in the scene."""

    inputVolume: vtkMRMLScalarVolumeNode
    outputSegmentation: vtkMRMLSegmentationNode
    seedPoints: vtkMRMLMarkupsFiducialNode
    threshold: Annotated[float, WithinRange(0.01, 0.99)] = 0.5
    minLesionMl: Annotated[float, WithinRange(0.0, 1000.0)] = 0.05
    roiMm: Annotated[float, WithinRange(20.0, 300.0)] = 80.0
    showIn3D: bool = True
    entropyOpacity: Annotated[float, WithinRange(0.0, 1.0)] = 0.4
    modelDefaultsOf: str = ""  # the model whose defaults threshold and minLesionMl were set to


# ------------------------------------------------------------------------------------------ widget


class LungTumorSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: LungTumorSegLogic | None = None
        self._parameterNode: LungTumorSegParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._manifest: dict[str, Any] = {}
        self._result: LungTumorSegResult | None = None
        self._observedSeedNode = None
        self._pendingSeeds: list[tuple[float, float, float]] = []

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LungTumorSeg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        for widget in (self.ui.inputVolumeSelector, self.ui.outputSegmentationSelector, self.ui.resultsTableView):
            widget.setMRMLScene(slicer.mrmlScene)
        self.ui.seedPlaceWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.seedPlaceWidget.setPlaceModePersistency(True)  # one click per lesion, without re-arming

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

        self.ui.cancelButton.enabled = False
        self.ui.saveReportButton.enabled = False
        self.ui.progressBar.setValue(0)
        self.initializeParameterNode()
        self.setupCompareSection()

    def cleanup(self) -> None:
        self.removeObservers()
        if self.logic:
            self.logic.shutdown()
        if getattr(self, "compareLogic", None):
            self.compareLogic.shutdown()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        """Stop following the parameter node while the panel is hidden (the template's exit)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)

    def onSceneStartClose(self, caller, event) -> None:
        """Stop the run (its input leaves the scene) and forget everything that pointed into the old scene."""
        self.logic.cancel()
        self.setParameterNode(None)
        self.resetResults()
        if self.ui.seedModeCheckBox.checked:
            self.ui.seedModeCheckBox.checked = False

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
        """Connect the GUI to ``node`` and follow its changes (the selector's own signal comes too early)."""
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self._parameterNode = node
        if self._parameterNode:
            self.applyModelDefaults(force=False)
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)
        self.updateGuiState()

    def updateGuiState(self, caller=None, event=None) -> None:
        running = bool(self.logic and self.logic.isRunning())
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = hasInput and not running and self.ui.modelComboBox.count > 0
        self.ui.applyButton.toolTip = _("Segment the CT") if hasInput else _("Select a CT volume first")
        self.ui.cancelButton.enabled = running

    def resetResults(self) -> None:
        """No result shown: table, summary, report button, queued seed clicks."""
        self._result = None
        self._pendingSeeds.clear()
        self.ui.resultsTableView.setMRMLTableNode(None)
        self.ui.summaryLabel.text = ""
        self.ui.saveReportButton.enabled = False
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("Ready")

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
        self._manifest = {}
        if not folder:
            self.ui.modelInfoLabel.text = _("No model installed: use 'Import model…'.")
            return
        try:
            self._manifest = helpers.read_manifest(folder)
        except ValueError as exc:
            self.ui.modelInfoLabel.text = str(exc)
            return
        manifest = self._manifest
        self.ui.modelInfoLabel.text = f"v{manifest.get('version', '?')}: {helpers.describe_members(manifest)}"
        self.ui.modelInfoLabel.toolTip = "\n".join(filter(None, (manifest.get("description"), str(folder))))
        self.applyModelDefaults(force=True)

    def applyModelDefaults(self, force: bool) -> None:
        """Show the selected model's threshold and minimum lesion size (a new model, or a new parameter node)."""
        p, name = self._parameterNode, self.ui.modelComboBox.currentText
        if not p or not name or not self._manifest or (not force and p.modelDefaultsOf == name):
            return
        defaults = helpers.model_output_defaults(self._manifest)
        p.threshold, p.minLesionMl, p.modelDefaultsOf = defaults.threshold, defaults.min_lesion_ml, name

    def onImportModel(self) -> None:
        source = qt.QFileDialog.getExistingDirectory(None, _("Model bundle folder (Cancel to pick a .zip)"))
        if not source:
            source = qt.QFileDialog.getOpenFileName(None, _("Model bundle archive"), "", "Zip archives (*.zip)")
        if not source:
            return
        modelsDir = user_models_dir()
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
        """What the panel asks for; threshold and minimum size only where the user changed the model's default."""
        p = self._parameterNode
        defaults = helpers.model_output_defaults(self._manifest)
        return helpers.SegmentSettings(
            model=str(self.ui.modelComboBox.currentData or ""),
            tta=self.ui.ttaComboBox.currentData,
            device=str(self.ui.deviceComboBox.currentData or "auto"),
            threshold=helpers.override(p.threshold, defaults.threshold, helpers.THRESHOLD_STEP),
            min_lesion_ml=helpers.override(p.minLesionMl, defaults.min_lesion_ml, helpers.MIN_LESION_STEP),
            point_ras=pointRas,
            roi_mm=p.roiMm,
        )

    def reusableResult(self, segmentationNode) -> LungTumorSegResult | None:
        """The previous run's result when this run updates the same segmentation of the same CT."""
        r, p = self._result, self._parameterNode
        if r is None or p is None or segmentationNode is None or r.segmentationNode is not segmentationNode:
            return None
        return r if r.inputVolume is p.inputVolume and self.logic.nodesInScene(r) else None

    def onApplyButton(self, *args, pointRas=None) -> None:
        """Segment the CT; with ``pointRas`` (CT frame) the clicked lesion is added to the segment."""
        p = self._parameterNode
        if not p or not p.inputVolume:
            slicer.util.errorDisplay(_("Select a CT volume first."))
            return
        if not self.logic.ensureDependencies(askConfirmation=True):
            self.ui.statusLabel.text = _("The Python packages are missing: see docs/slicer-module.md.")
            return
        seedMode = pointRas is not None
        target = p.outputSegmentation
        hasSegments = bool(target and target.GetSegmentation().GetNumberOfSegments() > 0)
        question = _("The segmentation '{name}' already has segments. Replace its 'Lung tumor' segment?")
        if not seedMode and hasSegments and not slicer.util.confirmYesNoDisplay(question.format(name=target.GetName())):
            return
        self.ui.detailsTextEdit.clear()
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("Starting…")
        try:
            self.logic.runAsync(
                p.inputVolume,
                self.currentSettings(pointRas),
                outputSegmentation=target,
                progressCallback=self.onProgress,
                finishedCallback=self.onFinished,
                showIn3D=p.showIn3D,
                entropyOpacity=p.entropyOpacity,
                previous=self.reusableResult(target),
                addToSegment=seedMode,
            )
        except Exception as exc:  # noqa: BLE001 - the engine could not start: shown, GUI back to ready
            self.ui.statusLabel.text = _("Could not start: ") + str(exc)
            slicer.util.errorDisplay(_("Could not start the segmentation: ") + str(exc))
        self.updateGuiState()

    def onCancelButton(self) -> None:
        self._pendingSeeds.clear()
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
            self._pendingSeeds.clear()
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
        if self._pendingSeeds:
            self.onApplyButton(pointRas=self._pendingSeeds.pop(0))

    # ---------------------------------------------------------------- display

    def onShow3DToggled(self, on: bool) -> None:
        if self._result:
            self.logic.setShowIn3D(self._result.segmentationNode, on)

    def onEntropyOpacityChanged(self, value: float) -> None:
        if self._result and self._result.entropyNode:
            slicer.util.setSliceViewerLayers(foregroundOpacity=float(value))

    def onTableRowClicked(self, index) -> None:
        """Centre the views on the clicked lesion (the view's row 0 is a data row unless the header is locked)."""
        if not self._result:
            return
        headerLocked = bool(self._result.tableNode.GetUseColumnNameAsColumnHeader())
        row = helpers.lesion_row_of_table_row(index.row(), headerLocked, len(self._result.rows))
        centroid = self._result.rows[row].get("centroid_ras") if row is not None else None
        if centroid:
            self.logic.jumpToLocation(centroid, self._result.inputVolume)

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
        if not on or p is None:
            self.ui.seedPlaceWidget.setPlaceModeEnabled(False)
            return
        if not p.seedPoints:
            p.seedPoints = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "LungTumorSeg seed")
        self.ui.seedPlaceWidget.setCurrentNode(p.seedPoints)
        self.ui.seedPlaceWidget.setPlaceModePersistency(True)
        self.ui.seedPlaceWidget.setPlaceModeEnabled(True)
        self._observedSeedNode = p.seedPoints
        self.addObserver(p.seedPoints, slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent, self.onSeed)

    def onSeed(self, caller, event) -> None:
        """A click: segment the lesion there (in the CT's own frame) and add it to the segment."""
        p = self._parameterNode
        count = caller.GetNumberOfControlPoints()
        if count == 0 or not p or not p.inputVolume:
            return
        world = [0.0, 0.0, 0.0]
        caller.GetNthControlPointPositionWorld(count - 1, world)
        point = tuple(self.logic.worldToVolume(p.inputVolume, world))
        self.log(_("Seed point at RAS ({0:.1f}, {1:.1f}, {2:.1f})").format(*world))
        if self.logic.isRunning():
            self._pendingSeeds.append(point)
            self.log(_("Queued: it runs when the current segmentation ends."))
            return
        self.onApplyButton(pointRas=point)

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
    inputVolume: Any = None


class EngineRunMixin:
    """Process control shared by the segmentation and the comparison logic: one engine run at a time, polled
    by a Qt timer; Cancel, a scene close and a module reload kill its whole process tree
    (LungTumorSegLib.process.EngineProcess). Subclasses start ``self._engine`` and implement ``_readEngine``
    (progress) and ``_finish`` (results or error, cleanup)."""

    def _initEngineState(self) -> None:
        self._engine: EngineProcess | None = None
        self._timer = None
        self._cancelled = False
        self._job: dict[str, Any] = {}

    def isRunning(self) -> bool:
        return self._engine is not None

    def _waitForResult(self):
        """Block until the started engine ends (reading its progress); the result, None when cancelled.

        Raises:
            RuntimeError: the run failed (the engine's message).
        """
        while self._engine.running and not self._cancelled:
            self._readEngine()
            time.sleep(0.05)
        self._engine.wait()
        result, error = self._finish()
        if error:
            raise RuntimeError(error)
        return result

    def _startPolling(self) -> None:
        if self._timer is None:
            self._timer = qt.QTimer()
            self._timer.setInterval(POLL_MS)
            self._timer.connect("timeout()", self._poll)
        self._timer.start()

    def _poll(self) -> None:
        if self._engine is None:
            self._timer.stop()
            return
        self._readEngine()
        if self._engine.running:
            return
        self._timer.stop()
        callback = self._job.get("finishedCallback")
        result, error = self._finish()
        if callback:
            callback(result, error)

    def _onSceneStartClose(self, caller=None, event=None) -> None:
        self.cancel()

    def shutdown(self) -> None:
        """The widget goes away (Slicer quits, the module reloads): kill the run, call nobody back."""
        if self._engine is None:
            return
        self._job["progressCallback"] = self._job["finishedCallback"] = None
        self.cancel()
        if self._timer is not None:
            self._timer.stop()
        self._finish()

    def cancel(self) -> None:
        """Kill the engine and every process it started; no node is created or changed for that run."""
        if self._engine is None:
            return
        self._cancelled = True
        self._engine.kill()


class LungTumorSegLogic(EngineRunMixin, ScriptedLoadableModuleLogic, VTKObservationMixin):
    """Runs the engine in a separate process and turns its outputs into MRML nodes.

    Usable without the GUI: ``LungTumorSegLogic().run(volumeNode, SegmentSettings(device="cpu"))``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        VTKObservationMixin.__init__(self)
        self._initEngineState()

    def getParameterNode(self) -> LungTumorSegParameterNode:
        return LungTumorSegParameterNode(super().getParameterNode())

    # ---------------------------------------------------------------- environment

    @staticmethod
    def pythonExecutable() -> str:
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

    # ---------------------------------------------------------------- node <-> engine

    @staticmethod
    def volumeFromNode(volumeNode):
        """Engine Volume of a scalar volume node, in the node's own frame (parent transforms not applied)."""
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        return helpers.volume_from_kji(slicer.util.arrayFromVolume(volumeNode), slicer.util.arrayFromVTKMatrix(matrix))

    @staticmethod
    def worldToVolume(volumeNode, point) -> list[float]:
        """A world (scene) point in the volume's own frame, where the engine works (parent transforms undone)."""
        local = [0.0, 0.0, 0.0]
        volumeNode.TransformPointFromWorld([float(v) for v in point], local)
        return local

    @staticmethod
    def volumeToWorld(volumeNode, point) -> list[float]:
        """A point of the volume's own frame in world (scene) coordinates."""
        world = [0.0, 0.0, 0.0]
        volumeNode.TransformPointToWorld([float(v) for v in point], world)
        return world

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
        self._cancelled = False
        job = self.prepareJob(inputVolume, settings)
        job.update(options, inputVolume=inputVolume)
        engine = EngineProcess(job["command"], env=helpers.engine_environment(), cwd=MODULE_DIR)
        try:
            engine.start()
        except OSError as exc:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            raise RuntimeError(_("could not start {0}: {1}").format(job["command"][0], exc)) from exc
        self._job, self._engine = job, engine
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._onSceneStartClose)
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
        job, engine = self._job, self._engine
        self._readEngine()
        self._engine = None
        self.removeObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._onSceneStartClose)
        if self._cancelled:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            return None, None
        if job["inputVolume"].GetScene() is not slicer.mrmlScene:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            return None, _("the CT left the scene during the run: the results were not loaded")
        error = self._jobError(job, engine.returncode)
        if error:
            return None, error
        try:
            return self.loadResults(job), None
        except Exception as exc:  # noqa: BLE001 - reported to the caller
            logging.exception("LungTumorSeg: loading the results failed")
            return None, str(exc)

    # ---------------------------------------------------------------- blocking run (scripts, tests, batch)

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
        """Segment and wait. Returns None when cancelled (``cancel()`` from the callback); raises on failure."""
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

    # ---------------------------------------------------------------- asynchronous run (GUI)

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
        """Start the engine; ``finishedCallback(result, error)`` gets (None, None) on Cancel or scene close.

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

    # ---------------------------------------------------------------- DICOM SEG and SR

    @staticmethod
    def dicomFilesOfVolume(volumeNode) -> list[str]:
        """The DICOM files a volume was loaded from (its ``DICOM.instanceUIDs``), or [] if not from DICOM."""
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split() if volumeNode is not None else []
        if not uids or not slicer.dicomDatabase:
            return []
        files = [slicer.dicomDatabase.fileForInstance(uid) for uid in uids]
        return files if all(files) else []

    def saveDicomOutputs(self, result: LungTumorSegResult, folder, base: str, overwrite: bool = False) -> list[Path]:
        """``<base>_seg.dcm`` (DICOM SEG) and ``<base>_sr.dcm`` (TID 1500) of the segment, on the source series.

        Written by the engine (highdicom) from the segment as it is now, when the CT was loaded from DICOM;
        returns [] otherwise, or when the series cannot take the segmentation (logged).
        """
        from LungTumorSegLib.clinical_outputs import engine_run_info, write_dicom_outputs
        from LungTumorSegLib.errors import LungTumorSegError

        segmentationNode = result.segmentationNode
        volumeNode = segmentationNode.GetNodeReference(segmentationNode.GetReferenceImageGeometryReferenceRole())
        files = self.dicomFilesOfVolume(volumeNode)
        if not files:
            return []
        kji = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, result.segmentId, volumeNode)
        matrix = vtk.vtkMatrix4x4()
        volumeNode.GetIJKToRASMatrix(matrix)
        label = helpers.volume_from_kji(kji, slicer.util.arrayFromVTKMatrix(matrix))
        info = engine_run_info(result.outputs["summary"]) if result.outputs.get("summary") else {}
        try:
            return list(write_dicom_outputs(label, files, Path(folder), base, info, overwrite).values())
        except LungTumorSegError as exc:
            logging.warning(f"LungTumorSeg: DICOM SEG not written: {exc}")
            return []

    # ---------------------------------------------------------------- results -> nodes

    @staticmethod
    def nodesInScene(result: LungTumorSegResult | None) -> bool:
        """True while the result's segmentation, entropy and table nodes are still in the scene."""
        if result is None:
            return False
        nodes = [result.segmentationNode, result.tableNode] + ([result.entropyNode] if result.entropyNode else [])
        return all(node is not None and node.GetScene() is slicer.mrmlScene for node in nodes)

    @staticmethod
    def segmentArray(segmentationNode, referenceVolume):
        """The 'Lung tumor' segment on the CT grid (KJI array), None when there is none."""
        if segmentationNode is None:
            return None
        segmentId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(helpers.LUNG_TUMOR_SEGMENT_NAME)
        if not segmentId:
            return None
        return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, referenceVolume)

    def loadResults(self, job: dict[str, Any]) -> LungTumorSegResult:
        """Create (or update the previous run's) segmentation, entropy, table and RECIST line nodes."""
        from LungTumorSegLib.image_io import load_volume
        from LungTumorSegLib.measurements import measure_lesions

        inputVolume = job["inputVolume"]
        outputs = dict(job["result"].get("outputs", {}))
        baseName = inputVolume.GetName()
        previous = job.get("previous") if self.nodesInScene(job.get("previous")) else None
        target = job.get("outputSegmentation")
        if target is not None and target.GetScene() is not slicer.mrmlScene:
            target = None  # removed during the run: a new one is created
        label = load_volume(outputs["tumor"])
        entropy = load_volume(outputs["entropy"]) if outputs.get("entropy") else None

        measurements = None
        existing = self.segmentArray(target, inputVolume) if job.get("addToSegment") else None
        if existing is not None and existing.any():  # a seed click adds its lesion to those already there
            label = helpers.union_label(label, existing)
            if entropy is not None and previous is not None and previous.entropyNode is not None:
                entropy = helpers.merged_entropy(entropy, slicer.util.arrayFromVolume(previous.entropyNode))
            measurements = measure_lesions(label, self.volumeFromNode(inputVolume), entropy).to_dict()
        if measurements is None:
            measurements = self.readMeasurements(outputs, job["outputDir"], job["stem"], label, entropy)

        segmentationNode, segmentId = self.updateSegmentation(label, inputVolume, target, baseName)
        self.setShowIn3D(segmentationNode, job.get("showIn3D", True))
        entropyNode = None
        if entropy is not None:
            entropyNode = self.updateEntropyVolume(
                entropy, f"{baseName} tumor entropy", inputVolume, previous.entropyNode if previous else None
            )
            slicer.util.setSliceViewerLayers(
                background=inputVolume, foreground=entropyNode, foregroundOpacity=job.get("entropyOpacity", 0.4)
            )
        rows = helpers.lesion_rows(measurements)
        summaryText = helpers.case_summary_text(measurements)
        tableNode = self.updateLesionTable(
            rows, f"{baseName} tumor lesions", summaryText, previous.tableNode if previous else None
        )
        lineNodes = self.updateRecistLines(rows, baseName, inputVolume, previous.lineNodes if previous else [])
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
    def updateSegmentation(label, inputVolume, segmentationNode=None, baseName: str = "CT"):
        """Put the tumour label into segment 'Lung tumor' (created if needed) of a new or given node."""
        kji, _matrix = helpers.kji_from_volume(label)
        if segmentationNode is None:
            segmentationNode = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", f"{baseName} tumor")
            segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())  # follows the CT
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
    def updateEntropyVolume(entropy, name: str, inputVolume, node=None):
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

    @staticmethod
    def readMeasurements(outputs: dict, outputDir, stem: str, label, entropy) -> dict:
        """The engine's lesions JSON; measured here with the engine's code when the engine did not write it."""
        path = helpers.find_measurements_file(outputs, outputDir, stem)
        if path:
            return json.loads(path.read_text(encoding="utf-8"))
        from LungTumorSegLib.measurements import measure_lesions

        return measure_lesions(label, None, entropy).to_dict()

    @staticmethod
    def updateLesionTable(rows: list[dict], name: str, summaryText: str = "", tableNode=None):
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

    @staticmethod
    def updateRecistLines(rows: list[dict], baseName: str, inputVolume, lineNodes=()) -> list:
        """One line node per RECIST long and short axis, under the CT's transform; old lines reused or removed."""
        reusable = [n for n in lineNodes if n is not None and n.GetScene() is slicer.mrmlScene]
        nodes = []
        for row in rows:
            for key, label, color in (
                ("long_axis_ras", "long", (1.0, 0.9, 0.1)),
                ("short_axis_ras", "short", (0.2, 0.8, 1.0)),
            ):
                segment = row.get(key)
                if not segment:
                    continue
                name = f"{baseName} lesion {row['lesion_id']} {label} axis"
                line = reusable.pop(0) if reusable else slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsLineNode")
                line.SetName(name)
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

    def jumpToLocation(self, ras, volumeNode=None) -> None:
        """Centre the slice views on a point of the CT's frame (its parent transform applied)."""
        world = self.volumeToWorld(volumeNode, ras) if volumeNode is not None else [float(v) for v in ras]
        slicer.modules.markups.logic().JumpSlicesToLocation(world[0], world[1], world[2], True)

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


class LungTumorSegCompareLogic(EngineRunMixin, ScriptedLoadableModuleLogic, VTKObservationMixin):
    """Runs ``lungtumorseg compare`` in a separate process; shows both scans side by side, linked and aligned.

    The engine runs as segmentation does (LungTumorSegLib.process.EngineProcess: own session, tree kill on
    Cancel, scene close or module reload); nothing is added to the scene before the run succeeded.
    Usable without the GUI: ``LungTumorSegCompareLogic().run(baseline, followup, CompareSettings())``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        VTKObservationMixin.__init__(self)
        self._initEngineState()

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
        }

    def _start(self, baselineVolume, followupVolume, settings, baselineSegmentation, followupSegmentation, **options):
        """Export the inputs and start the engine; a scene close from now on cancels the run."""
        if self.isRunning():
            raise RuntimeError(_("a comparison is already running"))
        self._cancelled = False
        job = self.prepareJob(baselineVolume, followupVolume, settings, baselineSegmentation, followupSegmentation)
        job.update(options, run=compare_helpers.EngineRun(exit_code=-1))
        engine = EngineProcess(job["command"], env=helpers.engine_environment(), cwd=MODULE_DIR)
        try:
            engine.start()
        except OSError as exc:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            raise RuntimeError(_("could not start {0}: {1}").format(job["command"][0], exc)) from exc
        self._job, self._engine = job, engine
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._onSceneStartClose)

    def _readEngine(self) -> None:
        compare_helpers.read_events(self._engine, self._job["run"], self._job.get("progressCallback"))

    def _finish(self) -> tuple[LungTumorSegComparison | None, str | None]:
        """(result, error) of the ended run; (None, None) when it was cancelled."""
        job, engine = self._job, self._engine
        self._readEngine()
        self._engine = None
        self.removeObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self._onSceneStartClose)
        if self._cancelled:
            shutil.rmtree(job["workDir"], ignore_errors=True)
            return None, None
        if any(node is not None and node.GetScene() is not slicer.mrmlScene for node in job["nodes"]):
            shutil.rmtree(job["workDir"], ignore_errors=True)
            return None, _("an input left the scene during the run: the comparison was not loaded")
        job["run"].exit_code = engine.returncode
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
    ) -> LungTumorSegComparison | None:
        """Compare and wait. Returns None when cancelled (``cancel()`` from the callback); raises on failure."""
        self._start(
            baselineVolume,
            followupVolume,
            settings or compare_helpers.CompareSettings(),
            baselineSegmentation,
            followupSegmentation,
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
    ) -> None:
        """Start the engine; ``finishedCallback(result, error)`` gets (None, None) on Cancel or scene close.

        Raises:
            RuntimeError: the engine could not be started (nothing is running then).
        """
        self._start(
            baselineVolume,
            followupVolume,
            settings,
            baselineSegmentation,
            followupSegmentation,
            progressCallback=progressCallback,
            finishedCallback=finishedCallback,
        )
        self._startPolling()

    def loadComparison(self, job: dict[str, Any]) -> LungTumorSegComparison:
        """Segmentations made by the engine, the alignment transform (applied to the follow-up), the table."""
        from LungTumorSegLib.image_io import load_volume

        baselineVolume, followupVolume, baselineSegmentation, followupSegmentation = job["nodes"]
        outputs = dict(job["run"].result.get("outputs", {}))
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
    """Runs in Slicer: Developer mode → Reload and Test, or ``slicer.selfTests['LungTumorSeg']()``.

    The dependencies are checked (and installed, without a prompt) first, so a fresh Slicer fails with a
    clear message instead of an ImportError.
    """

    SAMPLE_DIR = MODULE_DIR / "Resources" / "Sample"

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.test_DependenciesInstalled()
        for test in (
            self.test_SampleDataOffersTheDemos,
            self.test_SegmentDemoNodule,
            self.test_SeedClicksAddLesionsUnderATransform,
            self.test_PanelFollowsTheSceneAndTheModel,
            self.test_FailuresLeaveThePanelReady,
            self.test_CancelKillsTheEngineTree,
            self.test_SceneCloseCancelsTheRun,
            self.test_BatchScriptSegmentsDicomSeriesOneByOne,
            self.test_SegmentDemoCT,
            self.test_CompareWithBaseline,
        ):
            self.setUp()
            test()

    # ---------------------------------------------------------------- helpers

    def _loadNodule(self):
        return slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_nodule.nii.gz"))

    def _noduleMask(self):
        import numpy as np

        node = slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_nodule_mask.nii.gz"))
        mask = slicer.util.arrayFromVolume(node) > 0
        slicer.mrmlScene.RemoveNode(node)
        return mask, np.argwhere(mask).mean(axis=0)

    @staticmethod
    def _dice(a, b) -> float:
        import numpy as np

        return 2.0 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))

    def _waitFor(self, condition: Callable[[], bool], timeoutS: float, what: str) -> None:
        deadline = time.time() + timeoutS
        while not condition():
            self.assertLess(time.time(), deadline, f"timed out waiting for {what}")
            slicer.app.processEvents()
            time.sleep(0.02)

    # ---------------------------------------------------------------- tests

    def test_DependenciesInstalled(self) -> None:
        self.delayDisplay("Checking the Python packages (installing the missing ones)")
        ok = ensureEngineDependencies(askConfirmation=False)
        missing = ", ".join(LungTumorSegLogic.missingDependencies())
        self.assertTrue(ok, f"LungTumorSeg's Python packages are missing and could not be installed: {missing}")

    def test_SampleDataOffersTheDemos(self) -> None:
        import SampleData

        registerSampleData()
        node = SampleData.downloadSample("LungTumorSeg demo nodule")
        self.assertIsNotNone(node)
        self.assertTrue(node.IsA("vtkMRMLScalarVolumeNode"))
        self.assertEqual(node.GetImageData().GetDimensions(), (80, 80, 55))

    def test_SegmentDemoNodule(self) -> None:
        """The held-out LIDC-IDRI nodule: Dice against the radiologists' mask, table, lines, entropy display."""
        self.delayDisplay("Segmenting the demo nodule on CPU (blocking)")
        ctNode = self._loadNodule()
        result = LungTumorSegLogic().run(ctNode, helpers.SegmentSettings(device="cpu", tta=1))
        self.assertIsNotNone(result)
        segmentation = result.segmentationNode.GetSegmentation()
        segmentId = segmentation.GetSegmentIdBySegmentName(helpers.LUNG_TUMOR_SEGMENT_NAME)
        tag = vtk.mutable("")
        segmentation.GetSegment(segmentId).GetTag("TerminologyEntry", tag)
        self.assertEqual(str(tag), helpers.LUNG_TUMOR_TERMINOLOGY)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, segmentId, ctNode) > 0
        dice = self._dice(mask, self._noduleMask()[0])
        self.assertGreater(dice, 0.7, "the segmentation should match the radiologists' nodule mask")

        self.assertTrue(result.tableNode.GetUseColumnNameAsColumnHeader(), "column names must not be data row 0")
        self.assertEqual(result.tableNode.GetTable().GetNumberOfRows(), len(result.rows))
        self.assertGreaterEqual(len(result.rows), 1)
        self.assertEqual(helpers.lesion_row_of_table_row(0, True, len(result.rows)), 0)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")), len(result.lineNodes))

        display = result.entropyNode.GetDisplayNode()
        self.assertTrue(display.GetApplyThreshold())
        self.assertAlmostEqual(display.GetLowerThreshold(), helpers.ENTROPY_DISPLAY_RANGE[0])
        entropy = slicer.util.arrayFromVolume(result.entropyNode)
        self.assertGreaterEqual(float(entropy.min()), 0.0)
        self.assertLessEqual(float(entropy.max()), 1.0 + 1e-6)
        folder = Path(tempfile.mkdtemp(prefix="LungTumorSegTest-", dir=slicer.app.temporaryPath))
        written = LungTumorSegLogic().saveReport(result, folder)
        segmentationFile = next(p for p in written if p.name.endswith(".seg.nrrd"))
        loaded = slicer.util.loadSegmentation(str(segmentationFile))
        self.assertTrue(loaded.GetSegmentation().GetSegmentIdBySegmentName(helpers.LUNG_TUMOR_SEGMENT_NAME))
        self.assertFalse([p for p in written if p.suffix == ".dcm"], "no DICOM SEG for a CT not loaded from DICOM")
        self.delayDisplay(f"Demo nodule test passed (Dice {dice:.2f})")

    def test_SeedClicksAddLesionsUnderATransform(self) -> None:
        """The CT under a translation: a seed click (world) finds the nodule; a second click on the same nodule
        merges into the segment and reuses the nodes; everything created follows the CT's transform."""
        import numpy as np

        self.delayDisplay("Seed clicks on a transformed CT")
        ctNode = self._loadNodule()
        transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "shift")
        shift = vtk.vtkMatrix4x4()
        shift.SetElement(0, 3, 40.0)
        shift.SetElement(2, 3, -25.0)
        transform.SetMatrixTransformToParent(shift)
        ctNode.SetAndObserveTransformNodeID(transform.GetID())
        reference, centreKji = self._noduleMask()
        matrix = vtk.vtkMatrix4x4()
        ctNode.GetIJKToRASMatrix(matrix)
        local = helpers.ras_of_kji(centreKji, slicer.util.arrayFromVTKMatrix(matrix))
        world = LungTumorSegLogic.volumeToWorld(ctNode, local)
        np.testing.assert_allclose(np.subtract(world, local), [40.0, 0.0, -25.0], atol=1e-6)
        np.testing.assert_allclose(LungTumorSegLogic.worldToVolume(ctNode, world), local, atol=1e-6)

        logic = LungTumorSegLogic()
        settings = helpers.SegmentSettings(device="cpu", tta=1, point_ras=tuple(local), roi_mm=60.0)
        first = logic.run(ctNode, settings, addToSegment=True)
        self.assertGreaterEqual(len(first.rows), 1)
        for node in [first.segmentationNode, first.entropyNode, *first.lineNodes]:
            self.assertEqual(node.GetTransformNodeID(), transform.GetID())
        second = logic.run(
            ctNode, settings, outputSegmentation=first.segmentationNode, previous=first, addToSegment=True
        )
        self.assertIs(second.entropyNode, first.entropyNode)
        self.assertIs(second.tableNode, first.tableNode)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")), 2)  # CT + one entropy map
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLTableNode")), 1)
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLMarkupsLineNode")), len(second.lineNodes))
        segmentId = second.segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(helpers.LUNG_TUMOR_SEGMENT_NAME)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(second.segmentationNode, segmentId, ctNode) > 0
        self.assertGreater(self._dice(mask, reference), 0.7)
        self.delayDisplay("Seed test passed")

    def test_PanelFollowsTheSceneAndTheModel(self) -> None:
        """Apply becomes enabled when a CT is loaded while the panel is open; the model's defaults are used."""
        self.delayDisplay("Panel state")
        slicer.util.selectModule("LungTumorSeg")
        widget = slicer.modules.lungtumorseg.widgetRepresentation().self()
        self.assertFalse(widget.ui.applyButton.enabled)
        self._loadNodule()
        ctNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
        widget.ui.inputVolumeSelector.setCurrentNode(ctNode)
        slicer.app.processEvents()
        self.assertTrue(widget.ui.applyButton.enabled, "Apply must follow the parameter node")
        defaults = helpers.model_output_defaults(widget._manifest)
        self.assertAlmostEqual(widget._parameterNode.minLesionMl, defaults.min_lesion_ml)
        settings = widget.currentSettings()
        self.assertIsNone(settings.threshold)
        self.assertIsNone(settings.min_lesion_ml)
        widget._parameterNode.minLesionMl = defaults.min_lesion_ml + 1.0
        self.assertAlmostEqual(widget.currentSettings().min_lesion_ml, defaults.min_lesion_ml + 1.0)
        slicer.mrmlScene.Clear()
        slicer.app.processEvents()
        self.assertEqual(widget._parameterNode.modelDefaultsOf, widget.ui.modelComboBox.currentText)
        self.assertAlmostEqual(widget._parameterNode.minLesionMl, defaults.min_lesion_ml, msg="reset after close")
        self.assertFalse(widget.ui.saveReportButton.enabled)
        self.assertIsNone(widget._result)

    def test_FailuresLeaveThePanelReady(self) -> None:
        """A failed install returns False (shown by tryWithErrorDisplay); a failed start leaves nothing running."""
        self.delayDisplay("Install and start failures")
        plan = deps.InstallPlan(pip=["lungtumorseg-no-such-package==0.0.1"])
        original = deps.plan_install
        deps.plan_install = lambda requirements=None: plan
        try:
            self.assertFalse(ensureEngineDependencies(askConfirmation=False))
        finally:
            deps.plan_install = original
        slicer.util.selectModule("LungTumorSeg")
        widget = slicer.modules.lungtumorseg.widgetRepresentation().self()
        widget._parameterNode.inputVolume = self._loadNodule()
        logic = widget.logic
        original = logic.pythonExecutable
        logic.pythonExecutable = lambda: str(Path(slicer.app.temporaryPath) / "no-such-dir" / "PythonSlicer")
        try:
            widget.onApplyButton()
        finally:
            logic.pythonExecutable = original
        self.assertFalse(logic.isRunning())
        self.assertTrue(widget.ui.applyButton.enabled, "the panel is ready again")
        self.assertFalse(widget.ui.cancelButton.enabled)
        self.assertIn("Could not start", widget.ui.statusLabel.text)

    def test_CancelKillsTheEngineTree(self) -> None:
        from LungTumorSegLib.process import descendant_pids, pid_running

        self.delayDisplay("Cancelling a run mid-way")
        ctNode = self._loadNodule()
        before = slicer.mrmlScene.GetNumberOfNodes()
        logic = LungTumorSegLogic()
        pids = []

        def cancelOnProgress(event: helpers.ProgressEvent) -> None:
            if event.event == "progress" and not pids:
                pids.extend([logic._engine.pid, *descendant_pids(logic._engine.pid)])
                logic.cancel()

        result = logic.run(ctNode, helpers.SegmentSettings(device="cpu", tta=1), progressCallback=cancelOnProgress)
        self.assertIsNone(result)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
        self.assertFalse(logic.isRunning())
        self.assertTrue(pids)
        self._waitFor(lambda: not any(pid_running(pid) for pid in pids), 10, "the launcher and the engine to end")
        self.delayDisplay("Cancel test passed")

    def test_CompareWithBaseline(self) -> None:
        """The demo CT against a copy moved by 8, -5, 3 mm, with the demo GTV as both labels: SD, one match."""
        import numpy as np

        self.delayDisplay("Comparing the demo CT with a moved copy (blocking)")
        baseline = slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_ct.nii.gz"))
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

    def test_SceneCloseCancelsTheRun(self) -> None:
        self.delayDisplay("Closing the scene during a run")
        ctNode = self._loadNodule()
        logic = LungTumorSegLogic()
        progress, finished = [], []
        logic.runAsync(
            ctNode,
            helpers.SegmentSettings(device="cpu", tta=8),
            progressCallback=lambda event: progress.append(event.event == "progress"),
            finishedCallback=lambda result, error: finished.append((result, error)),
        )
        self._waitFor(lambda: any(progress), 120, "the engine's first progress line")
        slicer.mrmlScene.Clear()
        self._waitFor(lambda: bool(finished), 30, "the cancelled run to report")
        self.assertEqual(finished, [(None, None)])
        self.assertEqual(len(slicer.util.getNodesByClass("vtkMRMLSegmentationNode")), 0)
        self.assertFalse(logic.isRunning())
        self.delayDisplay("Scene close test passed")

    def test_BatchScriptSegmentsDicomSeriesOneByOne(self) -> None:
        """A DICOM folder with a CT series, a localizer and an MR series: only the CT is segmented."""
        import io
        from contextlib import redirect_stderr, redirect_stdout

        from LungTumorSegLib.demo_dicom import write_series
        from LungTumorSegLib.image_io import load_volume

        self.delayDisplay("Batch script on a DICOM folder")
        work = Path(tempfile.mkdtemp(prefix="LungTumorSegBatchTest-"))
        nodule = load_volume(self.SAMPLE_DIR / "demo_nodule.nii.gz")
        write_series(nodule, work / "dicom" / "ct", series_number=2, description="chest CT")
        write_series(nodule, work / "dicom" / "mr", modality="MR", series_number=3, description="not CT")
        scout = type(nodule)(nodule.array[:, :, :1], nodule.affine)
        write_series(scout, work / "dicom" / "scout", image_type="ORIGINAL\\PRIMARY\\LOCALIZER", series_number=1)
        script = MODULE_DIR / "Scripts" / "lungtumorseg_slicer_batch.py"
        spec = importlib.util.spec_from_file_location("lungtumorseg_slicer_batch", script)
        batch = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(batch)
        before = slicer.mrmlScene.GetNumberOfNodes()
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = batch.main(["--input", str(work / "dicom"), "--output", str(work / "out"), "--device", "cpu"])
        log = out.getvalue() + err.getvalue()
        self.assertEqual(code, 0, log)
        self.assertIn("1/1 case(s) segmented", log)
        self.assertIn("not CT", log)
        self.assertIn("localizer", log)
        self.assertEqual(len(list((work / "out").glob("*.seg.nrrd"))), 1, log)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before, "each case removes the nodes it created")
        shutil.rmtree(work, ignore_errors=True)

    def test_SegmentDemoCT(self) -> None:
        from LungTumorSegLib.model_names import default_model, finds_demo_tumour

        self.delayDisplay("Segmenting the demo chest CT on CPU (blocking)")
        ctNode = slicer.util.loadVolume(str(self.SAMPLE_DIR / "demo_ct.nii.gz"))
        result = LungTumorSegLogic().run(ctNode, helpers.SegmentSettings(device="cpu", tta=1))
        self.assertIsNotNone(result)
        entropy = slicer.util.arrayFromVolume(result.entropyNode)
        self.assertLessEqual(float(entropy.max()), 1.0 + 1e-6)
        models = helpers.available_models()
        name = default_model(models)
        if not (name and finds_demo_tumour(helpers.read_manifest(models[name]))):
            # The default model's manifest does not report finding the whole-volume 4D-Lung GTV (the demo CT's
            # tumour): the location check runs for models whose metrics say they do.
            self.delayDisplay("Default model not validated on the demo tumour: skipping the location check")
            return
        segmentId = result.segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(helpers.LUNG_TUMOR_SEGMENT_NAME)
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, segmentId, ctNode) > 0
        gtv = slicer.util.arrayFromVolume(slicer.util.loadLabelVolume(str(self.SAMPLE_DIR / "demo_ct_gtv.nii.gz")))
        overlap = (mask & (gtv > 0)).sum() / max(1, (gtv > 0).sum())
        self.assertGreater(overlap, 0.5, "the segmentation should cover most of the demo GTV")
