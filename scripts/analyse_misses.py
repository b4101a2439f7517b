"""Why are lesions lost? Measurements on the shared data, with new scans made from it at run time.

1. **Crops** (no new inference): the LIDC test and validation nodules' peak probabilities by the shipped model
   (``scripts/choose_presets.py`` caches them) against the readers' texture (ground glass → solid), the nodule's
   diameter and the crop's slice spacing: which nodules each confidence level drops.
2. **Scan variants** of the labelled whole CTs, each segmented by the cross-validation model that never saw it:
   slices resampled to 1 mm and 5 mm, added noise, a sharper and a softer kernel, a small field of view, the lesion
   near the image edge, and the sliding windows moved over the lesion (no lung crop, the image cut by 0-48 mm).
   Per reference lesion: the highest probability, the peak of its region at the outline threshold, lesion Dice,
   and the false positives per variant. Nothing of the CTs is written; each run is cached in ``-o``.

Writes ``scripts/data/miss_analysis.json`` (committed) and ``docs/images/model-card/miss_*.png``.

    python scripts/analyse_misses.py [--parts crops variants] [--cases lidc-idri-0001 ...] [--variants ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]
from LungTumorSegLib.core.volume import Volume  # noqa: E402
from LungTumorSegLib.io.image_io import load_volume  # noqa: E402
from LungTumorSegLib.segmentation.options import SegmentOptions  # noqa: E402
from LungTumorSegLib.segmentation.pipeline import segment  # noqa: E402
from LungTumorSegLib.segmentation.postprocess import CONNECTIVITY_26, PostprocessSettings, postprocess  # noqa: E402
from LungTumorSegLib.segmentation.preprocess import crop  # noqa: E402
from LungTumorSegTrainingLib.config import write_json_atomic  # noqa: E402
from LungTumorSegTrainingLib.evaluation.evaluate import load_model  # noqa: E402
from LungTumorSegTrainingLib.evaluation.operating_points import lesion_facts  # noqa: E402
from LungTumorSegTrainingLib.evaluation.preset_pictures import save_crop_peaks, save_variant_grid  # noqa: E402
from LungTumorSegTrainingLib.evaluation.scan_variants import box_around, box_from, reslice, with_kernel, with_noise  # noqa: E402
from LungTumorSegTrainingLib.evaluation.whole_ct import model_fingerprint, read_plan  # noqa: E402
from LungTumorSegTrainingLib.evaluation.whole_ct_cases import Reference, find_whole_ct_cases  # noqa: E402
from LungTumorSegTrainingLib.evaluation.whole_ct_scoring import score_label  # noqa: E402

DATA_ROOT = ROOT.parent / "shared" / "data"
BUNDLE = ROOT / "LungTumorSeg" / "Resources" / "Models" / "lungtumorseg-ensemble"
PLAN = ROOT / "runs" / "cv" / "cv_plan_ensemble.json"
CROP_PEAKS = ROOT / "runs" / "cv" / "operating_points"
OUT = ROOT / "runs" / "misses"
TABLES = ROOT / "scripts" / "data" / "miss_analysis.json"
PICTURES = ROOT / "docs" / "images" / "model-card"
LEVELS = (0.5, 0.95)  # the outline threshold alone, and the 0.3.0 confidence filter
CROP_LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98)
DIAMETER_BINS, SLICE_BINS = (6.0, 10.0, 20.0), (1.5, 2.5)
GROUPINGS = ("texture", "diameter", "slice spacing")
TEXTURES = {1: "ground glass", 2: "ground glass", 3: "part solid", 4: "solid", 5: "solid"}

Variant = Callable[[Volume, Reference, np.ndarray], tuple[Volume, Reference, SegmentOptions]]


def _reference_on(reference: Reference, change: Callable[[Volume], Volume]) -> Reference:
    """The reference masks carried onto a variant's grid by ``change`` (applied to each mask as a label)."""
    grid = Volume(np.zeros(reference.tumour.shape, np.uint8), reference.affine)
    masks = [
        change(grid.with_array(mask.astype(np.uint8)))
        for mask in (reference.tumour, reference.ignore, reference.other_tumour)
    ]
    return Reference(masks[0].array > 0, masks[1].array > 0, masks[2].array > 0, masks[0].affine)


def _options(**changes: Any) -> SegmentOptions:
    return SegmentOptions(device="cpu", **changes)


def _same(ct: Volume, reference: Reference, centre: np.ndarray):
    return ct, reference, _options()


