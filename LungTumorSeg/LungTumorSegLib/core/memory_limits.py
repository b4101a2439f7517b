"""How much one run may take: the model-grid limit and the peak-memory estimate, checked before a run allocates."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .errors import InputError

# Model-grid voxels the networks may run on in one case: bounds the time (~ 12 min on 2 CPU cores at the limit).
MAX_MODEL_GRID_VOXELS = 128_000_000
# Peak bytes per voxel of the input grid, the cropped region and the model grid, and the fixed cost of
# torch, MONAI and the networks' sliding-window activations. Measured with Testing/benchmarks/bench_memory.py
# (peak RSS of whole segment runs: about 23 B per input voxel of an int16 CT, 58 B per model-grid voxel,
# 0.9 GB fixed) and rounded up, so the estimate errs on the safe side.
BYTES_PER_IMAGE_VOXEL = 28
BYTES_PER_REGION_VOXEL = 24
BYTES_PER_MODEL_VOXEL = 64
BASE_BYTES = 1 << 30
MEMORY_LIMIT_ENV = "LUNGTUMORSEG_MAX_MEMORY_GB"
MEMORY_FRACTION = 0.8  # default limit: this share of the machine's physical memory


def memory_limit_bytes() -> int:
    """The most memory a run may need: ``$LUNGTUMORSEG_MAX_MEMORY_GB``, else 80 % of physical memory."""
    value = os.environ.get(MEMORY_LIMIT_ENV, "").strip()
    if value:
        try:
            return int(float(value) * 2**30)
        except ValueError:
            raise InputError(f"{MEMORY_LIMIT_ENV}={value!r}: must be a number of GB") from None
    try:
        return int(MEMORY_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return 1 << 62  # unknown (e.g. Windows): no limit


def memory_limit_source() -> str:
    """Where the memory limit comes from, for messages."""
    if os.environ.get(MEMORY_LIMIT_ENV, "").strip():
        return f"{MEMORY_LIMIT_ENV}"
    return f"{MEMORY_FRACTION:.0%} of this machine's memory; set {MEMORY_LIMIT_ENV} to change it"


def estimated_peak_bytes(image_voxels: int, region_voxels: int, model_voxels: int) -> int:
    """Estimated peak memory of one ``segment`` case (see the BYTES_PER_* constants)."""
    return (
        BASE_BYTES
        + image_voxels * BYTES_PER_IMAGE_VOXEL
        + region_voxels * BYTES_PER_REGION_VOXEL
        + model_voxels * BYTES_PER_MODEL_VOXEL
    )


def check_run_size(image_shape: Sequence[int], region_shape: Sequence[int], grid_shape: Sequence[int]) -> None:
    """Refuse a case whose model grid or estimated memory is beyond the documented limits, before allocating.

    Raises:
        InputError: saying the grid, the estimate and the limit, and what to do.
    """
    model = math.prod(grid_shape)
    grid = " x ".join(str(n) for n in grid_shape)
    advice = "segment around a seed point (--point), keep the lung-field crop, or crop the image"
    if model > MAX_MODEL_GRID_VOXELS:
        raise InputError(
            f"the model grid would be {grid} voxels ({model / 1e6:.0f} million, limit "
            f"{MAX_MODEL_GRID_VOXELS / 1e6:.0f} million); {advice}"
        )
    need = estimated_peak_bytes(math.prod(image_shape), math.prod(region_shape), model)
    limit = memory_limit_bytes()
    if need > limit:
        raise InputError(
            f"the model grid of {grid} voxels needs about {gb_text(need)} of memory, more than the limit of "
            f"{gb_text(limit)} ({memory_limit_source()}); {advice}"
        )


def gb_text(size: int) -> str:
    """``1.5 GB``-style text of a byte count."""
    return f"{size / 2**30:.1f} GB"
