"""Whole-CT evaluation runs: every case scored by the fold model that did not train on it, resumable.

Scores are cross-validated with a plan (``cv_plan.json``) that names, for each fold, the model and the cases it did
not train on; ``evaluate_plan`` runs every case with its own fold's model only, caches each case's row under the
model's SHA-256 and writes the report (JSON, CSV, FROC, lesion pictures) and each case's probability map and lung
field (``maps/``, which ``operating_points`` sweeps without running the models again). ``context_sweep`` checks that a
lesion's segmentation does not depend on the region around it. Cases: ``whole_ct_cases``; scores:
``whole_ct_scoring``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.io.image_io import load_volume, save_volume
from LungTumorSegLib.measurements.metrics import dice
from LungTumorSegLib.model.bundle import sha256_of
from LungTumorSegLib.segmentation.options import SegmentOptions
from LungTumorSegLib.segmentation.pipeline import segment

from ..config import write_json_atomic
from .whole_ct_cases import Reference, WholeCtCase, find_whole_ct_cases
from .whole_ct_scoring import FP_MIN_ML, nested_peak_choice, report_value, score_case, summarise


@dataclass
class FoldPlan:
    """One fold of a cross-validation plan: a model and the whole CTs it never trained on."""

    name: str
    model: list[str]
    cases: list[str]
    weights: list[float] | None = None
    output: dict[str, Any] = field(default_factory=dict)


def read_plan(path: Path) -> list[FoldPlan]:
    """A ``cv_plan.json``: ``{"folds": [{"name", "model": path or [paths], "cases": [...], ...}]}``.

    Relative model paths are relative to the plan file's folder.

    Raises:
        InputError: unreadable plan, or a case in two folds.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        folds = []
        for index, fold in enumerate(data["folds"]):
            models = [fold["model"]] if isinstance(fold["model"], str) else list(fold["model"])
            models = [str((Path(path).parent / m) if not Path(m).is_absolute() else Path(m)) for m in models]
            folds.append(
                FoldPlan(
                    fold.get("name", f"fold{index}"),
                    models,
                    list(fold["cases"]),
                    fold.get("weights"),
                    fold.get("output", {}),
                )
            )
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such cross-validation plan") from exc
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise InputError(f"{path}: not a cross-validation plan ({type(exc).__name__}: {exc})") from exc
    seen: dict[str, str] = {}
    for fold in folds:
        for case in fold.cases:
            if case in seen:
                raise InputError(f"{path}: case {case} is in folds {seen[case]} and {fold.name}")
            seen[case] = fold.name
    return folds


def load_fold_model(fold: FoldPlan, device: str = "cpu") -> tuple[Any, list]:
    """The fold's bundle (folder or name) or its run folders as an in-memory ensemble."""
    from ..training.export import OutputSettings, in_memory_bundle, load_members
    from .evaluate import load_model

    if len(fold.model) == 1 and not fold.weights and not fold.output:
        return load_model(fold.model[0], device)
    members = load_members(fold.model, fold.weights)
    settings = OutputSettings(**{k: v for k, v in fold.output.items() if k in OutputSettings.__dataclass_fields__})
    bundle, networks = in_memory_bundle(members, settings)
    return bundle, [(spec, network.to(device)) for spec, network in networks]


