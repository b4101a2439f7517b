"""Measure a model against the bundled-model targets on the shared real CT.

- LIDC-IDRI held-out test patients (``--split``'s test list): per-crop Dice and the other metrics.
- NSCLC-Radiogenomics R01-001 whole CT (unlabelled): lesions >= 1 ml, whole-pipeline time with
  every member alone and with the whole ensemble; overlay and 3D snapshot pictures.
- Context independence: the LIDC-IDRI-0001 whole-CT nodule at ROI 40 / 80 / 160 mm and on the whole scan
  (``--context-model``: e.g. the cross-validation model that never saw that CT).
- ``--cv-report``: the cross-validated whole-CT scores (``lungtumorseg-train evaluate PLAN --whole-ct``),
  copied into the manifest with ``--write-manifest``.

    python scripts/evaluate_bundle.py lungtumorseg-ensemble --split runs/bundle-data/split.json -o runs/eval
    python scripts/evaluate_bundle.py runs/unet --skip-lidc --skip-r01 --context-model runs/cv/unet-f0

MODEL is a bundle name or folder, or a training run folder / checkpoint. Writes ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]
from LungTumorSegLib.io.image_io import load_volume  # noqa: E402
from LungTumorSegLib.reporting.case_outputs import write_case_outputs  # noqa: E402
from LungTumorSegLib.segmentation.options import SegmentOptions  # noqa: E402
from LungTumorSegLib.segmentation.pipeline import segment  # noqa: E402
from LungTumorSegTrainingLib.data.splits import load_split  # noqa: E402
from LungTumorSegTrainingLib.evaluation.evaluate import evaluate_cases, load_model  # noqa: E402
from LungTumorSegTrainingLib.evaluation.whole_ct import context_sweep  # noqa: E402
from LungTumorSegTrainingLib.evaluation.whole_ct_cases import find_whole_ct_cases  # noqa: E402

CONTEXT_CASE = "lidc-idri-0001"
R01 = "chest-ct/nsclc-radiogenomics-R01-001/ct.nii.gz"
FP_MIN_ML = 1.0
SUMMARY_MEANS = ("hd95_mm", "nsd", "relative_volume_error", "recist_relative_error", "lesion_sensitivity")


def lidc_test(bundle, networks, data: Path, split_path: Path, max_cases: int) -> dict[str, Any]:
    """Full-pipeline metrics on the split's held-out LIDC test crops, with a 95 % CI for the mean Dice."""
    names = [c for c in load_split(split_path).test if c.startswith("LIDC-IDRI")]
    names = names[:max_cases] if max_cases else names
    lidc = data / "lidc-nodule-crops"
    cases = [
        {"case": n, "image": lidc / "image" / f"{n}.nii.gz", "label": lidc / "mask" / f"{n}.nii.gz"} for n in names
    ]
    rows, summary = evaluate_cases(bundle, networks, cases, SegmentOptions(device="cpu"))
    dices = np.array([r["dice"] for r in rows if r.get("dice") is not None])
    half = 1.96 * dices.std(ddof=1) / np.sqrt(len(dices))
    return {
        "cases": len(rows),
        "dice_mean": round(float(dices.mean()), 4),
        "dice_ci95": [round(float(dices.mean() - half), 4), round(float(dices.mean() + half), 4)],
        "dice_median": round(float(np.median(dices)), 4),
        **{k: summary[k]["mean"] for k in SUMMARY_MEANS if summary.get(k)},
    }


def whole_ct(bundle, networks, ct_path: Path, out_dir: Path) -> tuple[Any, Any, float]:
    """Segment one whole CT, write every output (pictures included) and return (ct, result, seconds)."""
    ct = load_volume(ct_path)
    tick = time.perf_counter()
    result = segment(ct, bundle, SegmentOptions(device="cpu"), networks=networks)
    seconds = time.perf_counter() - tick
    write_case_outputs(ct_path, ct, result, out_dir, overwrite=True)
    return ct, result, seconds


def context(bundle, networks, data: Path, case_name: str) -> dict[str, Any]:
    """The context-independence check: one nodule's Dice at ROI 40 / 80 / 160 mm and on the whole scan."""
    (case,) = find_whole_ct_cases(data, [case_name])
    rows = context_sweep(case, bundle, networks, options=SegmentOptions(device="cpu", tta=1))
    dices = [row["dice"] for row in rows]
    return {
        "case": case_name,
        "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in rows],
        "dice_change_40mm_to_whole": round(abs(dices[0] - dices[-1]), 4),
        "max_dice_change": round(max(dices) - min(dices), 4),
    }


