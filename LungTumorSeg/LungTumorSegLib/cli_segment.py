"""``lungtumorseg segment`` and ``lungtumorseg models``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .bundle import find_bundle, list_bundles, read_bundle
from .case_outputs import output_names, write_case_outputs
from .clinical_outputs import add_clinical_arguments, clinical_outputs_for
from .device import configure_threads, resolve_device
from .dicom_cases import DicomCase, dicom_inputs, load_case
from .errors import InputError
from .image_io import NIFTI_SUFFIXES, NRRD_SUFFIXES
from .model_names import NO_LESION_HINT
from .outputs import check_writable
from .pipeline import SegmentOptions, segment
from .progress import MODES, ProgressReporter


def add_segment_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``segment``."""
    parser = commands.add_parser(
        "segment",
        help="segment lung tumours in CT images",
        description="Segment lung tumours in CT (NIfTI, NRRD or a DICOM series, in HU). Writes the tumour label, "
        "probability, entropy (uncertainty, bits) and a JSON summary on the input's grid; for DICOM input also a "
        "Slicer .seg.nrrd, a DICOM SEG and a DICOM SR measurement report.",
    )
    parser.add_argument(
        "inputs", nargs="+", type=Path, help="CT files, folders of .nii/.nii.gz/.nrrd files, or DICOM folders"
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--model", help="bundle name or folder (default: the bundled ensemble)")
    parser.add_argument("--tta", type=int, choices=(1, 2, 4, 8), help="flip test-time augmentations (default: model's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: all cores)")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap 0..0.9 (default: model's)")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: model's)")
    parser.add_argument("--min-lesion-ml", type=float, help="drop lesions smaller than this (default: model's)")
    parser.add_argument("--no-lung-crop", action="store_true", help="run on the whole image, not the lung-field box")
    parser.add_argument("--no-lung-filter", action="store_true", help="keep lesions outside the lung field")
    parser.add_argument("--keep-largest", action="store_true", help="keep only the largest lesion")
    parser.add_argument(
        "--point", type=float, nargs=3, metavar=("R", "A", "S"), help="seed point (RAS mm): segment that lesion"
    )
    parser.add_argument("--roi-mm", type=float, default=80.0, help="side of the seed-point region (mm)")
    parser.add_argument(
        "--format", choices=("auto", "nifti", "nrrd"), default="auto", help="output format (auto: as input)"
    )
    parser.add_argument("--no-pictures", action="store_true", help="skip the overlay/3D snapshot/HTML report")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--progress", choices=MODES, default="tqdm", help="tqdm bar, JSON lines on stdout, or none")
    add_clinical_arguments(parser)
    parser.set_defaults(func=run_segment)


def add_models_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``models``."""
    parser = commands.add_parser("models", help="list the installed model bundles", description="List model bundles.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_models)


def collect_inputs(inputs: list[Path], series_uid: str | None = None) -> list[Path | DicomCase]:
    """Expand folders into their image files or DICOM series; raise InputError if nothing is found."""
    files: list[Path | DicomCase] = []
    for item in inputs:
        if item.is_dir():
            images = sorted(p for p in item.iterdir() if p.name.lower().endswith(NIFTI_SUFFIXES + NRRD_SUFFIXES))
            files += images or dicom_inputs(item, series_uid)
        elif item.exists():
            files += dicom_inputs(item, series_uid) or [item]
        else:
            raise InputError(f"{item}: no such file or folder")
    if not files:
        raise InputError(f"no .nii, .nii.gz or .nrrd images or DICOM series in {', '.join(map(str, inputs))}")
    return files


def options_from_args(args: argparse.Namespace) -> SegmentOptions:
    """SegmentOptions from parsed arguments."""
    return SegmentOptions(
        tta=args.tta,
        device=args.device,
        overlap=args.overlap,
        threshold=args.threshold,
        min_lesion_ml=args.min_lesion_ml,
        restrict_to_lung=False if args.no_lung_filter else None,
        keep_largest=True if args.keep_largest else None,
        crop_to_lung=not args.no_lung_crop,
        point_ras=args.point,
        roi_mm=args.roi_mm,
    )


def run_segment(args: argparse.Namespace) -> int:
    """Segment every input; returns 0 when all succeeded."""
    reporter = ProgressReporter(args.progress)
    files = collect_inputs(args.inputs, args.series_uid)
    bundle = find_bundle(args.model)
    options = options_from_args(args)
    device = resolve_device(args.device)
    configure_threads(args.threads)
    clinical = [clinical_outputs_for(args, path) for path in files]
    for path, wanted in zip(files, clinical):
        check_writable(args.output, output_names(path, args.format, not args.no_pictures, wanted), args.overwrite)
    networks = bundle.load_networks(device)
    results: dict[str, Any] = {}
    for index, path in enumerate(files):
        reporter.update("load", 0.0, f"{path.name} ({index + 1}/{len(files)})")
        tick = time.perf_counter()
        ct = load_case(path, reporter)
        result = segment(ct, bundle, options, reporter, networks=networks)
        result.info["timings"]["load_s"] = round(time.perf_counter() - tick - result.info["timings"]["total_s"], 3)
        reporter.update("write", 0.96, f"writing outputs for {path.name}")
        written, summary = write_case_outputs(
            path, ct, result, args.output, args.format, args.overwrite, not args.no_pictures, reporter, clinical[index]
        )
        results[str(path)] = {"outputs": {k: str(v) for k, v in written.items()}, "summary": summary}
        reporter.update("done", 1.0, path.name)
        reporter.emit("result", input=str(path), outputs={k: str(v) for k, v in written.items()}, summary=summary)
        if args.progress != "json":
            _print_case(path, summary, written)
    reporter.close()
    return 0


def _print_case(path: Path, summary: dict[str, Any], written: dict[str, Path]) -> None:
    lesions = summary.get("lesions", {})
    print(
        f"{path.name}: {lesions.get('lesion_count', 0)} lesion(s), {lesions.get('total_volume_ml', 0.0):.2f} ml "
        f"in {summary['info']['timings']['total_s']:.1f} s on {summary['info']['device']}"
    )
    if not lesions.get("lesion_count", 0):
        print(f"  note: {NO_LESION_HINT}")
    for name, out in written.items():
        print(f"  {name:<12} {out}")


def run_models(args: argparse.Namespace) -> int:
    """Print the installed bundles with their members and weights."""
    rows = []
    for name, folder in list_bundles().items():
        bundle = read_bundle(folder)
        rows.append(
            {
                "name": name,
                "path": str(folder),
                "version": bundle.manifest.get("version"),
                "placeholder": bool(bundle.manifest.get("placeholder", False)),
                "members": [
                    {"name": m.name, "architecture": m.architecture, "weight": m.weight} for m in bundle.members
                ],
                "metrics": bundle.manifest.get("metrics", {}),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            members = ", ".join(f"{m['name']} ({m['architecture']}, w={m['weight']:.2f})" for m in row["members"])
            note = " [placeholder]" if row["placeholder"] else ""
            print(f"{row['name']} {row['version']}{note}: {members}\n  {row['path']}")
    return 0
