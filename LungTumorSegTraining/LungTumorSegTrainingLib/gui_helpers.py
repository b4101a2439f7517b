"""Pure helpers of the LungTumorSegTraining Slicer module (no slicer, qt or ctk import; unit-tested with pytest).

- :class:`TrainSettings` and :data:`PRESETS` → the training engine's command lines (``torchrun`` when gpus > 1)
- :func:`parse_line`: one stdout line of ``--progress json`` → an event dictionary (non-JSON lines become ``text``)
- :class:`MetricsHistory`: per-epoch loss / validation Dice from ``metrics`` events or ``metrics.csv``
- :func:`discover_runs` / :func:`read_run`: the runs of an output folder and their state (dead pid → ``crashed``)
- :func:`validate_dataset`: MSD layout or image/label folders → a summary with clear messages
- :func:`eta_seconds` / :func:`format_duration`
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .case_files import IMAGE_DIR_NAMES, LABEL_DIR_NAMES, case_id, find_label, is_image
from .stopping import STOP_FILE_NAME

ENGINE_MODULE = "LungTumorSegTrainingLib"
ARCHITECTURES = ("UNet", "SwinUNETR")
LOSSES = {"DiceCE": "dicece", "DiceFocal": "dicefocal", "Top-K": "topk"}
DEVICES = ("auto", "cpu", "cuda", "mps")
RUN_STATES = ("running", "stopped", "finished", "failed", "crashed", "unknown")
PATIENT_PATTERNS = (r"LIDC-IDRI-\d+", r"lung_\d+", r"R01-\d+", r"\d+_HM\d+")
RUN_MARKERS = ("status.json", "config.json", "metrics.csv")


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


# ----------------------------------------------------------------------------------------------- events


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One stdout line → an event dictionary; ``None`` for blank lines.

    JSON objects with an ``event`` key are returned as they are; anything else (tracebacks, warnings,
    torchrun's prefixed lines such as ``[rank0]: {...}``) becomes ``{"event": "text", "message": line}``.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.strip()
    if not text:
        return None
    start = text.find("{")
    if start >= 0 and text.endswith("}"):
        try:
            event = json.loads(text[start:])
        except (json.JSONDecodeError, ValueError):
            event = None
        if isinstance(event, dict) and isinstance(event.get("event"), str):
            return event
    return {"event": "text", "message": text}


class LineBuffer:
    """Splits a byte/text stream read in arbitrary chunks into complete lines."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str | bytes) -> list[str]:
        """Add a chunk; return the complete lines it finishes."""
        if isinstance(chunk, bytes):
            chunk = chunk.decode("utf-8", errors="replace")
        self._pending += chunk
        *lines, self._pending = self._pending.replace("\r\n", "\n").split("\n")
        return lines

    def flush(self) -> list[str]:
        """The last, unterminated line (if any)."""
        rest, self._pending = self._pending, ""
        return [rest] if rest else []


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN → None


@dataclass
class MetricsHistory:
    """Per-epoch training loss and validation Dice, merged from ``metrics`` events and ``metrics.csv`` rows."""

    rows: dict[int, dict[str, Any]] = field(default_factory=dict)

    def add(self, values: dict[str, Any]) -> bool:
        """Merge one row / ``metrics`` event (needs ``epoch``); True when it changed the history."""
        epoch = _number(values.get("epoch"))
        if epoch is None:
            return False
        row = self.rows.setdefault(int(epoch), {"epoch": int(epoch)})
        before = dict(row)
        for key, value in values.items():
            if key in ("event", "epoch"):
                continue
            number = _number(value)
            if number is not None:
                row[key] = number
        return row != before

    def load_csv(self, path: Path | str) -> bool:
        """Merge every row of a ``metrics.csv`` (missing or half-written file: nothing)."""
        changed = False
        for row in read_metrics_csv(path):
            changed = self.add(row) or changed
        return changed

    def epochs(self) -> list[int]:
        """Epoch numbers, in order."""
        return sorted(self.rows)

    def column(self, key: str) -> list[float | None]:
        """Values of ``key`` per epoch (None where not measured, e.g. epochs without validation)."""
        return [self.rows[e].get(key) for e in self.epochs()]

    def table(self) -> dict[str, list[float]]:
        """Columns for the plot table: epoch, train_loss and val_dice (NaN where missing)."""
        nan = float("nan")
        return {
            "epoch": [float(e) for e in self.epochs()],
            "train_loss": [nan if v is None else v for v in self.column("train_loss")],
            "val_dice": [nan if v is None else v for v in self.column("val_dice")],
        }

    def best_dice(self) -> float | None:
        """Highest validation Dice so far."""
        values = [v for v in self.column("val_dice") if v is not None]
        values += [v for v in self.column("best_dice") if v is not None]
        return max(values) if values else None


