"""What the user chooses for a segmentation run, and the checks made on it before anything is loaded."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.errors import InputError
from ..core.option_checks import check_range
from ..model.sensitivity_presets import PRESET_NAMES, SensitivityPreset, choose_preset

MAX_OVERLAP = 0.9
MIN_ROI_MM = 10.0


@dataclass
class SegmentOptions:
    """User choices; ``None`` means "as the bundle's manifest says"."""

    tta: int | None = None
    device: str = "auto"
    overlap: float | None = None
    threshold: float | None = None
    min_lesion_ml: float | None = None
    restrict_to_lung: bool | None = None
    keep_largest: bool | None = None
    min_peak_probability: float | None = None
    sensitivity: str | None = None  # a preset of the bundle (high, balanced, specific); None: the bundle's default
    crop_to_lung: bool = True
    point_ras: Sequence[float] | None = None
    roi_mm: float = 80.0
    sw_batch_size: int = 2


def check_segment_options(options: SegmentOptions, threads: int | None = None) -> None:
    """Check every ``SegmentOptions`` field (and ``--threads``) before anything is loaded.

    Raises:
        InputError: naming the option and its allowed range.
    """
    check_range("--overlap", options.overlap, 0.0, MAX_OVERLAP)
    check_range("--threshold", options.threshold, 0.0, 1.0, low_open=True)
    check_range("--min-lesion-ml", options.min_lesion_ml, 0.0)
    check_range("--min-peak-probability", options.min_peak_probability, 0.0, 1.0)
    check_range("--roi-mm", options.roi_mm, MIN_ROI_MM)
    check_range("--threads", threads, 1)
    if options.sensitivity is not None and options.sensitivity not in PRESET_NAMES:
        raise InputError(f"--sensitivity {options.sensitivity}: must be one of {', '.join(PRESET_NAMES)}")
    if options.tta is not None and options.tta not in (1, 2, 4, 8):
        raise InputError(f"--tta {options.tta}: must be 1, 2, 4 or 8")
    if options.point_ras is not None:
        point = [float(v) for v in options.point_ras]
        if len(point) != 3 or not all(math.isfinite(v) for v in point):
            raise InputError(f"--point {' '.join(f'{v:g}' for v in point)}: must be 3 finite RAS coordinates (mm)")
    if int(options.sw_batch_size) < 1:
        raise InputError(f"sliding-window batch size must be at least 1, got {options.sw_batch_size}")


def resolve_preset(output: dict, options: SegmentOptions, model: str) -> SensitivityPreset | None:
    """The sensitivity preset a run uses: the one asked for, else the bundle's default (None without presets).

    Raises:
        InputError: the bundle has no such preset.
    """
    try:
        return choose_preset(output, options.sensitivity, model)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
