"""The one dependency list: what the engine imports is declared, and the Slicer modules install what is declared."""

from __future__ import annotations

import ast
import importlib.metadata
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from LungTumorSegLib.slicer_glue import dependencies as deps

ENGINE_PACKAGES = {
    "LungTumorSegLib": ROOT / "LungTumorSeg" / "LungTumorSegLib",
    "LungTumorSegTrainingLib": ROOT / "LungTumorSegTraining" / "LungTumorSegTrainingLib",
}
# Distributions the engine needs without importing them by name: (imported module, imported name) -> distribution
RUNTIME_NEEDS = {
    ("torch.utils.tensorboard", "SummaryWriter"): "tensorboard",  # the trainer's TensorBoard writer
    ("monai.networks.nets", "SwinUNETR"): "einops",  # SwinUNETR's forward pass calls einops.rearrange
}


def pyproject_dependencies() -> list[str]:
    return deps._toml_loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]


def declared_names() -> set[str]:
    return {deps.requirement_name(r) for r in pyproject_dependencies()}


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside ``try: ... except ImportError`` (an optional import) or ``if TYPE_CHECKING:``."""
    child, parent = node, parents.get(node)
    while parent is not None:
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
                    return True
        if isinstance(parent, ast.If) and "TYPE_CHECKING" in ast.unparse(parent.test):
            return True
        child, parent = parent, parents.get(parent)
    return False


def engine_imports() -> dict[tuple[str, str | None], list[str]]:
    """Every unguarded absolute import of the engine packages: (module, imported name or None) -> files."""
    found: dict[tuple[str, str | None], list[str]] = {}
    for folder in ENGINE_PACKAGES.values():
        for path in sorted(folder.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
            for node in ast.walk(tree):
                if _guarded(node, parents):
                    continue
                if isinstance(node, ast.Import):
                    keys = [(alias.name, None) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    keys = [(node.module, alias.name) for alias in node.names]
                else:
                    continue
                for key in keys:
                    found.setdefault(key, []).append(path.name)
    return found


# Modules of Slicer's own application (the Slicer glue's MRML Logic runs there; test_architecture keeps them there).
SLICER_APPLICATION = ("slicer", "qt", "ctk", "ScreenCapture", "SampleData", "PyTorchUtils")


def third_party(module: str) -> bool:
    top = module.split(".")[0]
    return (
        top not in sys.stdlib_module_names
        and top not in ENGINE_PACKAGES
        and top not in SLICER_APPLICATION
        and top != "__future__"
    )


def closure(requirements: list[str]) -> set[str]:
    """Canonical names of the declared distributions and everything their installed metadata requires."""
    from packaging.requirements import Requirement

    names: set[str] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        name = deps.canonical_name(req.name)
        if name in names:
            continue
        names.add(name)
        for sub in importlib.metadata.requires(req.name) or []:
            sub_req = Requirement(sub)
            extras = req.extras or {""}
            if sub_req.marker is None or any(sub_req.marker.evaluate({"extra": e}) for e in extras):
                todo.append(sub_req)
    return names


# ---------------------------------------------------------------- the one list


def test_the_declared_list_is_pyprojects():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11: an independent parse of the same file
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    assert deps.declared_requirements() == pyproject_dependencies() == expected
    assert deps.find_pyproject() == ROOT / "pyproject.toml"


def test_an_installed_extension_reads_the_copy_next_to_the_engine(tmp_path: Path):
    """The extension's CMake installs pyproject.toml into LungTumorSegLib/; that copy is read there."""
    lib = tmp_path / "lib" / "Slicer-5.8" / "qt-scripted-modules" / "LungTumorSegLib"
    lib.mkdir(parents=True)
    shutil.copy(ROOT / "pyproject.toml", lib / "pyproject.toml")
    assert deps.find_pyproject(lib) == lib / "pyproject.toml"
    assert deps.declared_requirements(lib) == pyproject_dependencies()
    with pytest.raises(FileNotFoundError, match="pyproject.toml not found"):
        deps.find_pyproject(tmp_path / "elsewhere" / "LungTumorSegLib")
    cmake = (ROOT / "LungTumorSeg" / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "pyproject.toml" in cmake and "Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/LungTumorSegLib" in cmake


def test_every_third_party_import_of_the_engine_is_declared():
    """A package the engine imports but pyproject does not declare would be missing in Slicer (and after pip)."""
    providers = importlib.metadata.packages_distributions()
    declared = declared_names()
    undeclared = []
    for (module, _name), files in sorted(engine_imports().items(), key=lambda item: (item[0][0], item[0][1] or "")):
        if not third_party(module):
            continue
        top = module.split(".")[0]
        dists = {deps.canonical_name(d) for d in providers.get(top, [])}
        if not dists:
            undeclared.append(f"{module} ({', '.join(sorted(set(files)))}): not installed, not declared")
        elif deps.canonical_name(top) not in declared and not dists & declared:
            undeclared.append(f"{module} ({', '.join(sorted(set(files)))}): declare {' or '.join(sorted(dists))}")
    assert not undeclared, "add to pyproject.toml [project] dependencies:\n" + "\n".join(undeclared)


def test_indirect_runtime_needs_are_installed_by_the_declared_list():
    imports = engine_imports()
    installed_closure = closure(pyproject_dependencies())
    for (module, name), distribution in RUNTIME_NEEDS.items():
        assert (module, name) in imports, f"the engine no longer imports {name} from {module}: update RUNTIME_NEEDS"
        assert distribution in installed_closure, f"{module}.{name} needs {distribution}: declare it"


def test_the_walker_sees_what_it_must(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The import walker flags a plain import and skips optional ones (a check that cannot fail proves nothing)."""
    lib = tmp_path / "LungTumorSegLib"
    lib.mkdir()
    (lib / "x.py").write_text(
        "import yaml\nfrom skimage import measure\n"
        "try:\n    import psutil\nexcept ImportError:\n    psutil = None\n"
        "def f():\n    import nrrd\n",
        encoding="utf-8",
    )
    monkeypatch.setitem(ENGINE_PACKAGES, "LungTumorSegLib", lib)
    monkeypatch.setitem(ENGINE_PACKAGES, "LungTumorSegTrainingLib", tmp_path / "none")
    found = {module for module, _ in engine_imports()}
    assert found == {"yaml", "skimage", "nrrd"}
    with pytest.raises(AssertionError, match="yaml"):
        test_every_third_party_import_of_the_engine_is_declared()


# ---------------------------------------------------------------- what Slicer installs


def test_requirements_are_checked_with_versions_and_extras():
    for requirement in pyproject_dependencies():
        assert deps.requirement_satisfied(requirement), requirement
    assert deps.requirement_satisfied("monai[einops]")
    assert not deps.requirement_satisfied("monai[pyyaml]")  # pyyaml is not installed here
    assert not deps.requirement_satisfied("numpy>=999")
    assert not deps.requirement_satisfied("no-such-distribution-lts>=1.0")
    assert deps.requirement_satisfied('no-such-distribution-lts; sys_platform == "nonexistent-os"')


def test_a_stock_slicer_gets_torch_from_the_extension_and_the_rest_from_pip(monkeypatch: pytest.MonkeyPatch):
    """Stock Slicer ships numpy, scipy and VTK (no pip metadata): torch, MONAI with einops, matplotlib and
    tensorboard (the packages the first installer forgot) are installed; numpy, scipy and VTK never are."""
    slicer_ships = {"numpy": "1.26.4", "scipy": "1.13.0", "packaging": "24.0"}
    monkeypatch.setattr(deps, "requirement_satisfied", lambda r: deps.requirement_name(r) in slicer_ships)
    monkeypatch.setattr(deps, "installed_version", slicer_ships.get)
    plan = deps.plan_install(pyproject_dependencies())
    assert plan.torch == "torch>=2.3,<2.13"  # the PyTorch extension is asked for a torch below 2.13 (see below)
    names = {deps.requirement_name(r) for r in plan.pip}
    assert {"monai", "matplotlib", "tensorboard", "nibabel", "pynrrd", "safetensors", "tqdm"} <= names
    assert not names & {"torch", "numpy", "scipy", "vtk", "packaging"}
    assert any(r.startswith("monai[einops]") for r in plan.pip)
    assert plan.provided_mismatch == [] and plan.needed
    assert plan.missing_names()[0] == "torch"


def test_slicer_packages_that_are_too_old_are_reported_not_replaced(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(deps, "requirement_satisfied", lambda r: False)
    monkeypatch.setattr(deps, "installed_version", {"pydicom": "2.4.4", "numpy": "1.25.1"}.get)
    plan = deps.plan_install(["pydicom>=3.0", "numpy>=2", "vtk>=9.3", "nibabel>=5.0"])
    assert plan.pip == ["nibabel>=5.0"] and plan.torch is None
    assert plan.provided_mismatch == ["pydicom>=3.0 (Slicer has 2.4.4)", "numpy>=2 (Slicer has 1.25.1)"]


def test_slicer_asks_for_torch_below_2_13_while_pip_and_ci_keep_2_13():
    """Slicer/light-the-torch#176: torch 2.13 through the PyTorch extension breaks Slicer 5.10+ on Windows.

    The bound is added only for installs in Slicer; pyproject (make, CI: torch 2.13.0 from this disk) admits 2.13.
    """
    from packaging.requirements import Requirement

    (declared,) = [r for r in pyproject_dependencies() if deps.requirement_name(r) == "torch"]
    assert Requirement(declared).specifier.contains("2.13.0"), "pyproject must keep admitting torch 2.13.0"
    asked = Requirement(deps.slicer_torch_requirement(declared))
    assert not asked.specifier.contains("2.13.0") and asked.specifier.contains("2.12.1")
    assert not asked.specifier.contains("2.2.0"), "the declared lower bound stays"
    assert deps.requirement_specifier(deps.slicer_torch_requirement(declared)) in (">=2.3,<2.13", "<2.13,>=2.3")
    assert deps.slicer_torch_requirement("torch") == "torch<2.13"
    assert deps.requirement_satisfied(declared), "a torch that is already there (2.13 here) is kept, not replaced"


def test_slicers_pip_is_put_back_after_light_the_torch_downgraded_it():
    assert deps.pip_to_restore("25.1.1", "24.3.1") == "pip==25.1.1"  # Slicer 5.10's pip, light-the-torch 0.8's pin
    assert deps.pip_to_restore("24.0", "24.0") is None and deps.pip_to_restore("24.0", "25.0") is None
    assert deps.pip_to_restore(None, "24.0") is None and deps.pip_to_restore("24.0", "garbage") is None


def test_nothing_to_install_in_this_environment():
    assert not deps.plan_install().needed


def test_constraints_pin_torch_and_slicers_packages():
    text = deps.constraints_text()
    lines = set(text.splitlines())
    assert f"torch=={importlib.metadata.version('torch')}" in lines  # e.g. torch==2.13.0+cpu: keeps that build
    assert f"numpy=={importlib.metadata.version('numpy')}" in lines
    assert f"scipy=={importlib.metadata.version('scipy')}" in lines
    assert not any(line.startswith(("monai==", "matplotlib==")) for line in lines)
    assert "torch==9.9.9\n" in deps.constraints_text({"torch": "9.9.9"})


def test_pip_arguments_are_a_list_that_keeps_windows_paths():
    """slicer.util.pip_install shlex-splits a string (POSIX rules): backslashes vanish, spaces split the path."""
    constraints = r"C:\Users\Ann Lee\AppData\Local\Temp\Slicer\LungTumorSeg-constraints.txt"
    args = deps.pip_install_arguments(["monai[einops]>=1.4,<1.7", "nibabel>=5.0"], constraints)
    assert args == ["monai[einops]>=1.4,<1.7", "nibabel>=5.0", "-c", constraints]
    assert shlex.split(" ".join(args)) != args  # what the old string call did to the same arguments