def read_metrics_csv(path: Path | str) -> list[dict[str, Any]]:
    """Rows of a ``metrics.csv`` (empty cells → None, numbers parsed); [] when absent or unreadable."""
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []
    out = []
    for row in rows:
        parsed = {}
        for key, value in row.items():
            if key is None:
                continue
            number = _number(value) if value not in (None, "") else None
            parsed[key] = number if number is not None else (value or None)
        out.append(parsed)
    return out


def progress_fraction(event: dict[str, Any], epochs_total: int | None = None) -> float | None:
    """Overall fraction done from a ``progress`` event (``fraction``, else epoch/step counters)."""
    fraction = _number(event.get("fraction"))
    if fraction is not None:
        return max(0.0, min(1.0, fraction))
    epoch, total = _number(event.get("epoch")), _number(event.get("epochs")) or epochs_total
    if epoch is None or not total:
        return None
    step, steps = _number(event.get("step")), _number(event.get("steps"))
    within = (step / steps) if step is not None and steps else 0.0
    return max(0.0, min(1.0, (epoch - 1 + within) / total if epoch >= 1 else within / total))


def eta_seconds(elapsed_s: float, fraction: float | None) -> float | None:
    """Remaining time assuming a constant rate; None when it cannot be estimated yet."""
    if fraction is None or fraction <= 0.0 or elapsed_s <= 0:
        return None
    if fraction >= 1.0:
        return 0.0
    return elapsed_s * (1.0 - fraction) / fraction


def format_duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 05s``, ``42s``, or ``?``."""
    if seconds is None:
        return "?"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


# ----------------------------------------------------------------------------------------------- runs


def pid_alive(pid: Any) -> bool:
    """Whether a process with this id exists on this machine (never signals it)."""
    try:
        pid = int(pid)
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT on Windows
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def read_json(path: Path | str) -> dict[str, Any]:
    """A JSON object file, {} when absent, half-written or not an object."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def effective_state(status: dict[str, Any], hostname: str | None = None) -> str:
    """The run's state; ``running`` with a dead pid on this host becomes ``crashed``."""
    state = status.get("state")
    if state not in RUN_STATES:
        return "unknown"
    if state == "running":
        host = status.get("host")
        if host and host != (hostname or socket.gethostname()):
            return "running"  # another machine (e.g. a cluster node): cannot check
        if not pid_alive(status.get("pid")):
            return "crashed"
    return state


@dataclass
class RunInfo:
    """What the runs list shows about one run folder."""

    path: Path
    state: str = "unknown"
    epoch: int | None = None
    epochs: int | None = None
    best_dice: float | None = None
    last_val_dice: float | None = None
    last_loss: float | None = None
    arch: str = ""
    pid: int | None = None
    updated: str = ""
    has_best: bool = False
    has_last: bool = False
    log: Path | None = None
    overlay: Path | None = None

    @property
    def name(self) -> str:
        """The run folder's name."""
        return self.path.name

    @property
    def resumable(self) -> bool:
        """Stopped, crashed or failed with a last checkpoint."""
        return self.has_last and self.state in ("stopped", "crashed", "failed")

    @property
    def installable(self) -> bool:
        """Has a best (or last) checkpoint to export."""
        return self.has_best or self.has_last

    def summary(self) -> str:
        """One line, e.g. ``finished · epoch 300/300 · best Dice 0.712``."""
        parts = [self.state]
        if self.epoch is not None:
            parts.append(f"epoch {self.epoch}/{self.epochs}" if self.epochs else f"epoch {self.epoch}")
        if self.best_dice is not None:
            parts.append(f"best Dice {self.best_dice:.3f}")
        return " · ".join(parts)


def is_run_dir(path: Path) -> bool:
    """A folder holding status.json, config.json or metrics.csv."""
    return path.is_dir() and any((path / marker).is_file() for marker in RUN_MARKERS)


