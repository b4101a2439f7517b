"""Network architectures a bundle may name, built from MONAI."""

from __future__ import annotations

import math
from typing import Any

from monai.networks.nets import SwinUNETR, UNet
from torch import nn

ARCHITECTURES: dict[str, type[nn.Module]] = {"UNet": UNet, "SwinUNETR": SwinUNETR}


def build_network(architecture: str, kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate a MONAI network by name with the bundle's keyword arguments.

    Raises:
        ValueError: unknown architecture or arguments MONAI rejects.
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r} (known: {', '.join(ARCHITECTURES)})")
    kwargs = dict(kwargs)
    kwargs.setdefault("spatial_dims", 3)
    try:
        return ARCHITECTURES[architecture](**kwargs)
    except TypeError as exc:
        raise ValueError(f"{architecture}: invalid arguments {kwargs}: {exc}") from exc


def size_multiple(architecture: str, kwargs: dict[str, Any]) -> int:
    """Patch sides must be a multiple of this for the architecture to run."""
    if architecture == "SwinUNETR":
        return 32
    strides = kwargs.get("strides", ())
    return int(math.prod(int(s) if not isinstance(s, (list, tuple)) else max(s) for s in strides)) or 1


def default_kwargs(architecture: str) -> dict[str, Any]:
    """Sensible CPU-friendly defaults for a binary (2-class softmax) lung tumour model."""
    if architecture == "UNet":
        return {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 2,
            "channels": [16, 32, 64, 128, 256],
            "strides": [2, 2, 2, 2],
            "num_res_units": 2,
            "norm": "instance",
        }
    if architecture == "SwinUNETR":
        return {
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 2,
            "feature_size": 12,
            "depths": [2, 2, 2, 2],
            "num_heads": [3, 6, 12, 24],
            "norm_name": "instance",
            "use_checkpoint": False,
        }
    raise ValueError(f"unknown architecture {architecture!r}")
