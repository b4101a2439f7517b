"""Pure helpers of the Slicer batch script (``Scripts/lungtumorseg_slicer_batch.py``): which inputs and which
DICOM series are segmented, what each case is called, which nodes a case leaves behind. No slicer import."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ..io.image_names import IMAGE_SUFFIXES, image_stem

MIN_SLICES = 3  # fewer slices: a scout or a single image, not a chest CT volume


def is_image_file(path: Path) -> bool:
    """A NIfTI or NRRD file (the batch script's file inputs)."""
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def file_case_name(path: Path) -> str:
    """The case name of an image file (its name without the image suffix)."""
    return image_stem(path)


def series_skip_reason(modality: str, image_type: str) -> str | None:
    """Why a DICOM series is not segmented (from its first file's tags), or None for a CT volume series.

    Args:
        modality: Modality (0008,0060), e.g. ``CT``, ``MR``, ``SEG``.
        image_type: Image Type (0008,0008) as the DICOM database returns it, e.g. ``ORIGINAL\\PRIMARY\\LOCALIZER``.
    """
    if modality.strip().upper() != "CT":
        return f"modality {modality.strip() or 'unknown'}, not CT"
    if "LOCALIZER" in {part.strip().upper() for part in re.split(r"[\\/]", image_type)}:
        return "a localizer (scout) image, not a CT volume"
    return None


def volume_skip_reason(dimensions: Sequence[int]) -> str | None:
    """Why a loaded volume is not segmented (too few slices along any axis), or None."""
    if len(dimensions) != 3 or min(int(d) for d in dimensions) < MIN_SLICES:
        shape = " x ".join(str(int(d)) for d in dimensions)
        return f"a {shape} image: fewer than {MIN_SLICES} slices along an axis, not a CT volume"
    return None


def series_case_name(series_number: str, description: str, series_uid: str, used: set[str]) -> str:
    """A file-name-safe, unique case name for a DICOM series (``series3_Chest_1.25mm_lung``); adds it to ``used``.

    Made of the series number and description only: output file names never carry the PatientID (or any other
    patient identifier), so results can be shared without renaming. Two series that would share a name get the
    end of their SeriesInstanceUID.
    """
    parts = [p.strip() for p in (f"series{series_number.strip()}" if series_number.strip() else "", description) if p]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(p for p in parts if p)).strip("._") or "series"
    name = base
    if name in used:
        name = f"{base}_{series_uid.rsplit('.', 1)[-1][-8:]}"
    counter = 2
    while name in used:
        name, counter = f"{base}_{counter}", counter + 1
    used.add(name)
    return name


def nodes_to_remove(before: Iterable[str], after: Sequence[str]) -> list[str]:
    """IDs of the nodes added since ``before`` (what one case created), newest first, for removal."""
    known = set(before)
    return [node_id for node_id in reversed(after) if node_id not in known]