def read_run(path: Path | str, hostname: str | None = None) -> RunInfo:
    """State and best metrics of one run folder, from status.json, metrics.csv and config.json."""
    path = Path(path)
    status, config = read_json(path / "status.json"), read_json(path / "config.json")
    history = MetricsHistory()
    history.load_csv(path / "metrics.csv")
    info = RunInfo(path=path)
    info.state = effective_state(status, hostname) if status else ("unknown" if not history.rows else "stopped")
    epoch = _number(status.get("epoch"))
    if epoch is None and history.rows:
        epoch = history.epochs()[-1]
    info.epoch = int(epoch) if epoch is not None else None
    epochs = _number(config.get("epochs") or status.get("epochs"))
    info.epochs = int(epochs) if epochs else None
    candidates = [v for v in (_number(status.get("best_dice")), history.best_dice()) if v is not None]
    info.best_dice = max(candidates) if candidates else None
    dice = [v for v in history.column("val_dice") if v is not None]
    loss = [v for v in history.column("train_loss") if v is not None]
    info.last_val_dice = dice[-1] if dice else None
    info.last_loss = loss[-1] if loss else None
    info.arch = str(config.get("arch", ""))
    pid = _number(status.get("pid"))
    info.pid = int(pid) if pid is not None else None
    info.updated = str(status.get("updated", ""))
    info.has_best = (path / "checkpoints" / "best.pt").is_file()
    info.has_last = (path / "checkpoints" / "last.pt").is_file()
    for name in ("train.log", "log.txt", "gui.log"):
        if (path / name).is_file():
            info.log = path / name
            break
    info.overlay = path / "val_overlay.png" if (path / "val_overlay.png").is_file() else None
    return info


def discover_runs(output_dir: Path | str, hostname: str | None = None) -> list[RunInfo]:
    """Run folders directly under ``output_dir`` (or ``output_dir`` itself), newest first."""
    root = Path(output_dir).expanduser()
    if not root.is_dir():
        return []
    folders = [root] if is_run_dir(root) else [p for p in root.iterdir() if is_run_dir(p)]

    def modified(p: Path) -> float:
        times = [(p / m).stat().st_mtime for m in RUN_MARKERS if (p / m).is_file()]
        return max(times, default=0.0)

    return [read_run(p, hostname) for p in sorted(folders, key=lambda p: (-modified(p), p.name))]


# ----------------------------------------------------------------------------------------------- dataset


@dataclass
class DatasetSummary:
    """Result of :func:`validate_dataset`: usable when ``errors`` is empty."""

    kind: str = ""
    cases: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)
    labels_checked: int = 0
    spacing_min: list[float] = field(default_factory=list)
    spacing_max: list[float] = field(default_factory=list)
    split: dict[str, int] = field(default_factory=dict)
    name: str = ""

    @property
    def ok(self) -> bool:
        """No errors and at least one case."""
        return not self.errors and bool(self.cases)

    def text(self) -> str:
        """Multi-line summary for the GUI."""
        lines = []
        if self.kind:
            title = f" '{self.name}'" if self.name else ""
            lines.append(
                f"{'MSD dataset' if self.kind == 'msd' else 'Image/label folders'}{title}: {len(self.cases)} cases"
            )
        if self.spacing_min:
            lo = " × ".join(f"{v:.2f}" for v in self.spacing_min)
            hi = " × ".join(f"{v:.2f}" for v in self.spacing_max)
            lines.append(f"Voxel spacing (mm): {lo} to {hi}")
        if self.labels_checked:
            values = ", ".join(str(v) for v in self.label_values)
            lines.append(f"Label values ({self.labels_checked} labels read): {{{values}}}")
        if self.split:
            lines.append(
                "Split (by patient, fold 0): "
                + ", ".join(f"{k} {v}" for k, v in self.split.items() if v or k != "test")
            )
        lines += [f"Error: {m}" for m in self.errors] + [f"Warning: {m}" for m in self.warnings]
        return "\n".join(lines)


