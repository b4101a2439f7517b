"""Checkpoints to a model bundle (DESIGN section 4) through LungTumorSegLib.model.bundle_writer.write_bundle.

The manifest records the input geometry the members were trained with, the output post-processing,
the ensemble weights and threshold, validation metrics, the data, split and commands, so that
``lungtumorseg segment --model <bundle>`` pre-processes exactly as training did.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import monai
import torch

from LungTumorSegLib.core.errors import BundleError, InputError
from LungTumorSegLib.model.bundle import MemberSpec, ModelBundle, user_models_dir, validate_manifest
from LungTumorSegLib.model.bundle_writer import MemberWeights, write_bundle

from .. import __version__
from ..config import TrainConfig, check_patch_size
from ..data.datalist import dataset_description
from ..data.splits import load_split
from .checkpoints import find_checkpoint, load_checkpoint, network_from_checkpoint
from .run_folder import utc_now

DEFAULT_MIN_LESION_ML = 0.05
DEFAULT_TTA_FLIPS = 2


@dataclass
class Member:
    """A trained member: its checkpoint, configuration and weights."""

    name: str
    checkpoint: Path
    config: TrainConfig
    payload: dict[str, Any]
    weight: float = 1.0

    @property
    def run_dir(self) -> Path | None:
        """The run folder holding the checkpoint (``RUN/checkpoints/x.pt``), if it looks like one."""
        folder = self.checkpoint.parent.parent
        return folder if (folder / "config.json").is_file() else None


@dataclass
class OutputSettings:
    """Post-processing and TTA defaults written into the manifest."""

    threshold: float = 0.5
    min_lesion_ml: float = DEFAULT_MIN_LESION_ML
    restrict_to_lung: bool = True
    keep_largest: bool = False
    min_peak_probability: float = 0.0
    tta_flips: int = DEFAULT_TTA_FLIPS
    overlap: float | None = None
    patch_size: list[int] | None = None
    extra_metrics: dict[str, Any] = field(default_factory=dict)


def load_members(sources: Sequence[str | Path], weights: Sequence[float] | None = None) -> list[Member]:
    """Members from run folders (best.pt, else last.pt) or checkpoint files, with unique names.

    Raises:
        InputError: no sources, a bad checkpoint, or a weight count that does not match.
    """
    if not sources:
        raise InputError("no members given (run folders or .pt checkpoints)")
    if weights is not None and len(weights) != len(sources):
        raise InputError(f"{len(weights)} weight(s) given for {len(sources)} member(s)")
    members, used = [], set()
    for index, source in enumerate(sources):
        path = find_checkpoint(Path(source))
        payload = load_checkpoint(path)
        cfg = TrainConfig.from_dict(payload["config"])
        base = path.parent.parent.name if path.parent.name == "checkpoints" else path.stem
        name = _unique(re.sub(r"[^A-Za-z0-9_.-]+", "_", base).strip("._") or cfg.arch.lower(), used)
        weight = float(weights[index]) if weights is not None else 1.0 / len(sources)
        members.append(Member(name=name, checkpoint=path, config=cfg, payload=payload, weight=weight))
    check_compatible(members)
    return members


def check_compatible(members: Sequence[Member]) -> None:
    """Raise InputError unless all members share the input spacing and HU window (one bundle input section)."""
    first = members[0].config
    for member in members[1:]:
        for key in ("spacing_mm", "hu_window"):
            mine, theirs = [float(v) for v in getattr(first, key)], [float(v) for v in getattr(member.config, key)]
            if mine != theirs:
                raise InputError(
                    f"members {members[0].name} and {member.name} were trained with different {key} "
                    f"({mine} vs {theirs}); a bundle has one input geometry"
                )


def build_manifest(
    members: Sequence[Member],
    name: str,
    settings: OutputSettings,
    version: str = "1.0.0",
    description: str = "",
    command: str = "",
    ensemble: dict[str, Any] | None = None,
    licence: str = "",
) -> dict[str, Any]:
    """The bundle manifest (every field but ``members`` and ``format_version``, which write_bundle adds).

    Paths in the ``training`` section are made relative to the current folder (``portable``).
    """
    first = members[0].config
    patch = [int(s) for s in (settings.patch_size or first.patch_size)]
    for member in members:
        check_patch_size(patch, member.config.arch, member.config.network_kwargs())
    metrics: dict[str, Any] = {
        "measured_on": "validation split, model grid (resampled, cropped to the body), no post-processing",
        "members": {
            m.name: {"val_dice": m.payload.get("best_dice"), "best_epoch": m.payload.get("best_epoch")} for m in members
        },
    }
    if ensemble:
        metrics.update(
            val_dice_mean=ensemble.get("mean_dice"),
            val_dice_equal_weights=ensemble.get("equal_weights_dice"),
            val_cases=len(ensemble.get("cases", [])),
        )
    elif len(members) == 1:
        metrics["val_dice_mean"] = members[0].payload.get("best_dice")
    metrics.update(settings.extra_metrics)
    return {
        "name": name,
        "version": version,
        "task": "lung tumour segmentation (binary)",
        "description": description or f"{' + '.join(m.config.arch for m in members)} trained with lungtumorseg-train",
        "licence": licence or "see the training data's licence",
        "training": portable(
            {
                "data": dataset_description(first.data),
                "members": [_member_training(m) for m in members],
                "paths_relative_to": "the folder the bundle was exported from (the repository for the bundled model)",
                "ensemble": ensemble,
                "command": first.command,
                "export_command": command,
                "exported": utc_now(),
                "software": {"lungtumorseg-train": __version__, "monai": monai.__version__, "torch": torch.__version__},
            },
            Path.cwd(),
        ),
        "metrics": metrics,
        "input": {
            "spacing_mm": [float(s) for s in first.spacing_mm],
            "orientation": "RAS",
            "hu_window": [float(v) for v in first.hu_window],
            "patch_size": patch,
            "overlap": float(settings.overlap if settings.overlap is not None else first.overlap),
        },
        "output": {
            "classes": ["background", "tumour"],
            "activation": "softmax",
            "threshold": float(settings.threshold),
            "min_lesion_ml": float(settings.min_lesion_ml),
            "restrict_to_lung": bool(settings.restrict_to_lung),
            "keep_largest": bool(settings.keep_largest),
            "min_peak_probability": float(settings.min_peak_probability),
        },
        "tta": {"flips": int(settings.tta_flips)},
    }


def export_bundle(
    members: Sequence[Member],
    name: str,
    out_dir: Path | None = None,
    settings: OutputSettings | None = None,
    fp16: bool = True,
    overwrite: bool = False,
    version: str = "1.0.0",
    description: str = "",
    command: str = "",
    ensemble: dict[str, Any] | None = None,
    licence: str = "",
) -> Path:
    """Write the bundle (default: ``user_models_dir()/name``, where ``lungtumorseg segment`` finds it).

    Returns:
        The bundle folder.
    """
    settings = settings or OutputSettings()
    manifest = build_manifest(members, name, settings, version, description, command, ensemble, licence)
    weights = [
        MemberWeights(
            m.name, m.config.arch, m.config.network_kwargs(), m.payload["model"], m.weight, member_patch_size(m)
        )
        for m in members
    ]
    return write_bundle(out_dir or user_models_dir() / name, manifest, weights, fp16=fp16, overwrite=overwrite)


def member_patch_size(member: Member) -> list[int] | None:
    """SwinUNETR members keep their training patch as sliding window: their output changes with the window size
    (attention windows and instance normalisation see another context); convolutional members use the bundle's."""
    return [int(s) for s in member.config.patch_size] if member.config.arch == "SwinUNETR" else None


