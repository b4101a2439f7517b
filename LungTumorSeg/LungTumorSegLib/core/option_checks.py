"""Checks on command-line option values, each failing with a one-line InputError naming the option."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .errors import InputError


def numbers_text(values: Sequence[float], digits: int = 3) -> str:
    """``(0.7, 0.7, 1.25)``-style text of numbers for messages (no numpy reprs)."""
    return "(" + ", ".join(f"{round(float(v), digits):g}" for v in values) + ")"


def check_range(
    option: str, value: float | None, low: float | None = None, high: float | None = None, low_open: bool = False
) -> None:
    """Raise InputError unless ``value`` is None or a finite number in [low, high] ((low, high] with ``low_open``)."""
    if value is None:
        return
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and value > high
    if not math.isfinite(value) or too_low or too_high:
        if low is not None and high is not None:
            bounds = f"{'above' if low_open else 'at least'} {low:g} and at most {high:g}"
        elif low is not None:
            bounds = f"{'above' if low_open else 'at least'} {low:g}"
        else:
            bounds = f"at most {high:g}"
        raise InputError(f"{option} {value:g}: must be a number {bounds}")


def check_stem(stem: str | None) -> None:
    """Raise InputError unless ``stem`` is a plain file-name prefix (no folder part), so outputs stay in ``-o``."""
    if stem is None:
        return
    separators = {"/", "\\", os.sep, os.altsep or "/"}
    if not stem or stem in (".", "..") or "\0" in stem or any(sep in stem for sep in separators):
        raise InputError(f"--stem {stem!r}: must be a file name prefix without folders (no '/' or '\\')")