def evaluate_plan(
    folds: Sequence[FoldPlan],
    data_root: Path,
    out_dir: Path,
    options: SegmentOptions | None = None,
    fp_min_ml: float = FP_MIN_ML,
    pictures: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Segment every case with its fold's model, score it, and write the report to ``out_dir``.

    Writes ``whole_ct.json`` (summary and rows), ``whole_ct.csv``, ``froc.png``, one ``<case>_lesions.png`` per
    case (with ``pictures``) and ``maps/<case>_probability.nii.gz`` + ``maps/<case>_lung.nii.gz`` (CT grid).
    """
    options = options or SegmentOptions(device="cpu")
    out_dir = Path(out_dir)
    (out_dir / "cases").mkdir(parents=True, exist_ok=True)
    rows = []
    for fold in folds:
        fingerprint = {
            "models": model_fingerprint(fold.model),
            "weights": fold.weights,
            "output": fold.output,
            "options": repr(options),
            "fp_min_ml": fp_min_ml,
        }
        cases = find_whole_ct_cases(data_root, fold.cases)
        cached = {case.name: _cached_row(out_dir, case, fingerprint, pictures) for case in cases}
        if None in cached.values():
            bundle, networks = load_fold_model(fold, options.device if options.device != "auto" else "cpu")
        for case in cases:
            row = cached[case.name]
            if row is None:
                tick = time.perf_counter()
                ct = load_volume(case.ct)
                result = segment(ct, bundle, options, networks=networks)
                row = {"fold": fold.name, **score_case(case, result, fp_min_ml)}
                row["seconds"] = round(time.perf_counter() - tick, 1)
                save_case_maps(out_dir, case.name, result)
                if pictures:
                    from ..training.plots import save_lesion_panels

                    save_lesion_panels(ct, Reference.load(case), result, out_dir / f"{case.name}_lesions.png", row)
                write_json_atomic(out_dir / "cases" / f"{case.name}.json", {"fingerprint": fingerprint, "row": row})
            else:
                log(f"{case.name}: scored before with the same model and options (reused)")
            rows.append(row)
            log(_case_line(row))
    summary = summarise(rows)
    report = {"summary": summary, "cases": rows, "fp_min_ml": fp_min_ml, "folds": [vars(f) for f in folds]}
    choice = nested_peak_choice(rows)
    if choice is not None:
        report["peak_choice"] = choice
        log(f"min_peak_probability chosen on all cases: {choice['all_folds']}")
        if "cross_validated" in choice:
            cv = choice["cross_validated"]
            log(
                f"with each fold's level chosen on the other folds {choice['per_fold']}: sensitivity "
                f"{cv['sensitivity']:.2f}, {cv['false_positives_per_ct']:.2f} FP/CT, "
                f"lesion Dice {cv['mean_lesion_dice_over_cases']:.2f}"
            )
    write_json_atomic(out_dir / "whole_ct.json", report)
    _write_csv(rows, out_dir / "whole_ct.csv")
    if pictures and "froc" in summary:
        from ..training.plots import save_froc

        save_froc(summary["froc"], out_dir / "froc.png", title=f"{len(rows)} whole CTs, {summary['lesions']} lesions")
    return report


def case_map_paths(out_dir: Path, case_name: str) -> tuple[Path, Path]:
    """(probability map, lung field) of a scored case, as ``evaluate_plan`` keeps them."""
    folder = Path(out_dir) / "maps"
    return folder / f"{case_name}_probability.nii.gz", folder / f"{case_name}_lung.nii.gz"


def save_case_maps(out_dir: Path, case_name: str, result: Any) -> None:
    """Keep a case's probability and lung field (all zero when none was found) on the CT grid."""
    probability, lung = case_map_paths(out_dir, case_name)
    probability.parent.mkdir(parents=True, exist_ok=True)
    lung_array = result.lung_mask.array if result.lung_mask is not None else np.zeros(result.label.shape, np.uint8)
    save_volume(result.label.with_array(lung_array.astype(np.uint8)), lung, overwrite=True)
    save_volume(result.probability, probability, overwrite=True)


def model_fingerprint(models: Sequence[str]) -> list[str]:
    """SHA-256 of each model's weights (a run's ``checkpoints/best.pt``, a bundle's ``manifest.json``).

    A bundle's manifest holds the checksums of its weight files; a model given by name is its name.
    """
    digests = []
    for model in models:
        path = Path(model)
        candidates = [path / "checkpoints" / "best.pt", path / "manifest.json", path]
        found = next((c for c in candidates if c.is_file()), None)
        digests.append(sha256_of(found) if found is not None else str(model))
    return digests


def _cached_row(out_dir: Path, case: WholeCtCase, fingerprint: dict, pictures: bool) -> dict[str, Any] | None:
    """The case's row from an earlier run with the same models and options (an interrupted evaluation resumes)."""
    path = out_dir / "cases" / f"{case.name}.json"
    if not path.is_file() or (pictures and not (out_dir / f"{case.name}_lesions.png").is_file()):
        return None
    if not all(p.is_file() for p in case_map_paths(out_dir, case.name)):
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return cached["row"] if cached.get("fingerprint") == fingerprint else None


CONTEXT_ROIS_MM = (40.0, 80.0, 160.0, None)  # None: the whole scan


def context_sweep(
    case: WholeCtCase,
    bundle: Any,
    networks: list,
    rois_mm: Sequence[float | None] = CONTEXT_ROIS_MM,
    lesion: int = 0,
    options: SegmentOptions | None = None,
) -> list[dict[str, Any]]:
    """The same reference lesion segmented with more and more anatomy around it.

    Seed-point runs with a cube of each ROI side around the lesion's centre, and (``None``) a run on the whole
    scan; each keeps the predicted lesion at (or nearest to) the centre and scores it against the reference
    lesion. A context-independent model gives the same Dice at every size.

    Args:
        lesion: which reference lesion (largest first).
    """
    from LungTumorSegLib.measurements.lesion_measurements import find_lesions
    from LungTumorSegLib.segmentation.postprocess import lesion_at_point

    options = options or SegmentOptions(device="cpu")
    reference = Reference.load(case)
    target = find_lesions(reference.tumour)[lesion]
    ref_mask = np.zeros(reference.tumour.shape, bool)
    ref_mask[target.slices] = target.mask
    centre_voxel = np.argwhere(ref_mask).mean(axis=0)
    centre = (reference.affine @ np.append(centre_voxel, 1.0))[:3]
    ct = load_volume(case.ct)
    rows = []
    for roi in rois_mm:
        run = SegmentOptions(**{**vars(options), "point_ras": None if roi is None else list(centre)})
        if roi is not None:
            run.roi_mm = float(roi)
        result = segment(ct, bundle, run, networks=networks)
        label = result.label.array > 0
        if roi is None:
            label = lesion_at_point(label.astype(np.uint8), centre_voxel) > 0
        rows.append(
            {
                "roi_mm": roi,
                "dice": dice(label & ~reference.ignore, ref_mask),
                "max_probability_in_lesion": float(result.probability.array[ref_mask].max()),
                "pred_volume_ml": float(label.sum() * reference.voxel_ml),
            }
        )
    return rows


def _case_line(row: dict[str, Any]) -> str:
    return (
        f"{row['case']} ({row['fold']}): {row['detected']}/{row['reference_lesions']} lesions found, "
        f"lesion Dice {row['lesion_dice']:.3f}, {row['false_positives']} FP >= {FP_MIN_ML} ml "
        f"{row['false_positive_ml']}, max p in tumour {row['max_probability_in_tumour']:.2f}, {row['seconds']} s"
    )


CSV_KEYS = (
    "fold",
    "case",
    "reference_lesions",
    "detected",
    "lesion_dice",
    "case_dice",
    "false_positives",
    "mean_abs_long_axis_error",
    "pred_volume_ml",
    "reference_volume_ml",
    "max_probability_in_tumour",
    "seconds",
)


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_KEYS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: report_value(row.get(k)) for k in CSV_KEYS})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)
