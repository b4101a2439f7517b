"""Packaging: the Slicer CMake lists every engine file, console scripts resolve, CI runs the README's tests."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

MODULES = {"LungTumorSeg": "LungTumorSegLib", "LungTumorSegTraining": "LungTumorSegTrainingLib"}


@pytest.mark.parametrize(("module", "lib"), MODULES.items())
def test_cmake_lists_every_python_file_and_registers_the_self_test(module, lib):
    """Every .py of the module folder (module file, engine, widgets, batch script, self-test) is installed."""
    module_dir = ROOT / module
    text = (module_dir / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", module)
    assert "slicerMacroBuildScriptedModule" in text and "WITH_GENERIC_TESTS" in text
    listed = set(re.findall(r"^\s+(\S+\.py)\s*$", text, re.M))
    on_disk = {str(p.relative_to(module_dir)) for p in module_dir.rglob("*.py") if "__pycache__" not in p.parts}
    assert on_disk - listed == set(), f"not listed in {module}/CMakeLists.txt"
    assert listed - on_disk == set(), f"listed but missing in {module}/CMakeLists.txt"
    assert f"{lib}/__init__.py" in listed and f"Testing/Python/{module}SelfTest.py" in listed
    assert "add_subdirectory(Testing)" in text
    assert (module_dir / "Testing" / "CMakeLists.txt").read_text().strip() == "add_subdirectory(Python)"
    tests = (module_dir / "Testing" / "Python" / "CMakeLists.txt").read_text()
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}SelfTest.py)" in tests


def test_top_level_cmake_follows_the_extension_template():
    text = (ROOT / "CMakeLists.txt").read_text()
    for needle in (
        "EXTENSION_HOMEPAGE",
        "find_package(Slicer REQUIRED)",
        "Slicer_EXTENSION_GENERATE_CONFIG",
        "Slicer_EXTENSION_CPACK",
        "add_subdirectory(LungTumorSeg)",
        "add_subdirectory(LungTumorSegTraining)",
    ):
        assert needle in text


@pytest.mark.parametrize("script", ["lungtumorseg", "lungtumorseg-train"])
def test_console_scripts_print_help(script):
    executable = Path(sys.executable).parent / script
    if not executable.exists():
        pytest.skip(f"{script} not installed in this environment")
    completed = subprocess.run([str(executable), "--help"], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "usage:" in completed.stdout


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci and "slicer_api_check.py" in ci
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_the_extension_icon_and_screenshots_are_in_the_top_level_resources():
    """EXTENSION_ICONURL / EXTENSION_SCREENSHOTURLS: raw URLs of this repository (EXTENSION_HOMEPAGE) whose files
    exist in Resources/, as PNG pictures (the icon 128 x 128)."""
    text = (ROOT / "CMakeLists.txt").read_text()
    repository = re.search(r'set\(LUNGTUMORSEG_REPOSITORY "([^"]+)" CACHE STRING', text).group(1)
    assert 'set(EXTENSION_HOMEPAGE "https://github.com/${LUNGTUMORSEG_REPOSITORY}")' in text
    text = text.replace("${LUNGTUMORSEG_REPOSITORY}", repository)
    raw = f"https://raw.githubusercontent.com/{repository}/main/"
    icon = re.search(r'set\(EXTENSION_ICONURL "([^"]+)"\)', text).group(1)
    screenshots = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', text).group(1).split()
    assert len(screenshots) >= 2
    for url in [icon, *screenshots]:
        assert url.startswith(raw + "Resources/"), url
        data = (ROOT / url[len(raw) :]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(data[16:20], "big") >= 128, url
    data = (ROOT / icon[len(raw) :]).read_bytes()
    assert (int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")) == (128, 128)


def test_the_descriptions_name_the_bundled_model_as_it_is():
    """The bundled model is one UNet (its manifest); no text may still promise a U-Net + SwinUNETR ensemble."""
    manifest = json.loads(
        (ROOT / "LungTumorSeg" / "Resources" / "Models" / "lungtumorseg-ensemble" / "manifest.json").read_text()
    )
    assert [m["architecture"] for m in manifest["members"]] == ["UNet"]
    for path in (ROOT / "CMakeLists.txt", ROOT / "LungTumorSeg" / "LungTumorSeg.py", ROOT / "README.md"):
        assert "U-Net + SwinUNETR ensemble" not in path.read_text(), path
    assert "one UNet" in (ROOT / "CMakeLists.txt").read_text()
