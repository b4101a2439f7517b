"""Training configuration: every hyper-parameter of a run, saved as the run folder's ``config.json``."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.model.networks import ARCHITECTURES, default_kwargs, size_multiple

LOSSES = ("dicece", "dicefocal", "topk")
CACHE_MODES = ("memory", "disk", "none")
NORMS = ("", "instance", "batch")  # "" = the architecture's default (instance)
CONFIG_VERSION = 1


@dataclass
class TrainConfig:
    """Everything that defines a training run (JSON-serialisable; see docs/training.md).

    The input geometry fields (``spacing_mm``, ``hu_window``, ``patch_size``, ``overlap``) become the
    exported bundle's ``input`` section, so training and inference pre-process identically.
    """

    data: list[str] = field(default_factory=list)
    output: str = "runs/run"
    arch: str = "UNet"
    unet_channels: list[int] | None = None
    unet_strides: list[int] | None = None
    unet_res_units: int | None = None
    swin_feature_size: int | None = None
    swin_depths: list[int] | None = None
    swin_checkpointing: bool = False
    norm: str = ""
    init_weights: str = ""
    spacing_mm: list[float] = field(default_factory=lambda: [1.5, 1.5, 2.0])
    hu_window: list[float] = field(default_factory=lambda: [-1000.0, 400.0])
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 64])
    overlap: float = 0.25
    batch_size: int = 2
    samples_per_case: int = 2
    pos_ratio: float = 0.67
    negative_min_hu: float | None = None
    augment: bool = True
    scanner_augment: bool = False
    context_cases: str = ""
    context_share: float = 0.0
    paste_prob: float = 0.0
    paste_max: int = 2
    paste_scale: list[float] = field(default_factory=lambda: [0.8, 2.0])
    epochs: int = 300
    steps_per_epoch: int = 0
    lr: float = 1e-4
    weight_decay: float = 1e-5
    warmup_epochs: int = 5
    grad_clip: float = 1.0
    loss: str = "dicece"
    topk_percent: float = 10.0
    val_every: int = 5
    patience: int = 0
    stop_after_epoch: int = 0
    device: str = "auto"
    amp: bool = True
    cudnn_benchmark: bool = False
    seed: int = 0
    threads: int = 0
    num_workers: int = 0
    cache: str = "memory"
    cache_rate: float = 1.0
    cache_dir: str = ""
    max_cases: int = 0
    split_file: str = ""
    fold: int = 0
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    patient_pattern: str = ""
    command: str = ""
    version: int = CONFIG_VERSION

    def network_kwargs(self) -> dict[str, Any]:
        """The MONAI constructor arguments: the engine's defaults with this run's size options applied."""
        kwargs = default_kwargs(self.arch)
        if self.arch == "UNet":
            if self.unet_channels:
                kwargs["channels"] = list(self.unet_channels)
                kwargs["strides"] = [2] * (len(self.unet_channels) - 1)
            if self.unet_strides:
                kwargs["strides"] = list(self.unet_strides)
            if self.unet_res_units is not None:
                kwargs["num_res_units"] = int(self.unet_res_units)
            if self.norm:
                kwargs["norm"] = self.norm
        else:
            if self.norm:
                kwargs["norm_name"] = self.norm
            if self.swin_feature_size:
                kwargs["feature_size"] = int(self.swin_feature_size)
            if self.swin_depths:
                kwargs["depths"] = list(self.swin_depths)
            kwargs["use_checkpoint"] = bool(self.swin_checkpointing)
        kwargs.pop("spatial_dims", None)
        return kwargs

    def validate(self) -> None:
        """Raise InputError naming the first unusable option."""
        if self.arch not in ARCHITECTURES:
            raise InputError(f"--arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if self.loss not in LOSSES:
            raise InputError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.cache not in CACHE_MODES:
            raise InputError(f"--cache must be one of {', '.join(CACHE_MODES)}, got {self.cache!r}")
        if len(self.spacing_mm) != 3 or any(float(s) <= 0 for s in self.spacing_mm):
            raise InputError(f"--spacing needs 3 positive numbers (mm), got {self.spacing_mm}")
        if len(self.hu_window) != 2 or float(self.hu_window[0]) >= float(self.hu_window[1]):
            raise InputError(f"--hu-window needs LOW < HIGH, got {self.hu_window}")
        kwargs = self.network_kwargs()
        if self.arch == "UNet" and len(kwargs["strides"]) != len(kwargs["channels"]) - 1:
            raise InputError("--unet-strides needs one stride fewer than --unet-channels")
        check_patch_size(self.patch_size, self.arch, kwargs)
        positive = {"batch_size": self.batch_size, "samples_per_case": self.samples_per_case, "epochs": self.epochs}
        for name, value in positive.items():
            if int(value) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not 0.0 <= self.pos_ratio <= 1.0:
            raise InputError(f"--pos-ratio must be in [0, 1], got {self.pos_ratio}")
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.lr <= 0:
            raise InputError(f"--lr must be > 0, got {self.lr}")
        if not 0.0 < self.topk_percent <= 100.0:
            raise InputError(f"--topk-percent must be in (0, 100], got {self.topk_percent}")
        if self.norm not in NORMS:
            raise InputError(f"--norm must be one of {', '.join(n for n in NORMS if n)}, got {self.norm!r}")
        if not 0.0 <= self.context_share < 1.0:
            raise InputError(f"--context-share must be in [0, 1), got {self.context_share}")
        if self.context_share and not self.context_cases:
            raise InputError("--context-share needs --context-cases (a regular expression for whole-CT case names)")
        if not 0.0 <= self.paste_prob <= 1.0:
            raise InputError(f"--paste-prob must be in [0, 1], got {self.paste_prob}")
        if self.paste_max < 1 or len(self.paste_scale) != 2 or not 0 < self.paste_scale[0] <= self.paste_scale[1]:
            raise InputError("--paste-max must be >= 1 and --paste-scale needs MIN <= MAX, both > 0")
        if not 0.0 <= self.cache_rate <= 1.0:
            raise InputError(f"--cache-rate must be in [0, 1], got {self.cache_rate}")
        if self.val_fraction < 0 or self.test_fraction < 0 or self.val_fraction + self.test_fraction >= 1:
            raise InputError("--val-fraction and --test-fraction must be >= 0 and leave cases for training")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dictionary, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in values.items() if key in known})

    def save(self, path: Path) -> None:
        """Write as indented JSON, atomically."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> TrainConfig:
        """Read a ``config.json``."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise InputError(f"{path}: no such file (not a training run folder?)") from exc
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: invalid JSON ({exc})") from exc


def check_patch_size(patch_size: list[int], arch: str, kwargs: dict[str, Any]) -> None:
    """Raise InputError unless every patch side is a positive multiple of what ``arch`` needs."""
    if len(patch_size) != 3:
        raise InputError(f"--patch-size needs 3 sides, got {patch_size}")
    multiple = size_multiple(arch, kwargs)
    if any(int(s) <= 0 or int(s) % multiple for s in patch_size):
        hint = [max(multiple, round(int(s) / multiple) * multiple) for s in patch_size]
        raise InputError(
            f"--patch-size {' '.join(str(s) for s in patch_size)}: every side must be a multiple of {multiple} "
            f"for {arch} (try {' '.join(str(s) for s in hint)})"
        )
    if math.prod(int(s) // multiple for s in patch_size) < 2:
        raise InputError(
            f"--patch-size {' '.join(str(s) for s in patch_size)}: {arch} reduces it to a single voxel at its "
            f"coarsest level, where instance normalisation cannot train; make one side at least {2 * multiple}"
        )


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` through a temporary file and ``os.replace`` (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
