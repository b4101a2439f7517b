"""``lungtumorseg segment`` and ``lungtumorseg models``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..clinical.clinical_outputs import ClinicalOutputs, add_clinical_arguments, clinical_outputs_for
from ..core.device import configure_threads, resolve_device
from ..core.errors import BundleError, InputError, LungTumorSegError
from ..core.progress import MODES, ProgressReporter
from ..io.dicom_cases import DicomCase, case_stem, dicom_inputs
from ..io.image_io import first_line
from ..io.image_names import IMAGE_SUFFIXES, is_output_file, unique_stems
from ..io.input_files import load_input, name_the_file
from ..io.output_files import check_writable, removing_new_empty_folders
from ..model.bundle import ModelBundle, find_bundle, list_bundles, read_bundle
from ..model.model_names import NO_LESION_HINT
from ..model.sensitivity_presets import PRESET_NAMES
from ..reporting.case_outputs import output_set_names, write_case_outputs
from ..segmentation.options import SegmentOptions, check_segment_options, resolve_preset
from ..segmentation.pipeline import segment
from .box_segment import add_box_arguments, check_no_box_options, run_box_segment

LOG = logging.getLogger("lungtumorseg")
EXIT_INTERNAL_ERROR, EXIT_BAD_INPUT = 1, 2


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
        "inputs",
        nargs="+",
        type=Path,
        help="CT files, folders of .nii/.nii.gz/.nrrd files, or DICOM folders (this tool's own outputs in them "
        "are skipped)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if needed)")
    parser.add_argument("--model", help="bundle name or folder (default: the bundled ensemble)")
    parser.add_argument("--tta", type=int, choices=(1, 2, 4, 8), help="flip test-time augmentations (default: model's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, help="CPU threads for torch, at least 1 (default: all cores)")
    parser.add_argument("--overlap", type=float, help="sliding-window overlap 0..0.9 (default: model's)")
    parser.add_argument("--threshold", type=float, help="probability threshold in (0, 1] (default: model's)")
    parser.add_argument("--min-lesion-ml", type=float, help="drop lesions smaller than this, >= 0 (default: model's)")
    parser.add_argument(
        "--sensitivity",
        choices=PRESET_NAMES,
        help="operating point (the model's cross-validated presets; default: the model's, high for the bundled "
        "one): which lesions are reported and which weaker regions are listed as candidates (<name>_candidates.json)",
    )
    parser.add_argument(
        "--min-peak-probability",
        type=float,
        help="report a lesion only if its highest probability reaches this, 0..1; 0 shows every candidate "
        "(default: the preset's)",
    )
    parser.add_argument("--no-lung-crop", action="store_true", help="run on the whole image, not the lung-field box")
    parser.add_argument("--no-lung-filter", action="store_true", help="keep lesions outside the lung field")
    parser.add_argument("--keep-largest", action="store_true", help="keep only the largest lesion")
    parser.add_argument(
        "--point", type=float, nargs=3, metavar=("R", "A", "S"), help="seed point (RAS mm): segment that lesion"
    )
    parser.add_argument("--roi-mm", type=float, default=80.0, help="side of the seed-point region (mm, at least 10)")
    parser.add_argument(
        "--format", choices=("auto", "nifti", "nrrd"), default="auto", help="output format (auto: as input)"
    )
    parser.add_argument("--no-pictures", action="store_true", help="skip the overlay/3D snapshot/HTML report")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an earlier output set of the same case (all its files)"
    )
    parser.add_argument("--progress", choices=MODES, default="tqdm", help="tqdm bar, JSON lines on stdout, or none")
    add_clinical_arguments(parser)
    add_box_arguments(parser)
    parser.set_defaults(func=run_segment)


def add_models_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``models``."""
    parser = commands.add_parser("models", help="list the installed model bundles", description="List model bundles.")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run_models)


