"""Which installed bundle is the default, and what to say about an empty result (torch-free, shared by the
engine and the Slicer module)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# preferred default bundles, best first: the full ensemble once it ships, then the UNet release
DEFAULT_MODELS = ("lungtumorseg-ensemble", "lungtumorseg-unet")
DEMO_GTV_DICE_FOR_LOCATION_CHECK = 0.5
NO_LESION_HINT = (
    "no lesion found. A model can miss tumours unlike its training data (the bundled one misses large "
    "central tumours): check the probability and entropy maps, and the model card."
)


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