def r01(bundle, networks, data: Path, out_dir: Path, member_times: bool) -> dict[str, Any]:
    """Lesions >= 1 ml on the unlabelled full CT, and the pipeline time per member and for the ensemble."""
    ct, result, seconds = whole_ct(bundle, networks, data / R01, out_dir / "r01")
    voxel_ml = float(np.prod(ct.spacing)) / 1000
    labels, count = ndimage.label(result.label.array > 0, structure=np.ones((3, 3, 3)))
    volumes = sorted((float(v) * voxel_ml for v in np.bincount(labels.ravel())[1:]), reverse=True)
    per_member = {}
    if member_times and len(networks) > 1:
        for pair in networks:
            tick = time.perf_counter()
            segment(ct, bundle, SegmentOptions(device="cpu"), networks=[pair])
            per_member[pair[0].name] = round(time.perf_counter() - tick, 1)
    return {
        "shape": list(ct.shape),
        "lesions": count,
        "lesions_at_least_1ml": sum(v >= FP_MIN_ML for v in volumes),
        "lesion_ml": [round(v, 2) for v in volumes[:10]],
        "segment_seconds": round(seconds, 1),
        "segment_seconds_per_member": per_member,
        "timings": {k: round(v, 2) for k, v in result.info.get("timings", {}).items()},
    }


def add_to_manifest(manifest_path: Path, metrics: dict[str, Any]) -> None:
    """Record the results in the bundle manifest's ``metrics``.

    Keys measured now replace the old ones; other keys of a section (notes such as ``measured_on``) stay.
    """
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    names = {"r01": "unlabelled_full_ct", "lidc_test": "lidc_test", "context": "context", "whole_ct_cv": "whole_ct_cv"}
    names["context_cv"] = "context_cross_validated"
    for key, name in names.items():
        if key in metrics:
            manifest.setdefault("metrics", {}).setdefault(name, {}).update(metrics[key])
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def cv_summary(report_path: Path) -> dict[str, Any]:
    """The manifest's view of a cross-validated whole-CT report: summary and one line per case."""
    report = json.loads(report_path.read_text(encoding="utf-8"))
    keys = ("fold", "detected", "reference_lesions", "lesion_dice", "false_positives", "mean_abs_long_axis_error")
    return {
        "measured_on": "each labelled whole CT of ../shared/data segmented by the cross-validation model that did "
        "not train on it (folds grouped by patient; LIDC test patients in no fold), full pipeline, bundle defaults",
        "report": str(report_path),
        "summary": {k: v for k, v in report["summary"].items() if k != "froc"},
        "froc": report["summary"].get("froc"),
        "peak_choice": {k: v for k, v in report.get("peak_choice", {}).items() if k != "cases"},
        "cases": {row["case"]: {k: row[k] for k in keys} for row in report["cases"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="bundle name or folder, run folder or checkpoint")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--split", type=Path, default=ROOT / "runs" / "bundle-data" / "split.json")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "runs" / "eval")
    parser.add_argument("--max-cases", type=int, default=0, help="only the first N LIDC test crops")
    parser.add_argument("--skip-lidc", action="store_true")
    parser.add_argument("--skip-context", action="store_true")
    parser.add_argument("--context-model", help="also run the context check with this model (one that never saw it)")
    parser.add_argument("--cv-report", type=Path, help="whole_ct.json of the cross-validated whole-CT evaluation")
    parser.add_argument("--skip-r01", action="store_true")
    parser.add_argument("--member-times", action="store_true", help="also time R01-001 with each member alone")
    parser.add_argument("--write-manifest", action="store_true", help="add the results to a bundle's manifest")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: all cores)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    bundle, networks = load_model(args.model, "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"model": args.model}
    if args.cv_report:
        metrics["whole_ct_cv"] = cv_summary(args.cv_report)
    if not args.skip_context:
        metrics["context"] = {**context(bundle, networks, args.data, CONTEXT_CASE), "model": args.model}
        print("context:", json.dumps(metrics["context"]), flush=True)
        if args.context_model:  # e.g. the cross-validation model that never saw the case
            pair = load_model(args.context_model, "cpu")
            metrics["context_cv"] = {**context(*pair, args.data, CONTEXT_CASE), "model": args.context_model}
            print("context (held-out model):", json.dumps(metrics["context_cv"]), flush=True)
    if not args.skip_r01:
        metrics["r01"] = r01(bundle, networks, args.data, args.out, args.member_times)
        print("R01-001:", json.dumps(metrics["r01"]), flush=True)
    if not args.skip_lidc:
        metrics["lidc_test"] = lidc_test(bundle, networks, args.data, args.split, args.max_cases)
        print("LIDC test:", json.dumps(metrics["lidc_test"]), flush=True)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1), encoding="utf-8")
    if args.write_manifest:
        add_to_manifest(bundle.path / "manifest.json", metrics)
    print(f"→ {args.out / 'metrics.json'}")


if __name__ == "__main__":
    main()
