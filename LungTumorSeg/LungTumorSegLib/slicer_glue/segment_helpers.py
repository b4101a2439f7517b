"""Pure helpers for the Slicer module (no ``slicer``/``qt``/``torch`` import): testable in plain Python.

- Slicer's volume arrays are indexed ``[k, j, i]`` (KJI) with a 4x4 IJKToRAS matrix; the engine's
  ``Volume`` holds ``[i, j, k]`` with the same matrix as its affine.
- The engine's ``--progress json`` output is parsed line by line, tolerating non-JSON lines.
- Lesion tables are built from the engine's measurements JSON (``{"case": {...}, "lesions": [...]}``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.paths import MODULE_DIR
from ..core.volume import Volume
from ..model.model_names import MANIFEST, NO_LESION_HINT, list_bundles
from ..model.sensitivity_presets import PRESET_NAMES, bundle_presets, default_preset_name

# ---------------------------------------------------------------- geometry


def volume_from_kji(array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> Volume:
    """Engine ``Volume`` from a Slicer array (``arrayFromVolume``, KJI) and its 4x4 IJKToRAS matrix."""
    array = np.ascontiguousarray(np.asarray(array_kji).transpose(2, 1, 0))
    return Volume(array, np.asarray(ijk_to_ras, dtype=np.float64).reshape(4, 4))


def kji_from_volume(volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(KJI array, 4x4 IJKToRAS matrix) for Slicer from an engine ``Volume``."""
    return np.ascontiguousarray(volume.array.transpose(2, 1, 0)), volume.affine.copy()


def ras_of_kji(kji: tuple[int, int, int] | np.ndarray, ijk_to_ras: np.ndarray) -> np.ndarray:
    """RAS position (mm) of the voxel at Slicer array index ``[k, j, i]``."""
    k, j, i = (float(v) for v in kji)
    return (np.asarray(ijk_to_ras, dtype=np.float64) @ np.array([i, j, k, 1.0]))[:3]


# ---------------------------------------------------------------- progress protocol

STEP_LABELS = {
    "load": "Loading CT",
    "pre-process": "Pre-processing",
    "load model": "Loading model",
    "inference": "Running the networks",
    "segment": "Segmenting the box (LiteMedSAM)",
    "post-process": "Post-processing",
    "measure": "Measuring lesions",
    "write": "Writing results",
    "done": "Done",
}


@dataclass
class ProgressEvent:
    """One parsed line of the engine's output.

    ``event`` is ``progress``, ``log``, ``result``, ``error`` or ``text`` (a line that is not protocol JSON).
    """

    event: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def message(self) -> str:
        """The human-readable message of the line."""
        return str(self.data.get("message", ""))

    @property
    def fraction(self) -> float | None:
        """Overall fraction in [0, 1] for progress events."""
        value = self.data.get("fraction")
        try:
            return None if value is None else max(0.0, min(1.0, float(value)))
        except (TypeError, ValueError):
            return None

    @property
    def step_label(self) -> str:
        """Display name of the step (``inference`` → ``Running the networks``)."""
        step = str(self.data.get("step", ""))
        return STEP_LABELS.get(step, step.capitalize())


def parse_progress_line(line: str | bytes) -> ProgressEvent | None:
    """Parse one output line; ``None`` for blank lines, a ``text`` event for anything that is not protocol JSON."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            obj = json.loads(text)
        except ValueError:
            obj = None
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            return ProgressEvent(obj["event"], obj)
    return ProgressEvent("text", {"message": text})


class LineBuffer:
    """Splits chunks of process output into complete lines (QProcess delivers arbitrary chunks)."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, chunk: str | bytes) -> list[ProgressEvent]:
        """Add a chunk; return the events of every line it completes."""
        if isinstance(chunk, bytes):
            chunk = chunk.decode("utf-8", errors="replace")
        self._pending += chunk
        *lines, self._pending = self._pending.split("\n")
        return [e for e in (parse_progress_line(x) for x in lines) if e is not None]

    def flush(self) -> list[ProgressEvent]:
        """Events of the last unterminated line."""
        rest, self._pending = self._pending, ""
        event = parse_progress_line(rest)
        return [event] if event else []


# ---------------------------------------------------------------- command line


@dataclass
class SegmentSettings:
    """What the GUI (or a script) asks the engine for."""

    model: str = ""
    tta: int | None = None  # None: the model's default; 1 = off
    device: str = "auto"
    threshold: float | None = None
    min_lesion_ml: float | None = None
    sensitivity: str | None = None  # high, balanced or specific; None: the model's default preset
    point_ras: tuple[float, float, float] | None = None
    roi_mm: float = 80.0
    output_format: str = "nrrd"
    pictures: bool = True


