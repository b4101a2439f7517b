"""``lungtumorseg compare BASELINE FOLLOWUP -o OUT``: follow-up response (RECIST 1.1) between two CT scans.

Each CT is an image file (NIfTI, NRRD) or a DICOM series (its folder or one of its files), read as
``segment`` reads it (``dicom_cases``).

Without labels both CTs are segmented with the model; with ``--baseline-label`` / ``--followup-label``
those labels are used (for example segmentations corrected in Slicer). The follow-up is registered to
the baseline, the lesions are matched, and the RECIST 1.1 response is written with the rule that decided it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

import numpy as np

from ..core.errors import InputError
from ..core.progress import MODES, ProgressReporter
from ..core.volume import Volume
from ..followup.compare import CompareOptions, Comparison, TimePoint, compare, time_point
from ..followup.compare_outputs import output_names, write_compare_outputs
from ..followup.lesion_matching import MAX_CENTROID_DISTANCE_MM, MIN_OVERLAP_FRACTION
from ..followup.recist_response import NEW_LESION_MIN_MM
from ..followup.registration import MODES as REGISTRATION_MODES
from ..followup.registration import RegistrationSettings
from ..io.dicom_cases import DicomCase, dicom_inputs, load_case
from ..io.image_io import load_volume
from ..io.output_files import check_writable
from ..io.validation import validate_ct
from ..reporting.case_outputs import image_suffix


def add_compare_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``compare``."""
    parser = commands.add_parser(
        "compare",
        help="compare a baseline and a follow-up CT: align, match lesions, RECIST 1.1 response",
        description="Register the follow-up CT to the baseline, match the tumour lesions and report the RECIST 1.1 "
        "target-lesion response (CR/PR/SD/PD) with the rule that decided it, plus the volume change (not RECIST). "
        "Writes comparison.json, comparison.csv, comparison_report.html, comparison_transform.h5, side-by-side "
        "pictures of the target lesions and each time point's tables and report. Research use only.",
    )
    parser.add_argument(
        "baseline", type=Path, help="baseline CT: .nii, .nii.gz or .nrrd in HU, or a DICOM series folder or file"
    )
    parser.add_argument("followup", type=Path, help="follow-up CT, as the baseline")
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--baseline-label", type=Path, help="baseline tumour label on the baseline CT's grid")
    parser.add_argument("--followup-label", type=Path, help="follow-up tumour label on the follow-up CT's grid")
    parser.add_argument(
        "--registration",
        choices=(*REGISTRATION_MODES, "none"),
        default="rigid",
        help="alignment: rigid (default), affine, deformable (rigid, then B-spline in the lung field), "
        "or none (the scans already share patient coordinates)",
    )
    parser.add_argument(
        "--match-distance-mm",
        type=float,
        default=MAX_CENTROID_DISTANCE_MM,
        help="largest centroid distance after alignment for lesions that do not overlap (default %(default)s)",
    )
    parser.add_argument(
        "--min-overlap",
        type=float,
        default=MIN_OVERLAP_FRACTION,
        help="overlap, as a fraction of the smaller lesion, that links two lesions (default %(default)s)",
    )
    parser.add_argument(
        "--new-lesion-min-mm",
        type=float,
        default=NEW_LESION_MIN_MM,
        help="new lesions with a shorter long axis are listed as equivocal and do not decide PD (default %(default)s)",
    )
    parser.add_argument(
        "--nadir-sum-mm", type=float, help="smallest sum of diameters so far, the reference for PD (default: baseline)"
    )
    parser.add_argument("--model", help="bundle for segmenting CTs without a label (default: the bundled ensemble)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--tta", type=int, choices=(1, 2, 4, 8), help="flip test-time augmentations (default: model's)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch and the registration (default: all cores)")
    parser.add_argument(
        "--format", choices=("auto", "nifti", "nrrd"), default="auto", help="segmentation map format (auto: as input)"
    )
    parser.add_argument("--no-pictures", action="store_true", help="skip the PNG pictures")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--progress", choices=MODES, default="tqdm", help="tqdm bar, JSON lines on stdout, or none")
    parser.set_defaults(func=run_compare)
    return parser


class _Span:
    """A reporter that maps progress 0..1 into [start, end] of the whole run (for nested steps)."""

    def __init__(self, reporter: ProgressReporter, start: float, end: float, prefix: str = "") -> None:
        self.reporter, self.start, self.end, self.prefix = reporter, start, end, prefix

    def update(self, step: str, fraction: float, message: str = "") -> None:
        self.reporter.update(self.prefix + step, self.start + (self.end - self.start) * fraction, message)

    def log(self, level: str, message: str) -> None:
        self.reporter.log(level, message)


