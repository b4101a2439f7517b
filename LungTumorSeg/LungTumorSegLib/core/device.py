"""Choosing the compute device and thread count."""

from __future__ import annotations

import os

import torch

from .errors import InputError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda``/``cuda:N``/``cpu`` are explicit.

    Raises:
        InputError: CUDA requested but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("CUDA was requested (--device cuda) but no CUDA GPU is available; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"unknown device {name!r} (use auto, cpu or cuda)") from exc


def device_description(device: torch.device) -> str:
    """Human-readable device name, e.g. ``cuda:0 (NVIDIA H100)`` or ``cpu (2 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def configure_threads(threads: int | None = None) -> int:
    """Use ``threads`` CPU threads for torch (default: every core this process may use)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, int(threads or available)))
    return torch.get_num_threads()
