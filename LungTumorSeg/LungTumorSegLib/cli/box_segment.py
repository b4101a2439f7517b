"""``lungtumorseg segment CT -o OUT --box R0 A0 S0 R1 A1 S1``: the lesion in each box, with LiteMedSAM.

Writes the output set of a normal ``segment`` run (label, probability, entropy, summary, measurement tables,
overlay, snapshot, report; no mutual information, which needs an ensemble); lesion n of the label and the
tables is the lesion of the n-th ``--box``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..core.device import configure_threads, resolve_device
from ..core.errors import InputError
from ..core.option_checks import numbers_text
from ..core.progress import ProgressReporter
from ..io.input_files import load_input, name_the_file
from ..io.output_files import check_writable, removing_new_empty_folders
from ..reporting.case_outputs import output_set_names, write_case_outputs
from ..segmentation.box_prompts import LesionPrompt, check_prompt_values
from ..segmentation.box_segmentation import HU_GATE_MODES, BoxSegmentOptions, check_box_options, segment_boxes
from ..segmentation.pipeline import SegmentationResult

# segment's options of the automatic model, which a box run does not use: (attribute, option, value when unset)
AUTOMATIC_ONLY = (
    ("model", "--model", None),
    ("tta", "--tta", None),
    ("overlap", "--overlap", None),
    ("min_lesion_ml", "--min-lesion-ml", None),
    ("min_peak_probability", "--min-peak-probability", None),
    ("no_lung_crop", "--no-lung-crop", False),
    ("no_lung_filter", "--no-lung-filter", False),
    ("keep_largest", "--keep-largest", False),
    ("point", "--point", None),
)


def add_box_arguments(parser: argparse.ArgumentParser) -> None:
    """``--box``, ``--slice-box``, ``--include``, ``--exclude`` and ``--hu-gate`` for ``segment``."""
    group = parser.add_argument_group(
        "box prompts (LiteMedSAM)",
        "Segment the lesion in a box instead of running the automatic model. Coordinates are RAS mm, as Slicer "
        "shows them.",
    )
    group.add_argument(
        "--box",
        type=float,
        nargs=6,
        action="append",
        metavar=("R0", "A0", "S0", "R1", "A1", "S1"),
        help="two opposite corners of a box around one lesion; repeat for more lesions (lesion n = n-th box)",
    )
    group.add_argument(
        "--slice-box",
        type=float,
        nargs=6,
        action="append",
        metavar=("R0", "A0", "S0", "R1", "A1", "S1"),
        help="a 2D box on one axial slice (S0 = S1) that replaces the propagated box there, for the --box holding "
        "it; repeatable",
    )
    group.add_argument(
        "--include",
        type=float,
        nargs=3,
        action="append",
        metavar=("R", "A", "S"),
        help="a point that belongs to the lesion of the box holding it (used on its axial slice); repeatable",
    )
    group.add_argument(
        "--exclude",
        type=float,
        nargs=3,
        action="append",
        metavar=("R", "A", "S"),
        help="a point that does not belong to the lesion of the box holding it; repeatable",
    )
    group.add_argument(
        "--hu-gate",
        choices=HU_GATE_MODES,
        default="auto",
        help="drop voxels <= -500 HU (aerated lung): auto = for solid lesions, not ground-glass ones (default)",
    )


def check_no_box_options(args: argparse.Namespace) -> None:
    """Point prompts and the HU gate belong to ``--box``; without it they are an error, not silently ignored."""
    given = [f"--{name.replace('_', '-')}" for name in ("include", "exclude", "slice_box") if getattr(args, name, None)]
    given += ["--hu-gate"] if getattr(args, "hu_gate", "auto") != "auto" else []
    if given:
        raise InputError(f"{', '.join(given)}: only used with --box")


def box_prompts_from_args(args: argparse.Namespace) -> list[LesionPrompt]:
    """The lesion prompts of the command line, checked before anything is loaded.

    Each ``--include``/``--exclude`` point and ``--slice-box`` (by its centre) goes to the smallest box holding it.

    Raises:
        InputError: a bad box or point, options of the automatic model, several inputs.
    """
    given = [option for attribute, option, unset in AUTOMATIC_ONLY if getattr(args, attribute, unset) != unset]
    if given:
        raise InputError(f"{', '.join(given)}: not used with --box (the box prompts use LiteMedSAM)")
    if len(args.inputs) != 1:
        raise InputError(f"--box: give one CT (got {len(args.inputs)} inputs); the boxes are in its coordinates")
    prompts = [LesionPrompt((box[:3], box[3:])) for box in args.box]
    for number, prompt in enumerate(prompts, start=1):
        check_prompt_values(prompt, "--box" if len(prompts) == 1 else f"--box ({number})")
    for include, points in ((True, args.include or []), (False, args.exclude or [])):
        for point in points:
            holder = _smallest_holder(prompts, point, f"--{'include' if include else 'exclude'}")
            (holder.include_points if include else holder.exclude_points).append(point)
    for values in args.slice_box or []:
        corners = (values[:3], values[3:])
        if not all(np.isfinite(values)) or abs(values[2] - values[5]) > 1e-3:
            raise InputError(f"--slice-box {numbers_text(values)}: two corners on one axial slice (S0 = S1), in mm")
        _smallest_holder(prompts, np.mean(corners, axis=0), "--slice-box").slice_boxes.append(corners)
    return prompts


def _smallest_holder(prompts: list[LesionPrompt], point, option: str) -> LesionPrompt:
    """The smallest box holding ``point`` (InputError when none does)."""
    holders = [p for p in prompts if _holds(p, point)]
    if not holders:
        raise InputError(f"{option} {numbers_text(point)}: in no --box")
    return min(holders, key=lambda p: float(np.prod(np.abs(np.subtract(*p.corners)))))


def _holds(prompt: LesionPrompt, point) -> bool:
    corners = np.asarray(prompt.corners, dtype=np.float64)
    return bool(np.all(np.asarray(point) >= corners.min(axis=0)) and np.all(np.asarray(point) <= corners.max(axis=0)))


def run_box_segment(args: argparse.Namespace, reporter: ProgressReporter, collect_inputs, case_stems) -> int:
    """Segment the boxed lesions of one CT and write its output set (``segment``'s inputs and writers)."""
    prompts = box_prompts_from_args(args)
    options = BoxSegmentOptions(
        threshold=args.threshold if args.threshold is not None else 0.5, hu_gate=args.hu_gate, device=args.device
    )
    check_box_options(options)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads {args.threads}: must be a number at least 1")
    device = resolve_device(args.device)
    options.device = str(device)

    def note(message: str) -> None:
        reporter.log("info", message)

    files = collect_inputs(args.inputs, args.series_uid, note, args.output)
    if len(files) != 1:
        raise InputError(f"--box: {args.inputs[0]} holds {len(files)} CTs; give one CT file or series")
    path, stem = files[0], case_stems(files, note)[0]
    from ..clinical.clinical_outputs import clinical_outputs_for

    clinical = clinical_outputs_for(args, path)
    configure_threads(args.threads)
    with removing_new_empty_folders(args.output):
        check_writable(args.output, output_set_names(stem), args.overwrite)
        reporter.update("load", 0.0, path.name)
        tick = time.perf_counter()
        try:
            ct, header = load_input(path, reporter)
            result = segment_boxes(ct, prompts, options, reporter)
        except InputError as exc:
            raise name_the_file(exc, path) from None
        result.info["timings"]["load_s"] = round(time.perf_counter() - tick - result.info["timings"]["total_s"], 3)
        reporter.update("write", 0.96, f"writing outputs for {path.name}")
        as_result = SegmentationResult(result.label, result.probability, result.entropy, None, None, result.info)
        written, summary = write_case_outputs(
            path,
            ct,
            as_result,
            args.output,
            args.format,
            args.overwrite,
            not args.no_pictures,
            reporter,
            stem,
            header,
            clinical,
            case=result.measurements,
        )
    reporter.update("done", 1.0, path.name)
    reporter.emit("result", input=str(path), outputs={k: str(v) for k, v in written.items()}, summary=summary)
    if args.progress != "json":
        _print_lesions(Path(str(path)), result, written)
    return 0


def _print_lesions(path: Path, result, written: dict[str, Path]) -> None:
    by_id = {m.lesion_id: m for m in result.measurements.lesions}
    print(f"{path.name}: {len(result.lesions)} box(es) in {result.info['timings']['total_s']:.1f} s")
    for lesion in result.lesions:
        measured = by_id.get(lesion.lesion_id)
        if measured is None:
            print(f"  lesion {lesion.lesion_id}: nothing found in the box")
            continue
        gate = "HU gate on" if lesion.hu_gate else "no HU gate"
        past = f", {lesion.voxels_outside_box} voxels past the box cut off" if lesion.voxels_outside_box else ""
        print(
            f"  lesion {lesion.lesion_id}: {measured.volume_ml:.2f} ml, long axis {measured.long_axis_mm:.1f} mm, "
            f"{len(lesion.slices)} slices, {gate}{past}"
        )
    for name, out in written.items():
        print(f"  {name:<12} {out}")
