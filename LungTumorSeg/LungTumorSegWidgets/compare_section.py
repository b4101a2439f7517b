"""The "Compare with baseline" section of the LungTumorSeg panel (its own .ui), run by CompareLogic."""

from __future__ import annotations

import qt
import slicer

from LungTumorSegLib.slicer_glue import compare_helpers
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes
from LungTumorSegLib.slicer_glue import segment_helpers as helpers
from LungTumorSegLib.slicer_glue.compare_logic import CompareLogic, LungTumorSegComparison
from LungTumorSegLib.slicer_glue.i18n import tr as _


class CompareSection:
    """Baseline and follow-up pickers, the alignment choice, Compare/Cancel, the matched-lesion table."""

    def __init__(self, panel) -> None:
        """``panel``: the LungTumorSegWidget (its model, device and TTA choices, its log and its layout)."""
        self.panel = panel
        sectionWidget = slicer.util.loadUI(panel.resourcePath("UI/LungTumorSegCompare.ui"))
        panel.layout.addWidget(sectionWidget)
        self.ui = slicer.util.childWidgetVariables(sectionWidget)
        sectionWidget.setMRMLScene(slicer.mrmlScene)
        ui = self.ui
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
        self.logic = CompareLogic()
        self.comparison: LungTumorSegComparison | None = None
        ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        ui.compareCancelButton.connect("clicked(bool)", self.onCancel)
        ui.compareTableView.connect("clicked(QModelIndex)", self.onTableRowClicked)
        ui.openCompareReportButton.connect("clicked(bool)", self.onOpenReport)
        for selector in (ui.baselineVolumeSelector, ui.followupVolumeSelector):
            selector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateState)
        panel.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.updateState()

    def cleanup(self) -> None:
        self.logic.shutdown()

    def onSceneStartClose(self, caller=None, event=None) -> None:
        """The scene closes: stop a running comparison and forget the shown one (its nodes leave the scene)."""
        self.logic.cancel()
        self.resetComparison()

    def resetComparison(self) -> None:
        """No comparison shown: table, summary, status, progress and the report button cleared."""
        ui = self.ui
        self.comparison = None
        ui.compareTableView.setMRMLTableNode(None)
        ui.compareSummaryLabel.text = ""
        ui.compareStatusLabel.text = ""
        ui.compareProgressBar.setValue(0)
        ui.openCompareReportButton.enabled = False
        self.updateState()

    def updateState(self, *args) -> None:
        ui = self.ui
        running = self.logic.isRunning()
        baseline, followup = ui.baselineVolumeSelector.currentNode(), ui.followupVolumeSelector.currentNode()
        ready = bool(baseline and followup and baseline != followup)
        ui.compareButton.enabled = ready and not running
        ui.compareButton.toolTip = (
            _("Align, match the lesions and assess the RECIST 1.1 response")
            if ready
            else _("Pick two different CT volumes")
        )
        ui.compareCancelButton.enabled = running

    def settings(self) -> compare_helpers.CompareSettings:
        """The alignment chosen here; model, device and TTA as chosen for segmentation above."""
        panelUi = self.panel.ui
        return compare_helpers.CompareSettings(
            registration=str(self.ui.registrationComboBox.currentData or "rigid"),
            model=str(panelUi.modelComboBox.currentData or ""),
            device=str(panelUi.deviceComboBox.currentData or "auto"),
            tta=panelUi.ttaComboBox.currentData,
        )

    def onCompareButton(self, *args) -> None:
        ui = self.ui
        baselineSegmentation = ui.baselineSegmentationSelector.currentNode()
        followupSegmentation = ui.followupSegmentationSelector.currentNode()
        needsModel = baselineSegmentation is None or followupSegmentation is None
        if needsModel and not self.panel.logic.ensureDependencies(askConfirmation=True):
            return
        transform = self.logic.followupTransformToReplace(ui.followupVolumeSelector.currentNode(), followupSegmentation)
        question = _(
            "The follow-up is under the transform '{0}'. The alignment replaces it (the transform node itself is "
            "kept in the scene). Continue?"
        )
        if transform is not None and not slicer.util.confirmYesNoDisplay(question.format(transform.GetName())):
            return
        ui.compareProgressBar.setValue(0)
        ui.compareStatusLabel.text = _("Starting…")
        ui.compareSummaryLabel.text = ""
        try:
            self.logic.runAsync(
                ui.baselineVolumeSelector.currentNode(),
                ui.followupVolumeSelector.currentNode(),
                self.settings(),
                baselineSegmentation,
                followupSegmentation,
                progressCallback=self.onProgress,
                finishedCallback=self.onFinished,
                replaceFollowupTransform=transform is not None,
            )
        except Exception as exc:  # noqa: BLE001 - shown to the user
            slicer.util.errorDisplay(_("Could not start the comparison: ") + str(exc))
        self.updateState()

    def onCancel(self) -> None:
        self.logic.cancel()
        self.ui.compareStatusLabel.text = _("Cancelled: the scene was not changed.")
        self.updateState()

    def onProgress(self, event: helpers.ProgressEvent) -> None:
        if event.event == "progress":
            if event.fraction is not None:
                self.ui.compareProgressBar.setValue(int(round(100 * event.fraction)))
            self.ui.compareStatusLabel.text = f"{event.step_label}: {event.message}".rstrip(": ")
        elif event.event in ("log", "error"):
            self.panel.log(f"[compare {event.data.get('level', event.event)}] {event.message}")

    def onFinished(self, result: LungTumorSegComparison | None, error: str | None) -> None:
        ui = self.ui
        self.updateState()
        if error:
            ui.compareStatusLabel.text = _("Failed: ") + error.splitlines()[0]
            self.panel.log(error)
            slicer.util.errorDisplay(_("Comparison failed: ") + error)
            return
        if result is None:
            ui.compareStatusLabel.text = _("Cancelled: the scene was not changed.")
            return
        self.comparison = result
        ui.compareProgressBar.setValue(100)
        ui.compareStatusLabel.text = _("Done: the follow-up is aligned to the baseline (views linked)")
        ui.compareSummaryLabel.text = result.summaryText
        ui.compareTableView.setMRMLTableNode(result.tableNode)
        ui.openCompareReportButton.enabled = bool(result.outputs.get("report"))

    def onTableRowClicked(self, index) -> None:
        if self.comparison and 0 <= index.row() < len(self.comparison.rows):
            location = self.comparison.rows[index.row()].get("location_ras")
            if location:
                nodes.jump_to_location(location)

    def onOpenReport(self) -> None:
        if self.comparison and self.comparison.outputs.get("report"):
            qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(self.comparison.outputs["report"]))