def _slices(mm: float) -> Variant:
    def variant(ct, reference, centre):
        return reslice(ct, mm), _reference_on(reference, lambda v: reslice(v, mm, label=True)), _options()

    return variant


def _noise(sigma: float) -> Variant:
    return lambda ct, reference, centre: (with_noise(ct, sigma), reference, _options())


def _kernel(sharpness: float) -> Variant:
    return lambda ct, reference, centre: (with_kernel(ct, sharpness), reference, _options())


def _field_of_view(half_mm: float) -> Variant:
    def variant(ct, reference, centre):
        box = box_around(ct, centre, half_mm)
        return crop(ct, box), _reference_on(reference, lambda v: crop(v, box)), _options()

    return variant


def _at_edge(ct: Volume, reference: Reference, centre: np.ndarray):
    """The image starts 5 mm before the lesion along its first voxel axis (the lesion near the field-of-view edge)."""
    rows = np.flatnonzero(reference.tumour.any(axis=(1, 2)))
    lesion_start = rows[np.argmin(np.abs(rows - centre[0]))]
    while lesion_start - 1 in rows:
        lesion_start -= 1
    offset = np.array([max(0, lesion_start - int(np.ceil(5.0 / ct.spacing[0]))), 0, 0])
    box = box_from(ct, offset)
    return crop(ct, box), _reference_on(reference, lambda v: crop(v, box)), _options()


def _window_shift(mm: float) -> Variant:
    def variant(ct, reference, centre):
        box = box_from(ct, np.rint(mm / ct.spacing).astype(int))
        return crop(ct, box), _reference_on(reference, lambda v: crop(v, box)), _options(crop_to_lung=False)

    return variant


VARIANTS: dict[str, Variant] = {
    "as is": _same,
    "1 mm slices": _slices(1.0),
    "5 mm slices": _slices(5.0),
    "noise 30 HU": _noise(30.0),
    "sharp kernel": _kernel(1.5),
    "soft kernel": _kernel(-1.0),
    "field of view 120 mm": _field_of_view(60.0),
    "lesion at the image edge": _at_edge,
    **{f"windows moved {mm:g} mm": _window_shift(mm) for mm in (0.0, 16.0, 32.0, 48.0)},
}
PER_LESION = ("field of view 120 mm", "lesion at the image edge")  # variants made around each lesion in turn


def run_variant(case, name: str, lesion: int, model: str, bundle, networks) -> dict[str, Any]:
    """One variant of one case (around ``lesion`` for the per-lesion variants), segmented and scored."""
    ct, reference = load_volume(case.ct), Reference.load(case)
    labels, _ = ndimage.label(reference.tumour, structure=CONNECTIVITY_26)
    centre = np.argwhere(labels == lesion).mean(axis=0)
    ct, reference, options = VARIANTS[name](ct, reference, centre)
    result = segment(ct, bundle, options, networks=networks)
    post = PostprocessSettings(**{**result.info["postprocess"], "min_peak_probability": 0.0})
    lung = None if result.lung_mask is None else result.lung_mask.array > 0
    scores = {}
    for level in LEVELS:
        settings = PostprocessSettings(**{**vars(post), "min_peak_probability": level})
        score = score_label(postprocess(result.probability.array, reference.voxel_ml, settings, lung), reference)
        scores[f"{level:g}"] = {
            "detected": [x["detected"] for x in score["lesions"]],
            "dice": [round(x["dice"], 4) for x in score["lesions"]],
            "false_positives": score["false_positives"],
        }
    return {
        "case": case.name,
        "variant": name,
        "around_lesion": lesion if name in PER_LESION else None,
        "model": model,
        "shape": list(ct.shape),
        "spacing_mm": [round(float(s), 3) for s in ct.spacing],
        "lung_field_found": result.info["lung_field_found"],
        "lesions": lesion_facts(result.probability.array, lung, reference, post, ct.array),
        "levels": scores,
    }


