"""Batch lung tumour segmentation inside 3D Slicer (no GUI).

Usage::

    Slicer --no-splash --no-main-window --python-script lungtumorseg_slicer_batch.py \
        --input CT_FILE_OR_FOLDER --output OUT_FOLDER [--model NAME|DIR] [--tta 1|2|4|8] \
        [--device auto|cpu|cuda] [--threshold T] [--min-lesion-ml V] [--overwrite]

Inputs: NIfTI/NRRD files, a folder of them, or a DICOM folder (imported into a private temporary DICOM database,
the user's database and its setting untouched, and loaded one series at a time; series that are not CT volumes,
such as localizers or MR, are skipped with a message; DICOM cases are named ``series<N>_<description>``, never
after the patient). For each CT it writes ``<name>.seg.nrrd`` (with segment terminology), ``<name>_entropy.nrrd``,
``<name>_lesion_table.tsv`` and the engine's report files; for a CT loaded from DICOM also
``<name>_seg.dcm`` (DICOM SEG) and ``<name>_sr.dcm`` (TID 1500 measurements) on the source series. The nodes
of a case are removed after it.
Exits 0 when every case succeeded, 1 when some failed, 2 for usage errors or no input found.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path

import slicer

MODULE_DIR = Path(__file__).resolve().parent.parent
if str(MODULE_DIR) not in sys.path:  # LungTumorSeg.py and LungTumorSegLib/ sit one folder up
    sys.path.insert(0, str(MODULE_DIR))

from LungTumorSegLib.slicer_glue import batch as slicer_batch  # noqa: E402


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lungtumorseg_slicer_batch", description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="CT file, folder of CT files, or DICOM folder")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--model", default="", help="bundle name or folder (default: the bundled model)")
    parser.add_argument("--tta", type=int, choices=(1, 2, 4, 8), help="flip test-time augmentations")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--threshold", type=float, help="probability threshold (default: the model's)")
    parser.add_argument("--min-lesion-ml", type=float, help="drop smaller lesions, ml (default: the model's)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return parser.parse_args(argv)


def scene_node_ids() -> list[str]:
    """IDs of the scene's nodes, in scene order."""
    scene = slicer.mrmlScene
    return [scene.GetNthNode(index).GetID() for index in range(scene.GetNumberOfNodes())]


def remove_nodes_added_since(before: list[str]) -> None:
    """Remove what a case created (its loaded series and result nodes), nothing else."""
    for node_id in slicer_batch.nodes_to_remove(before, scene_node_ids()):
        node = slicer.mrmlScene.GetNodeByID(node_id)
        if node is not None:
            slicer.mrmlScene.RemoveNode(node)


def file_cases(input_path: Path) -> Iterator[tuple[str, object]]:
    """(name, volume node) for a NIfTI/NRRD file or every such file of a folder."""
    paths = [input_path] if slicer_batch.is_image_file(input_path) else sorted(input_path.iterdir())
    for path in (p for p in paths if slicer_batch.is_image_file(p)):
        yield slicer_batch.file_case_name(path), slicer.util.loadVolume(str(path))


SERIES_TAGS = {
    "number": "0020,0011",
    "description": "0008,103E",
    "modality": "0008,0060",
    "image_type": "0008,0008",
}


@contextlib.contextmanager
def private_dicom_database() -> Iterator[object]:
    """A new DICOM database in a temporary folder, used as ``slicer.dicomDatabase`` until the block ends.

    Unlike DICOMUtils.TemporaryDICOMDatabase it never writes the database-folder setting: the user's database
    (and Slicer's setting) are untouched even when the batch is killed half-way.
    """
    import ctk

    folder = Path(tempfile.mkdtemp(prefix="LungTumorSegDICOM-", dir=slicer.app.temporaryPath))
    database = ctk.ctkDICOMDatabase()
    database.openDatabase(str(folder / "ctkDICOM.sql"))
    if not database.isOpen:
        raise RuntimeError(f"could not create a DICOM database in {folder}")
    database.initializeDatabase()
    original = getattr(slicer, "dicomDatabase", None)
    slicer.dicomDatabase = database
    try:
        yield database
    finally:
        slicer.dicomDatabase = original
        database.closeDatabase()
        shutil.rmtree(folder, ignore_errors=True)


