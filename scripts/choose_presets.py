"""Choose the bundled model's sensitivity presets from the cross-validation, and explain every lost lesion.

Step 3b of ``scripts/build_bundle.py`` (after the cross-validated whole-CT evaluation, which keeps each held-out
case's probability map):

1. every held-out whole CT's map swept over the confidence and candidate levels (``operating_points.case_sweep``);
2. the LIDC validation crops segmented by each fold model and by the shipped model (how many real nodules each
   confidence level keeps); the LIDC **test** crops by the shipped model, for the report only (never for a choice);
3. the presets chosen by their rules, nested (``preset_choice.choose_presets``), with 95 % bootstrap intervals;
4. written: ``scripts/data/operating_points.json`` (committed: the per-case tables and sweeps the model card and the
   presets rest on), ``docs/images/model-card/presets_froc.png`` and ``lost_lesions.png``, and with
   ``--write-manifest`` the presets into the bundle's ``manifest.json`` (``output.sensitivity``).

Each step is cached under ``runs/cv/operating_points`` (keyed by the map's or the model's SHA-256), so a rerun is cheap.

    python scripts/choose_presets.py [--write-manifest] [--bundle LungTumorSeg/Resources/Models/lungtumorseg-ensemble]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]
from LungTumorSegLib.io.image_io import load_volume  # noqa: E402
from LungTumorSegLib.model.bundle import read_bundle, sha256_of  # noqa: E402
from LungTumorSegLib.segmentation.postprocess import CONNECTIVITY_26, PostprocessSettings  # noqa: E402
from LungTumorSegTrainingLib.config import write_json_atomic  # noqa: E402
from LungTumorSegTrainingLib.data.splits import load_split  # noqa: E402
from LungTumorSegTrainingLib.evaluation.evaluate import load_model  # noqa: E402
from LungTumorSegTrainingLib.evaluation.operating_points import (  # noqa: E402
    CANDIDATE_GRID,
    MAX_LISTED,
    PEAK_GRID,
    case_sweep,
    loss_reason,
    preset_scores,
)
from LungTumorSegTrainingLib.evaluation.preset_choice import (  # noqa: E402
    RULES,
    choose_presets,
    crop_peaks,
    keep_shares,
    manifest_presets,
)
from LungTumorSegTrainingLib.evaluation.preset_pictures import save_lost_lesions, save_preset_froc  # noqa: E402
from LungTumorSegTrainingLib.evaluation.whole_ct import case_map_paths, model_fingerprint  # noqa: E402
from LungTumorSegTrainingLib.evaluation.whole_ct_cases import Reference, find_whole_ct_cases  # noqa: E402

DATA_ROOT = ROOT.parent / "shared" / "data"
CV_DIR = ROOT / "runs" / "cv" / "whole_ct_ensemble"
CACHE = ROOT / "runs" / "cv" / "operating_points"
BUNDLE_DATA = ROOT / "runs" / "bundle-data"
BUNDLE = ROOT / "LungTumorSeg" / "Resources" / "Models" / "lungtumorseg-ensemble"
TABLES = ROOT / "scripts" / "data" / "operating_points.json"
PICTURES = ROOT / "docs" / "images" / "model-card"
GRID = {"peak": list(PEAK_GRID), "candidate": list(CANDIDATE_GRID), "max_listed": MAX_LISTED}


def cached(path: Path, key: Any, compute: Any) -> Any:
    """``compute()``, or its result stored at ``path`` under the same ``key``."""
    if path.is_file():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return stored["value"]
    value = compute()
    write_json_atomic(path, {"key": key, "value": value})
    return value


def sweeps_of(report: dict[str, Any], post: PostprocessSettings, data: Path) -> dict[str, dict[str, Any]]:
    """Every held-out case's sweep (cached by its probability map's SHA-256)."""
    cases = {case.name: case for case in find_whole_ct_cases(data, [row["case"] for row in report["cases"]])}
    sweeps = {}
    for name, case in cases.items():
        probability_path, lung_path = case_map_paths(CV_DIR, name)

        def compute(case=case, probability_path=probability_path, lung_path=lung_path) -> dict[str, Any]:
            print(f"sweeping {case.name}", flush=True)
            lung = load_volume(lung_path, dtype=None).array > 0
            ct = load_volume(case.ct).array
            return case_sweep(load_volume(probability_path).array, lung, Reference.load(case), post, ct)

        key = {"map": sha256_of(probability_path), "grid": GRID, "post": vars(post)}
        sweeps[name] = cached(CACHE / f"sweep_{name}.json", key, compute)
    return sweeps


def crop_cases(names: list[str]) -> list[dict[str, Any]]:
    return [
        {"case": n, "image": BUNDLE_DATA / "image" / f"{n}.nii.gz", "label": BUNDLE_DATA / "mask" / f"{n}.nii.gz"}
        for n in names
    ]


def peaks_of(model: str, names: list[str], label: str, threshold: float) -> list[dict[str, Any]]:
    """The crops' peaks by one model (cached by the model's SHA-256 and the crop list)."""

    def compute() -> list[dict[str, Any]]:
        print(f"segmenting {len(names)} crops with {model} ({label})", flush=True)
        bundle, networks = load_model(model, "cpu")
        return crop_peaks(bundle, networks, crop_cases(names), threshold)

    key = {"model": model_fingerprint([model]), "cases": names, "threshold": threshold}
    return cached(CACHE / f"crop_peaks_{label}.json", key, compute)


def lost_lesion_panels(
    sweeps: dict[str, Any], presets: dict[str, Any], folds: dict[str, str], post: PostprocessSettings, data: Path
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every reference lesion's fate at each preset (nested levels), and a picture panel of each one that some
    preset neither reports nor lists as a candidate."""
    panels, table = [], []
    for name, sweep in sweeps.items():
        for facts in sweep["lesions"]:
            fates = {}
            for preset_name, preset in presets.items():
                level = preset["per_fold"][folds[name]]
                case = preset["cross_validated"]["cases"][name]
                reason = loss_reason(facts, post, level)
                fates[preset_name] = (
                    "reported"
                    if reason is None
                    else ("listed as a candidate" if facts["lesion"] not in case["missed"] else reason)
                )
            table.append({"case": name, **facts, "fate_cross_validated": fates})
            if any(fate != "reported" for fate in fates.values()):
                (case,) = find_whole_ct_cases(data, [name])
                labels, _ = ndimage.label(Reference.load(case).tumour, structure=CONNECTIVITY_26)
                lost = sorted({p for p, fate in fates.items() if fate != "reported"}, key=list(presets).index)
                title = (
                    f"{name} lesion {facts['lesion']}: {facts['volume_ml']:.1f} ml, {facts['mean_hu']:.0f} HU, "
                    f"max p {facts['max_probability']:.3f}\n" + "\n".join(f"{p}: {fates[p]}" for p in lost)
                )
                panels.append(
                    {
                        "ct": load_volume(case.ct),
                        "probability": load_volume(case_map_paths(CV_DIR, name)[0]),
                        "mask": labels == facts["lesion"],
                        "title": title,
                    }
                )
    return panels, table


