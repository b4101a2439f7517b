"""Whole-CT evaluation: lesion detection, lesion Dice, false positives, RECIST error and an FROC curve.

The labelled whole chest CTs live in ``<data>/chest-ct/<case>/`` (``ct.nii.gz`` + ``tumor.nii.gz``; optional
``tumor_votes.nii.gz``, readers per voxel, whose outlines outside ``tumor.nii.gz`` are an ignore region, and
``lymph_node.nii.gz``, involved nodes that are tumour too but not scored). Each reference lesion is a
26-connected component of ``tumor.nii.gz``. A reference lesion is *detected* when a predicted lesion shares
a voxel with it; its *lesion Dice* compares it with the union of the predicted lesions touching it; a
*false positive* is a predicted lesion of at least ``fp_min_ml`` touching no reference lesion, ignore
region or involved node.

Scores are cross-validated with a plan (``cv_plan.json``) that names, for each fold, the model and the
cases it did not train on; ``evaluate_plan`` runs every case with its own fold's model only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from LungTumorSegLib.bundle import sha256_of
from LungTumorSegLib.errors import InputError
from LungTumorSegLib.image_io import load_volume
from LungTumorSegLib.measurements import Component, measure_lesions
from LungTumorSegLib.pipeline import SegmentationResult, SegmentOptions, segment
from LungTumorSegLib.postprocess import CONNECTIVITY_26, PostprocessSettings, postprocess
from LungTumorSegLib.volume import Volume

from .config import write_json_atomic

CHEST_CT = "chest-ct"
FP_MIN_ML = 0.1
FROC_THRESHOLDS = tuple(round(0.1 * i, 1) for i in range(1, 10))
PEAK_LEVELS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
NON_COMMERCIAL = "CC BY-NC 3.0"
# Folder-name prefixes of the shared whole CTs: (patient id as in training case names, licence)
KNOWN_PATIENTS = {
    "4dlung-113_HM10395": ("113_HM10395", "CC BY 3.0"),
    "nsclc-radiomics-LUNG1-001": ("LUNG1-001", NON_COMMERCIAL),
    "ibsi-ct-phantom-nsclc": ("IBSI-phantom", NON_COMMERCIAL),
    "nsclc-radiogenomics-R01-001": ("R01-001", "CC BY 3.0"),
}


@dataclass(frozen=True)
class WholeCtCase:
    """One labelled whole chest CT of the shared data."""

    name: str
    folder: Path
    patient: str
    licence: str

    @property
    def ct(self) -> Path:
        return self.folder / "ct.nii.gz"

    @property
    def tumour(self) -> Path:
        return self.folder / "tumor.nii.gz"

    @property
    def votes(self) -> Path | None:
        path = self.folder / "tumor_votes.nii.gz"
        return path if path.is_file() else None

    @property
    def involved_nodes(self) -> Path | None:
        path = self.folder / "lymph_node.nii.gz"
        return path if path.is_file() else None


def case_patient(folder_name: str) -> tuple[str, str]:
    """(patient id, licence) of a shared whole-CT folder; LIDC folders map to ``LIDC-IDRI-XXXX``."""
    if folder_name.lower().startswith("lidc-idri-"):
        return "LIDC-IDRI-" + folder_name.split("-")[-1], "CC BY 3.0"
    for prefix, info in KNOWN_PATIENTS.items():
        if folder_name.startswith(prefix):
            return info
    return folder_name, "unknown"


def find_whole_ct_cases(data_root: Path, names: Sequence[str] | None = None) -> list[WholeCtCase]:
    """The labelled whole CTs under ``data_root/chest-ct`` (those with ``tumor.nii.gz``), by folder name.

    Raises:
        InputError: no such folder, or a requested name is not a labelled whole CT.
    """
    root = Path(data_root) / CHEST_CT
    if not root.is_dir():
        raise InputError(f"{root}: no whole-CT folder (expected <data>/{CHEST_CT}/<case>/ct.nii.gz)")
    cases = []
    for folder in sorted(p for p in root.iterdir() if (p / "ct.nii.gz").is_file() and (p / "tumor.nii.gz").is_file()):
        patient, licence = case_patient(folder.name)
        cases.append(WholeCtCase(folder.name, folder, patient, licence))
    if names is not None:
        known = {c.name: c for c in cases}
        missing = [n for n in names if n not in known]
        if missing:
            raise InputError(f"not a labelled whole CT in {root}: {', '.join(missing)} (known: {', '.join(known)})")
        cases = [known[n] for n in names]
    return cases


@dataclass
class Reference:
    """What a whole CT's prediction is scored against, on the CT's grid."""

    tumour: np.ndarray  # bool
    ignore: np.ndarray  # bool: reader outlines not in the reference (not scored either way)
    other_tumour: np.ndarray  # bool: involved nodes (not false positives, not scored)
    affine: np.ndarray

    @classmethod
    def load(cls, case: WholeCtCase) -> Reference:
        tumour = load_volume(case.tumour, dtype=None)
        mask = tumour.array > 0
        ignore = np.zeros_like(mask)
        if case.votes is not None:
            ignore = (load_volume(case.votes, dtype=None).array > 0) & ~mask
        other = np.zeros_like(mask)
        if case.involved_nodes is not None:
            other = load_volume(case.involved_nodes, dtype=None).array > 0
        return cls(mask, ignore, other, tumour.affine)

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)


@dataclass
class LesionScore:
    """One reference lesion against the prediction."""

    lesion: int
    volume_ml: float
    detected: bool
    dice: float
    long_axis_mm: float
    pred_long_axis_mm: float

    @property
    def long_axis_error(self) -> float | None:
        """Relative RECIST long-axis error, (predicted - reference) / reference; None when missed."""
        if not self.detected or self.long_axis_mm <= 0:
            return None
        return (self.pred_long_axis_mm - self.long_axis_mm) / self.long_axis_mm


def score_label(label: np.ndarray, reference: Reference, fp_min_ml: float = FP_MIN_ML) -> dict[str, Any]:
    """Lesion-wise scores of a predicted label (bool/uint8 on the CT grid) against ``reference``."""
    pred = np.asarray(label) > 0
    ref_labels, n_ref = ndimage.label(reference.tumour, structure=CONNECTIVITY_26)
    pred_labels, n_pred = ndimage.label(pred, structure=CONNECTIVITY_26)
    overlap = np.zeros((n_pred + 1, n_ref + 1), dtype=np.int64)
    both = pred & reference.tumour
    np.add.at(overlap, (pred_labels[both], ref_labels[both]), 1)
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1) * reference.voxel_ml
    excused = np.zeros(n_pred + 1, dtype=bool)  # touches an ignore region or an involved node
    excused[np.unique(pred_labels[(reference.ignore | reference.other_tumour) & pred])] = True
    scored = ~reference.ignore
    lesions: list[LesionScore] = []
    for r in range(1, n_ref + 1):
        ref_mask = ref_labels == r
        touching = np.flatnonzero(overlap[1:, r]) + 1
        union = np.isin(pred_labels, touching) & scored if len(touching) else np.zeros_like(pred)
        lesions.append(
            LesionScore(
                lesion=r,
                volume_ml=float(ref_mask.sum() * reference.voxel_ml),
                detected=bool(len(touching)),
                dice=_dice(union, ref_mask),
                long_axis_mm=_long_axis(ref_mask, reference.affine),
                pred_long_axis_mm=_long_axis(union, reference.affine) if len(touching) else 0.0,
            )
        )
    false_positives = [
        round(float(pred_sizes[p]), 3)
        for p in range(1, n_pred + 1)
        if not overlap[p, 1:].any() and not excused[p] and pred_sizes[p] >= fp_min_ml
    ]
    errors = [abs(e) for e in (lesion.long_axis_error for lesion in lesions) if e is not None]
    return {
        "lesions": [vars(lesion) | {"long_axis_error": lesion.long_axis_error} for lesion in lesions],
        "reference_lesions": n_ref,
        "detected": sum(lesion.detected for lesion in lesions),
        "all_detected": all(lesion.detected for lesion in lesions),
        "lesion_dice": float(np.mean([lesion.dice for lesion in lesions])) if lesions else float("nan"),
        "case_dice": _dice(pred & scored, reference.tumour),
        "false_positives": len(false_positives),
        "false_positive_ml": sorted(false_positives, reverse=True),
        "mean_abs_long_axis_error": float(np.mean(errors)) if errors else None,
        "pred_volume_ml": float(pred[scored].sum() * reference.voxel_ml),
        "reference_volume_ml": float(reference.tumour.sum() * reference.voxel_ml),
    }


def froc_points(
    probability: np.ndarray,
    lung_mask: np.ndarray | None,
    reference: Reference,
    settings: PostprocessSettings,
    thresholds: Sequence[float] = FROC_THRESHOLDS,
    fp_min_ml: float = FP_MIN_ML,
) -> list[dict[str, float]]:
    """Detected lesions and false positives at each threshold (the rest of post-processing as ``settings``)."""
    scores = _sweep(probability, lung_mask, reference, settings, "threshold", thresholds, fp_min_ml)
    return [
        {"threshold": float(t), "detected": score["detected"], "false_positives": score["false_positives"]}
        for t, score in zip(thresholds, scores)
    ]


def peak_points(
    probability: np.ndarray,
    lung_mask: np.ndarray | None,
    reference: Reference,
    settings: PostprocessSettings,
    levels: Sequence[float] = PEAK_LEVELS,
    fp_min_ml: float = FP_MIN_ML,
) -> list[dict[str, float]]:
    """Detections, false positives and lesion Dice when lesions must reach each peak probability level."""
    scores = _sweep(probability, lung_mask, reference, settings, "min_peak_probability", levels, fp_min_ml)
    return [
        {
            "min_peak_probability": float(level),
            "detected": score["detected"],
            "false_positives": score["false_positives"],
            "lesion_dice": score["lesion_dice"],
        }
        for level, score in zip(levels, scores)
    ]


def _sweep(
    probability: np.ndarray,
    lung_mask: np.ndarray | None,
    reference: Reference,
    settings: PostprocessSettings,
    setting: str,
    values: Sequence[float],
    fp_min_ml: float,
) -> list[dict[str, Any]]:
    """``score_label`` of the post-processed probability with one post-processing setting at each value."""
    scores = []
    for value in values:
        post = PostprocessSettings(**{**vars(settings), setting: float(value)})
        scores.append(score_label(postprocess(probability, reference.voxel_ml, post, lung_mask), reference, fp_min_ml))
    return scores


def score_case(
    case: WholeCtCase, result: SegmentationResult, fp_min_ml: float = FP_MIN_ML, with_froc: bool = True
) -> dict[str, Any]:
    """All scores of one whole CT's segmentation (``result`` on the CT's own grid)."""
    reference = Reference.load(case)
    if reference.tumour.shape != result.label.shape or not np.allclose(
        reference.affine, result.label.affine, atol=1e-3
    ):
        raise InputError(f"{case.tumour}: not on the grid of {case.ct}")
    row: dict[str, Any] = {"case": case.name, "patient": case.patient, **score_label(result.label.array, reference)}
    if with_froc:
        post = PostprocessSettings(**result.info["postprocess"])
        lung = None if result.lung_mask is None else result.lung_mask.array > 0
        row["froc"] = froc_points(result.probability.array, lung, reference, post, fp_min_ml=fp_min_ml)
        row["peak_sweep"] = peak_points(result.probability.array, lung, reference, post, fp_min_ml=fp_min_ml)
    row["max_probability_in_tumour"] = float(result.probability.array[reference.tumour].max())
    return row


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Means over cases and over lesions, detection counts and the pooled FROC curve."""
    lesions = [lesion for row in rows for lesion in row["lesions"]]
    errors = [abs(x["long_axis_error"]) for x in lesions if x["long_axis_error"] is not None]
    summary: dict[str, Any] = {
        "cases": len(rows),
        "lesions": len(lesions),
        "lesions_detected": sum(x["detected"] for x in lesions),
        "cases_all_detected": sum(bool(r["all_detected"]) for r in rows),
        "mean_lesion_dice_over_cases": _mean([r["lesion_dice"] for r in rows]),
        "mean_lesion_dice_over_lesions": _mean([x["dice"] for x in lesions]),
        "mean_case_dice": _mean([r["case_dice"] for r in rows]),
        "false_positives_per_ct": _mean([r["false_positives"] for r in rows]),
        "mean_abs_long_axis_error": _mean(errors) if errors else None,
    }
    froc = [r["froc"] for r in rows if "froc" in r]
    if froc and len(froc) == len(rows):
        summary["froc"] = [
            {
                "threshold": points[0]["threshold"],
                "sensitivity": sum(p["detected"] for p in points) / max(len(lesions), 1),
                "false_positives_per_ct": sum(p["false_positives"] for p in points) / len(rows),
            }
            for points in zip(*froc)
        ]
    return summary