def _msd_cases(root: Path, summary: DatasetSummary) -> None:
    json_path = root if root.is_file() else root / "dataset.json"
    base = json_path.parent
    try:
        dataset = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        summary.errors.append(f"{json_path.name}: cannot be read as JSON ({exc})")
        return
    if not isinstance(dataset, dict) or not isinstance(dataset.get("training"), list) or not dataset["training"]:
        summary.errors.append(f"{json_path.name}: no 'training' list of {{'image', 'label'}} entries")
        return
    summary.name = str(dataset.get("name", ""))
    for folder in ("imagesTr", "labelsTr"):
        if not (base / folder).is_dir():
            summary.errors.append(f"the {folder}/ folder is missing next to dataset.json")
    missing = []
    for entry in dataset["training"]:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            summary.errors.append(f"{json_path.name}: training entry {entry!r} needs 'image' and 'label'")
            return
        image, label = (base / entry["image"]).resolve(), (base / entry["label"]).resolve()
        for path in (image, label):
            if not path.is_file():
                missing.append(str(Path(entry["image" if path == image else "label"])))
        summary.cases.append({"case": case_id(image), "image": str(image), "label": str(label)})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        summary.errors.append(f"{len(missing)} file(s) listed in dataset.json are missing: {shown}")


def _folder_cases(images_dir: Path, labels_dir: Path, summary: DatasetSummary) -> None:
    images = sorted(p for p in images_dir.iterdir() if is_image(p)) if images_dir.is_dir() else []
    if not images_dir.is_dir():
        summary.errors.append(f"{images_dir}: image folder not found")
        return
    if not labels_dir.is_dir():
        summary.errors.append(f"{labels_dir}: label folder not found")
        return
    if not images:
        summary.errors.append(f"{images_dir.name}/: no .nii, .nii.gz or .nrrd images")
        return
    unlabelled = []
    for image in images:
        label = find_label(image, labels_dir)
        if label is None:
            unlabelled.append(image.name)
        else:
            summary.cases.append({"case": case_id(image), "image": str(image), "label": str(label)})
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else "")
        summary.errors.append(f"{len(unlabelled)} image(s) have no label in {labels_dir.name}/: {shown}")


def _check_headers(summary: DatasetSummary, max_labels: int) -> None:
    import nibabel as nib
    import numpy as np

    spacings, values = [], set()
    for index, case in enumerate(summary.cases):
        try:
            image, label = nib.load(case["image"]), nib.load(case["label"])
        except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad files
            summary.errors.append(f"case {case['case']}: cannot read the NIfTI header ({type(exc).__name__}: {exc})")
            continue
        shape_i, shape_l = tuple(image.shape[:3]), tuple(label.shape[:3])
        if len(image.shape) < 3 or shape_i != shape_l:
            summary.errors.append(
                f"case {case['case']}: image shape {image.shape} differs from label shape {label.shape}"
            )
            continue
        if not np.allclose(image.affine, label.affine, atol=1e-3, rtol=1e-5):
            summary.errors.append(f"case {case['case']}: image and label have different geometry (affine)")
        spacings.append([float(z) for z in image.header.get_zooms()[:3]])
        if index < max_labels:
            try:
                values.update(int(v) for v in np.unique(np.asarray(label.dataobj)).tolist())
                summary.labels_checked += 1
            except Exception as exc:  # noqa: BLE001
                summary.errors.append(f"case {case['case']}: cannot read the label ({exc})")
    if spacings:
        array = np.asarray(spacings)
        summary.spacing_min = array.min(axis=0).round(4).tolist()
        summary.spacing_max = array.max(axis=0).round(4).tolist()
    summary.label_values = sorted(values)
    extra = [v for v in summary.label_values if v not in (0, 1)]
    if extra:
        summary.errors.append(
            f"label values {{{', '.join(map(str, summary.label_values))}}} found; expected only {{0, 1}} "
            "(background 0, tumour 1): merge or remap the other labels first"
        )
    elif summary.labels_checked and 1 not in values:
        summary.warnings.append("the labels read contain no tumour voxels (value 1)")


def split_counts(cases: Sequence[str], val_fraction: float = 0.2, fold: int = 0) -> dict[str, int]:
    """Case counts of the engine's patient-level split (its ``make_split``), with a simple fallback."""
    try:
        from .splits import make_split

        split = make_split(list(cases), val_fraction=val_fraction)
        return {"train": len(split.subset("train", 0)), "val": len(split.subset("val", 0)), "test": len(split.test)}
    except Exception:  # noqa: BLE001 - engine not importable or too few patients: estimate
        patients = set()
        for case in cases:
            match = next((re.search(p, case) for p in PATIENT_PATTERNS if re.search(p, case)), None)
            patients.add(match.group(0) if match else case)
        n_val_patients = max(1, round(val_fraction * len(patients))) if len(patients) >= 2 else 0
        n_val = round(len(cases) * n_val_patients / max(1, len(patients)))
        return {"train": len(cases) - n_val, "val": n_val, "test": 0}