def in_memory_bundle(members: Sequence[Member], settings: OutputSettings | None = None) -> tuple[ModelBundle, list]:
    """A ModelBundle and loaded networks for checkpoints, without writing files (for ``evaluate``)."""
    manifest = build_manifest(members, members[0].name, settings or OutputSettings())
    patches = [member_patch_size(m) for m in members]
    specs = [
        {
            "name": m.name,
            "file": f"{m.name}.pt",
            "architecture": m.config.arch,
            "sha256": "",
            "weight": m.weight,
            **({"patch_size": patch} if patch else {}),
        }
        for m, patch in zip(members, patches)
    ]
    try:
        validate_manifest({**manifest, "members": specs}, "checkpoint")
    except BundleError as exc:
        raise InputError(str(exc)) from exc
    networks, member_specs = [], []
    for member, patch in zip(members, patches):
        spec = MemberSpec(
            member.name,
            "",
            member.config.arch,
            member.config.network_kwargs(),
            member.weight,
            "",
            tuple(patch) if patch else None,
        )
        _, network = network_from_checkpoint(member.payload)
        networks.append((spec, network))
        member_specs.append(spec)
    return ModelBundle(path=members[0].checkpoint, manifest=manifest, members=member_specs), networks


def read_ensemble_file(path: Path) -> dict[str, Any]:
    """An ``ensemble.json`` written by ``lungtumorseg-train ensemble``."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: ensemble file not found") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict) or not data.get("members"):
        raise InputError(f"{path}: not an ensemble file (no 'members')")
    return data


def _member_training(member: Member) -> dict[str, Any]:
    cfg = member.config
    info: dict[str, Any] = {
        "name": member.name,
        "architecture": cfg.arch,
        "checkpoint": str(member.checkpoint),
        "epochs_trained": member.payload.get("epoch"),
        "best_epoch": member.payload.get("best_epoch"),
        "loss": cfg.loss,
        "lr": cfg.lr,
        "batch_size": cfg.batch_size,
        "patch_size": cfg.patch_size,
        "seed": cfg.seed,
        "fold": cfg.fold,
        "command": cfg.command,
    }
    run_dir = member.run_dir
    if run_dir is not None and (run_dir / "split.json").is_file():
        split = load_split(run_dir / "split.json")
        train = split.subset("train", cfg.fold)
        info["split"] = {
            "method": split.method,
            "seed": split.seed,
            "fold": cfg.fold,
            "sha256": hashlib.sha256((run_dir / "split.json").read_bytes()).hexdigest(),
            "train_cases": len(train),
            "train_patients": len({split.patients.get(c, c) for c in train}),
            "val": split.subset("val", cfg.fold),
            "test": split.subset("test"),
        }
        if cfg.context_cases:
            info["split"]["train_context_cases"] = [c for c in train if re.search(cfg.context_cases, c)]
    return info


def portable(value: Any, base: Path) -> Any:
    """``value`` with every absolute path (alone or as a word of a command line) made relative to ``base``.

    A bundle manifest must not carry the build machine's file system: paths become relative to the folder
    the bundle was exported from (the repository, for the bundled model), e.g. ``../shared/data/...``.
    """
    if isinstance(value, dict):
        return {key: portable(item, base) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, base) for item in value]
    if isinstance(value, str) and os.sep in value:
        words = value.split(" ")
        return " ".join(os.path.relpath(w, base) if os.path.isabs(w) else w for w in words)
    return value


def _unique(name: str, used: set[str]) -> str:
    candidate, index = name, 2
    while candidate in used:
        candidate, index = f"{name}-{index}", index + 1
    used.add(candidate)
    return candidate