def dicom_cases(input_path: Path) -> Iterator[tuple[str, object]]:
    """(name, volume node) per CT series of a DICOM folder, loaded one series at a time."""
    from DICOMLib import DICOMUtils

    used: set[str] = set()
    with private_dicom_database() as database:
        DICOMUtils.importDicom(str(input_path), database)
        for patient in database.patients():
            for study in database.studiesForPatient(patient):
                for series in database.seriesForStudy(study):
                    files = database.filesForSeries(series)
                    if not files:
                        continue
                    tags = {key: database.fileValue(files[0], tag) for key, tag in SERIES_TAGS.items()}
                    name = slicer_batch.series_case_name(tags["number"], tags["description"], series, used)
                    reason = slicer_batch.series_skip_reason(tags["modality"], tags["image_type"])
                    if reason:
                        print(f"{name}: skipped: {reason}", flush=True)
                        continue
                    nodes = [slicer.mrmlScene.GetNodeByID(i) for i in DICOMUtils.loadSeriesByUID([series])]
                    volumes = [n for n in nodes if n is not None and n.IsA("vtkMRMLScalarVolumeNode")]
                    dims = volumes[0].GetImageData().GetDimensions() if volumes else ()
                    reason = slicer_batch.volume_skip_reason(dims) if volumes else "no scalar volume loaded"
                    if reason:
                        print(f"{name}: skipped: {reason}", flush=True)
                        continue
                    yield name, volumes[0]


def cases(input_path: Path) -> Iterator[tuple[str, object]]:
    """Image files first; a folder without image files is read as DICOM."""
    if slicer_batch.is_image_file(input_path):
        yield from file_cases(input_path)
        return
    if not input_path.is_dir():
        raise FileNotFoundError(f"{input_path}: no such file or folder")
    if any(slicer_batch.is_image_file(p) for p in input_path.iterdir()):
        yield from file_cases(input_path)
    else:
        yield from dicom_cases(input_path)


def save_case(result, name: str, out_dir: Path, overwrite: bool) -> list[Path]:
    """Write segmentation, entropy, lesion table (Slicer's own writers) and the engine's report files."""
    from LungTumorSegLib.slicer_glue import mrml_nodes as nodes
    from LungTumorSegLib.slicer_glue import segment_helpers as helpers

    targets = {
        "segmentation": out_dir / f"{name}.seg.nrrd",
        "entropy": out_dir / f"{name}_entropy.nrrd",
        "table": out_dir / f"{name}_lesion_table.tsv",
        "table_schema": out_dir / f"{name}_lesion_table.schema.tsv",  # column types and units, by the table writer
    }
    reports = {
        src: out_dir / f"{name}{src.name[len(result.stem) :]}"
        for src in helpers.report_files(result.outputDir, result.stem)
    }
    existing = [p for p in list(targets.values()) + list(reports.values()) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"outputs exist (use --overwrite): {', '.join(map(str, existing))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    nodes.write_node(result.segmentationNode, targets["segmentation"])
    if result.entropyNode is not None:
        nodes.write_node(result.entropyNode, targets["entropy"])
    else:
        del targets["entropy"]
    nodes.write_node(result.tableNode, targets["table"])
    if not targets["table_schema"].exists():
        del targets["table_schema"]
    for src, dst in reports.items():
        shutil.copyfile(src, dst)
    return list(targets.values()) + list(reports.values())


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    from LungTumorSeg import LungTumorSegLogic
    from LungTumorSegLib.slicer_glue import segment_helpers as helpers

    logic = LungTumorSegLogic()
    missing = logic.missingDependencies()
    if missing:
        print(f"error: missing Python packages in Slicer: {', '.join(missing)} (open the module once to install)")
        return 2
    settings = helpers.SegmentSettings(
        model=args.model, tta=args.tta, device=args.device, threshold=args.threshold, min_lesion_ml=args.min_lesion_ml
    )
    failures = count = 0

    def progress(event: helpers.ProgressEvent) -> None:
        if event.event == "progress" and event.fraction is not None:
            print(f"  {100 * event.fraction:5.1f}% {event.step_label} {event.message}", flush=True)
        elif event.event in ("log", "error"):
            print(f"  {event.data.get('level', event.event)}: {event.message}", flush=True)

    try:
        before = scene_node_ids()
        for name, volumeNode in cases(args.input):
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
            remove_nodes_added_since(before)
        remove_nodes_added_since(before)  # series skipped after loading
    except Exception as exc:  # noqa: BLE001
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if count == 0:
        print(f"error: no CT images or CT series in {args.input}", file=sys.stderr)
        return 2
    print(f"{count - failures}/{count} case(s) segmented")
    return 1 if failures else 0


if __name__ == "__main__":
    code = 2
    try:
        code = main(sys.argv[1:])
    finally:
        slicer.util.exit(code)
