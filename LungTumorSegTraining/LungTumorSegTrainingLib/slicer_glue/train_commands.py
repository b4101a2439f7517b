"""The training module's run settings and presets, and the engine command lines they become (torchrun when gpus > 1).

No slicer, qt or torch import: the panel uses it before the engine's packages are installed.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.stopping import STOP_FILE_NAME

ENGINE_MODULE = "LungTumorSegTrainingLib"
ARCHITECTURES = ("UNet", "SwinUNETR")
LOSSES = {"DiceCE": "dicece", "DiceFocal": "dicefocal", "Top-K": "topk"}
DEVICES = ("auto", "cpu", "cuda", "mps")


# ----------------------------------------------------------------------------------------------- settings


@dataclass
class TrainSettings:
    """What the GUI's "Run settings" section holds; :func:`training_commands` turns it into command lines.

    The defaults repeat ``TrainConfig``'s (this module imports without torch); a test keeps them equal.
    """

    data: list[str] = field(default_factory=list)
    output_dir: str = ""
    run_name: str = "run"
    archs: list[str] = field(default_factory=lambda: ["UNet"])
    patch_size: list[int] = field(default_factory=lambda: [96, 96, 64])
    batch_size: int = 2
    epochs: int = 300
    lr: float = 1e-4
    loss: str = "dicece"
    fold: int = 0
    device: str = "auto"
    gpus: int = 1
    steps_per_epoch: int = 0
    max_cases: int = 0
    val_every: int = 5
    cache: str = "memory"
    extra_args: list[str] = field(default_factory=list)

    def run_dirs(self) -> list[Path]:
        """One run folder per architecture (``NAME`` alone, ``NAME-unet`` + ``NAME-swinunetr`` for an ensemble)."""
        root = Path(self.output_dir).expanduser()
        if len(self.archs) == 1:
            return [root / self.run_name]
        return [root / f"{self.run_name}-{arch.lower()}" for arch in self.archs]

    def problems(self) -> list[str]:
        """Messages for settings the engine would reject (empty when the run can start)."""
        out = []
        if not self.data:
            out.append("Choose a dataset folder.")
        if not self.output_dir:
            out.append("Choose an output folder.")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.run_name or ""):
            out.append("Run name: use letters, digits, '.', '_' or '-' only.")
        if not self.archs or any(a not in ARCHITECTURES for a in self.archs):
            out.append(f"Architecture must be one or both of {', '.join(ARCHITECTURES)}.")
        if len(self.patch_size) != 3 or any(int(s) <= 0 for s in self.patch_size):
            out.append("Patch size needs 3 positive numbers.")
        else:
            multiple = 32 if "SwinUNETR" in self.archs else 16
            if any(int(s) % multiple for s in self.patch_size):
                out.append(f"Patch size: every side must be a multiple of {multiple} for {'/'.join(self.archs)}.")
        if self.loss not in LOSSES.values():
            out.append(f"Loss must be one of {', '.join(LOSSES.values())}.")
        if self.batch_size < 1 or self.epochs < 1 or self.gpus < 1 or self.lr <= 0:
            out.append("Batch size, epochs and GPUs must be at least 1 and the learning rate > 0.")
        if self.gpus > 1 and self.device == "cpu":
            out.append("More than one GPU needs the cuda (or auto) device.")
        return out


PRESETS: dict[str, dict[str, Any]] = {
    "Quick CPU check": {
        "archs": ["UNet"],
        "patch_size": [32, 32, 32],
        "batch_size": 1,
        "epochs": 2,
        "steps_per_epoch": 2,
        "max_cases": 3,
        "val_every": 1,
        "lr": 1e-3,
        "loss": "dicece",
        "device": "cpu",
        "gpus": 1,
        "cache": "none",
    },
    "MSD Task06 on one GPU": {
        "archs": ["UNet", "SwinUNETR"],
        "patch_size": [96, 96, 64],
        "batch_size": 2,
        "epochs": 300,
        "steps_per_epoch": 0,
        "max_cases": 0,
        "val_every": 5,
        "lr": 1e-4,
        "loss": "dicece",
        "device": "cuda",
        "gpus": 1,
        "cache": "memory",
    },
}


def apply_preset(settings: TrainSettings, name: str) -> TrainSettings:
    """A copy of ``settings`` with preset ``name`` applied (data, output folder and run name kept)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return dataclasses.replace(settings, **PRESETS[name])


def engine_prefix(python: str, gpus: int = 1) -> list[str]:
    """``python -m LungTumorSegTrainingLib``, or torchrun (``python -m torch.distributed.run``) for gpus > 1."""
    if gpus > 1:
        return [
            python,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(gpus),
            "-m",
            ENGINE_MODULE,
        ]
    return [python, "-m", ENGINE_MODULE]


