"""The engine's Python dependencies: one declared list, checked and turned into an install plan for Slicer.

The single source is ``pyproject.toml``'s ``[project] dependencies``: ``pip install`` reads it for the command
line, and the Slicer modules read it at run time (an installed extension ships a copy next to this file, a source
checkout has it two folders up). Nothing here imports slicer, qt or torch, and the file runs on Python 3.9
(Slicer 5.4 to 5.8).

In Slicer, packages that Slicer's own Python already ships are never installed or replaced (they are pinned in a
constraints file instead), PyTorch is installed through the PyTorch extension, and pip installs the rest.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.paths import LIB_DIR

PYPROJECT = "pyproject.toml"
TORCH = "torch"
# The torch the module asks the PyTorch extension for in Slicer: pyproject's requirement plus this bound.
# Slicer/light-the-torch#176 (open, July 2026): on Slicer 5.10+ (Python 3.12) light-the-torch picks torch 2.13,
# whose PEP 639 license-files packaging breaks the install on Windows (a Slicer reinstall was needed); installs
# with "<2.13.0" work (torch 2.12.1). Slicer 5.8 (Python 3.9) gets an older torch anyway. Only new installs get
# the bound: a torch that is already there is kept, and pip (make, CI) reads pyproject, which admits 2.13.0.
SLICER_TORCH_BOUND = "<2.13"
# Distributions that Slicer's Python ships (SuperBuild/External_python-*.cmake of Slicer 5.4 to 5.12; VTK and
# SimpleITK are built with Slicer and have no pip metadata): the modules never pip-install or replace them.
SLICER_PROVIDED = (
    "numpy",
    "scipy",
    "vtk",
    "simpleitk",
    "pydicom",
    "pillow",
    "requests",
    "packaging",
    "six",
    "dicomweb-client",
    "urllib3",
    "certifi",
    "idna",
    "charset-normalizer",
)


def canonical_name(name: str) -> str:
    """PEP 503 normalised distribution name (``PyYAML`` → ``pyyaml``, ``dicomweb_client`` → ``dicomweb-client``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def find_pyproject(lib_dir: Path = LIB_DIR) -> Path:
    """The declared list: the copy shipped next to the engine (installed extension) or the checkout's own file."""
    candidates = (lib_dir / PYPROJECT, lib_dir.parent.parent / PYPROJECT)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(f"{PYPROJECT} not found (looked in {', '.join(str(c.parent) for c in candidates)})")


def _toml_loads(text: str) -> dict:
    """Parse TOML with tomllib (Python >= 3.11), else tomli, else the copy pip vendors (Slicer 5.4-5.10)."""
    for name in ("tomllib", "tomli", "pip._vendor.tomli"):
        try:
            return importlib.import_module(name).loads(text)
        except ImportError:
            continue
    raise ImportError("no TOML parser: install tomli")


def read_dependencies(path: Path | str) -> list[str]:
    """The ``[project] dependencies`` requirement strings of a pyproject.toml (ValueError when there are none)."""
    data = _toml_loads(Path(path).read_text(encoding="utf-8"))
    dependencies = data.get("project", {}).get("dependencies")
    if not isinstance(dependencies, list) or not dependencies:
        raise ValueError(f"{path}: no [project] dependencies list")
    return [str(d) for d in dependencies]


def declared_requirements(lib_dir: Path = LIB_DIR) -> list[str]:
    """The engine's runtime requirements, as declared (e.g. ``["torch>=2.3", "monai[einops]>=1.4,<1.7", ...]``)."""
    return read_dependencies(find_pyproject(lib_dir))


# ---------------------------------------------------------------- checks


def installed_version(name: str) -> str | None:
    """Installed version of a distribution, None when absent."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def requirement_satisfied(requirement: str, _seen: set[str] | None = None) -> bool:
    """True when the distribution is installed at an accepted version, with the requirements of its extras.

    ``monai[einops]>=1.4`` needs monai >= 1.4 *and* einops (MONAI's SwinUNETR calls einops at run time).
    Requirements whose environment marker does not apply here count as satisfied.
    """
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return True
    seen = set() if _seen is None else _seen
    if requirement in seen:
        return True
    seen.add(requirement)
    version = installed_version(req.name)
    if version is None or (req.specifier and not req.specifier.contains(version, prereleases=True)):
        return False
    for extra in sorted(req.extras):
        for sub in importlib.metadata.requires(req.name) or []:
            sub_req = Requirement(sub)
            if sub_req.marker is not None and sub_req.marker.evaluate({"extra": extra}):
                sub_req.marker = None
                if not requirement_satisfied(str(sub_req), seen):
                    return False
    return True


def requirement_name(requirement: str) -> str:
    """Canonical distribution name of a requirement string (``monai[einops]>=1.4`` → ``monai``)."""
    from packaging.requirements import Requirement

    return canonical_name(Requirement(requirement).name)


def requirement_specifier(requirement: str) -> str:
    """The version part of a requirement string (``torch>=2.3`` → ``>=2.3``; PyTorchUtils takes it as is)."""
    from packaging.requirements import Requirement

    return str(Requirement(requirement).specifier)


@dataclass
class InstallPlan:
    """What Slicer's Python lacks of the declared requirements.

    Attributes:
        torch: the torch requirement when torch must be installed (through the PyTorch extension), else None;
            the declared one with ``SLICER_TORCH_BOUND``.
        pip: requirement strings for pip (neither torch nor packages Slicer ships).
        provided_mismatch: requirements on packages Slicer ships that Slicer's version does not meet (they are
            reported, never replaced: replacing Slicer's numpy or VTK breaks Slicer).
    """

    torch: str | None = None
    pip: list[str] = field(default_factory=list)
    provided_mismatch: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        """True when something must be installed."""
        return bool(self.torch or self.pip)

    def missing_names(self) -> list[str]:
        """Distribution names to install, for the confirmation prompt."""
        return [requirement_name(r) for r in ([self.torch] if self.torch else []) + self.pip]


def slicer_torch_requirement(requirement: str) -> str:
    """The torch requirement for an install in Slicer: the declared one with ``SLICER_TORCH_BOUND`` added."""
    from packaging.requirements import Requirement

    parsed = Requirement(requirement)
    specifier = ",".join(filter(None, (str(parsed.specifier), SLICER_TORCH_BOUND)))
    return f"{parsed.name}{specifier}"


def pip_to_restore(before: str | None, after: str | None) -> str | None:
    """``pip==<before>`` when an install downgraded Slicer's pip (light-the-torch pins an older one), else None."""
    from packaging.version import InvalidVersion, Version

    if not before or not after:
        return None
    try:
        return f"pip=={before}" if Version(after) < Version(before) else None
    except InvalidVersion:
        return None


def plan_install(requirements: list[str] | None = None) -> InstallPlan:
    """Split the unmet declared requirements into torch, pip and Slicer-provided ones."""
    plan = InstallPlan()
    for requirement in declared_requirements() if requirements is None else requirements:
        if requirement_satisfied(requirement):
            continue
        name = requirement_name(requirement)
        if name == TORCH:
            plan.torch = slicer_torch_requirement(requirement)
        elif name in SLICER_PROVIDED:
            version = installed_version(name)
            if version is not None:  # absent (VTK, SimpleITK: no pip metadata) means built with Slicer
                plan.provided_mismatch.append(f"{requirement} (Slicer has {version})")
        else:
            plan.pip.append(requirement)
    return plan


def constraints_text(extra_pins: dict[str, str] | None = None) -> str:
    """A pip constraints file pinning what pip must not replace: the packages Slicer ships, and torch.

    Torch is pinned to the installed build so that pip never swaps the PyTorch extension's CUDA/CPU build for
    another one while installing MONAI.
    """
    pins = {name: installed_version(name) for name in (*SLICER_PROVIDED, TORCH)}
    pins.update(extra_pins or {})
    return "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()) if version)


def pip_install_arguments(requirements: list[str], constraints_file: Path | str) -> list[str]:
    """``slicer.util.pip_install`` arguments as a list (a string goes through shlex, which breaks Windows paths)."""
    return [*requirements, "-c", str(constraints_file)]
