"""Installing the engine's Python packages into Slicer's Python, after the user agreed (never at import time).

Torch comes first, through the PyTorch extension when present (it picks the CUDA or CPU build); the rest is
pip-installed with torch and Slicer's own packages pinned, so pip never swaps them (``dependencies.constraints_text``).
"""

from __future__ import annotations

import importlib
import logging
from pathlib import Path

import slicer

from . import dependencies as deps
from .i18n import tr as _


def slicerPackaging():
    """``slicer.packaging`` (Slicer >= 5.12), else None (``hasattr(slicer, "packaging")`` is False until imported)."""
    try:
        import slicer.packaging as packaging
    except ImportError:
        return None
    return packaging


def installTorch(requirement: str) -> None:
    """Install PyTorch with the PyTorch extension (it picks the CUDA or CPU build), else from PyPI.

    light-the-torch, which the PyTorch extension installs first, pins an older pip (Slicer 5.10 ships 25.1.1,
    light-the-torch 0.8 wants < 24.4): Slicer's own pip is put back afterwards (the extension asks pip for
    light-the-torch's requirements again before its next use).
    """
    try:
        import PyTorchUtils
    except ImportError:
        logging.warning("LungTumorSeg: the PyTorch extension is not installed; installing torch from PyPI")
        slicer.util.pip_install([requirement])
        return
    pipBefore = deps.installed_version("pip")
    torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
        askConfirmation=False, torchVersionRequirement=deps.requirement_specifier(requirement)
    )
    importlib.invalidate_caches()
    restore = deps.pip_to_restore(pipBefore, deps.installed_version("pip"))
    if restore:
        logging.info(f"LungTumorSeg: light-the-torch downgraded pip; restoring Slicer's {restore}")
        slicer.util.pip_install([restore])
    if torch is None:
        raise RuntimeError(
            _(
                "PyTorch was not installed: the PyTorch extension's installer returned nothing. Install PyTorch "
                "in the PyTorch Utils module (requirement {0}), then try again."
            ).format(requirement)
        )


def installEngineDependencies(plan: deps.InstallPlan, requester: str = "LungTumorSeg") -> None:
    """Torch first (so pip never picks its own torch build), then the rest with torch and Slicer's packages pinned."""
    if plan.torch:
        installTorch(plan.torch)
    if not plan.pip:
        return
    constraints = Path(slicer.app.temporaryPath) / "LungTumorSeg-constraints.txt"
    constraints.write_text(deps.constraints_text(), encoding="utf-8")
    packaging = slicerPackaging()
    if packaging is not None:
        packaging.pip_ensure(
            plan.pip, constraints=str(constraints), prompt_install=False, requester=requester, skip_in_testing=False
        )
    else:
        slicer.util.pip_install(deps.pip_install_arguments(plan.pip, constraints))


def ensureEngineDependencies(askConfirmation: bool = True, requester: str = "LungTumorSeg") -> bool:
    """Install what the engine lacks after the user agrees (never at import time); True when all is present."""
    plan = deps.plan_install()
    for mismatch in plan.provided_mismatch:
        logging.warning(f"LungTumorSeg: Slicer's own package does not meet {mismatch}; it is not replaced")
    if not plan.needed:
        return True
    message = _(
        "{requester} needs Python packages that are not installed in Slicer yet: {names}.\n\n"
        "Install them now? PyTorch comes through the PyTorch extension (about 200 MB for the CPU build, 2-3 GB "
        "with CUDA); MONAI and the rest are about 50 MB. It takes from a few minutes to about 15 minutes, and "
        "Slicer does not respond meanwhile."
    ).format(requester=requester, names=", ".join(plan.missing_names()))
    details = "\n".join(([plan.torch] if plan.torch else []) + plan.pip)
    if askConfirmation and not slicer.util.confirmOkCancelDisplay(message, detailedText=details):
        return False
    try:
        with slicer.util.tryWithErrorDisplay(_("Installing the Python packages failed."), waitCursor=True):
            installEngineDependencies(plan, requester)
    except Exception:  # noqa: BLE001 - tryWithErrorDisplay showed it; the caller gets False
        logging.exception("LungTumorSeg: installing the dependencies failed")
        return False
    importlib.invalidate_caches()
    remaining = deps.plan_install()
    if remaining.needed:
        slicer.util.errorDisplay(
            _("Still missing after the installation: {0}. See docs/slicer-module.md, 'When the install fails'.").format(
                ", ".join(remaining.missing_names())
            )
        )
        return False
    return True