def variants_part(cases: list[str], names: list[str], out: Path, fallback: str | None) -> list[dict[str, Any]]:
    """Every (case, variant) run, each by the case's own fold model (cached by the model's SHA-256)."""
    folds = {case: fold for fold in read_plan(PLAN) for case in fold.cases} if PLAN.is_file() else {}
    rows = []
    for case in find_whole_ct_cases(DATA_ROOT, cases):
        model = str(Path(folds[case.name].model[0])) if case.name in folds else fallback
        if model is None:
            raise SystemExit(f"{case.name}: no cross-validation model ({PLAN}); pass --model (it may have seen it)")
        bundle = networks = None
        lesions = ndimage.label(Reference.load(case).tumour, structure=CONNECTIVITY_26)[1]
        for name in names:
            for lesion in range(1, lesions + 1) if name in PER_LESION else [1]:
                path = out / case.name / f"{name.replace(' ', '_')}_{lesion}.json"
                key = {"model": model_fingerprint([model]), "variant": name, "lesion": lesion}
                if path.is_file() and json.loads(path.read_text())["key"] == key:
                    rows.append(json.loads(path.read_text())["row"])
                    continue
                if bundle is None:
                    bundle, networks = load_model(model, "cpu")
                print(f"{case.name}: {name}" + (f" (lesion {lesion})" if name in PER_LESION else ""), flush=True)
                row = run_variant(case, name, lesion, model, bundle, networks)
                write_json_atomic(path, {"key": key, "row": row})
                rows.append(row)
    return rows


CROP_VARIANTS: dict[str, Callable[[Volume, Volume], tuple[Volume, Volume] | None]] = {
    "as is": lambda ct, mask: (ct, mask),
    "noise 30 HU": lambda ct, mask: (with_noise(ct, 30.0), mask),
    "sharp kernel": lambda ct, mask: (with_kernel(ct, 1.5), mask),
    "soft kernel": lambda ct, mask: (with_kernel(ct, -1.0), mask),
    # thin slices from thick ones, thick slices from thin ones (only where the crop is long enough for 5 mm)
    "1 mm slices": lambda ct, mask: (reslice(ct, 1.0), reslice(mask, 1.0, True)) if ct.spacing[2] >= 2 else None,
    "5 mm slices": lambda ct, mask: (
        (reslice(ct, 5.0), reslice(mask, 5.0, True)) if ct.spacing[2] * ct.shape[2] >= 25 else None
    ),
}


def crop_variants_part(out: Path) -> dict[str, Any]:
    """The held-out LIDC test nodules as other scanners would show them, by the shipped model (never trained on
    them): per variant, the share found at the outline threshold and kept at each level, against the same nodules
    as they are."""
    from LungTumorSegTrainingLib.evaluation.preset_choice import crop_nodule_peak

    names = [p["case"] for p in json.loads((CROP_PEAKS / "crop_peaks_shipped_test.json").read_text())["value"]]
    bundle = networks = None
    results: dict[str, Any] = {}
    for variant, change in CROP_VARIANTS.items():
        path = out / "crops" / f"{variant.replace(' ', '_')}.json"
        key = {"model": model_fingerprint([str(BUNDLE)]), "cases": names}
        if path.is_file() and json.loads(path.read_text())["key"] == key:
            rows = json.loads(path.read_text())["rows"]
        else:
            if bundle is None:
                bundle, networks = load_model(str(BUNDLE), "cpu")
            print(f"crops: {variant}", flush=True)
            rows = []
            for name in names:
                ct = load_volume(DATA_ROOT / "lidc-nodule-crops" / "image" / f"{name}.nii.gz")
                mask = load_volume(DATA_ROOT / "lidc-nodule-crops" / "mask" / f"{name}.nii.gz", dtype=None)
                changed = change(ct, mask)
                if changed is None:
                    continue
                result = segment(changed[0], bundle, _options(), networks=networks)
                peak = crop_nodule_peak(result.probability.array, changed[1].array > 0, 0.5)
                rows.append({"case": name, **peak})
            write_json_atomic(path, {"key": key, "rows": rows})
        results[variant] = rows
    summary = {}
    for variant, rows in results.items():
        cases = {r["case"] for r in rows}
        same = [r for r in results["as is"] if r["case"] in cases]
        summary[variant] = {
            "nodules": len(rows),
            **{
                f"kept at {level:g}": round(float(np.mean([r["peak_at_threshold"] >= level for r in rows])), 3)
                for level in CROP_LEVELS
            },
            **{
                f"as is, kept at {level:g}": round(float(np.mean([r["peak_at_threshold"] >= level for r in same])), 3)
                for level in (0.5, 0.95)
            },
        }
    return summary