def build_segment_command(python: str, input_path: str | Path, output_dir: str | Path, s: SegmentSettings) -> list[str]:
    """Argument list running ``python -m LungTumorSegLib segment`` with JSON-line progress."""
    if s.tta is not None and s.tta not in (1, 2, 4, 8):
        raise ValueError(f"TTA must be 1, 2, 4 or 8, got {s.tta}")
    if s.device not in ("auto", "cpu", "cuda") and not s.device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {s.device!r}")
    if s.sensitivity is not None and s.sensitivity not in PRESET_NAMES:
        raise ValueError(f"sensitivity must be one of {', '.join(PRESET_NAMES)}, got {s.sensitivity!r}")
    cmd = [python, "-m", "LungTumorSegLib", "segment", str(input_path), "-o", str(output_dir), "--progress", "json"]
    cmd += ["--device", s.device, "--format", s.output_format, "--overwrite"]
    if s.model:
        cmd += ["--model", s.model]
    if s.tta is not None:
        cmd += ["--tta", str(int(s.tta))]
    if s.threshold is not None:
        cmd += ["--threshold", f"{float(s.threshold):g}"]
    if s.min_lesion_ml is not None:
        cmd += ["--min-lesion-ml", f"{float(s.min_lesion_ml):g}"]
    if s.sensitivity is not None:
        cmd += ["--sensitivity", s.sensitivity]
    if s.point_ras is not None:
        r, a, sup = (float(v) for v in s.point_ras)
        cmd += ["--point", f"{r:.3f}", f"{a:.3f}", f"{sup:.3f}", "--roi-mm", f"{float(s.roi_mm):g}"]
    if not s.pictures:
        cmd.append("--no-pictures")
    return cmd


@dataclass(frozen=True)
class OutputDefaults:
    """The selected model's post-processing defaults (its manifest's ``output``, else the engine's fallbacks)."""

    threshold: float = 0.5
    min_lesion_ml: float = 0.05


THRESHOLD_STEP = 0.01  # the threshold slider's step
MIN_LESION_STEP = 0.001  # the minimum-lesion spin box's precision (3 decimals)


def model_output_defaults(manifest: dict[str, Any]) -> OutputDefaults:
    """Threshold and minimum lesion volume the engine uses for this model when the GUI passes neither."""
    output = manifest.get("output", {}) if isinstance(manifest, dict) else {}
    fallback = OutputDefaults()
    return OutputDefaults(
        threshold=_num(output.get("threshold"), fallback.threshold),
        min_lesion_ml=_num(output.get("min_lesion_ml"), fallback.min_lesion_ml),
    )


def override(value: float | None, default: float, step: float) -> float | None:
    """The GUI value to pass to the engine, or None (use the model's default) when the user left it unchanged.

    ``step`` is the widget's precision: a value shown rounded (0.05 ml in a 2-decimal box) is not a change.
    """
    if value is None or abs(float(value) - float(default)) <= step / 2:
        return None
    return float(value)


