"""The files ``segment`` writes for one case, written all-or-nothing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..clinical.clinical_outputs import ClinicalOutputs, write_clinical_outputs
from ..core.progress import ProgressReporter
from ..core.volume import Volume
from ..io.dicom_cases import DicomCase, case_format, case_stem
from ..io.image_io import ImageHeader, save_volume
from ..io.image_names import CANDIDATE_MAP, OUTPUT_MAPS, is_output_file  # noqa: F401 - is_output_file re-exported
from ..io.output_files import OutputSet
from ..measurements.lesion_measurements import CaseMeasurements, measure_lesions
from ..segmentation.pipeline import SegmentationResult
from .overlay import write_overlay_png
from .report import measurement_table_paths, write_html_report, write_measurement_tables

MAPS = OUTPUT_MAPS
PICTURES = {"overlay": "overlay.png", "snapshot": "snapshot.png", "report": "report.html"}
LOG = logging.getLogger("lungtumorseg")


def image_suffix(path: Path | DicomCase, fmt: str) -> str:
    """Output image suffix: as the input (``auto``; NIfTI for DICOM), or NIfTI/NRRD."""
    if fmt == "auto":
        fmt = case_format(path)
    return ".nii.gz" if fmt == "nifti" else ".nrrd"


def output_names(
    path: Path | DicomCase,
    fmt: str = "auto",
    pictures: bool = True,
    clinical: ClinicalOutputs | None = None,
    stem: str | None = None,
) -> list[str]:
    """Every file name ``segment`` writes for input ``path`` (pictures only when there is a lesion)."""
    stem, suffix = stem or case_stem(path), image_suffix(path, fmt)
    names = [f"{stem}_{name}{suffix}" for name in (*MAPS, CANDIDATE_MAP)]
    names += [f"{stem}_summary.json", f"{stem}_{CANDIDATE_MAP}.json"]
    names += [p.name for p in measurement_table_paths(".", stem).values()]
    if pictures:
        names += [f"{stem}_{name}" for name in PICTURES.values()]
    return names + (clinical.names(stem) if clinical else [])


def output_set_names(stem: str) -> list[str]:
    """Every name an earlier ``segment`` run may have written for ``stem``, with any format, picture or DICOM option.

    A new output set replaces this whole set, so no stale file (an old overlay) stays beside new results.
    """
    names = [f"{stem}_{name}{suffix}" for name in (*MAPS, CANDIDATE_MAP) for suffix in (".nii.gz", ".nrrd")]
    names += [f"{stem}_summary.json", f"{stem}_{CANDIDATE_MAP}.json"]
    names += [p.name for p in measurement_table_paths(".", stem).values()]
    names += [f"{stem}_{name}" for name in PICTURES.values()]
    return names + ClinicalOutputs(seg_nrrd=True, dicom_seg=True).names(stem)


def write_case_outputs(
    path: Path | DicomCase,
    ct: Volume,
    result: SegmentationResult,
    out_dir: Path,
    fmt: str = "auto",
    overwrite: bool = False,
    pictures: bool = True,
    reporter: ProgressReporter | None = None,
    stem: str | None = None,
    header: ImageHeader | None = None,
    clinical: ClinicalOutputs | None = None,
    case: CaseMeasurements | None = None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write label, probability, entropy, mutual information, the JSON summary and the ``clinical`` files.

    Args:
        stem: output name prefix (default: the input's file name without its suffix).
        header: the input's header; NIfTI outputs copy its sform and qform (see ``save_volume``).
        case: the lesions' measurements when already made (box prompts number lesions by box); else measured here.

    Returns:
        (paths by output kind, the summary dictionary).
    """
    stem, suffix = stem or case_stem(path), image_suffix(path, fmt)
    case = case or measure_lesions(result.label, ct, result.entropy)
    summary = {
        "input": str(path),
        "lungtumorseg_version": __version__,
        "shape": list(ct.shape),
        "spacing_mm": [round(float(s), 4) for s in ct.spacing],
        "lesions": case.summary(),
        "info": result.info,
    }
    volumes = {
        "tumor": result.label,
        "probability": result.probability,
        "entropy": result.entropy,
        "mutual_information": result.mutual_information,  # None where there is no ensemble (box prompts)
        CANDIDATE_MAP: result.candidates
        if result.candidates is not None
        else result.label.with_array(np.zeros(result.label.shape, np.uint16)),
    }
    kinds: dict[str, str] = {}
    with OutputSet(out_dir, overwrite, replaces=output_set_names(stem)) as outputs:
        for kind, volume in volumes.items():
            if volume is None:
                continue
            name = f"{stem}_{kind}{suffix}"
            outputs.write(name, lambda target, v=volume: save_volume(v, target, overwrite=True, like=header))
            kinds[name] = kind
        outputs.write_json(f"{stem}_summary.json", summary)
        kinds[f"{stem}_summary.json"] = "summary"
        outputs.write_json(
            f"{stem}_{CANDIDATE_MAP}.json",
            candidates_document(result, f"{stem}_{CANDIDATE_MAP}{suffix}", case.lesion_count),
        )
        kinds[f"{stem}_{CANDIDATE_MAP}.json"] = "candidates_json"
        for kind, table in write_measurement_tables(case, outputs.staging, stem, overwrite=True).items():
            outputs.adopt(table.name)
            kinds[table.name] = {"json": "lesions", "lesions_csv": "lesions_csv", "summary_csv": "summary_csv"}[kind]
        if pictures:
            for kind, name in _write_pictures(path, ct, result, case, outputs.staging, stem, reporter).items():
                outputs.adopt(name)
                kinds[name] = kind
        for kind, name in write_clinical_outputs(
            outputs.staging, stem, path, result.label, case, result.info, clinical
        ).items():
            outputs.adopt(name)
            kinds[name] = kind
        final = outputs.commit()
    return {kinds[name]: p for name, p in final.items()}, summary


