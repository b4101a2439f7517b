"""The ``measure`` and ``evaluate`` subcommands of the ``lungtumorseg`` command line.

``add_measure_parser(subparsers)`` and ``add_evaluate_parser(subparsers)`` register the subcommands;
each sets ``func`` to a ``run_*(args) -> int`` returning the exit code. Errors are raised as the
engine's InputError/OutputError for the caller's ``main`` to print as one line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from .errors import InputError
from .image_io import load_volume
from .image_names import image_stem
from .measurements import CaseMeasurements, measure_lesions
from .metrics import DEFAULT_DETECTION_THRESHOLD, DEFAULT_TOLERANCE_MM, evaluate
from .report import (
    check_targets,
    measurement_table_paths,
    write_evaluation_tables,
    write_html_report,
    write_measurement_tables,
)
from .volume import Volume


def add_measure_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``measure LABEL [--ct CT] [--entropy E] [--lung MASK] [-o OUT_DIR] [--snapshot] [--overwrite]``."""
    parser = subparsers.add_parser(
        "measure",
        help="measure tumour lesions (volume, RECIST axes, 3D diameter) and write tables and a report",
        description="Measure each lesion of a tumour label: volume, HU, entropy, RECIST 1.1 long/short axis, "
        "3D maximum diameter. Writes <stem>_measurements.json, <stem>_lesions.csv, <stem>_summary.csv, "
        "<stem>_overlay.png, <stem>_report.html (and <stem>_snapshot.png with --snapshot).",
    )
    parser.add_argument("label", type=Path, help="tumour label (.nii, .nii.gz, .nrrd); any value > 0.5 is tumour")
    parser.add_argument("--ct", type=Path, help="CT in HU on the label's grid (HU statistics, overlay background)")
    parser.add_argument("--entropy", type=Path, help="uncertainty map (bits) on the label's grid")
    parser.add_argument("--lung", type=Path, help="lung-field mask drawn translucent in the 3D snapshot")
    parser.add_argument("-o", "--output-dir", type=Path, help="output folder (default: the label's folder)")
    parser.add_argument("--stem", help="output file name prefix (default: the label's file name)")
    parser.add_argument("--snapshot", action="store_true", help="also render a 3D snapshot PNG (VTK, offscreen)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run_measure)
    return parser


def add_evaluate_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``evaluate PRED GT [-o OUT_DIR] [--tolerance-mm 2] [--detection-threshold 0.1] [--overwrite]``."""
    parser = subparsers.add_parser(
        "evaluate",
        help="compare a predicted tumour label with a ground truth (Dice, HD95, NSD, RECIST, detection)",
        description="Evaluate a predicted label against a ground-truth label on the same grid. Prints a table "
        "and writes <stem>_evaluation.json and <stem>_evaluation.csv.",
    )
    parser.add_argument("pred", type=Path, help="predicted label")
    parser.add_argument("gt", type=Path, help="ground-truth label on the same grid")
    parser.add_argument("-o", "--output-dir", type=Path, help="output folder (default: the prediction's folder)")
    parser.add_argument("--stem", help="output file name prefix (default: the prediction's file name)")
    parser.add_argument(
        "--tolerance-mm", type=float, default=DEFAULT_TOLERANCE_MM, help="normalised surface Dice tolerance (mm)"
    )
    parser.add_argument(
        "--detection-threshold",
        type=float,
        default=DEFAULT_DETECTION_THRESHOLD,
        help="lesion-wise Dice needed for a detected lesion",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run_evaluate)
    return parser


def run_measure(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run ``measure``: load, measure, write tables, overlay, report (and snapshot); print a table.

    Returns:
        0 on success (a requested snapshot that cannot be rendered is reported as a warning).
    """
    out = stdout or sys.stdout
    label = load_volume(args.label, dtype=None)
    ct = _load_on_grid(args.ct, label, "CT")
    entropy = _load_on_grid(args.entropy, label, "entropy")
    lung = load_volume(args.lung, dtype=None) if args.lung and args.snapshot else None
    out_dir = args.output_dir or args.label.resolve().parent
    stem = args.stem or image_stem(args.label)
    paths = measurement_table_paths(out_dir, stem)
    paths.update(overlay=out_dir / f"{stem}_overlay.png", report=out_dir / f"{stem}_report.html")
    if args.snapshot:
        paths["snapshot"] = out_dir / f"{stem}_snapshot.png"
    check_targets(paths.values(), args.overwrite)

    case = measure_lesions(label, ct, entropy)
    written = write_measurement_tables(case, out_dir, stem, overwrite=args.overwrite)
    images: dict[str, Path] = {}
    if case.lesion_count:
        from .overlay import write_overlay_png

        written["overlay"] = write_overlay_png(paths["overlay"], label, ct, entropy, case, overwrite=args.overwrite)
        images["Axial slice with the largest tumour area"] = written["overlay"]
    if args.snapshot and case.lesion_count:
        from .rendering import RenderingUnavailableError, write_snapshot_png

        try:
            written["snapshot"] = write_snapshot_png(
                paths["snapshot"], label, lung=lung, entropy=entropy, case=case, overwrite=args.overwrite
            )
            images["3D tumour spread"] = written["snapshot"]
        except RenderingUnavailableError as exc:
            print(f"warning: 3D snapshot skipped: {exc}", file=sys.stderr)
    inputs = {"Label": str(args.label)}
    inputs.update({name: str(path) for name, path in (("CT", args.ct), ("Entropy", args.entropy)) if path})
    written["report"] = write_html_report(case, paths["report"], images=images, inputs=inputs, overwrite=args.overwrite)
    print(format_case_table(case), file=out)
    for name, path in written.items():
        print(f"{name}: {path}", file=out)
    return 0


def run_evaluate(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run ``evaluate``: load both labels, compute all metrics, print them and write JSON/CSV.

    Returns:
        0 on success.
    """
    out = stdout or sys.stdout
    pred, gt = load_volume(args.pred, dtype=None), load_volume(args.gt, dtype=None)
    out_dir = args.output_dir or args.pred.resolve().parent
    stem = args.stem or image_stem(args.pred)
    check_targets([out_dir / f"{stem}_evaluation.json", out_dir / f"{stem}_evaluation.csv"], args.overwrite)
    result = evaluate(pred, gt, tolerance_mm=args.tolerance_mm, detection_threshold=args.detection_threshold)
    written = write_evaluation_tables(result, out_dir, stem, overwrite=args.overwrite)
    print(format_evaluation_table(result), file=out)
    for name, path in written.items():
        print(f"{name}: {path}", file=out)
    return 0


def format_case_table(case: CaseMeasurements) -> str:
    """A short plain-text table of the lesions and the case summary."""
    lines = [f"{'lesion':>6} {'volume ml':>10} {'long mm':>8} {'short mm':>9} {'3D max mm':>10}  measurable"]
    for lesion in case.lesions:
        flag = "yes" if lesion.measurable else f"no ({lesion.not_measurable_reason})"
        lines.append(
            f"{lesion.lesion_id:>6} {lesion.volume_ml:>10.2f} {lesion.long_axis_mm:>8.1f} {lesion.short_axis_mm:>9.1f} "
            f"{lesion.max_diameter_3d_mm:>10.1f}  {flag}"
        )
    lines.append(
        f"{case.lesion_count} lesion(s), total {case.total_volume_ml:.2f} ml; sum of longest diameters "
        f"{case.sum_longest_diameters_mm:.1f} mm over {len(case.target_lesion_ids)} target(s) "
        f"(RECIST strict, 2 per organ: {case.sum_longest_diameters_recist_strict_mm:.1f} mm)"
    )
    return "\n".join(lines)


def format_evaluation_table(result: dict) -> str:
    """A short plain-text table of the evaluation metrics."""
    rows = [
        ("Dice", result["dice"], "{:.4f}"),
        ("HD95 (mm)", result["hd95_mm"], "{:.2f}"),
        (f"NSD @ {result['nsd_tolerance_mm']:g} mm", result["nsd"], "{:.4f}"),
        ("relative volume error", result["relative_volume_error"], "{:+.3f}"),
        ("RECIST SLD relative error", result["recist_relative_error"], "{:+.3f}"),
        ("volume pred / GT (ml)", f"{result['pred_volume_ml']:.2f} / {result['gt_volume_ml']:.2f}", "{}"),
        (
            "lesions TP / FP / FN",
            f"{result['lesion_tp']} / {result['lesion_fp']} / {result['lesion_fn']}",
            "{}",
        ),
        ("lesion sensitivity", result["lesion_sensitivity"], "{:.3f}"),
        ("lesion precision", result["lesion_precision"], "{:.3f}"),
    ]
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(f"{name:<{width}}  {'n/a' if value is None else fmt.format(value)}" for name, value, fmt in rows)


def _load_on_grid(path: Path | None, label: Volume, name: str) -> Volume | None:
    if path is None:
        return None
    volume = load_volume(path, dtype=np.float32)
    if not label.same_grid(volume):
        raise InputError(f"{path}: the {name} image ({volume.shape}) is not on the label's grid ({label.shape})")
    return volume
