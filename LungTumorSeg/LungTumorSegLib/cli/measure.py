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

from ..core.errors import InputError
from ..core.option_checks import check_range, check_stem
from ..core.orientation import on_grid_of
from ..io.image_names import image_stem
from ..io.input_files import load_label, load_on_grid
from ..io.output_files import OutputSet, check_folder_path, removing_new_empty_folders
from ..measurements.lesion_measurements import CaseMeasurements, measure_lesions
from ..measurements.metrics import DEFAULT_DETECTION_THRESHOLD, DEFAULT_TOLERANCE_MM, evaluate
from ..reporting.report import (
    check_targets,
    measurement_table_paths,
    write_evaluation_tables,
    write_html_report,
    write_measurement_tables,
)


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
    parser.add_argument("--stem", help="output file name prefix, no folders (default: the label's file name)")
    parser.add_argument("--snapshot", action="store_true", help="also render a 3D snapshot PNG (VTK, offscreen)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier output set of the same stem (all its files)"
    )
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
    parser.add_argument("--stem", help="output file name prefix, no folders (default: the prediction's file name)")
    parser.add_argument(
        "--tolerance-mm", type=float, default=DEFAULT_TOLERANCE_MM, help="normalised surface Dice tolerance (mm, > 0)"
    )
    parser.add_argument(
        "--detection-threshold",
        type=float,
        default=DEFAULT_DETECTION_THRESHOLD,
        help="lesion-wise Dice needed for a detected lesion (0..1)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.set_defaults(func=run_evaluate)
    return parser


MEASURE_PICTURES = ("overlay.png", "snapshot.png", "report.html")


def measure_set_names(stem: str) -> list[str]:
    """Every file an earlier ``measure`` run may have written for ``stem`` (replaced as a whole)."""
    return [p.name for p in measurement_table_paths(".", stem).values()] + [f"{stem}_{n}" for n in MEASURE_PICTURES]


def run_measure(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run ``measure``: load, measure, write tables, overlay, report (and snapshot); print a table.

    The inputs are checked first (a label map as the label, a CT as ``--ct``, an entropy map in bits, all
    on the label's grid). The outputs are staged and replace an earlier set of the same stem as a whole.

    Returns:
        0 on success (a requested snapshot that cannot be rendered is reported as a warning).
    """
    out = stdout or sys.stdout
    check_stem(args.stem)
    out_dir = args.output_dir or args.label.resolve().parent
    stem = args.stem or image_stem(args.label)
    check_folder_path(out_dir)
    check_targets([out_dir / name for name in measure_set_names(stem)], args.overwrite)
    label = load_label(args.label)
    ct = load_on_grid(args.ct, label, "ct", "CT") if args.ct else None
    entropy = load_on_grid(args.entropy, label, "entropy", "entropy map") if args.entropy else None
    lung = load_on_grid(args.lung, label, "label", "lung mask") if args.lung and args.snapshot else None

    case = measure_lesions(label, ct, entropy)
    with removing_new_empty_folders(out_dir), OutputSet(out_dir, args.overwrite, measure_set_names(stem)) as staged:
        folder = staged.staging
        assert folder is not None
        kinds = {table.name: kind for kind, table in write_measurement_tables(case, folder, stem).items()}
        images: dict[str, Path] = {}
        if case.lesion_count:
            from ..reporting.overlay import write_overlay_png

            overlay = write_overlay_png(folder / f"{stem}_overlay.png", label, ct, entropy, case)
            kinds[overlay.name], images["Axial slice with the largest tumour area"] = "overlay", overlay
        if args.snapshot and case.lesion_count:
            from ..reporting.rendering import RenderingUnavailableError, write_snapshot_png

            try:
                snapshot = write_snapshot_png(
                    folder / f"{stem}_snapshot.png", label, lung=lung, entropy=entropy, case=case
                )
                kinds[snapshot.name], images["3D tumour spread"] = "snapshot", snapshot
            except RenderingUnavailableError as exc:
                print(f"warning: 3D snapshot skipped: {exc}", file=sys.stderr)
        inputs = {"Label": str(args.label)}
        inputs.update({name: str(path) for name, path in (("CT", args.ct), ("Entropy", args.entropy)) if path})
        report = write_html_report(case, folder / f"{stem}_report.html", images=images, inputs=inputs)
        kinds[report.name] = "report"
        for name in kinds:
            staged.adopt(name)
        written = {kinds[name]: path for name, path in staged.commit().items()}
    print(format_case_table(case), file=out)
    for name, path in written.items():
        print(f"{name}: {path}", file=out)
    return 0


def run_evaluate(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run ``evaluate``: load both labels, compute all metrics, print them and write JSON/CSV.

    Both inputs must be label maps; a prediction whose voxel axes are only ordered differently from
    the ground truth's is re-indexed onto its grid.

    Returns:
        0 on success.
    """
    out = stdout or sys.stdout
    check_stem(args.stem)
    check_range("--tolerance-mm", args.tolerance_mm, 0.0, low_open=True)
    check_range("--detection-threshold", args.detection_threshold, 0.0, 1.0)
    out_dir = args.output_dir or args.pred.resolve().parent
    stem = args.stem or image_stem(args.pred)
    names = [f"{stem}_evaluation.json", f"{stem}_evaluation.csv"]
    check_folder_path(out_dir)
    check_targets([out_dir / name for name in names], args.overwrite)
    gt = load_label(args.gt, "ground truth")
    pred = load_label(args.pred, "prediction")
    moved = on_grid_of(pred, gt)
    if moved is None:
        raise InputError(
            f"{args.pred}: the prediction and the ground truth {args.gt} are not on the same grid: "
            f"{gt.grid_difference(pred)} (ground truth vs prediction); resample the prediction onto it first"
        )
    result = evaluate(moved, gt, tolerance_mm=args.tolerance_mm, detection_threshold=args.detection_threshold)
    with removing_new_empty_folders(out_dir), OutputSet(out_dir, args.overwrite, names) as staged:
        assert staged.staging is not None
        tables = write_evaluation_tables(result, staged.staging, stem)
        kinds = {path.name: kind for kind, path in tables.items()}
        for name in kinds:
            staged.adopt(name)
        written = {kinds[name]: path for name, path in staged.commit().items()}
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