def choose_min_peak(rows: Sequence[dict[str, Any]]) -> float:
    """The peak level that keeps the most reference lesions, then gives the fewest false positives (the highest
    such level when several tie)."""
    sweeps = [{point["min_peak_probability"]: point for point in row["peak_sweep"]} for row in rows]
    levels = sorted(set.intersection(*(set(sweep) for sweep in sweeps)))  # rows scored with other levels

    def totals(level: float) -> tuple[int, int, float]:
        detected = sum(sweep[level]["detected"] for sweep in sweeps)
        return detected, -sum(sweep[level]["false_positives"] for sweep in sweeps), level

    return max(levels, key=totals)


def nested_peak_choice(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Choose ``min_peak_probability`` honestly: each fold's level is chosen on the other folds' cases only, and
    scored on its own cases; the level for the shipped model is chosen on all cases."""
    if not rows or any("peak_sweep" not in row for row in rows):
        return None
    folds = sorted({row["fold"] for row in rows})
    per_fold, scored = {}, []
    for fold in folds:
        others = [row for row in rows if row["fold"] != fold]
        if not others:
            continue
        level = choose_min_peak(others)
        per_fold[fold] = level
        for row in rows:
            if row["fold"] == fold:
                point = next(p for p in row["peak_sweep"] if p["min_peak_probability"] == level)
                scored.append({**point, "case": row["case"], "reference_lesions": row["reference_lesions"]})
    choice: dict[str, Any] = {
        "rule": "most reference lesions kept, then fewest false positives, then the highest level",
        "all_folds": choose_min_peak(rows),
        "per_fold": per_fold,
    }
    if scored:
        lesions = sum(p["reference_lesions"] for p in scored)
        choice["cross_validated"] = {
            "cases": scored,
            "sensitivity": sum(p["detected"] for p in scored) / max(lesions, 1),
            "false_positives_per_ct": _mean([p["false_positives"] for p in scored]),
            "mean_lesion_dice_over_cases": _mean([p["lesion_dice"] for p in scored]),
        }
    return choice


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
    from .evaluate import load_model
    from .export import OutputSettings, in_memory_bundle, load_members

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

    Writes ``whole_ct.json`` (summary and rows), ``whole_ct.csv``, ``froc.png`` and one
    ``<case>_lesions.png`` per case (with ``pictures``).
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
                if pictures:
                    from .plots import save_lesion_panels

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
        from .plots import save_froc

        save_froc(summary["froc"], out_dir / "froc.png", title=f"{len(rows)} whole CTs, {summary['lesions']} lesions")
    return report


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
    from LungTumorSegLib.measurements import find_lesions
    from LungTumorSegLib.postprocess import lesion_at_point

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
                "dice": _dice(label & ~reference.ignore, ref_mask),
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
        writer.writerow({k: _round(row.get(k)) for k in CSV_KEYS})
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) and math.isfinite(value) else ("" if value is None else value)


def _mean(values: Sequence[float]) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(np.mean(finite)) if finite else float("nan")


def _dice(pred: np.ndarray, ref: np.ndarray) -> float:
    total = int(pred.sum()) + int(ref.sum())
    return 1.0 if total == 0 else 2.0 * int((pred & ref).sum()) / total


def _long_axis(mask: np.ndarray, affine: np.ndarray) -> float:
    """RECIST long axis (mm) of a mask measured as one lesion, whatever its connectivity."""
    if not mask.any():
        return 0.0
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    component = Component(box, mask[box])  # type: ignore[arg-type]
    case = measure_lesions(Volume(mask.astype(np.uint8), affine), components=[component])
    return float(case.lesions[0].long_axis_mm)
