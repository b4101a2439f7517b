"""LungTumorSeg: lung tumour segmentation in chest CT (3D Slicer 5.4 to 5.12).

The module file holds the panel only. Everything else is in the Slicer-free engine (LungTumorSegLib): the Logic
classes in ``LungTumorSegLib.slicer_glue`` (Qt-free, tested in pytest against real MRML from slicer-core), the
engine itself in its subpackages, and the self-tests in ``Testing/Python/LungTumorSegSelfTest.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any

import qt
import slicer
import vtk
from LungTumorSegWidgets.box_section import BoxSection
from LungTumorSegWidgets.compare_section import CompareSection
from LungTumorSegWidgets.sensitivity_section import SensitivitySection
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from LungTumorSegLib.model.model_names import user_models_dir
from LungTumorSegLib.slicer_glue import lesion_nodes, sample_data, seed_points
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes
from LungTumorSegLib.slicer_glue import segment_helpers as helpers
from LungTumorSegLib.slicer_glue.box_tool_logic import BoxToolLogic
from LungTumorSegLib.slicer_glue.dependency_install import ensureEngineDependencies  # noqa: F401 - module API
from LungTumorSegLib.slicer_glue.segmentation_logic import LungTumorSegResult

MODULE_DIR = Path(__file__).resolve().parent
SELF_TEST_DIR = MODULE_DIR / "Testing" / "Python"
TTA_CHOICES = ((_("Model default"), None), (_("Off"), 1), (_("4 flips"), 4), (_("8 flips"), 8))
# A segment painted, added or removed: vtkSegmentation events (SourceRepresentationModified, SegmentModified,
# SegmentAdded, SegmentRemoved) that the segmentation node passes on (vtkMRMLSegmentationNode.cxx).
SEGMENT_EVENTS = ("SourceRepresentationModified", "SegmentModified", "SegmentAdded", "SegmentRemoved")


class LungTumorSeg(ScriptedLoadableModule):
    """Module description."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Lung Tumor Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LungTumorSeg developers"]
        self.parent.helpText = _(
            "Segments lung tumours in chest CT with a MONAI model bundle (the bundled one is a single UNet), one "
            "segment per lesion, with the voxel-wise uncertainty (entropy) and volume and RECIST 1.1 diameters per "
            "lesion; compares a follow-up with its baseline. For research use only; not a medical device."
        )
        self.parent.acknowledgementText = _("Built on 3D Slicer, MONAI and PyTorch.")
        slicer.app.connect("startupCompleted()", registerSampleData)

    def runTest(self, msec=100, **kwargs):
        """Slicer's self-test entry (Reload and Test, ``slicer.selfTests``): the tests live in Testing/Python."""
        if str(SELF_TEST_DIR) not in sys.path:
            sys.path.insert(0, str(SELF_TEST_DIR))
        import LungTumorSegSelfTest

        testCase = importlib.reload(LungTumorSegSelfTest).LungTumorSegTest()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


def registerSampleData() -> None:
    """Offer the demo samples in the Sample Data module (local files shipped with the module)."""
    import SampleData

    for source in sample_data.sample_data_sources():
        SampleData.SampleDataLogic.registerCustomSampleDataSource(**source)


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


