"""Source-level contracts of the two Slicer module files that pytest can check without Slicer.

What they do in Slicer is covered by the modules' self-tests (LungTumorSegTest, LungTumorSegTrainingTest); these
tests keep the Slicer-facing rules of issue 13 from regressing where no Slicer runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT

MODULES = {
    "LungTumorSeg": ROOT / "LungTumorSeg" / "LungTumorSeg.py",
    "LungTumorSegTraining": ROOT / "LungTumorSegTraining" / "LungTumorSegTraining.py",
}
ENGINE_PACKAGES = ("LungTumorSegLib", "LungTumorSegTrainingLib")
# what a stock Slicer lacks before the first install (import names of the install plan's distributions)
NOT_IN_STOCK_SLICER = ("torch", "monai", "nibabel", "nrrd", "safetensors", "tqdm", "matplotlib", "tensorboard")


# The Slicer-facing code of each module: its module file, its Slicer glue in the Lib and its panel sections.
GLUE = {
    "LungTumorSeg": [
        *sorted((ROOT / "LungTumorSeg" / "LungTumorSegLib" / "slicer_glue").glob("*.py")),
        *sorted((ROOT / "LungTumorSeg" / "LungTumorSegWidgets").glob("*.py")),
    ],
    "LungTumorSegTraining": sorted(
        (ROOT / "LungTumorSegTraining" / "LungTumorSegTrainingLib" / "slicer_glue").glob("*.py")
    ),
}


def tree(module: str) -> ast.Module:
    """The module file and its glue as one syntax tree (top-level statements of every file)."""
    body = []
    for path in [MODULES[module], *GLUE[module]]:
        body += ast.parse(path.read_text(encoding="utf-8")).body
    return ast.Module(body=body, type_ignores=[])


def calls(module: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree(module)) if isinstance(node, ast.Call)]


def methods(module: str) -> dict[str, dict[str, ast.FunctionDef]]:
    return {
        node.name: {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
        for node in tree(module).body
        if isinstance(node, ast.ClassDef)
    }


def setup_time_functions(module: str) -> list[ast.FunctionDef]:
    """The widget's setup() and every method it reaches through self.X(...) and self.logic.X(...) calls."""
    classes = methods(module)
    widget = classes[f"{module}Widget"]
    logic = {**classes.get("SegmentationLogic", {}), **classes.get("TrainingLogic", {}), **classes[f"{module}Logic"]}
    seen, todo, found = set(), [("widget", "setup")], []
    while todo:
        owner, name = todo.pop()
        table = widget if owner == "widget" else logic
        if (owner, name) in seen or name not in table:
            continue
        seen.add((owner, name))
        found.append(table[name])
        for node in ast.walk(table[name]):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                target = ast.unparse(node.func.value)
                if target == "self":
                    todo.append((owner, node.func.attr))
                elif target in ("self.logic", f"{module}Logic"):
                    todo.append(("logic", node.func.attr))
            elif isinstance(node, ast.Assign) and ast.unparse(node.value).startswith(f"{module}Logic("):
                todo.append(("logic", "__init__"))
    return found


def engine_imports(nodes: list[ast.AST]) -> list[tuple[str, str | None]]:
    """(module, imported name or None) of every engine import in ``nodes``."""
    found = set()
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ENGINE_PACKAGES:
                found.update((node.module, a.name) for a in node.names)
            elif isinstance(node, ast.Import):
                found.update((a.name, None) for a in node.names if a.name.split(".")[0] in ENGINE_PACKAGES)
    return sorted(found, key=lambda item: (item[0], item[1] or ""))


