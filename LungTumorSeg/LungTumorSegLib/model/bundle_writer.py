"""Writing model bundles (used by the demo-bundle script and the training module's export)."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..core.errors import OutputError
from .bundle import DERIVED_BUFFERS, FORMAT_VERSION, MANIFEST, read_bundle, sha256_of


@dataclass
class MemberWeights:
    """A trained member to put in a bundle."""

    name: str
    architecture: str
    kwargs: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    weight: float = 1.0
    patch_size: list[int] | None = None  # this member's own sliding window (SwinUNETR: its training patch)


def write_bundle(
    out_dir: str | Path,
    manifest: dict[str, Any],
    members: list[MemberWeights],
    fp16: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``manifest.json`` and one ``.safetensors`` file per member, atomically.

    Args:
        out_dir: bundle folder to create (its name is the model name users pick).
        manifest: every manifest field except ``members`` and ``format_version``.
        members: networks with their weights and ensemble weights.
        fp16: store floating-point tensors as float16 (half the size; loaded back as float32).
        overwrite: replace an existing bundle folder.

    Returns:
        The bundle folder, re-read and validated.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputError(f"{out_dir}: bundle exists (pass overwrite to replace it)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        entries = []
        for member in members:
            file_name = f"{member.name}.safetensors"
            tensors = {
                key: (value.half() if fp16 and value.is_floating_point() else value).detach().cpu().contiguous()
                for key, value in member.state_dict.items()
                if not key.endswith(DERIVED_BUFFERS)
            }
            save_file(tensors, str(staging / file_name), metadata={"architecture": member.architecture})
            entries.append(
                {
                    "name": member.name,
                    "file": file_name,
                    "architecture": member.architecture,
                    "kwargs": member.kwargs,
                    "weight": member.weight,
                    "sha256": sha256_of(staging / file_name),
                    **({"patch_size": list(member.patch_size)} if member.patch_size else {}),
                }
            )
        full = {"format_version": FORMAT_VERSION, **manifest, "members": entries}
        (staging / MANIFEST).write_text(json.dumps(full, indent=2) + "\n", encoding="utf-8")
        read_bundle(staging)
        staging.chmod(0o755)
        for item in staging.iterdir():
            item.chmod(0o644)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return out_dir
