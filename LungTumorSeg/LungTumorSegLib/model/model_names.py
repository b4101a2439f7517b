"""Which bundles are installed and which is the default, and what to say about an empty result (torch-free:
shared by the engine and the Slicer modules, whose panels must open before torch is installed)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..core.paths import BUNDLED_MODELS_DIR

MANIFEST = "manifest.json"

USER_MODELS_ENV = "LUNGTUMORSEG_MODELS"

# preferred default bundles, best first: the full ensemble once it ships, then the UNet release
DEFAULT_MODELS = ("lungtumorseg-ensemble", "lungtumorseg-unet")
DEMO_GTV_DICE_FOR_LOCATION_CHECK = 0.5
NO_LESION_HINT = (
    "no lesion found. A model can miss tumours unlike its training data (the bundled one misses large "
    "central tumours): check the probability and entropy maps, and the model card."
)


def user_models_dir() -> Path:
    """Folder for user-installed bundles (``$LUNGTUMORSEG_MODELS`` or ``~/.lungtumorseg/models``)."""
    return Path(os.environ.get(USER_MODELS_ENV, Path.home() / ".lungtumorseg" / "models"))


def list_bundles(search_dirs: list[Path] | None = None) -> dict[str, Path]:
    """Bundles found by name: bundled ones first, user-installed ones override them."""
    found: dict[str, Path] = {}
    for folder in search_dirs or [BUNDLED_MODELS_DIR, user_models_dir()]:
        if folder.is_dir():
            for manifest_path in sorted(folder.glob(f"*/{MANIFEST}")):
                found[manifest_path.parent.name] = manifest_path.parent
    return found


def default_model(names: Iterable[str]) -> str | None:
    """The default bundle among ``names``: the first of DEFAULT_MODELS present, else the first name."""
    names = list(names)
    return next((name for name in DEFAULT_MODELS if name in names), names[0] if names else None)


def finds_demo_tumour(manifest: Mapping[str, Any]) -> bool:
    """True when the bundle's manifest reports that it segments the whole-volume 4D-Lung GTV (Dice >= 0.5).

    The demo CT is derived from that case, so only such a model is expected to find its tumour.
    """
    if manifest.get("placeholder"):
        return False
    dice = manifest.get("metrics", {}).get("whole_volume", {}).get("gtv_dice")
    return dice is not None and float(dice) >= DEMO_GTV_DICE_FOR_LOCATION_CHECK
