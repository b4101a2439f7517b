"""The "Box tool" section of the LungTumorSeg panel (its own .ui): draw a box, LiteMedSAM segments the lesion in it.

Everything but the widgets is in ``LungTumorSegLib.slicer_glue.box_tool_logic`` (Qt-free, tested against real
MRML); the run goes through the panel's Logic, so Apply, seed clicks and boxes never run at the same time.
"""

from __future__ import annotations

import slicer

from LungTumorSegLib.slicer_glue import box_helpers as boxes
from LungTumorSegLib.slicer_glue import box_tool_logic, lesion_nodes
from LungTumorSegLib.slicer_glue import segment_helpers as helpers
from LungTumorSegLib.slicer_glue.i18n import tr as _

RED_SLICE_NODE_ID = "vtkMRMLSliceNodeRed"


class BoxSection:
    """ROI selector and place widget, lesion choice, add/replace, HU gate, Segment box / Cancel / Undo, progress."""

    def __init__(self, panel) -> None:
        """``panel``: the LungTumorSegWidget (its Logic, CT, output segmentation, device, log, table and layout)."""
        self.panel = panel
        sectionWidget = slicer.util.loadUI(panel.resourcePath("UI/LungTumorSegBox.ui"))
        panel.layout.addWidget(sectionWidget)
        self.ui = slicer.util.childWidgetVariables(sectionWidget)
        sectionWidget.setMRMLScene(slicer.mrmlScene)
        ui = self.ui
        ui.boxRoiSelector.setMRMLScene(slicer.mrmlScene)
        ui.boxPlaceWidget.setMRMLScene(slicer.mrmlScene)
        ui.boxPlaceWidget.setPlaceModePersistency(False)
        for text, value in boxes.HU_GATE_CHOICES:
            ui.boxHuGateComboBox.addItem(_(text), value)
        self.availability = panel.logic.boxAvailability()
        ui.boxAvailabilityLabel.text = self.availability.message or _(
            "Draw a box around one lesion: LiteMedSAM (MedSAM, Apache-2.0) segments it. Research use only."
        )
        ui.boxRoiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onRoiChanged)
        ui.boxAtViewCentreButton.connect("clicked(bool)", self.onBoxAtViewCentre)
        ui.boxFromLesionButton.connect("clicked(bool)", self.onStartFromLesion)
        ui.segmentBoxButton.connect("clicked(bool)", self.onSegmentBox)
        ui.boxCancelButton.connect("clicked(bool)", self.onCancel)
        ui.boxUndoButton.connect("clicked(bool)", self.onUndo)
        ui.boxCollapsibleButton.connect("contentsCollapsed(bool)", self.refreshLesions)
        self.refreshLesions()

    # ---------------------------------------------------------------- state

    def targetSegmentation(self):
        """The segmentation that gets the box's lesion: the panel's output segmentation, or its shown result's."""
        p, result = self.panel._parameterNode, self.panel._result
        if p is not None and p.outputSegmentation is not None:
            return p.outputSegmentation
        return result.segmentationNode if result is not None else None

    def refreshLesions(self, *args) -> None:
        """List the lesion segments of the target segmentation (keeping the selected one), then update the buttons."""
        combo = self.ui.boxLesionComboBox
        current = combo.currentData
        combo.clear()
        segmentation = self.targetSegmentation()
        for segmentId in lesion_nodes.lesion_segment_ids(segmentation):
            combo.addItem(segmentation.GetSegmentation().GetSegment(segmentId).GetName(), segmentId)
        index = combo.findData(current) if current else -1
        combo.currentIndex = max(0, index) if combo.count else -1
        self.updateState()

    def updateState(self, *args) -> None:
        ui, p = self.ui, self.panel._parameterNode
        usable = self.availability.available
        running = bool(self.panel.logic and self.panel.logic.isRunning())
        hasCt = bool(p and p.inputVolume)
        hasLesion = ui.boxLesionComboBox.count > 0
        for widget in (ui.boxRoiSelector, ui.boxPlaceWidget, ui.boxHuGateComboBox, ui.boxAddRadioButton):
            widget.enabled = usable
        ui.boxAtViewCentreButton.enabled = usable and hasCt
        ui.boxFromLesionButton.enabled = usable and hasCt and hasLesion
        ui.boxReplaceRadioButton.enabled = usable and hasLesion
        if not hasLesion and ui.boxReplaceRadioButton.checked:
            ui.boxAddRadioButton.checked = True
        ui.segmentBoxButton.enabled = usable and hasCt and not running and ui.boxRoiSelector.currentNode() is not None
        ui.segmentBoxButton.toolTip = (
            self.availability.message
            if not usable
            else _("Segment the lesion inside the box with LiteMedSAM")
            if hasCt
            else _("Select a CT volume first")
        )
        ui.boxCancelButton.enabled = running and bool(self.panel.logic._job.get("box"))
        ui.boxUndoButton.enabled = bool(self.panel.logic.canUndoLastSeed(self.panel._result))

    def onSceneStartClose(self) -> None:
        self.ui.boxProgressBar.setValue(0)
        self.ui.boxStatusLabel.text = ""
        self.ui.boxLesionComboBox.clear()

    # ---------------------------------------------------------------- the box

    def onRoiChanged(self, roiNode) -> None:
        self.ui.boxPlaceWidget.setCurrentNode(roiNode)
        self.updateState()

    def roiNode(self):
        """The chosen ROI, or a new one (selected) when none is chosen."""
        roiNode = self.ui.boxRoiSelector.currentNode()
        if roiNode is None:
            roiNode = box_tool_logic.new_roi()
            self.ui.boxRoiSelector.setCurrentNode(roiNode)
        return roiNode

    def onBoxAtViewCentre(self) -> None:
        p = self.panel._parameterNode
        sliceNode = slicer.mrmlScene.GetNodeByID(RED_SLICE_NODE_ID)
        if p is None or p.inputVolume is None or sliceNode is None:
            return
        box_tool_logic.roi_at_slice_view_centre(p.inputVolume, sliceNode, self.roiNode())

    def onStartFromLesion(self) -> None:
        p, segmentId = self.panel._parameterNode, self.ui.boxLesionComboBox.currentData
        segmentation = self.targetSegmentation()
        if p is None or p.inputVolume is None or segmentation is None or not segmentId:
            return
        if not self.panel.logic.setRoiFromLesion(self.roiNode(), segmentation, segmentId, p.inputVolume):
            self.ui.boxStatusLabel.text = _("The selected lesion segment is empty.")
            return
        self.ui.boxStatusLabel.text = _("Box set to {0}, grown by 10 % per side.").format(
            self.ui.boxLesionComboBox.currentText
        )

    def boxAround(self, segmentationNode, segmentId: str, volumeNode, name: str) -> bool:
        """Put the ROI around any segment (a candidate) grown by 10 % per side and open the section."""
        if not self.availability.available:
            return False
        if not self.panel.logic.setRoiFromLesion(self.roiNode(), segmentationNode, segmentId, volumeNode):
            return False
        self.ui.boxCollapsibleButton.collapsed = False
        self.ui.boxStatusLabel.text = _("Box set around {0}, grown by 10 % per side: press Segment box.").format(name)
        self.updateState()
        return True

    # ---------------------------------------------------------------- run

    def onSegmentBox(self) -> None:
        panel, ui, p = self.panel, self.ui, self.panel._parameterNode
        roiNode = ui.boxRoiSelector.currentNode()
        if not self.availability.available or p is None or p.inputVolume is None or roiNode is None:
            return
        if roiNode.GetNumberOfControlPoints() == 0:
            slicer.util.errorDisplay(_("Place the box first (Place box, or Box at view centre)."))
            return
        if not panel.logic.ensureDependencies(askConfirmation=True):
            ui.boxStatusLabel.text = _("The Python packages are missing: see docs/slicer-module.md.")
            return
        replace = ui.boxReplaceRadioButton.checked and ui.boxLesionComboBox.currentData
        corners = panel.logic.roiCorners(roiNode, p.inputVolume)
        settings = boxes.BoxSettings(
            corners,
            device=str(panel.ui.deviceComboBox.currentData or "auto"),
            hu_gate=str(ui.boxHuGateComboBox.currentData or "auto"),
        )
        target = self.targetSegmentation()
        panel.log(_("Box {0}").format(boxes.box_text(corners)))
        ui.boxProgressBar.setValue(0)
        ui.boxStatusLabel.text = _("Starting…")
        try:
            panel.logic.runBoxAsync(
                p.inputVolume,
                settings,
                outputSegmentation=target,
                replaceSegmentId=str(replace or ""),
                progressCallback=self.onProgress,
                finishedCallback=self.onFinished,
                previous=panel.reusableResult(target),
                showIn3D=p.showIn3D,
                entropyOpacity=p.entropyOpacity,
            )
        except Exception as exc:  # noqa: BLE001 - the engine could not start: shown, panel back to ready
            ui.boxStatusLabel.text = _("Could not start: ") + str(exc)
            slicer.util.errorDisplay(_("Could not start the box segmentation: ") + str(exc))
        panel.updateGuiState()

    def onCancel(self) -> None:
        self.panel.logic.cancel()
        self.ui.boxStatusLabel.text = _("Cancelled: the scene was not changed.")
        self.panel.updateGuiState()

    def onProgress(self, event: helpers.ProgressEvent) -> None:
        if event.event == "progress":
            if event.fraction is not None:
                self.ui.boxProgressBar.setValue(int(round(100 * event.fraction)))
            self.ui.boxStatusLabel.text = f"{event.step_label}: {event.message}".rstrip(": ")
        elif event.event in ("log", "text", "error"):
            self.panel.log(f"[box {event.data.get('level', event.event)}] {event.message}")

    def onFinished(self, result, error: str | None) -> None:
        panel, ui = self.panel, self.ui
        panel.updateGuiState()
        if error:
            ui.boxStatusLabel.text = _("Failed: ") + error.splitlines()[0]
            panel.log(error)
            slicer.util.errorDisplay(_("Box segmentation failed: ") + error)
            return
        if result is None:
            ui.boxStatusLabel.text = _("Cancelled: the scene was not changed.")
            return
        ui.boxProgressBar.setValue(100)
        panel.showResult(result)
        if panel._parameterNode and not panel._parameterNode.outputSegmentation:
            panel._parameterNode.outputSegmentation = result.segmentationNode
        row = next((r for r in result.rows if r.get("segment_id") == result.promptSegmentId), None)
        ui.boxStatusLabel.text = (
            _("Done: {0}, {1:.2f} ml").format(row["segment_name"], row["volume_ml"])
            if row
            else _("Done: LiteMedSAM found no lesion in the box.")
        )
        self.refreshLesions()
        if panel._pendingSeeds:  # seed clicks made during the box run
            panel.runSeed(panel._pendingSeeds.pop(0))

    def onUndo(self) -> None:
        self.panel.onUndoSeed()
        self.refreshLesions()
