"""The clinical-format outputs of a case: ``<name>.seg.nrrd``, ``<name>_seg.dcm`` (DICOM SEG), ``<name>_sr.dcm``.

- ``.seg.nrrd`` (Slicer segmentation, slicerio): by default for DICOM input, on request (``--seg-nrrd``)
  for NIfTI/NRRD input.
- DICOM SEG and its TID 1500 measurement report (highdicom): by default for DICOM input; they reference
  the source series, so ``--dicom-seg`` on a NIfTI/NRRD input is refused.

``write_dicom_outputs`` serves the Slicer batch script and module: it writes the SEG and SR for a label
map on the grid of DICOM files that Slicer loaded.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError, OutputError
from ..core.orientation import Reorientation
from ..core.volume import Volume
from ..io.dicom_cases import DicomCase
from ..io.output_files import OutputSet
from ..measurements.lesion_measurements import CaseMeasurements, measure_lesions

SUFFIXES = {"seg_nrrd": ".seg.nrrd", "dicom_seg": "_seg.dcm", "dicom_sr": "_sr.dcm"}


@dataclass(frozen=True)
class ClinicalOutputs:
    """Which clinical files to write for a case."""

    seg_nrrd: bool = False
    dicom_seg: bool = False  # the SEG and its SR measurement report

    def names(self, stem: str) -> list[str]:
        """The file names these outputs get for ``stem``."""
        kinds = (["seg_nrrd"] if self.seg_nrrd else []) + (["dicom_seg", "dicom_sr"] if self.dicom_seg else [])
        return [f"{stem}{SUFFIXES[kind]}" for kind in kinds]


def add_clinical_arguments(parser: argparse.ArgumentParser) -> None:
    """``--series-uid``, ``--seg-nrrd/--no-seg-nrrd``, ``--dicom-seg/--no-dicom-seg`` for ``segment``."""
    parser.add_argument("--series-uid", help="DICOM folder input: segment this series (default: the largest CT)")
    parser.add_argument(
        "--seg-nrrd",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write <name>.seg.nrrd, a Slicer segmentation (default: on for DICOM input)",
    )
    parser.add_argument(
        "--dicom-seg",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also write <name>_seg.dcm (DICOM SEG) and <name>_sr.dcm (TID 1500 measurements), "
        "referencing the source series (DICOM input only; default: on)",
    )


def clinical_outputs_for(args: argparse.Namespace, item: Path | DicomCase) -> ClinicalOutputs:
    """The clinical outputs of one case from the command line (defaults: on for DICOM input).

    Raises:
        InputError: ``--dicom-seg`` for an input that is not DICOM.
    """
    dicom = isinstance(item, DicomCase)
    seg_nrrd, dicom_seg = getattr(args, "seg_nrrd", None), getattr(args, "dicom_seg", None)
    if dicom_seg and not dicom:
        raise InputError(f"{item}: --dicom-seg needs DICOM input (a DICOM SEG references its source series)")
    return ClinicalOutputs(seg_nrrd=dicom if seg_nrrd is None else seg_nrrd, dicom_seg=dicom and dicom_seg is not False)


def write_clinical_outputs(
    folder: Path,
    stem: str,
    item: Path | DicomCase,
    label: Volume,
    case: CaseMeasurements,
    info: dict[str, Any],
    outputs: ClinicalOutputs | None,
) -> dict[str, str]:
    """Write the requested files into ``folder`` (an output set's staging folder); returns names by kind."""
    written: dict[str, str] = {}
    if outputs is None:
        return written
    if outputs.seg_nrrd:
        from .seg_nrrd import write_seg_nrrd

        written["seg_nrrd"] = write_seg_nrrd(label, folder / f"{stem}{SUFFIXES['seg_nrrd']}").name
    if outputs.dicom_seg:
        if not isinstance(item, DicomCase) or item.image is None:
            raise InputError(f"{item}: a DICOM SEG needs the DICOM series the CT was read from")
        written.update(_write_seg_and_sr(folder, stem, label, item.image.grid, case, info))
    return written


def _write_seg_and_sr(folder: Path, stem: str, label: Volume, grid, case: CaseMeasurements, info: dict) -> dict:
    from .dicom_seg import AlgorithmInfo, write_dicom_seg
    from .dicom_sr import write_measurement_report

    algorithm = AlgorithmInfo.from_run_info(info)
    seg = write_dicom_seg(label, grid, algorithm, folder / f"{stem}{SUFFIXES['dicom_seg']}")
    sr = write_measurement_report(seg, grid, case, algorithm, folder / f"{stem}{SUFFIXES['dicom_sr']}")
    return {"dicom_seg": f"{stem}{SUFFIXES['dicom_seg']}", "dicom_sr": sr.name}


def on_grid(label: Volume, affine: np.ndarray, shape: tuple[int, int, int], atol: float = 1e-3) -> Volume:
    """``label`` moved losslessly (axis permutation/flip) onto the grid (affine, shape), or InputError."""
    target = Volume(np.zeros(shape, dtype=np.uint8), affine)
    if label.same_grid(target, atol=atol):
        return label
    to_target = Reorientation.for_volume(target)
    in_ras = Reorientation.for_volume(label).apply(label)
    if not in_ras.same_grid(to_target.apply(target), atol=atol):
        raise InputError(
            "the segmentation is not on the grid of the DICOM series (was the series resampled on loading?)"
        )
    return to_target.invert(np.asarray(in_ras.array))


def write_dicom_outputs(
    label: Volume,
    dicom_files: list[Path],
    out_dir: Path,
    stem: str,
    info: dict[str, Any],
    overwrite: bool = False,
) -> dict[str, Path]:
    """DICOM SEG and SR for a label map on the grid of the CT series in ``dicom_files`` (Slicer's path).

    Args:
        label: the tumour label, on the series' grid up to an axis permutation or flip.
        dicom_files: the series' files (e.g. from the volume node's ``DICOM.instanceUIDs``).
        out_dir: where ``<stem>_seg.dcm`` and ``<stem>_sr.dcm`` go (both or neither).
        stem: the file-name stem.
        info: the engine's run information (``model``, ``model_version``), e.g. the summary's ``info``.
        overwrite: replace existing files.

    Raises:
        InputError: the files are not one CT series, or the label is not on its grid.
        OutputError: the files exist (and overwrite is false) or cannot be written.
    """
    from ..io.dicom_io import find_series, series_grid

    found = find_series([Path(p) for p in dicom_files])
    if len(found) != 1:
        raise InputError(f"expected the files of one DICOM series, got {len(found)} series")
    grid = series_grid(found[0])
    label = on_grid(label, grid.affine, grid.shape)
    case = measure_lesions(label)
    with OutputSet(Path(out_dir), overwrite) as outputs:
        for name in _write_seg_and_sr(outputs.staging, stem, label, grid, case, info).values():
            outputs.adopt(name)
        final = outputs.commit()
    return {kind: final[f"{stem}{SUFFIXES[kind]}"] for kind in ("dicom_seg", "dicom_sr")}


def engine_run_info(summary_path: str | Path) -> dict[str, Any]:
    """The ``info`` block (model name and version, ...) of an engine ``<name>_summary.json``."""
    try:
        return dict(json.loads(Path(summary_path).read_text(encoding="utf-8")).get("info", {}))
    except (OSError, ValueError) as exc:
        raise OutputError(f"{summary_path}: cannot read the engine summary ({exc})") from exc