@pytest.mark.parametrize("module", MODULES)
def test_the_panel_opens_before_torch_and_monai_are_installed(module: str, tmp_path: Path):
    """setup() (and what it calls) imports only engine parts that work in a stock Slicer (point 2).

    The Logic's MRML code imports ``slicer``: here that is slicer-core's (cp311, the dev extra).
    """
    pytest.importorskip("slicer", reason="slicer-core (Python 3.11) provides the slicer package the Logic imports")
    top_level = [n for n in tree(module).body if isinstance(n, (ast.Import, ast.ImportFrom))]
    imports = engine_imports(top_level + setup_time_functions(module))
    code = textwrap.dedent(
        f"""
        import importlib, importlib.abc, json, sys
        class StockSlicer(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {NOT_IN_STOCK_SLICER!r}:
                    raise ModuleNotFoundError(f"No module named {{name!r}} (not in a stock Slicer)")
        sys.meta_path.insert(0, StockSlicer())
        for module, name in {imports!r}:
            imported = importlib.import_module(module)
            if name is not None and not hasattr(imported, name):
                importlib.import_module(f"{{module}}.{{name}}")
        from LungTumorSegLib.slicer_glue import segment_helpers as slicer_helpers
        from LungTumorSegLib.model import model_names
        from LungTumorSegTrainingLib.slicer_glue import run_monitor, train_commands
        models = slicer_helpers.available_models()
        manifest = slicer_helpers.read_manifest(models[model_names.default_model(models)])
        print(json.dumps({{
            "models": sorted(models), "members": slicer_helpers.describe_members(manifest),
            "defaults": slicer_helpers.model_output_defaults(manifest).min_lesion_ml,
            "modelsDir": str(model_names.user_models_dir()),
            "runs": len(run_monitor.discover_runs({str(tmp_path)!r})),
            "command": train_commands.training_commands(train_commands.TrainSettings(data=["d"], output_dir="o"))[0][3],
        }}))
        """
    )
    env = {"PYTHONPATH": f"{ROOT / 'LungTumorSeg'}:{ROOT / 'LungTumorSegTraining'}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert "lungtumorseg-ensemble" in shown["models"] and shown["defaults"] == 0.05
    assert shown["command"] == "train" and shown["runs"] == 0
    if module == "LungTumorSegTraining":  # setup() shows the models folder: modelsDir() must be torch-free
        assert ("LungTumorSegLib.model.model_names", "user_models_dir") in imports, imports


def test_the_stock_slicer_blocker_really_blocks(tmp_path: Path):
    """The check above would pass vacuously if the blocker did not stop torch: make it import the old path."""
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys
        class StockSlicer(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {NOT_IN_STOCK_SLICER!r}:
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, StockSlicer())
        import LungTumorSegLib.model.bundle  # what modelsDir() imported before: needs torch
        """
    )
    env = {"PYTHONPATH": str(ROOT / "LungTumorSeg"), "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode != 0 and "torch" in out.stderr


def test_the_training_panel_asks_for_the_packages_before_validating_training_and_installing():
    widget = methods("LungTumorSegTraining")["LungTumorSegTrainingWidget"]
    for name in ("onValidate", "onResume", "onInstall"):
        source = ast.unparse(widget[name])
        assert "self.logic.ensureDependencies()" in source, name
    assert "self.onValidate()" in ast.unparse(widget["onStart"])


@pytest.mark.parametrize("module", MODULES)
def test_pip_install_always_gets_a_list(module: str):
    """A string goes through shlex.split (POSIX rules): Windows paths lose their backslashes (point 3)."""
    found = [c for c in calls(module) if ast.unparse(c.func).endswith("pip_install")]
    for call in found:
        argument = call.args[0]
        assert isinstance(argument, ast.List) or ast.unparse(argument).startswith("deps.pip_install_arguments("), (
            ast.unparse(call)
        )
    assert found or module == "LungTumorSegTraining"


@pytest.mark.parametrize("module", MODULES)
def test_the_category_is_translated_as_the_template_does(module: str):
    assignments = [
        n
        for n in ast.walk(tree(module))
        if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]).endswith("categories")
    ]
    assert [ast.unparse(a.value) for a in assignments] == ["[translate('qSlicerAbstractCoreModule', 'Segmentation')]"]


def test_slicer_packaging_is_imported_not_probed():
    """``hasattr(slicer, "packaging")`` is False until something imports it (point 14)."""
    probes = [ast.unparse(c) for c in calls("LungTumorSeg") if ast.unparse(c.func) == "hasattr"]
    assert not [p for p in probes if "packaging" in p], probes
    function = methods_of_module("LungTumorSeg")["slicerPackaging"]
    (guard,) = [n for n in ast.walk(function) if isinstance(n, ast.Try)]
    assert ast.unparse(guard.body[0]) == "import slicer.packaging as packaging"
    assert ast.unparse(guard.handlers[0].type) == "ImportError"
    install = ast.unparse(methods_of_module("LungTumorSeg")["installEngineDependencies"])
    assert "deps.constraints_text()" in install and "constraints=str(constraints)" in install


def methods_of_module(module: str) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in tree(module).body if isinstance(n, ast.FunctionDef)}


def test_install_failures_are_shown_and_a_missing_torch_is_named():
    functions = methods_of_module("LungTumorSeg")
    ensure = ast.unparse(functions["ensureEngineDependencies"])
    assert "slicer.util.tryWithErrorDisplay(" in ensure and "waitCursor=True" in ensure
    assert "return False" in ensure
    torch = ast.unparse(functions["installTorch"])
    assert "if torch is None:" in torch and "raise RuntimeError" in torch


def test_the_apply_button_follows_the_parameter_node():
    """The selector's signal arrives before the wrapper writes the value: observe the node (point 10)."""
    source = ast.unparse(methods("LungTumorSeg")["LungTumorSegWidget"]["setParameterNode"])
    assert "self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)" in source
    assert "self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGuiState)" in source


def test_a_scene_close_cancels_and_resets():
    widget = ast.unparse(methods("LungTumorSeg")["LungTumorSegWidget"]["onSceneStartClose"])
    assert "self.logic.cancel()" in widget and "self.resetResults()" in widget
    logic = methods("LungTumorSeg")["EngineRunLogic"]
    assert "StartCloseEvent, self._onSceneStartClose" in ast.unparse(logic["_launch"])
    assert "GetScene() is not slicer.mrmlScene" in ast.unparse(logic["_endRun"])


SELF_TESTS = {
    "LungTumorSeg": ROOT / "LungTumorSeg" / "Testing" / "Python" / "LungTumorSegSelfTest.py",
    "LungTumorSegTraining": ROOT / "LungTumorSegTraining" / "Testing" / "Python" / "LungTumorSegTrainingSelfTest.py",
}
# self-tests that need none of the packages the first run installs
WITHOUT_ENGINE = {"test_DependenciesInstalled", "test_SampleDataOffersTheDemos", "test_PanelFollowsTheSceneAndTheModel"}


@pytest.mark.parametrize("module", SELF_TESTS)
def test_each_self_test_makes_sure_of_its_packages_as_ctest_runs_them_alone(module: str):
    """slicer_add_python_unittest runs the test_* methods alphabetically and never runTest (Slicer's
    CMake/SlicerMacroPythonTesting.cmake -> slicer.testing.runUnitTest): a test that needs torch must not rely on an
    earlier test having installed it."""
    tree = ast.parse(SELF_TESTS[module].read_text(encoding="utf-8"))
    tests = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    assert tests
    for test in tests:
        if test.name in WITHOUT_ENGINE:
            continue
        statements = [ast.unparse(n) for n in test.body if isinstance(n, ast.Expr)]
        assert "self.requireEngine()" in statements, f"{module}.{test.name} does not make sure of its packages"
    calls = {ast.unparse(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    assert "slicer.util.selectModule" not in calls, "selectModule raises without a main window (headless runs)"
    cmake = (SELF_TESTS[module].parent / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}SelfTest.py)" in cmake


def test_reload_and_test_runs_the_package_check_first():
    tree = ast.parse(SELF_TESTS["LungTumorSeg"].read_text(encoding="utf-8"))
    (run_test,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "runTest"]
    assert "names = ['test_DependenciesInstalled']" in ast.unparse(run_test)
