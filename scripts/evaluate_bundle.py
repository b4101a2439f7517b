"""Measure a model against the bundled-model targets (issue 5) on the shared real CT.

- LIDC-IDRI held-out test patients (``--split``'s test list): per-crop Dice and the other metrics.
- 4D-Lung whole CT: GTV Dice, lesions found, false-positive components (not touching the GTV or
  the involved node), RECIST long-axis error; overlay and 3D snapshot pictures.
- NSCLC-Radiogenomics R01-001 whole CT (unlabelled): lesions >= 1 ml, whole-pipeline time with
  every member alone and with the whole ensemble; pictures.

    python scripts/evaluate_bundle.py lungtumorseg-ensemble --split runs/bundle-split.json -o runs/eval
    python scripts/evaluate_bundle.py runs/unet-v2 --skip-lidc --skip-r01 -o runs/eval-unet-v2

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
from LungTumorSegLib.case_outputs import write_case_outputs  # noqa: E402
from LungTumorSegLib.image_io import load_volume  # noqa: E402
from LungTumorSegLib.metrics import evaluate  # noqa: E402
from LungTumorSegLib.pipeline import SegmentOptions, segment  # noqa: E402
from LungTumorSegTrainingLib.evaluate import evaluate_cases, load_model  # noqa: E402
from LungTumorSegTrainingLib.splits import load_split  # noqa: E402

FOUR_D_LUNG = "chest-ct/4dlung-113_HM10395-phase40"
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


def gtv_slice_png(ct, gtv, result, title: str, path: Path) -> None:
    """The GTV's largest axial slice: CT (mediastinal window), GTV (red), predicted lesions (green), p >= 0.1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from LungTumorSegLib.overlay import largest_area_slice, radiological_slice

    index = largest_area_slice(gtv)
    view = [radiological_slice(v, index) for v in (ct, gtv, result.label, result.probability)]
    extent = view[0].extent
    figure = Figure(figsize=(6, 5.6), dpi=100)
    FigureCanvasAgg(figure)
    ax = figure.add_axes((0, 0, 1, 0.92))
    ax.imshow(view[0].image, cmap="gray", vmin=-1000, vmax=400, extent=extent)
    probability = np.ma.masked_less(view[3].image, 0.1)
    ax.imshow(probability, cmap="inferno", vmin=0, vmax=1, alpha=0.5, extent=extent)
    ax.contour(view[1].image > 0, levels=[0.5], colors="red", extent=extent, origin="upper", linewidths=1.5)
    if (view[2].image > 0).any():
        ax.contour(view[2].image > 0, levels=[0.5], colors="lime", extent=extent, origin="upper", linewidths=1.5)
    ax.set_axis_off()
    figure.suptitle(title, fontsize=10)
    figure.savefig(path)


def four_d_lung(bundle, networks, data: Path, out_dir: Path) -> dict[str, Any]:
    """The whole-volume validation case: GTV agreement and false positives away from GTV and node."""
    folder = data / FOUR_D_LUNG
    ct, result, seconds = whole_ct(bundle, networks, folder / "ct.nii.gz", out_dir / "4dlung")
    gtv = load_volume(folder / "tumor.nii.gz", dtype=None)
    node = load_volume(folder / "lymph_node.nii.gz", dtype=None).array > 0
    scores = evaluate(result.label, gtv)
    labels, count = ndimage.label(result.label.array > 0, structure=np.ones((3, 3, 3)))
    truth = (gtv.array > 0) | node
    voxel_ml = float(np.prod(gtv.spacing)) / 1000
    false_positives = [
        round(float((labels == i).sum() * voxel_ml), 2) for i in range(1, count + 1) if not truth[labels == i].any()
    ]
    touching_gtv = [i for i in range(1, count + 1) if (gtv.array > 0)[labels == i].any()]
    max_p = float(result.probability.array[gtv.array > 0].max())
    name = f"{bundle.name} {bundle.manifest.get('version', '')}"
    title = f"4D-Lung, {name}\nGTV (red), lesions (green), probability >= 0.1 (heat); max p in GTV {max_p:.2f}"
    gtv_slice_png(ct, gtv, result, title, out_dir / "4dlung" / "gtv_slice.png")
    return {
        "gtv_dice": round(scores["dice"], 4),
        "pred_volume_ml": round(scores["pred_volume_ml"], 2),
        "gtv_volume_ml": round(scores["gt_volume_ml"], 2),
        "lesions": count,
        "lesions_touching_gtv": len(touching_gtv),
        "false_positive_components": len(false_positives),
        "false_positive_ml": false_positives,
        "pred_long_axis_mm": round(scores["pred_largest_long_axis_mm"], 1),
        "gtv_long_axis_mm": round(scores["gt_largest_long_axis_mm"], 1),
        "long_axis_relative_error": scores["largest_long_axis_relative_error"],
        "max_probability_in_gtv": round(max_p, 3),
        "seconds": round(seconds, 1),
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
    """Record the results in the bundle manifest's ``metrics`` (4D-Lung as ``whole_volume``).

    Keys measured now replace the old ones; other keys of a section (notes such as ``measured_on``) stay.
    """
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    names = {"four_d_lung": "whole_volume", "r01": "unlabelled_full_ct", "lidc_test": "lidc_test"}
    for key, name in names.items():
        if key in metrics:
            manifest.setdefault("metrics", {}).setdefault(name, {}).update(metrics[key])
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="bundle name or folder, run folder or checkpoint")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--split", type=Path, default=ROOT / "runs" / "bundle-split.json")
    parser.add_argument("-o", "--out", type=Path, default=ROOT / "runs" / "eval")
    parser.add_argument("--max-cases", type=int, default=0, help="only the first N LIDC test crops")
    parser.add_argument("--skip-lidc", action="store_true")
    parser.add_argument("--skip-4dlung", action="store_true")
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
    if not args.skip_4dlung:
        metrics["four_d_lung"] = four_d_lung(bundle, networks, args.data, args.out)
        print("4D-Lung:", json.dumps(metrics["four_d_lung"]), flush=True)
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