def collect_inputs(
    inputs: list[Path],
    series_uid: str | None = None,
    note: Callable[[str], None] | None = None,
    output: Path | None = None,
) -> list[Path | DicomCase]:
    """Expand folders into their image files or DICOM series, once each; raise InputError if nothing is found.

    In a folder, hidden files and this tool's own outputs (``*_tumor.nii.gz``, ``*.seg.nrrd``, ``*_seg.dcm``,
    ``*_sr.dcm``, ...) are skipped, and so is the output folder inside a DICOM tree, so a folder can be
    segmented into itself. A file or series given twice is segmented once.
    """
    files: list[Path | DicomCase] = []
    skipped = 0
    for item in inputs:
        if item.is_dir():
            images = []
            for path in sorted(item.iterdir()):
                if path.name.startswith(".") or not path.name.lower().endswith(IMAGE_SUFFIXES):
                    continue
                if is_output_file(path):
                    skipped += 1
                else:
                    images.append(path)
            files += images or dicom_inputs(item, series_uid, skip=output)
        elif item.exists():
            files += dicom_inputs(item, series_uid) or [item]
        else:
            raise InputError(f"{item}: no such file or folder")
    if skipped and note:
        note(f"skipped {skipped} output file(s) of earlier runs (*_tumor, *_probability, ...) in the input folder(s)")
    unique: dict[object, Path | DicomCase] = {}
    for entry in files:
        key = (entry.series.uid, entry.series.folder.resolve()) if isinstance(entry, DicomCase) else entry.resolve()
        if key in unique:
            if note:
                note(f"{entry} is listed more than once: segmented once")
            continue
        unique[key] = entry
    if not unique:
        raise InputError(f"no .nii, .nii.gz or .nrrd images or DICOM series in {', '.join(map(str, inputs))}")
    return list(unique.values())


def case_stems(files: list[Path | DicomCase], note: Callable[[str], None] | None = None) -> list[str]:
    """A distinct output stem per input (parent folders prefixed where names collide), checked up front.

    Raises:
        InputError: two inputs that no folder prefix tells apart (``ct.nii`` and ``ct.nrrd`` in one folder).
    """
    places = [entry.series.folder if isinstance(entry, DicomCase) else entry for entry in files]
    stems = unique_stems(places, [case_stem(entry) for entry in files])
    seen: dict[str, Path | DicomCase] = {}
    for entry, stem in zip(files, stems):
        if stem in seen:
            raise InputError(
                f"{seen[stem]} and {entry} would write the same outputs ({stem}_*); rename one or segment them apart"
            )
        seen[stem] = entry
        if note and stem != case_stem(entry):
            note(f"{entry}: outputs named {stem}_* (another input has the same name)")
    return stems


def options_from_args(args: argparse.Namespace) -> SegmentOptions:
    """SegmentOptions from parsed arguments."""
    return SegmentOptions(
        tta=args.tta,
        device=args.device,
        overlap=args.overlap,
        threshold=args.threshold,
        min_lesion_ml=args.min_lesion_ml,
        min_peak_probability=args.min_peak_probability,
        sensitivity=args.sensitivity,
        restrict_to_lung=False if args.no_lung_filter else None,
        keep_largest=True if args.keep_largest else None,
        crop_to_lung=not args.no_lung_crop,
        point_ras=args.point,
        roi_mm=args.roi_mm,
    )


def run_segment(args: argparse.Namespace) -> int:
    """Segment every input; returns 0 when all succeeded.

    Every option is checked before anything is loaded, and every output name before any work. With
    several inputs a failed case is reported and the others go on; the run then ends with a summary
    and exit code 2 (1 when a failure was an internal error).
    """
    reporter = ProgressReporter(args.progress)
    try:
        return _segment_all(args, reporter)
    finally:
        reporter.close()


def _segment_all(args: argparse.Namespace, reporter: ProgressReporter) -> int:
    if getattr(args, "box", None):
        return run_box_segment(args, reporter, collect_inputs, case_stems)
    check_no_box_options(args)
    options = options_from_args(args)
    check_segment_options(options, args.threads)

    def note(message: str) -> None:
        reporter.log("info", message)

    device = resolve_device(args.device)
    files = collect_inputs(args.inputs, args.series_uid, note, args.output)
    stems = case_stems(files, note)
    clinical = [clinical_outputs_for(args, path) for path in files]
    bundle = find_bundle(args.model)
    resolve_preset(bundle.output, options, bundle.name)  # a preset the model lacks is refused before any work
    configure_threads(args.threads)
    networks: list = []
    failures: list[tuple[Path | DicomCase, Exception]] = []
    with removing_new_empty_folders(args.output):
        for stem in stems:
            check_writable(args.output, output_set_names(stem), args.overwrite)
        for index, (path, stem) in enumerate(zip(files, stems)):
            try:
                _segment_case(
                    args, path, stem, clinical[index], bundle, device, networks, options, reporter, (index, len(files))
                )
            except BundleError:
                raise  # the model is broken for every case
            except LungTumorSegError as exc:
                error = name_the_file(exc, path) if isinstance(exc, InputError) else exc
                if len(files) == 1:
                    raise error  # noqa: B904 - the same error, now naming the file
                failures.append((path, error))
                _report_failure(reporter, str(error), path)
            except Exception as exc:  # noqa: BLE001 - one internal error must not lose the other cases
                if len(files) == 1:
                    raise
                LOG.debug("unexpected error", exc_info=True)
                failures.append((path, exc))
                _report_failure(reporter, f"{path}: unexpected {type(exc).__name__}: {first_line(exc)}", path)
    if failures:
        names = ", ".join(path.name for path, _ in failures)
        _report_failure(reporter, f"{len(failures)} of {len(files)} cases failed ({names}); the others were written")
        internal = any(not isinstance(error, LungTumorSegError) for _, error in failures)
        return EXIT_INTERNAL_ERROR if internal else EXIT_BAD_INPUT
    return 0


