"""Training checkpoints: atomic writes, pickle-free loading (``weights_only=True``) and RNG state capture.

A checkpoint (``checkpoints/last.pt`` or ``best.pt``) is a dictionary of tensors and plain Python values::

    format, version, config (dict), model, optimizer, scheduler, scaler (state dicts),
    epoch (completed epochs), step_in_epoch, epoch_loss_sum, epoch_loss_count, global_step,
    best_dice, best_epoch, val_dice, history (list of per-epoch rows), rng (torch/cuda/numpy/python)
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from LungTumorSegLib.core.errors import BundleError, InputError
from LungTumorSegLib.model.bundle import load_state_dict
from LungTumorSegLib.model.networks import build_network

from ..config import TrainConfig

FORMAT = "lungtumorseg-train-checkpoint"
VERSION = 1
CHECKPOINT_DIR = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"


def capture_rng() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and Python as tensors and lists (weights_only-loadable)."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {
            "key": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": int(py_state[0]), "state": list(py_state[1]), "gauss": py_state[2]},
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Restore what ``capture_rng`` captured (CUDA states only where the same devices exist)."""
    torch.set_rng_state(state["torch"].to(torch.uint8).cpu())
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to(torch.uint8).cpu() for s in cuda_states])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["key"].numpy().astype(np.uint32),
            int(numpy_state["pos"]),
            int(numpy_state["has_gauss"]),
            float(numpy_state["cached_gaussian"]),
        )
    )
    python_state = state["python"]
    random.setstate((int(python_state["version"]), tuple(int(v) for v in python_state["state"]), python_state["gauss"]))


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` with torch.save to a temporary file and ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint on the CPU without executing pickled code.

    Raises:
        InputError: missing, unreadable or not a training checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any loader failure means an unusable file
        raise InputError(f"{path}: cannot load the checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InputError(f"{path}: not a lungtumorseg-train checkpoint")
    if int(payload.get("version", 0)) > VERSION:
        raise InputError(f"{path}: written by a newer lungtumorseg-train")
    return payload


def find_checkpoint(path: Path, prefer: str = BEST) -> Path:
    """A checkpoint file from a ``.pt`` path or a run folder (``best.pt`` if present, else ``last.pt``).

    Raises:
        InputError: nothing found.
    """
    path = Path(path)
    if path.is_file():
        return path
    folder = path / CHECKPOINT_DIR
    order = (prefer, LAST if prefer == BEST else BEST)
    for name in order:
        if (folder / name).is_file():
            return folder / name
    raise InputError(f"{path}: no checkpoint (expected a .pt file or a run folder with {CHECKPOINT_DIR}/{BEST})")


def network_from_checkpoint(payload: dict[str, Any]) -> tuple[TrainConfig, nn.Module]:
    """The run configuration and its network with the checkpoint's weights (CPU, eval mode)."""
    cfg = TrainConfig.from_dict(payload["config"])
    network = build_network(cfg.arch, cfg.network_kwargs())
    network.load_state_dict(payload["model"])
    return cfg, network.eval()


def load_initial_weights(network: nn.Module, path: Path) -> None:
    """Load fine-tuning start weights into ``network``: a checkpoint (file or run folder) or a weights file.

    Bundle member files (``.safetensors``, or a ``.pt`` state dict) load without pickle, like checkpoints.

    Raises:
        InputError: unreadable file, or weights that do not fit the network (other architecture or sizes).
    """
    path = Path(path)
    if path.is_file():
        try:
            payload = load_state_dict(path)  # safetensors, or torch.load(weights_only=True): read once
        except BundleError as exc:
            raise InputError(str(exc)) from exc
        if payload.get("format") == FORMAT:
            if int(payload.get("version", 0)) > VERSION:
                raise InputError(f"{path}: written by a newer lungtumorseg-train")
            payload = payload["model"]
        state = payload
    else:
        state = load_checkpoint(find_checkpoint(path))["model"]
    try:
        network.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"{path}: the weights do not fit this network ({first})") from exc