class LungTumorSegLogic(BoxToolLogic, ScriptedLoadableModuleLogic):
    """The segmentation Logic with box prompts (LungTumorSegLib.slicer_glue: segmentation_logic, box_tool_logic)
    and the module's parameter node.

    Scripts: ``LungTumorSegLogic().run(volumeNode, SegmentSettings(device="cpu"))``, ``runBox(volumeNode,
    BoxSettings(corners))``.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        BoxToolLogic.__init__(self)

    def getParameterNode(self) -> LungTumorSegParameterNode:
        return LungTumorSegParameterNode(super().getParameterNode())


# ------------------------------------------------------------------------------------------ widget


class LungTumorSegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module panel."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic: LungTumorSegLogic | None = None
        self.compareSection: CompareSection | None = None
        self.boxSection: BoxSection | None = None
        self.sensitivitySection: SensitivitySection | None = None
        self._parameterNode: LungTumorSegParameterNode | None = None
        self._parameterNodeGuiTag = None
        self._manifest: dict[str, Any] = {}
        self._result: LungTumorSegResult | None = None
        self._observedSeedNode = None
        self._pendingSeeds: list[seed_points.SeedClick] = []
        self._runningSeed: seed_points.SeedClick | None = None
        self._observedSegmentation = None
        self._deviceQuery = None
        self._deviceTimer = None

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
        self.sensitivitySection = SensitivitySection(self)  # before the models: it fills their presets
        for text, value in TTA_CHOICES:
            self.ui.ttaComboBox.addItem(text, value)
        self.setDeviceChoices(self.logic.deviceChoices())
        self.refreshDevices()
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
        self.ui.remeasureButton.connect("clicked(bool)", self.onRemeasure)
        self.ui.undoSeedButton.connect("clicked(bool)", self.onUndoSeed)

        self.ui.cancelButton.enabled = False
        self.ui.saveReportButton.enabled = False
        self.ui.remeasureButton.enabled = False
        self.ui.undoSeedButton.enabled = False
        self.ui.progressBar.setValue(0)
        self.boxSection = BoxSection(self)
        self.initializeParameterNode()
        self.compareSection = CompareSection(self)

    def cleanup(self) -> None:
        self.removeObservers()
        if self._deviceTimer is not None:
            self._deviceTimer.stop()
        if self.logic:
            self.logic.shutdown()
        if self.compareSection:
            self.compareSection.cleanup()

    def enter(self) -> None:
        self.initializeParameterNode()
        self.refreshDevices()  # a GPU usable since the panel was last shown (PyTorch installed, driver) appears

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
        self.boxSection.onSceneStartClose()
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
        if self.boxSection:
            self.boxSection.refreshLesions()

    def resetResults(self) -> None:
        """No result shown: table, summary, report button, queued seed clicks."""
        self.showResult(None)
        self._pendingSeeds.clear()
        self._runningSeed = None
        self.ui.summaryLabel.text = ""
        self.ui.progressBar.setValue(0)
        self.ui.statusLabel.text = _("Ready")

    # ---------------------------------------------------------------- devices

    def setDeviceChoices(self, choices: list[tuple[str, str]]) -> None:
        """Fill the device list, keeping the chosen device when it is still there."""
        current = self.ui.deviceComboBox.currentData
        self.ui.deviceComboBox.clear()
        for text, value in choices:
            self.ui.deviceComboBox.addItem(text, value)
        index = self.ui.deviceComboBox.findData(current) if current else -1
        self.ui.deviceComboBox.currentIndex = max(0, index)

    def refreshDevices(self) -> None:
        """Ask the engine (its own process: Slicer never imports torch) for the GPUs; the list follows when done."""
        if self._deviceQuery is not None or importlib.util.find_spec("torch") is None:
            return
        self._deviceQuery = self.logic.startDeviceQuery()
        if self._deviceTimer is None:
            self._deviceTimer = qt.QTimer()
            self._deviceTimer.setInterval(500)
            self._deviceTimer.connect("timeout()", self.onDeviceQueryPoll)
        self._deviceTimer.start()

    def onDeviceQueryPoll(self) -> None:
        if self._deviceQuery is None or not self._deviceQuery.done():
            return
        self._deviceTimer.stop()
        gpus, self._deviceQuery = self._deviceQuery.gpus(), None
        self.setDeviceChoices(self.logic.deviceChoices(gpus))

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
        self.sensitivitySection.fillPresets({})
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
        self.sensitivitySection.fillPresets(manifest)
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
            sensitivity=self.sensitivitySection.chosenPreset(),
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
        self.refreshDevices()  # PyTorch may have just been installed
        seedMode = pointRas is not None
        target = p.outputSegmentation
        hasSegments = bool(target and lesion_nodes.lesion_segment_ids(target))
        question = _("The segmentation '{name}' already has lesion segments. Replace them (other segments are kept)?")
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
        self.dropSeedMarkers(self._pendingSeeds)
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
        if self._runningSeed is not None:
            self.dropSeedMarkers([self._runningSeed])
            self._runningSeed = None
        if error:
            self.dropSeedMarkers(self._pendingSeeds)
            self._pendingSeeds.clear()
            self.ui.statusLabel.text = _("Failed: ") + error.splitlines()[0]
            self.log(error)
            slicer.util.errorDisplay(_("Segmentation failed: ") + error)
            return
        if result is None:
            self.ui.statusLabel.text = _("Cancelled: the scene was not changed.")
            return
        self.ui.progressBar.setValue(100)
        self.ui.statusLabel.text = _("Done: ") + result.summaryText
        self.showResult(result)
        if self._parameterNode and not self._parameterNode.outputSegmentation:
            self._parameterNode.outputSegmentation = result.segmentationNode
        if self._pendingSeeds:
            self.runSeed(self._pendingSeeds.pop(0))

    def showResult(self, result: LungTumorSegResult | None) -> None:
        """Show a result (table, summary, buttons) and follow edits of its segments; None clears it."""
        if self._observedSegmentation is not None:
            for event in self.segmentEvents(self._observedSegmentation):
                self.removeObserver(self._observedSegmentation, event, self.onSegmentsEdited)
            self._observedSegmentation = None
        self._result = result
        self.ui.resultsTableView.setMRMLTableNode(result.tableNode if result else None)
        self.ui.saveReportButton.enabled = result is not None
        self.sensitivitySection.show(result)
        if result is not None:
            self._observedSegmentation = result.segmentationNode
            for event in self.segmentEvents(result.segmentationNode):
                self.addObserver(result.segmentationNode, event, self.onSegmentsEdited)
        self.onSegmentsEdited()

    @staticmethod
    def segmentEvents(segmentationNode) -> list[int]:
        """The event IDs of SEGMENT_EVENTS (enum values of the node's vtkSegmentation)."""
        segmentation = segmentationNode.GetSegmentation()
        return [getattr(segmentation, name) for name in SEGMENT_EVENTS]

    def onSegmentsEdited(self, caller=None, event=None) -> None:
        """Segments edited, added or removed (Segment Editor): say that the table is out of date, offer Re-measure."""
        result = self._result
        stale = self.logic.isStale(result)
        self.ui.remeasureButton.enabled = stale
        self.ui.undoSeedButton.enabled = self.logic.canUndoLastSeed(result)
        if self.boxSection:
            self.boxSection.refreshLesions()
        if result is not None:
            note = _("Segments edited since they were measured: press Re-measure.") if stale else ""
            self.ui.summaryLabel.text = "\n".join(filter(None, (result.summaryText, note)))

    def onRemeasure(self) -> None:
        if self._result and self.logic.nodesInScene(self._result):
            self.logic.remeasure(self._result)
            self.onSegmentsEdited()

    def onUndoSeed(self) -> None:
        if self._result and self.logic.undoLastSeed(self._result):
            self.log(_("Last seed click undone."))
        self.onSegmentsEdited()

    # ---------------------------------------------------------------- display

    def onShow3DToggled(self, on: bool) -> None:
        if self._result:
            lesion_nodes.set_show_in_3d(self._result.segmentationNode, on)

    def onEntropyOpacityChanged(self, value: float) -> None:
        if self._result and self._result.entropyNode:
            slicer.util.setSliceViewerLayers(foregroundOpacity=float(value))

    def onTableRowClicked(self, index) -> None:
        """Centre the views on the clicked lesion (the column titles are the header: view row n is lesion row n)."""
        rows = self._result.rows if self._result else []
        centroid = rows[index.row()].get("centroid_ras") if 0 <= index.row() < len(rows) else None
        if centroid:
            nodes.jump_to_location(centroid, self._result.inputVolume)

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
        """A click: segment the lesion there (in the CT's own frame); it becomes a lesion segment."""
        p = self._parameterNode
        click = seed_points.last_click(caller, p.inputVolume) if p and p.inputVolume else None
        if click is None:
            return
        self.log(_("Seed point at RAS ({0:.1f}, {1:.1f}, {2:.1f})").format(*click.pointRas))
        if self.logic.isRunning():
            self._pendingSeeds.append(click)
            self.log(_("Queued: it runs when the current segmentation ends."))
            return
        self.runSeed(click)

    def runSeed(self, click: seed_points.SeedClick) -> None:
        """Run one seed click; its marker goes when the run ends (markers show only clicks still to come)."""
        self._runningSeed = click
        self.onApplyButton(pointRas=click.pointRas)
        if not self.logic.isRunning():  # did not start (missing packages, start failure)
            self.dropSeedMarkers([click])
            self._runningSeed = None

    def dropSeedMarkers(self, clicks) -> None:
        seedNode = self._parameterNode.seedPoints if self._parameterNode else None
        for click in list(clicks):
            seed_points.remove_click(seedNode, click)
