"""The files ``segment`` writes for one case, written all-or-nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from . import __version__
from .image_io import image_format, save_volume
from .outputs import OutputSet
from .pipeline import SegmentationResult
from .progress import ProgressReporter
from .volume import Volume

MAPS = ("tumor", "probability", "entropy", "mutual_information")


def case_stem(path: Path) -> str:
    """File name without image suffixes (``ct.nii.gz`` → ``ct``)."""
    name = path.name
    for suffix in (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def image_suffix(path: Path, fmt: str) -> str:
    """Output image suffix: as the input (``auto``), or NIfTI/NRRD."""
    if fmt == "auto":
        fmt = image_format(path)
    return ".nii.gz" if fmt == "nifti" else ".nrrd"


def output_names(path: Path, fmt: str = "auto", pictures: bool = True) -> list[str]:
    """Every file name ``segment`` writes for input ``path``."""
    stem, suffix = case_stem(path), image_suffix(path, fmt)
    return [f"{stem}_{name}{suffix}" for name in MAPS] + [f"{stem}_summary.json"]


def write_case_outputs(
    path: Path,
    ct: Volume,
    result: SegmentationResult,
    out_dir: Path,
    fmt: str = "auto",
    overwrite: bool = False,
    pictures: bool = True,
    reporter: ProgressReporter | None = None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Write label, probability, entropy, mutual information and the JSON summary.

    Returns:
        (paths by output kind, the summary dictionary).
    """
    stem, suffix = case_stem(path), image_suffix(path, fmt)
    summary = {
        "input": str(path),
        "lungtumorseg_version": __version__,
        "shape": list(ct.shape),
        "spacing_mm": [round(float(s), 4) for s in ct.spacing],
        "lesions": lesion_summary(result.label.array, ct.voxel_volume_ml),
        "info": result.info,
    }
    volumes = {
        "tumor": result.label,
        "probability": result.probability,
        "entropy": result.entropy,
        "mutual_information": result.mutual_information,
    }
    kinds: dict[str, str] = {}
    with OutputSet(out_dir, overwrite) as outputs:
        for kind, volume in volumes.items():
            name = f"{stem}_{kind}{suffix}"
            outputs.write(name, lambda target, v=volume: save_volume(v, target, overwrite=True))
            kinds[name] = kind
        outputs.write_json(f"{stem}_summary.json", summary)
        kinds[f"{stem}_summary.json"] = "summary"
        final = outputs.commit()
    return {kinds[name]: p for name, p in final.items()}, summary


def lesion_summary(label: np.ndarray, voxel_ml: float) -> dict[str, Any]:
    """Lesion count and total volume (26-connected components)."""
    _, count = ndimage.label(label > 0, structure=np.ones((3, 3, 3), bool))
    return {"count": int(count), "total_volume_ml": round(float(np.count_nonzero(label)) * voxel_ml, 3)}
