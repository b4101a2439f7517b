"""The "Candidates" section's .ui and the sensitivity choice: they load and hold every widget the section uses."""

from __future__ import annotations

import test_slicer_module as module_tests
from test_slicer_compare_ui import section_ui_names

CANDIDATES_UI = module_tests.MODULE_DIR / "Resources" / "UI" / "LungTumorSegCandidates.ui"
SECTION = module_tests.MODULE_DIR / "LungTumorSegWidgets" / "sensitivity_section.py"


def test_candidates_ui_loads_and_has_every_widget_the_section_uses(monkeypatch):
    monkeypatch.setattr(module_tests, "UI_FILE", CANDIDATES_UI)
    loaded = module_tests._load_ui_in_subprocess()
    assert "error" not in loaded, loaded
    used = section_ui_names(SECTION)
    assert {"candidatesTableView", "acceptCandidateButton", "boxCandidateButton", "showCandidatesCheckBox"} <= used
    missing = sorted(used - set(loaded["widgets"]))
    assert not missing, f"sensitivity_section.py uses widgets missing from LungTumorSegCandidates.ui: {missing}"
    assert loaded["widgets"]["candidatesTableView"] == "qMRMLTableView"


def test_the_sensitivity_choice_is_in_the_main_ui():
    loaded = module_tests._load_ui_in_subprocess()
    assert "error" not in loaded, loaded
    assert loaded["widgets"]["sensitivityComboBox"] == "QComboBox" and "sensitivityLabel" in loaded["widgets"]