def _segment_case(
    args: argparse.Namespace,
    path: Path | DicomCase,
    stem: str,
    clinical: ClinicalOutputs,
    bundle: ModelBundle,
    device: torch.device,
    networks: list,
    options: SegmentOptions,
    reporter: ProgressReporter,
    position: tuple[int, int],
) -> None:
    """Load, check, segment and write one case (``networks`` is filled on first use and reused)."""
    reporter.update("load", 0.0, f"{path.name} ({position[0] + 1}/{position[1]})")
    tick = time.perf_counter()
    ct, header = load_input(path, reporter)
    if not networks:
        networks += bundle.load_networks(device)
    result = segment(ct, bundle, options, reporter, networks=networks)
    result.info["timings"]["load_s"] = round(time.perf_counter() - tick - result.info["timings"]["total_s"], 3)
    reporter.update("write", 0.96, f"writing outputs for {path.name}")
    pictures = not args.no_pictures
    written, summary = write_case_outputs(
        path, ct, result, args.output, args.format, args.overwrite, pictures, reporter, stem, header, clinical
    )
    reporter.update("done", 1.0, path.name)
    reporter.emit("result", input=str(path), outputs={k: str(v) for k, v in written.items()}, summary=summary)
    if args.progress != "json":
        _print_case(path, summary, written)


def _report_failure(reporter: ProgressReporter, message: str, path: Path | DicomCase | None = None) -> None:
    """One error line on stderr (and a JSON ``error`` event naming the input) for a case of a batch."""
    fields = {"input": str(path)} if path is not None else {}
    reporter.emit("error", **fields, message=message)
    tqdm.write(f"lungtumorseg: error: {message}", file=sys.stderr)  # keeps a progress bar intact


def _print_case(path: Path | DicomCase, summary: dict[str, Any], written: dict[str, Path]) -> None:
    lesions, info = summary.get("lesions", {}), summary["info"]
    preset = (info.get("sensitivity") or {}).get("preset")
    listed = f", {info.get('candidates', 0)} candidate(s)" if preset else ""
    print(
        f"{path.name}: {lesions.get('lesion_count', 0)} lesion(s), {lesions.get('total_volume_ml', 0.0):.2f} ml"
        f"{listed} in {info['timings']['total_s']:.1f} s on {info['device']}"
        + (f" (sensitivity {preset})" if preset else "")
    )
    if not lesions.get("lesion_count", 0):
        print(f"  note: {NO_LESION_HINT}")
    for name, out in written.items():
        print(f"  {name:<12} {out}")


def run_models(args: argparse.Namespace) -> int:
    """Print the installed bundles with their members and weights; a broken bundle is named with its problem."""
    rows = []
    for name, folder in list_bundles().items():
        try:
            bundle = read_bundle(folder)
        except BundleError as exc:
            rows.append({"name": name, "path": str(folder), "version": None, "members": [], "error": str(exc)})
            print(f"lungtumorseg: warning: bundle {name} skipped: {exc}", file=sys.stderr)
            continue
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
            if "error" in row:
                print(f"{row['name']} [broken: {row['error']}]\n  {row['path']}")
                continue
            members = ", ".join(f"{m['name']} ({m['architecture']}, w={m['weight']:.2f})" for m in row["members"])
            note = " [placeholder]" if row["placeholder"] else ""
            print(f"{row['name']} {row['version']}{note}: {members}\n  {row['path']}")
    return 0