def engine_environment(base: dict[str, str] | None = None, module_dir: Path = MODULE_DIR) -> dict[str, str]:
    """Environment for the engine process: the module folder first on PYTHONPATH, unbuffered output."""
    env = dict(os.environ if base is None else base)
    parts = [str(module_dir)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Entropy shown in the slice views (bits): below 0.05 transparent, since Inferno's 0 is opaque black and the
# entropy is 0 outside the processed region (the whole slice would darken otherwise).
ENTROPY_DISPLAY_RANGE = (0.05, 1.0)


# ---------------------------------------------------------------- lesion tables

# (row key, title, unit, column type): numbers are numbers in the MRML table (plots, TSV column types,
# arrayFromTableColumn), the lesion's segment name first.
TABLE_COLUMNS = (
    ("segment_name", "Lesion", "", "string"),
    ("volume_ml", "Volume", "ml", "double"),
    ("long_axis_mm", "Long axis", "mm", "double"),
    ("short_axis_mm", "Short axis", "mm", "double"),
    ("max_diameter_3d_mm", "3D max diameter", "mm", "double"),
    ("mean_entropy", "Mean entropy", "bits", "double"),
    ("measurable", "RECIST measurable", "", "string"),
)
# decimals kept in the table (the engine's own report rounds the same way)
TABLE_DECIMALS = {"volume_ml": 2, "mean_entropy": 3}


def _num(value: Any, default: float = float("nan")) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _point(value: Any) -> tuple[float, float, float] | None:
    try:
        p = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return p if len(p) == 3 and all(np.isfinite(p)) else None  # type: ignore[return-value]


def _segment(value: Any) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    p1, p2 = _point(value[0]), _point(value[1])
    return (p1, p2) if p1 and p2 else None


def split_measurements(data: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(case summary, lesion dicts) from the measurements JSON; accepts ``{"case","lesions"}`` or a bare list."""
    if isinstance(data, list):
        return {}, [x for x in data if isinstance(x, dict)]
    if not isinstance(data, dict):
        return {}, []
    lesions = data.get("lesions", [])
    case = data.get("case") or data.get("summary") or {}
    return (case if isinstance(case, dict) else {}), [x for x in lesions if isinstance(x, dict)]


def lesion_rows(data: Any) -> list[dict[str, Any]]:
    """One normalised row per lesion (missing numbers are NaN, end points None when absent)."""
    _, lesions = split_measurements(data)
    rows = []
    for n, lesion in enumerate(lesions, start=1):
        rows.append(
            {
                "lesion_id": int(_num(lesion.get("lesion_id", lesion.get("id", n)), n)),
                "volume_ml": _num(lesion.get("volume_ml")),
                "long_axis_mm": _num(lesion.get("long_axis_mm")),
                "short_axis_mm": _num(lesion.get("short_axis_mm")),
                "max_diameter_3d_mm": _num(lesion.get("max_diameter_3d_mm")),
                "mean_entropy": _num(lesion.get("mean_entropy")),
                "measurable": bool(lesion.get("measurable", False)),
                "centroid_ras": _point(lesion.get("centroid_ras")),
                "long_axis_ras": _segment(lesion.get("long_axis_ras")),
                "short_axis_ras": _segment(lesion.get("short_axis_ras")),
            }
        )
    return rows


def table_columns() -> list[tuple[str, str, str, str]]:
    """(row key, title, unit, type) of the lesion table: the measurement columns, then the centroid (RAS mm)."""
    return list(TABLE_COLUMNS) + [(f"centroid_{axis}", f"Centroid {axis.upper()}", "mm", "double") for axis in "ras"]


def table_value(key: str, row: dict[str, Any]) -> float | str:
    """One cell of the lesion table: a rounded number (NaN when unknown) or a text."""
    if key == "measurable":
        return "yes" if row.get("measurable") else "no"
    if key == "segment_name":
        return str(row.get("segment_name") or f"Lesion {row.get('lesion_id', '')}")
    if key.startswith("centroid_"):
        point = row.get("centroid_ras")
        value = point["ras".index(key[-1])] if point else float("nan")
    else:
        value = _num(row.get(key))
    return round(float(value), TABLE_DECIMALS.get(key, 1)) if np.isfinite(value) else float("nan")


def case_summary_text(data: Any) -> str:
    """One-line case summary (lesion count, total volume, RECIST sum of longest diameters)."""
    case, lesions = split_measurements(data)
    count = int(_num(case.get("lesion_count", len(lesions)), len(lesions)))
    total = _num(case.get("total_volume_ml"), sum(_num(x.get("volume_ml"), 0.0) for x in lesions))
    if count == 0:
        return f"0 lesion(s): {NO_LESION_HINT}"
    text = f"{count} lesion(s), total {total:.2f} ml"
    if "sum_longest_diameters_mm" in case:
        targets = case.get("target_lesion_ids") or []
        text += f"; sum of longest diameters {_num(case['sum_longest_diameters_mm'], 0.0):.1f} mm"
        text += f" ({len(targets)} target lesion(s))"
    if "measurable_count" in case:
        text += f"; {int(_num(case['measurable_count'], 0))} measurable"
    return text


def find_measurements_file(outputs: dict[str, str], output_dir: str | Path, stem: str) -> Path | None:
    """The lesions JSON the engine wrote (``lesions``/``measurements`` output, or by name), if any."""
    for key in ("lesions", "measurements", "lesions_json"):
        if outputs.get(key) and Path(outputs[key]).is_file():
            return Path(outputs[key])
    for name in (f"{stem}_lesions.json", f"{stem}_measurements.json"):
        if (Path(output_dir) / name).is_file():
            return Path(output_dir) / name
    return None


REPORT_SUFFIXES = (
    "_report.html",
    "_lesions.json",
    "_measurements.json",
    "_lesions.csv",
    "_summary.csv",
    "_summary.json",
    "_candidates.json",
    "_overlay.png",
    "_snapshot.png",
)


def report_files(output_dir: str | Path, stem: str) -> list[Path]:
    """The report files of a case present in the engine's output folder."""
    return [Path(output_dir) / f"{stem}{s}" for s in REPORT_SUFFIXES if (Path(output_dir) / f"{stem}{s}").is_file()]


# ---------------------------------------------------------------- sensitivity presets and candidates


def model_presets(manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """(the model's presets for a choice box: name, description, operating point; the default preset's name).

    Empty for a model without presets (the engine then runs with its fixed output settings).
    """
    output = manifest.get("output", {}) if isinstance(manifest, dict) else {}
    presets = bundle_presets(output) if isinstance(output, dict) else {}
    rows = [{**preset.summary(), "name": name} for name, preset in presets.items()]
    return rows, default_preset_name(output) if presets else None


def preset_choice_text(row: dict[str, Any]) -> tuple[str, str]:
    """(item text, tooltip) of a preset in the panel's choice: its measured point, and its rule in the tooltip."""
    point = row.get("operating_point") or {}
    found, fps = point.get("lesions_found"), point.get("false_positives_per_ct")
    measured = ", ".join(
        filter(None, (f"{found} found" if found else "", f"{fps:g} false positives/CT" if _is_number(fps) else ""))
    )
    text = f"{row['name']} ({measured})" if measured else str(row["name"])
    tooltip = "\n".join(filter(None, (str(row.get("description") or ""), str(point.get("measured_on") or ""))))
    return text, tooltip


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def candidate_rows(document: Any) -> list[dict[str, Any]]:
    """The candidates of ``<stem>_candidates.json``, strongest first: label value, peak probability, volume,
    centroid and the RAS bounding box (``box_ras_min``/``box_ras_max``, for the box tool); malformed rows skipped."""
    items = document.get("candidates", []) if isinstance(document, dict) else []
    rows = []
    for item in items if isinstance(items, list) else []:
        box = item.get("box_ras") if isinstance(item, dict) else None
        corners = (_point(box.get("min")), _point(box.get("max"))) if isinstance(box, dict) else (None, None)
        if not isinstance(item, dict) or None in corners or _point(item.get("centroid_ras")) is None:
            continue
        rows.append(
            {
                "label": int(_num(item.get("label"), 0)),
                "peak_probability": _num(item.get("peak_probability")),
                "volume_ml": _num(item.get("volume_ml")),
                "centroid_ras": _point(item.get("centroid_ras")),
                "box_ras_min": corners[0],
                "box_ras_max": corners[1],
            }
        )
    return rows


# ---------------------------------------------------------------- model bundles


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """A bundle's manifest.json (ValueError if missing or invalid)."""
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{folder}: not a model bundle (cannot read {MANIFEST}: {exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("members"), list):
        raise ValueError(f"{folder}: {MANIFEST} has no 'members' list")
    return data


def available_models() -> dict[str, Path]:
    """Bundles by name (torch-free: the panel lists models before the dependencies are installed)."""
    return list_bundles()


def describe_members(manifest: dict[str, Any]) -> str:
    """``unet (UNet) w=0.50, swinunetr (SwinUNETR) w=0.50`` plus a placeholder note."""
    members = []
    for m in manifest.get("members", []):
        members.append(f"{m.get('name', '?')} ({m.get('architecture', '?')}) w={_num(m.get('weight'), 1.0):.2f}")
    text = ", ".join(members) or "no members"
    if manifest.get("placeholder"):
        text += "  [placeholder: untrained weights]"
    return text


def install_bundle(source: str | Path, models_dir: str | Path, overwrite: bool = False) -> Path:
    """Copy a bundle folder or .zip into ``models_dir``; returns the installed folder.

    Raises:
        FileExistsError: a bundle of that name is installed and ``overwrite`` is false.
        ValueError: ``source`` holds no valid manifest.
    """
    source, models_dir = Path(source), Path(models_dir)
    with tempfile.TemporaryDirectory() as tmp:
        if source.is_file() and zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                for member in archive.namelist():
                    if member.startswith("/") or ".." in Path(member).parts:
                        raise ValueError(f"{source}: unsafe path in archive: {member}")
                archive.extractall(tmp)
            manifests = sorted(Path(tmp).rglob(MANIFEST))
            if not manifests:
                raise ValueError(f"{source}: no {MANIFEST} in the archive")
            folder = manifests[0].parent
            name = folder.name if folder != Path(tmp) else source.stem
        elif source.is_dir():
            folder, name = source, source.name
        else:
            raise ValueError(f"{source}: not a bundle folder or .zip file")
        manifest = read_manifest(folder)
        name = str(manifest.get("name") or name)
        target = models_dir / name
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target}: a model named {name!r} is already installed")
        models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=models_dir))
        try:
            shutil.copytree(folder, staging, dirs_exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target