def candidates_document(result: SegmentationResult, label_map_name: str, lesion_count: int) -> dict[str, Any]:
    """``<stem>_candidates.json``: the preset that listed them and each candidate (label value, peak and mean
    probability, volume, centroid and bounding box in RAS mm), strongest first."""
    return {
        "sensitivity": result.info.get("sensitivity"),
        "label_map": label_map_name,
        "lesions_reported": lesion_count,
        "candidates": [candidate.to_dict() for candidate in result.candidate_list],
    }


def _write_pictures(
    path: Path,
    ct: Volume,
    result: SegmentationResult,
    case: CaseMeasurements,
    folder: Path,
    stem: str,
    reporter: ProgressReporter | None,
) -> dict[str, str]:
    """Overlay PNG, 3D snapshot PNG (when offscreen OpenGL works) and the HTML report; names by kind."""
    from .rendering import RenderingUnavailableError, write_snapshot_png

    written: dict[str, str] = {}
    images: dict[str, Path] = {}
    if case.lesion_count:
        overlay = write_overlay_png(folder / f"{stem}_{PICTURES['overlay']}", result.label, ct, result.entropy, case)
        written["overlay"], images["Axial slice with the largest tumour area"] = overlay.name, overlay
        try:
            snapshot = write_snapshot_png(
                folder / f"{stem}_{PICTURES['snapshot']}",
                result.label,
                lung=result.lung_mask,
                entropy=result.entropy,
                case=case,
            )
            written["snapshot"], images["3D tumour spread"] = snapshot.name, snapshot
        except RenderingUnavailableError as exc:
            message = f"3D snapshot skipped: {exc}"
            if reporter:
                reporter.log("warning", message)
            else:
                LOG.warning(message)
    inputs = {"CT": str(path), "Model": f"{result.info.get('model')} {result.info.get('model_version')}"}
    inputs["Device"] = str(result.info.get("device"))
    preset = result.info.get("sensitivity")
    if preset:
        listing = (
            f"up to {preset['max_candidates']} candidates from probability {preset['candidate_min_peak']:g}"
            if preset["max_candidates"]
            else "no candidates listed"
        )
        level = result.info["postprocess"]["min_peak_probability"]
        inputs["Sensitivity"] = f"{preset['preset']}: lesions reported from peak probability {level:g}; {listing}"
    candidates = [c.to_dict() for c in result.candidate_list] if preset else None
    report = write_html_report(
        case, folder / f"{stem}_{PICTURES['report']}", images=images, inputs=inputs, candidates=candidates
    )
    written["report"] = report.name
    return written