def write_manifest(bundle: Path, presets: dict[str, Any]) -> None:
    """The presets into ``output.sensitivity``; ``output.min_peak_probability`` becomes the default preset's level."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    section = manifest_presets(presets)
    manifest["output"]["sensitivity"] = section
    manifest["output"]["min_peak_probability"] = section["presets"][section["default"]]["min_peak_probability"]
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    read_bundle(bundle)  # still a valid bundle
    print(f"presets written into {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=BUNDLE, help="the shipped bundle (its validation crops)")
    parser.add_argument("--data", type=Path, default=DATA_ROOT)
    parser.add_argument("--write-manifest", action="store_true", help="write the presets into the bundle")
    args = parser.parse_args()
    report = json.loads((CV_DIR / "whole_ct.json").read_text(encoding="utf-8"))
    output = read_bundle(args.bundle).output
    post = PostprocessSettings(
        threshold=float(output.get("threshold", 0.5)),
        min_lesion_ml=float(output.get("min_lesion_ml", 0.05)),
        restrict_to_lung=bool(output.get("restrict_to_lung", True)),
    )
    sweeps = sweeps_of(report, post, args.data)
    folds = {row["case"]: row["fold"] for row in report["cases"]}
    split = load_split(BUNDLE_DATA / "split.json")
    fold_models = {f["name"]: f["model"] for f in report["folds"]}
    fold_peaks = {}
    for fold, models in fold_models.items():
        index = int(fold.removeprefix("fold"))
        fold_peaks[fold] = peaks_of(str(ROOT / models[0]), split.folds[index]["val"], fold, post.threshold)
    final = next(
        i for i, f in enumerate(json.loads((BUNDLE_DATA / "cv_folds.json").read_text())["folds"]) if f["final"]
    )
    shipped = peaks_of(str(args.bundle), split.folds[final]["val"], "shipped_validation", post.threshold)
    test = peaks_of(
        str(args.bundle), [c for c in split.test if c.startswith("LIDC-IDRI")], "shipped_test", post.threshold
    )
    presets = choose_presets(sweeps, folds, fold_peaks, shipped)
    panels, lesion_table = lost_lesion_panels(sweeps, presets, folds, post, args.data)
    froc = [{"min_peak_probability": level, **preset_scores(sweeps, level, 1.0, 0)["summary"]} for level in PEAK_GRID]
    tables = {
        "generated_by": "python scripts/choose_presets.py (scripts/build_bundle.py step 3b)",
        "grid": GRID,
        "postprocess": vars(post),
        "rules": {rule.name: rule.description for rule in RULES},
        "folds": folds,
        "presets": presets,
        "froc": froc,
        "lesions": lesion_table,
        "crops": {
            "shipped_validation": keep_shares(shipped, post.threshold),
            "shipped_test": keep_shares(test, post.threshold),
            **{fold: keep_shares(peaks, post.threshold) for fold, peaks in fold_peaks.items()},
        },
        "sweeps": sweeps,
    }
    write_json_atomic(TABLES, tables)
    save_preset_froc(froc, tables["presets"], PICTURES / "presets_froc.png", f"{len(sweeps)} whole CTs")
    if panels:
        save_lost_lesions(panels, PICTURES / "lost_lesions.png")
    for name, preset in tables["presets"].items():
        s = preset["cross_validated"]["summary"]
        print(
            f"{name}: level {preset['min_peak_probability']} (per fold {preset['per_fold']}); cross-validated "
            f"{s['found']}/{s['lesions']} found ({s['found_with_candidates']} with candidates), "
            f"{s['false_positives_per_ct']:.2f} FP/CT {s['ci95']['false_positives_per_ct']}, "
            f"{s['false_candidates_per_ct']:.2f} false candidates/CT, "
            f"lesion Dice {s['mean_lesion_dice_over_cases']:.2f}"
        )
    print(f"-> {TABLES.relative_to(ROOT)}, {PICTURES.relative_to(ROOT)}/presets_froc.png")
    if args.write_manifest:
        write_manifest(args.bundle, tables["presets"])


if __name__ == "__main__":
    main()
