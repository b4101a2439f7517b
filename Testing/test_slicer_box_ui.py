"""The "Box tool" section's .ui: it loads, it has every widget its section class uses, and it is installed."""

from __future__ import annotations

import test_slicer_module as module_tests
from test_slicer_compare_ui import section_ui_names

BOX_UI = module_tests.MODULE_DIR / "Resources" / "UI" / "LungTumorSegBox.ui"
BOX_SECTION = module_tests.MODULE_DIR / "LungTumorSegWidgets" / "box_section.py"


def test_box_ui_loads_and_has_every_widget_the_section_uses(monkeypatch):
    monkeypatch.setattr(module_tests, "UI_FILE", BOX_UI)
    loaded = module_tests._load_ui_in_subprocess()
    assert "error" not in loaded, loaded
    used = section_ui_names(BOX_SECTION)
    expected = {"segmentBoxButton", "boxCancelButton", "boxRoiSelector", "boxPlaceWidget", "boxFromLesionButton"}
    assert expected | {"boxAddRadioButton", "boxReplaceRadioButton", "boxProgressBar", "boxAvailabilityLabel"} <= used
    missing = sorted(used - set(loaded["widgets"]))
    assert not missing, f"box_section.py uses widgets missing from LungTumorSegBox.ui: {missing}"
    assert loaded["widgets"]["boxRoiSelector"] == "qMRMLNodeComboBox"
    assert loaded["widgets"]["boxPlaceWidget"] == "qSlicerMarkupsPlaceWidget"
    assert loaded["widgets"]["boxCollapsibleButton"] == "ctkCollapsibleButton"


def test_the_roi_selector_offers_roi_nodes_only():
    text = BOX_UI.read_text(encoding="utf-8")
    selector = text[text.index('name="boxRoiSelector"') :]
    assert selector[: selector.index("</widget>")].count("<string>vtkMRMLMarkupsROINode</string>") == 1


def test_the_box_section_is_installed_with_the_module():
    text = (module_tests.MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "Resources/UI/${MODULE_NAME}Box.ui" in text and "LungTumorSegWidgets/box_section.py" in text
    assert "LungTumorSegLib/slicer_glue/box_tool_logic.py" in text
