"""The "Compare with baseline" section's .ui: it loads, and it has every widget its section class uses from it."""

from __future__ import annotations

import ast

import test_slicer_module as module_tests

COMPARE_UI = module_tests.MODULE_DIR / "Resources" / "UI" / "LungTumorSegCompare.ui"
COMPARE_SECTION = module_tests.MODULE_DIR / "LungTumorSegWidgets" / "compare_section.py"


def section_ui_names(section_file=COMPARE_SECTION) -> set[str]:
    """``self.ui.X`` and ``ui.X`` in the methods of a section class that bind ``ui = self.ui`` (or ``..., ui, ...``)."""

    def is_compare_ui(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Attribute)
            and node.attr == "ui"
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
        )

    def binds_self_ui(target: ast.AST, value: ast.AST) -> bool:
        """``ui = self.ui`` or ``a, ui = x, self.ui``."""
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple):
            return any(binds_self_ui(t, v) for t, v in zip(target.elts, value.elts))
        return isinstance(target, ast.Name) and target.id == "ui" and is_compare_ui(value)

    names = set()
    tree = ast.parse(section_file.read_text(encoding="utf-8"))
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        binds_ui = any(
            isinstance(node, ast.Assign) and any(binds_self_ui(target, node.value) for target in node.targets)
            for node in ast.walk(function)
        )
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and (
                is_compare_ui(node.value) or (binds_ui and isinstance(node.value, ast.Name) and node.value.id == "ui")
            ):
                names.add(node.attr)
    return names


def test_compare_ui_loads_and_has_every_widget_the_module_uses(monkeypatch):
    monkeypatch.setattr(module_tests, "UI_FILE", COMPARE_UI)
    loaded = module_tests._load_ui_in_subprocess()
    assert "error" not in loaded, loaded
    used = section_ui_names()
    assert {"compareButton", "baselineVolumeSelector", "followupVolumeSelector", "compareTableView"} <= used
    missing = sorted(used - set(loaded["widgets"]))
    assert not missing, f"compare_section.py uses widgets missing from LungTumorSegCompare.ui: {missing}"
    assert loaded["widgets"]["compareTableView"] == "qMRMLTableView"
    assert loaded["widgets"]["baselineSegmentationSelector"] == "qMRMLNodeComboBox"


def test_the_compare_ui_is_installed_with_the_module():
    text = (module_tests.MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "Resources/UI/${MODULE_NAME}Compare.ui" in text
