"""*Save report*: every file from the lesion segments as they are when saving, so HTML, CSV, JSON, SEG and SR agree.

The segments are measured again with the engine's code at save time (after Segment Editor edits the engine's
own files would be stale), and the table and RECIST lines in the scene are updated with the same numbers. The
engine's 3D snapshot is included only while the segments are exactly as the engine made them; in Slicer's GUI a
screenshot of the 3D view is added instead. Qt-free except the optional screenshot (slicer-core in pytest).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import slicer

from . import lesion_nodes
from . import mrml_nodes as nodes
from . import segment_helpers as helpers
from . import segmentation_result as results
from .i18n import tr as _

CLINICAL_SUFFIXES = (".seg.nrrd", "_seg.dcm", "_sr.dcm")


def report_base_name(result: results.LungTumorSegResult) -> str:
    """File name stem of a saved report: the segmentation's name, spaces as underscores."""
    return result.segmentationNode.GetName().replace(" ", "_")


def report_targets(folder: Path, base: str) -> dict[str, Path]:
    """Every file *Save report* may write, by kind."""
    names = {
        "json": f"{base}_measurements.json",
        "lesions_csv": f"{base}_lesions.csv",
        "summary_csv": f"{base}_summary.csv",
        "overlay": f"{base}_overlay.png",
        "snapshot": f"{base}_snapshot.png",
        "view": f"{base}_3d_view.png",
        "report": f"{base}_report.html",
    }
    names.update({suffix: f"{base}{suffix}" for suffix in CLINICAL_SUFFIXES})
    return {kind: folder / name for kind, name in names.items()}


def save_dicom_outputs(result: results.LungTumorSegResult, folder, base: str, overwrite: bool = False) -> list[Path]:
    """``<base>_seg.dcm`` (DICOM SEG) and ``<base>_sr.dcm`` (TID 1500) of the lesion segments, on the source series.

    Written by the engine (highdicom) when the CT was loaded from DICOM; [] otherwise, or when the series cannot
    take the segmentation (logged).
    """
    from ..clinical.clinical_outputs import engine_run_info, write_dicom_outputs
    from ..core.errors import LungTumorSegError

    files = nodes.dicom_files_of_volume(result.inputVolume)
    if not files:
        return []
    label = helpers.volume_from_kji(results.segments_label(result), nodes.ijk_to_ras_array(result.inputVolume))
    info = engine_run_info(result.outputs["summary"]) if result.outputs.get("summary") else {}
    try:
        return list(write_dicom_outputs(label, files, Path(folder), base, info, overwrite).values())
    except LungTumorSegError as exc:
        logging.warning(f"LungTumorSeg: DICOM SEG not written: {exc}")
        return []


def capture_3d_view(path: Path) -> Path | None:
    """A screenshot of the first 3D view; None without views (batch mode, slicer-core)."""
    layoutManager = slicer.app.layoutManager()
    if layoutManager is None:
        return None
    import ScreenCapture

    view = layoutManager.threeDWidget(0).threeDView()
    ScreenCapture.ScreenCaptureLogic().captureImageFromView(view, str(path))
    return path


def save_report(
    result: results.LungTumorSegResult, folder: str | Path, askOverwrite: Callable[[str], bool] | None = None
) -> list[Path]:
    """Measure the lesion segments as they are, show the numbers, and write the report files into ``folder``.

    Existing files are replaced only when ``askOverwrite(question)`` returns True; returns [] otherwise.
    """
    from ..reporting.overlay import write_overlay_png
    from ..reporting.report import write_html_report, write_measurement_tables

    folder = Path(folder)
    base = report_base_name(result)
    targets = report_targets(folder, base)
    existing = [path for path in targets.values() if path.exists()]
    question = _("Replace existing files?\n") + "\n".join(map(str, existing))
    if existing and not (askOverwrite and askOverwrite(question)):
        return []
    folder.mkdir(parents=True, exist_ok=True)
    for path in existing:
        path.unlink()  # a file of an earlier save that this one does not write again must not stay beside it

    unchanged = lesion_nodes.segments_state(result.segmentationNode) == result.engineState
    case = results.remeasure(result)
    written = list(write_measurement_tables(case, folder, base, overwrite=True).values())
    ct = nodes.volume_from_node(result.inputVolume)
    label = helpers.volume_from_kji(results.segments_label(result), ct.affine)
    entropy = nodes.volume_from_node(result.entropyNode) if nodes.in_scene(result.entropyNode) else None
    images: dict[str, Path] = {}
    if case.lesion_count:
        overlay = write_overlay_png(targets["overlay"], label, ct, entropy, case, overwrite=True)
        images[_("Axial slice with the largest tumour area")] = overlay
        written.append(overlay)
    engineSnapshot = Path(result.outputDir) / f"{result.stem}_snapshot.png"
    if unchanged and engineSnapshot.is_file():
        images[_("3D tumour spread (engine)")] = Path(shutil.copyfile(engineSnapshot, targets["snapshot"]))
        written.append(targets["snapshot"])
    view = capture_3d_view(targets["view"])
    if view is not None:
        images[_("3D view")] = view
        written.append(view)
    inputs = {_("CT"): result.inputVolume.GetName(), _("Segmentation"): result.segmentationNode.GetName()}
    inputs[_("Measured")] = _("the lesion segments as saved") + ("" if unchanged else _(" (edited after the engine)"))
    written.append(write_html_report(case, targets["report"], images=images, inputs=inputs, overwrite=True))
    written.append(nodes.write_node(result.segmentationNode, targets[".seg.nrrd"]))
    written += save_dicom_outputs(result, folder, base, overwrite=True)
    return written