def validate_dataset(paths: Sequence[str | Path], max_labels: int = 3, val_fraction: float = 0.2) -> DatasetSummary:
    """Check a training data folder: MSD layout (dataset.json, imagesTr, labelsTr) or image/label folders.

    Args:
        paths: one folder (MSD task folder, its dataset.json, or a folder with image/ and mask/ sub-folders)
            or two folders (images, labels), as the engine's ``--data`` takes them.
        max_labels: read the voxel values of this many labels (headers of all cases are read).
        val_fraction: validation fraction for the split preview.
    """
    summary = DatasetSummary()
    paths = [Path(p).expanduser() for p in paths if str(p).strip()]
    if not paths:
        summary.errors.append("no dataset folder chosen")
        return summary
    if len(paths) == 2:
        summary.kind = "folders"
        _folder_cases(paths[0], paths[1], summary)
    elif len(paths) == 1:
        root = paths[0]
        if not root.exists():
            summary.errors.append(f"{root}: no such folder")
            return summary
        if (root.is_file() and root.suffix == ".json") or (root / "dataset.json").is_file():
            summary.kind = "msd"
            _msd_cases(root, summary)
        else:
            images_dir = next((root / n for n in IMAGE_DIR_NAMES if (root / n).is_dir()), None)
            labels_dir = next((root / n for n in LABEL_DIR_NAMES if (root / n).is_dir()), None)
            if images_dir is None or labels_dir is None:
                what = "labelsTr/ (or mask/, labels/)" if images_dir else "imagesTr/ (or image/, images/)"
                if (root / "imagesTr").is_dir() or (root / "labelsTr").is_dir():
                    summary.errors.append(f"{root.name}: dataset.json is missing and so is {what}")
                else:
                    summary.errors.append(
                        f"{root.name}: not a dataset: expected dataset.json + imagesTr/ + labelsTr/ (MSD layout), "
                        f"or image and label sub-folders such as image/ + mask/ (missing: {what})"
                    )
                return summary
            summary.kind = "folders"
            _folder_cases(images_dir, labels_dir, summary)
    else:
        summary.errors.append(f"give one dataset folder or an image folder and a label folder, not {len(paths)}")
        return summary
    if summary.cases and not summary.errors:
        _check_headers(summary, max_labels)
    if summary.cases:
        if len(summary.cases) < 2:
            summary.errors.append("at least 2 cases are needed (one for training, one for validation)")
        else:
            summary.split = split_counts([c["case"] for c in summary.cases], val_fraction)
    return summary


def build_tiny_msd(root: Path | str, pairs: Sequence[tuple[str | Path, str | Path]], link: bool = True) -> Path:
    """Write a small MSD-layout dataset (imagesTr/, labelsTr/, dataset.json) from (image, label) files.

    Used by the tests and the Slicer self-test. Files are symlinked (copied where links are not allowed).
    Returns the dataset folder.
    """
    import shutil

    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for index, (image, label) in enumerate(pairs):
        name = case_id(image) if len({case_id(i) for i, _ in pairs}) == len(pairs) else f"case_{index:03d}"
        suffix = ".nii.gz" if str(image).endswith(".gz") else ".nii"
        for source, folder in ((Path(image), "imagesTr"), (Path(label), "labelsTr")):
            target = root / folder / f"{name}{suffix}"
            if target.exists() or target.is_symlink():
                target.unlink()
            try:
                if not link:
                    raise OSError
                target.symlink_to(source.resolve())
            except OSError:
                shutil.copy2(source, target)
        training.append({"image": f"./imagesTr/{name}{suffix}", "label": f"./labelsTr/{name}{suffix}"})
    dataset = {
        "name": root.name,
        "description": "tiny dataset for quick checks",
        "labels": {"0": "background", "1": "tumour"},
        "modality": {"0": "CT"},
        "numTraining": len(training),
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return root
