"""The layout of docs/architecture.md holds: engine subpackages import only lower layers, no import circles,
only the Slicer glue touches Slicer (and never Qt at import time), and no module file is over 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

LIBS = {
    "LungTumorSegLib": ROOT / "LungTumorSeg" / "LungTumorSegLib",
    "LungTumorSegTrainingLib": ROOT / "LungTumorSegTraining" / "LungTumorSegTrainingLib",
}
# Lowest first; a subpackage may import those before it (and the package's own top-level modules).
LAYERS = {
    "LungTumorSegLib": [
        "core",
        "io",
        "model",
        "measurements",
        "segmentation",
        "clinical",
        "reporting",
        "followup",
        "cli",
        "slicer_glue",
    ],
    "LungTumorSegTrainingLib": ["data", "training", "evaluation", "cli", "slicer_glue"],
}
SLICER_APPLICATION = ("slicer", "qt", "ctk", "ScreenCapture", "SampleData", "PyTorchUtils")
MAX_LINES = 600


def module_name(path: Path, package: str) -> str:
    parts = list(path.relative_to(LIBS[package]).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([package, *parts])


def import_time_targets(path: Path, package: str) -> set[str]:
    """Engine modules that ``path`` imports when it is imported (module level; TYPE_CHECKING blocks aside)."""
    name = module_name(path, package)
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom):
            module = ".".join(base[: len(base) - node.level + 1] + [node.module or ""]) if node.level else node.module
            module = module.rstrip(".")
            if not module.startswith(package):
                continue
            for alias in node.names:
                candidate = f"{module}.{alias.name}"
                submodule = LIBS[package].parent / (candidate.replace(".", "/") + ".py")
                targets.add(candidate if submodule.exists() else module)
        elif isinstance(node, ast.Import):
            targets |= {a.name for a in node.names if a.name.startswith(package)}
    return targets


def graph(package: str) -> dict[str, set[str]]:
    return {
        module_name(path, package): import_time_targets(path, package)
        for path in LIBS[package].rglob("*.py")
        if "__pycache__" not in path.parts
    }


def layer(module: str, package: str) -> int | None:
    """Index of the module's subpackage in LAYERS; None for the package's top-level modules."""
    parts = module.split(".")
    return LAYERS[package].index(parts[1]) if len(parts) > 2 else None


@pytest.mark.parametrize("package", LIBS)
def test_the_subpackages_are_the_documented_layers(package):
    on_disk = {p.name for p in LIBS[package].iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert on_disk == set(LAYERS[package])
    documented = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert all(f"`{name}`" in documented for name in LAYERS[package])


@pytest.mark.parametrize("package", LIBS)
def test_subpackages_import_only_lower_layers(package):
    wrong = []
    for module, targets in graph(package).items():
        own = layer(module, package)
        if own is None:
            continue
        for target in targets:
            other = layer(target, package)
            if other is not None and other > own:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layer order of docs/architecture.md:\n" + "\n".join(sorted(wrong))


@pytest.mark.parametrize("package", LIBS)
def test_no_import_circle(package):
    edges = graph(package)
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (circle := visit(target)):
                return circle
        state[module] = 2
        path.pop()
        return None

    for module in sorted(edges):
        if module not in state:
            circle = visit(module)
            assert circle is None, "import circle: " + " -> ".join(circle)


def test_the_checks_see_a_circle_and_a_layer_break(tmp_path, monkeypatch):
    """The two checks above on a small package that breaks both rules (a check that cannot fail proves nothing)."""
    lib = tmp_path / "LungTumorSegLib"
    for folder in ("core", "io"):
        (lib / folder).mkdir(parents=True)
        (lib / folder / "__init__.py").write_text("")
    (lib / "__init__.py").write_text("")
    (lib / "core" / "a.py").write_text("from ..io import b\n")
    (lib / "io" / "b.py").write_text("from ..core.a import x\n")
    monkeypatch.setitem(LIBS, "LungTumorSegLib", lib)
    with pytest.raises(AssertionError, match="import circle"):
        test_no_import_circle("LungTumorSegLib")
    with pytest.raises(AssertionError, match="core.a -> LungTumorSegLib.io.b"):
        test_subpackages_import_only_lower_layers("LungTumorSegLib")


@pytest.mark.parametrize("package", LIBS)
def test_only_the_slicer_glue_imports_slicer_and_none_imports_qt_at_import_time(package):
    wrong = []
    for path in LIBS[package].rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        glue = "slicer_glue" in path.parts
        module_level = set(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in SLICER_APPLICATION and not glue:
                    wrong.append(f"{path.relative_to(ROOT)}: imports {name}")
                if top in ("qt", "ctk") and node in module_level:
                    wrong.append(f"{path.relative_to(ROOT)}: imports {name} at import time")
    assert not wrong, "\n".join(wrong)


def test_no_module_file_is_over_600_lines():
    """The module files stay thin and every file keeps to one concern (the self-tests in Testing/ aside)."""
    long = [
        f"{path.relative_to(ROOT)}: {n} lines"
        for module in ("LungTumorSeg", "LungTumorSegTraining")
        for path in (ROOT / module).rglob("*.py")
        if "Testing" not in path.relative_to(ROOT / module).parts
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not long, "\n".join(long)