def run_compare(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """Run ``compare``; returns 0 on success."""
    out = stdout or sys.stdout
    reporter = ProgressReporter(args.progress)
    if args.threads:
        import SimpleITK as sitk

        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(args.threads)
    options = CompareOptions(
        registration=None if args.registration == "none" else RegistrationSettings(mode=args.registration),
        min_overlap_fraction=args.min_overlap,
        max_distance_mm=args.match_distance_mm,
        new_lesion_min_mm=args.new_lesion_min_mm,
        nadir_sum_mm=args.nadir_sum_mm,
    )
    labels = {"baseline": args.baseline_label, "followup": args.followup_label}
    cases = {"baseline": ct_case(args.baseline), "followup": ct_case(args.followup)}
    suffix = image_suffix(cases["baseline"], args.format)
    check_writable(args.output, output_names({k: v is None for k, v in labels.items()}, suffix), args.overwrite)
    reporter.update("load", 0.0, "loading the CTs")
    cts = {name: _load_ct(case, reporter) for name, case in cases.items()}
    given = {name: _load_label(path, cts[name], name) for name, path in labels.items() if path is not None}
    segmentations = _segment_missing(args, cts, given, reporter)
    points: dict[str, TimePoint] = {}
    for name, path in (("baseline", args.baseline), ("followup", args.followup)):
        result = segmentations.get(name)
        info = {"ct": str(path), "label": str(labels[name]) if labels[name] else "segmented here"}
        if result is not None:
            info["model"] = f"{result.info.get('model')} {result.info.get('model_version')}"
        label = given.get(name) or result.label
        points[name] = time_point(name, cts[name], label, None if result is None else result.entropy, info)
    span = _Span(reporter, 0.6 if segmentations else 0.05, 0.95)
    comparison = compare(
        points["baseline"], points["followup"], options, progress=lambda f, m: span.update("compare", f, m)
    )
    reporter.update("write", 0.96, "writing outputs")
    inputs = {
        "Baseline CT": str(args.baseline),
        "Baseline label": str(args.baseline_label or "segmented here"),
        "Follow-up CT": str(args.followup),
        "Follow-up label": str(args.followup_label or "segmented here"),
    }
    written = write_compare_outputs(
        comparison,
        args.output,
        segmentations=segmentations,
        suffix=suffix,
        pictures=not args.no_pictures,
        overwrite=args.overwrite,
        inputs=inputs,
    )
    reporter.update("done", 1.0, comparison.response.category)
    outputs = {kind: str(path) for kind, path in written.items()}
    reporter.emit("result", outputs=outputs, summary={"response": comparison.response.to_dict()})
    reporter.close()
    if args.progress != "json":
        print(format_comparison(comparison), file=out)
        for kind, path in written.items():
            print(f"  {kind:<24} {path}", file=out)
    return 0


def format_comparison(comparison: Comparison) -> str:
    """A short plain-text summary: the response, its rule, and one line per match."""
    response = comparison.response
    residual = comparison.alignment.residual.get("after") or {}
    lines = [f"RECIST 1.1 response: {response.category} - {response.rule}"]
    if residual:
        lines.append(f"alignment ({comparison.alignment.mode}): lung boundary distance {residual['mean_mm']:.2f} mm")
    for row in comparison.match_rows():
        target = f"target {row['target']}" if row["target"] else "non-target" if row["baseline_ids"] else ""
        before = "-" if row["baseline_long_axis_mm"] is None else f"{row['baseline_long_axis_mm']:.1f}"
        after = "-" if row["followup_long_axis_mm"] is None else f"{row['followup_long_axis_mm']:.1f}"
        lines.append(
            f"  {row['match_type']:<11} baseline {_ids(row['baseline_ids']):<6} "
            f"follow-up {_ids(row['followup_ids']):<6} long axis {before:>6} -> {after:>6} mm  {target}"
        )
    return "\n".join(lines)


def _ids(ids: list[int]) -> str:
    return ",".join(map(str, ids)) or "-"


def ct_case(path: Path) -> Path | DicomCase:
    """One CT input: an image file, or the one DICOM series of a folder (or of a DICOM file).

    Raises:
        InputError: the path does not exist, holds no image, or holds several CT series.
    """
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    cases = dicom_inputs(path)
    if len(cases) > 1:
        raise InputError(f"{path}: {len(cases)} CT series below this folder; give the folder of one series")
    if cases:
        return cases[0]
    if path.is_dir():
        raise InputError(f"{path}: a folder without a DICOM series (give the CT file or a DICOM series folder)")
    return path


def _load_ct(case: Path | DicomCase, reporter: ProgressReporter) -> Volume:
    ct = load_case(case, reporter)
    validate_ct(ct, name=str(case))
    return ct


def _load_label(path: Path, ct: Volume, name: str) -> Volume:
    label = load_volume(path, dtype=None)
    if not label.same_grid(ct):
        raise InputError(
            f"{path}: the {name} label {label.shape} is not on the {name} CT's grid {ct.shape} "
            "(export it with the CT as the reference geometry)"
        )
    if np.asarray(label.array).min() < 0:
        raise InputError(f"{path}: not a tumour label (it has negative values; is it a CT?)")
    return label


def _segment_missing(args: argparse.Namespace, cts: dict, given: dict, reporter: ProgressReporter) -> dict:
    """Segment the CTs that came without a label; returns their SegmentationResults by time point."""
    missing = [name for name in ("baseline", "followup") if name not in given]
    if not missing:
        return {}
    from ..core.device import configure_threads, resolve_device
    from ..model.bundle import find_bundle
    from ..segmentation.options import SegmentOptions
    from ..segmentation.pipeline import segment

    bundle = find_bundle(args.model)
    configure_threads(args.threads)
    networks = bundle.load_networks(resolve_device(args.device))
    options = SegmentOptions(tta=args.tta, device=args.device)  # everything else as the model's manifest says
    results = {}
    for index, name in enumerate(missing):
        start = 0.02 + 0.58 * index / len(missing)
        span = _Span(reporter, start, start + 0.58 / len(missing), prefix=f"{name} ")
        results[name] = segment(cts[name], bundle, options, span, networks=networks)
    return results