def stop_file(run_dir: Path | str) -> Path:
    """The file the GUI writes to stop a run cleanly (the engine's ``--stop-file``), inside the run folder."""
    return Path(run_dir) / STOP_FILE_NAME


def stop_file_of(command: Sequence[str]) -> Path | None:
    """The ``--stop-file`` of an engine command line, None for commands without one (export, ensemble)."""
    args = list(command)
    return Path(args[args.index("--stop-file") + 1]) if "--stop-file" in args[:-1] else None


def train_command(settings: TrainSettings, arch: str, run_dir: Path | str, python: str = sys.executable) -> list[str]:
    """The ``train`` command line of one architecture (``--progress json`` so the GUI can follow it)."""
    s = settings
    args = engine_prefix(python, s.gpus) + ["train", "--data", *[str(p) for p in s.data], "--output", str(run_dir)]
    args += ["--arch", arch, "--patch-size", *[str(int(v)) for v in s.patch_size]]
    args += ["--batch-size", str(s.batch_size), "--epochs", str(s.epochs), "--lr", f"{s.lr:g}", "--loss", s.loss]
    args += ["--fold", str(s.fold), "--device", s.device, "--val-every", str(s.val_every), "--cache", s.cache]
    if s.steps_per_epoch > 0:
        args += ["--steps-per-epoch", str(s.steps_per_epoch)]
    if s.max_cases > 0:
        args += ["--max-cases", str(s.max_cases)]
    return args + list(s.extra_args) + ["--stop-file", str(stop_file(run_dir)), "--progress", "json"]


def training_commands(settings: TrainSettings, python: str = sys.executable) -> list[list[str]]:
    """One ``train`` command per architecture, to run one after the other."""
    return [train_command(settings, arch, d, python) for arch, d in zip(settings.archs, settings.run_dirs())]


def resume_command(run_dir: Path | str, python: str = sys.executable, gpus: int = 1) -> list[str]:
    """Continue a stopped or crashed run from its ``checkpoints/last.pt``."""
    args = engine_prefix(python, gpus) + ["resume", str(run_dir), "--stop-file", str(stop_file(run_dir))]
    return args + ["--progress", "json"]


def export_command(
    members: Sequence[Path | str],
    bundle_dir: Path | str,
    name: str,
    python: str = sys.executable,
    ensemble_json: Path | str | None = None,
    overwrite: bool = False,
) -> list[str]:
    """``export``: run folders (best.pt), or an ``ensemble`` result JSON, → a bundle folder named ``name``."""
    args = [python, "-m", ENGINE_MODULE, "export", *[str(m) for m in members]]
    if ensemble_json is not None:
        args += ["--ensemble", str(ensemble_json)]
    args += ["--name", name, "--out", str(bundle_dir)]
    return args + (["--overwrite"] if overwrite else [])


def ensemble_command(
    run_dirs: Sequence[Path | str], result_json: Path | str, python: str = sys.executable, device: str = "auto"
) -> list[str]:
    """``ensemble``: search member weights and threshold on the validation split, write ``result_json``."""
    runs = [str(d) for d in run_dirs]
    args = [python, "-m", ENGINE_MODULE, "ensemble", *runs, "--output", str(result_json), "--device", device]
    return args + ["--progress", "json"]


def install_commands(
    run_dirs: Sequence[Path | str],
    models_dir: Path | str,
    name: str,
    python: str = sys.executable,
    overwrite: bool = False,
    device: str = "auto",
) -> list[list[str]]:
    """Commands installing ``models_dir/name``: ``export`` for one run; ``ensemble`` then ``export`` for several.

    The ensemble result JSON is written next to the first run folder (``<output>/<name>-ensemble.json``).
    """
    if not run_dirs:
        raise ValueError("select at least one run to install")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", name or ""):
        raise ValueError("model name: use letters, digits, '.', '_' or '-' only")
    target = Path(models_dir) / name
    if len(run_dirs) == 1:
        return [export_command(run_dirs, target, name, python, overwrite=overwrite)]
    result = Path(run_dirs[0]).parent / f"{name}-ensemble.json"
    return [
        ensemble_command(run_dirs, result, python, device),
        export_command([], target, name, python, ensemble_json=result, overwrite=overwrite),
    ]


def quote_command(args: Sequence[str]) -> str:
    """A command line as a user can paste it into a shell."""
    import shlex

    return " ".join(shlex.quote(str(a)) for a in args)
