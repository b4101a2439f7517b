"""The sensitivity choice (in the Inputs form) and the "Candidates" section of the LungTumorSeg panel.

The choice lists the selected model's presets (hidden for a model without any); the section shows the last run's
candidates and accepts the selected one as a lesion through ``SegmentationLogic.acceptCandidate``.
"""

from __future__ import annotations

import qt
import slicer

from LungTumorSegLib.slicer_glue import candidate_nodes
from LungTumorSegLib.slicer_glue import mrml_nodes as nodes
from LungTumorSegLib.slicer_glue import segment_helpers as helpers
from LungTumorSegLib.slicer_glue.i18n import tr as _


class SensitivitySection:
    """Fills ``panel.ui.sensitivityComboBox`` and runs its own .ui (candidates table, accept, show outlines)."""

    def __init__(self, panel) -> None:
        """``panel``: the LungTumorSegWidget (its logic, its result, its log and its layout)."""
        self.panel = panel
        sectionWidget = slicer.util.loadUI(panel.resourcePath("UI/LungTumorSegCandidates.ui"))
        panel.layout.addWidget(sectionWidget)
        self.ui = slicer.util.childWidgetVariables(sectionWidget)
        sectionWidget.setMRMLScene(slicer.mrmlScene)
        self.ui.candidatesTableView.setMRMLScene(slicer.mrmlScene)
        self.candidates: candidate_nodes.CandidateSet | None = None
        self.selectedRow = -1
        self.ui.candidatesTableView.connect("clicked(QModelIndex)", self.onRowClicked)
        self.ui.acceptCandidateButton.connect("clicked(bool)", self.onAccept)
        self.ui.boxCandidateButton.connect("clicked(bool)", self.onBoxAround)
        self.ui.showCandidatesCheckBox.connect("toggled(bool)", self.onShowToggled)

    # ---------------------------------------------------------------- the preset choice

    def fillPresets(self, manifest: dict) -> None:
        """The model's presets in the choice box, its default selected; hidden when the model has none."""
        combo = self.panel.ui.sensitivityComboBox
        combo.clear()
        rows, default = helpers.model_presets(manifest)
        for row in rows:
            text, tooltip = helpers.preset_choice_text(row)
            combo.addItem(text, row["name"])
            combo.setItemData(combo.count - 1, tooltip, qt.Qt.ToolTipRole)
        if default is not None:
            combo.currentIndex = combo.findData(default)
        combo.visible = self.panel.ui.sensitivityLabel.visible = bool(rows)

    def chosenPreset(self) -> str | None:
        """The preset to ask the engine for (None: the model's default, or a model without presets)."""
        combo = self.panel.ui.sensitivityComboBox
        return str(combo.currentData) if combo.count and combo.currentData else None

    # ---------------------------------------------------------------- candidates

    def show(self, result) -> None:
        """Show the candidates of ``result`` (None clears the section)."""
        candidates = result.candidates if result is not None else None
        self.candidates = candidates if candidate_nodes.candidates_in_scene(candidates) else None
        self.selectedRow = -1
        self.ui.candidatesTableView.setMRMLTableNode(self.candidates.tableNode if self.candidates else None)
        if self.candidates:
            self.ui.candidatesSummaryLabel.text = self.candidates.summary()
            self.ui.candidatesCollapsibleButton.collapsed = False
        elif result is not None:
            self.ui.candidatesSummaryLabel.text = _("No candidates at this sensitivity.")
        self.updateState()

    def updateState(self) -> None:
        rows = self.candidates.rows if self.candidates else []
        selected = 0 <= self.selectedRow < len(rows)
        self.ui.acceptCandidateButton.enabled = selected
        boxSection = self.panel.boxSection
        self.ui.boxCandidateButton.enabled = selected and boxSection is not None and boxSection.availability.available

    def onRowClicked(self, index) -> None:
        """Select a candidate and centre the views on it."""
        rows = self.candidates.rows if self.candidates else []
        self.selectedRow = index.row() if 0 <= index.row() < len(rows) else -1
        if self.selectedRow >= 0:
            nodes.jump_to_location(rows[self.selectedRow]["centroid_ras"], self.candidates.inputVolume)
        self.updateState()

    def onAccept(self) -> None:
        result = self.panel._result
        if result is None or self.candidates is None or result.candidates is not self.candidates:
            return
        try:
            self.panel.logic.acceptCandidate(result, self.selectedRow)
        except ValueError as exc:
            slicer.util.errorDisplay(str(exc))
            return
        self.panel.log(_("Accepted {0} as a lesion.").format(self.candidates.rows[self.selectedRow]["name"]))
        self.ui.candidatesSummaryLabel.text = self.candidates.summary()
        self.panel.showResult(result)

    def onBoxAround(self) -> None:
        """Hand the selected candidate to the box tool, which outlines it properly."""
        if self.candidates is None or not 0 <= self.selectedRow < len(self.candidates.rows):
            return
        row = self.candidates.rows[self.selectedRow]
        self.panel.boxSection.boxAround(
            self.candidates.segmentationNode, row["segment_id"], self.candidates.inputVolume, row["name"]
        )

    def onShowToggled(self, on: bool) -> None:
        if self.candidates and nodes.in_scene(self.candidates.segmentationNode):
            self.candidates.segmentationNode.GetDisplayNode().SetVisibility(on)