def crops_part() -> dict[str, Any]:
    """The cached crop peaks of the shipped model against texture, diameter and slice spacing."""
    metadata = {}
    with open(DATA_ROOT / "lidc-nodule-crops" / "metadata.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            metadata[f"{row['patient_id']}_R_{row['nodule_id']}"] = row
    groups: dict[str, Any] = {}
    for split in ("test", "validation"):
        path = CROP_PEAKS / f"crop_peaks_shipped_{split}.json"
        if not path.is_file():
            continue
        rows = []
        for peak in json.loads(path.read_text())["value"]:
            meta = metadata[peak["case"]]
            image = load_volume(DATA_ROOT / "lidc-nodule-crops" / "image" / f"{peak['case']}.nii.gz", dtype=None)
            diameter, slice_mm = float(meta["diameter_mm"]), float(image.spacing[2])
            rows.append(
                {
                    **peak,
                    "texture": TEXTURES.get(int(float(meta["Texture_value"])), "unknown"),
                    "diameter_mm": round(diameter, 1),
                    "diameter": _bin(diameter, DIAMETER_BINS),
                    "slice_mm": round(slice_mm, 2),
                    "slice spacing": _bin(slice_mm, SLICE_BINS),
                }
            )
        groups[split] = {"nodules": rows, "by": _grouped(rows)}
    return groups


def _grouped(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Share found at the outline threshold and kept at each level, by texture, diameter and slice spacing."""
    out = {}
    for name in GROUPINGS:
        groups: dict[str, list] = {}
        for row in rows:
            groups.setdefault(row[name], []).append(row["peak_at_threshold"])
        out[name] = {
            group: {
                "nodules": len(peaks),
                **{f"kept at {level:g}": round(float(np.mean(np.array(peaks) >= level)), 3) for level in CROP_LEVELS},
            }
            for group, peaks in sorted(groups.items())
        }
    return out


def _bin(value: float, edges: tuple[float, ...]) -> str:
    """``"< 6 mm"``, ``"6-10 mm"``, ..., ``">= 20 mm"``."""
    for index, edge in enumerate(edges):
        if value < edge:
            return f"< {edge:g} mm" if index == 0 else f"{edges[index - 1]:g}-{edge:g} mm"
    return f">= {edges[-1]:g} mm"


def _bins(edges: tuple[float, ...]) -> list[str]:
    return [_bin(value, edges) for value in (edges[0] - 1, *edges)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = ["crops", "crop-variants", "variants"]
    parser.add_argument("--parts", nargs="+", default=parts, choices=parts)
    parser.add_argument("--cases", nargs="+", help="whole-CT folders (default: every labelled one)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--model", help="model for cases without a cross-validation model (it may have seen them)")
    parser.add_argument("-o", "--out", type=Path, default=OUT, help="cache of the runs")
    parser.add_argument("--tables", type=Path, default=TABLES, help="the results JSON (updated part by part)")
    parser.add_argument("--pictures", type=Path, default=PICTURES)
    args = parser.parse_args()
    tables = json.loads(args.tables.read_text()) if args.tables.is_file() else {}
    tables["generated_by"] = "python scripts/analyse_misses.py"
    if "crops" in args.parts:
        tables["crops"] = crops_part()
    if "crop-variants" in args.parts:
        tables["crop_variants"] = crop_variants_part(args.out)
    if "variants" in args.parts:
        cases = args.cases or [c.name for c in find_whole_ct_cases(DATA_ROOT)]
        tables["variants"] = variants_part(cases, args.variants, args.out, args.model)
    write_json_atomic(args.tables, tables)
    levels = preset_levels()
    if "test" in tables.get("crops", {}):
        groupings = {"texture": ["ground glass", "part solid", "solid"], "diameter": _bins(DIAMETER_BINS)}
        groupings["slice spacing"] = _bins(SLICE_BINS)
        save_crop_peaks(tables["crops"]["test"]["nodules"], groupings, levels, args.pictures / "miss_crop_peaks.png")
    if tables.get("variants"):
        variants = [v for v in VARIANTS if any(row["variant"] == v for row in tables["variants"])]
        level = levels.get("high", 0.5)
        save_variant_grid(tables["variants"], variants, args.pictures / "miss_variants.png", level)
    print(f"-> {args.tables}, {args.pictures}/miss_*.png")


def preset_levels() -> dict[str, float]:
    """The shipped bundle's preset levels (the 0.3.0 filter, 0.95, before it had presets)."""
    output = json.loads((BUNDLE / "manifest.json").read_text())["output"]
    presets = (output.get("sensitivity") or {}).get("presets") or {}
    return {name: p["min_peak_probability"] for name, p in presets.items()} or {"0.3.0 filter": 0.95}


if __name__ == "__main__":
    main()
