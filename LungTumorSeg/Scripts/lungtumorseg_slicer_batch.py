"""Batch lung tumour segmentation inside 3D Slicer (no GUI).

Usage::

    Slicer --no-splash --no-main-window --python-script lungtumorseg_slicer_batch.py \
        --input CT_FILE_OR_FOLDER --output OUT_FOLDER [--model NAME|DIR] [--tta 1|2|4|8] \
        [--device auto|cpu|cuda] [--threshold T] [--min-lesion-ml V] [--overwrite]

Inputs: NIfTI/NRRD files, a folder of them, or DICOM folders (imported through a temporary Slicer DICOM
database). For each CT it writes ``<name>.seg.nrrd`` (with segment terminology), ``<name>_entropy.nrrd``,
``<name>_lesions.csv`` (the lesion table) and the engine's report files; for a CT loaded from DICOM also
``<name>_seg.dcm`` (DICOM SEG) and ``<name>_sr.dcm`` (TID 1500 measurements) on the source series.
Exits non-zero when a case fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from pathlib import Path

import slicer

MODULE_DIR = Path(__file__).resolve().parent.parent
if str(MODULE_DIR) not in sys.path:  # LungTumorSeg.py and LungTumorSegLib/ sit one folder up
    sys.path.insert(0, str(MODULE_DIR))

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lungtumorseg_slicer_batch", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="CT file, folder of CT files, or DICOM folder")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--model", default="", help="bundle name or folder (default: the bundled model)")
    parser.add_argument("--tta", type=int, choices=(1, 2, 4, 8), help="flip test-time augmentations")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threshold", type=float, help="probability threshold")
    parser.add_argument("--min-lesion-ml", type=float, help="drop smaller lesions (ml)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser.parse_args(argv)


def is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def case_name(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def load_cases(input_path: Path):
    """Yield (name, volume node) for every CT found; DICOM folders go through a temporary DICOM database."""
    if is_image(input_path):
        yield case_name(input_path), slicer.util.loadVolume(str(input_path))
        return
    if not input_path.is_dir():
        raise FileNotFoundError(f"{input_path}: no such file or folder")
    images = sorted(p for p in input_path.iterdir() if is_image(p))
    for path in images:
        yield case_name(path), slicer.util.loadVolume(str(path))
    if images:
        return
    from DICOMLib import DICOMUtils

    with DICOMUtils.TemporaryDICOMDatabase() as database:
        DICOMUtils.importDicom(str(input_path), database)
        for patientUID in database.patients():
            for nodeID in DICOMUtils.loadPatientByUID(patientUID):
                node = slicer.mrmlScene.GetNodeByID(nodeID)
                if node is not None and node.IsA("vtkMRMLScalarVolumeNode"):
                    yield node.GetName().replace(" ", "_").replace(":", "_"), node


def save_case(result, name: str, out_dir: Path, overwrite: bool) -> list[Path]:
    """Write segmentation, entropy, lesion table and the engine's report files."""
    import shutil

    from LungTumorSegLib import slicer_helpers as helpers

    targets = {
        "segmentation": out_dir / f"{name}.seg.nrrd",
        "entropy": out_dir / f"{name}_entropy.nrrd",
        "table": out_dir / f"{name}_lesion_table.tsv",
    }
    reports = {
        src: out_dir / f"{name}{src.name[len(result.stem) :]}"
        for src in helpers.report_files(result.outputDir, result.stem)
    }
    existing = [p for p in list(targets.values()) + list(reports.values()) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"outputs exist (use --overwrite): {', '.join(map(str, existing))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not slicer.util.saveNode(result.segmentationNode, str(targets["segmentation"])):
        raise OSError(f"could not write {targets['segmentation']}")
    if result.entropyNode is not None and not slicer.util.saveNode(result.entropyNode, str(targets["entropy"])):
        raise OSError(f"could not write {targets['entropy']}")
    if not slicer.util.saveNode(result.tableNode, str(targets["table"])):
        raise OSError(f"could not write {targets['table']}")
    for src, dst in reports.items():
        shutil.copyfile(src, dst)
    return list(targets.values()) + list(reports.values())


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from LungTumorSeg import LungTumorSegLogic
    from LungTumorSegLib import slicer_helpers as helpers

    logic = LungTumorSegLogic()
    missing = logic.missingDependencies()
    if missing:
        print(f"error: missing Python packages in Slicer: {', '.join(missing)} (open the module once to install)")
        return 2
    settings = helpers.SegmentSettings(
        model=args.model, tta=args.tta, device=args.device, threshold=args.threshold, min_lesion_ml=args.min_lesion_ml
    )
    failures = 0
    count = 0

    def progress(event: helpers.ProgressEvent) -> None:
        if event.event == "progress" and event.fraction is not None:
            print(f"  {100 * event.fraction:5.1f}% {event.step_label} {event.message}", flush=True)
        elif event.event in ("log", "error"):
            print(f"  {event.data.get('level', event.event)}: {event.message}", flush=True)

    try:
        for name, volumeNode in load_cases(args.input):
            count += 1
            print(f"{name}: segmenting", flush=True)
            try:
                result = logic.run(volumeNode, settings, progressCallback=progress, showIn3D=False)
                written = save_case(result, name, args.output, args.overwrite)
                written += logic.saveDicomOutputs(result, args.output, name, args.overwrite)
                print(f"{name}: {result.summaryText}")
                for path in written:
                    print(f"  {path}")
            except Exception as exc:  # noqa: BLE001 - one failing case must not stop the batch
                failures += 1
                logging.debug(traceback.format_exc())
                print(f"{name}: FAILED: {exc}", file=sys.stderr)
            slicer.mrmlScene.Clear()
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if count == 0:
        print(f"error: no CT images or DICOM series in {args.input}", file=sys.stderr)
        return 2
    print(f"{count - failures}/{count} case(s) segmented")
    return 1 if failures else 0


if __name__ == "__main__":
    code = 2
    try:
        code = main(sys.argv[1:])
    finally:
        slicer.util.exit(code)
