"""Resampling between a crop's native grid and the model grid (torch, multi-threaded).

Both directions use ``align_corners=False`` over the same physical extent, so a grid
resampled to the model spacing and back lands exactly on the original voxels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def model_grid_shape(shape: tuple[int, ...], spacing: np.ndarray, target_spacing: tuple[float, ...]) -> tuple[int, ...]:
    """Number of voxels that cover the same extent at ``target_spacing``."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target_spacing))


def resample(array: np.ndarray | torch.Tensor, shape: tuple[int, ...], mode: str = "linear") -> torch.Tensor:
    """Resample a 3D array (or (C, X, Y, Z) tensor) to ``shape`` over the same extent.

    Args:
        array: 3D array or 4D channel-first tensor.
        shape: target spatial shape.
        mode: ``"linear"`` (trilinear) or ``"nearest"``.

    Returns:
        A float32 tensor of shape ``shape`` (or ``(C, *shape)``).
    """
    tensor = torch.as_tensor(array)
    channel_first = tensor.ndim == 4
    batch = (tensor if channel_first else tensor[None]).float()[None]
    if tuple(batch.shape[2:]) == tuple(shape):
        out = batch
    elif mode == "linear":
        out = F.interpolate(batch, size=shape, mode="trilinear", align_corners=False)
    elif mode == "nearest":
        out = F.interpolate(batch, size=shape, mode="nearest-exact")
    else:
        raise ValueError(f"unknown resampling mode {mode!r}")
    return out[0] if channel_first else out[0, 0]
