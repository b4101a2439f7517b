"""Loading the user's images with every check before the costly steps.

Order: the header (shape, voxel type, field of view, memory), then the voxel values in their stored
type (range, label map or CT), and only then the float32 copy. Every error is an InputError naming
the file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..core.errors import InputError
from ..core.orientation import on_grid_of
from ..core.progress import ProgressReporter
from ..core.volume import Volume
from .dicom_cases import DicomCase, load_case
from .image_io import ImageHeader, StoredImage, read_header, read_stored
from .validation import (
    check_ct_values,
    check_image_header,
    check_label_map_values,
    check_unit_interval_values,
    geometry_warnings,
    value_stats,
)

LOG = logging.getLogger("lungtumorseg")
Warn = Callable[[str], None]


def load_ct(path: str | os.PathLike, require_air: bool = True, warn: Warn | None = None) -> tuple[Volume, ImageHeader]:
    """A CT in HU as a float32 Volume, and its header (for writing outputs with the same geometry).

    Args:
        path: NIfTI or NRRD file.
        require_air: refuse images without air below -500 HU (a chest CT has lungs).
        warn: where geometry warnings go (default: the ``lungtumorseg`` logger).
    """
    header = read_header(path)
    check_image_header(header, ct=True)
    for message in geometry_warnings(header):
        (warn or LOG.warning)(message)
    stored = _read_stored(path, warn)
    check_ct_values(value_stats(stored.array, stored.slope, stored.inter), str(path), require_air)
    return stored.to_volume(np.float32), header


def load_input(item: Path | DicomCase, reporter: ProgressReporter) -> tuple[Volume, ImageHeader | None]:
    """A case of ``segment`` as a float32 CT in HU, and its header (None for a DICOM series).

    An image file goes through ``load_ct`` (checks before the voxels are read); a DICOM series is read
    by ``dicom_io`` and then given the same size, field-of-view and value checks.
    """
    if not isinstance(item, DicomCase):
        return load_ct(item, warn=lambda message: reporter.log("warning", message))
    volume = load_case(item, reporter)
    name = str(item)
    check_image_header(ImageHeader(Path(name), volume.shape, volume.array.dtype, volume.affine), ct=True)
    check_ct_values(value_stats(volume.array), name)
    return volume, None


def load_label(path: str | os.PathLike, what: str = "label") -> Volume:
    """A label map (0 background, > 0.5 lesion; a probability map in 0..1 also passes) in its stored type."""
    check_image_header(read_header(path), ct=False)
    stored = _read_stored(path)
    try:
        check_label_map_values(value_stats(stored.array, stored.slope, stored.inter), str(path))
    except InputError as exc:
        raise InputError(f"{exc} (given as the {what})") from exc
    return stored.to_volume(None)


def load_on_grid(path: str | os.PathLike, reference: Volume, kind: str, what: str) -> Volume:
    """An image that must lie on ``reference``'s grid (re-indexed losslessly when only its axis order differs).

    Args:
        path: the file.
        reference: the label whose grid the image must share.
        kind: ``"ct"`` (HU, air not required), ``"entropy"`` (0..1) or ``"label"``.
        what: the image's role in messages (``"CT"``, ``"entropy map"``, ``"lung mask"``).
    """
    check_image_header(read_header(path), ct=False)
    stored = _read_stored(path)
    stats = value_stats(stored.array, stored.slope, stored.inter)
    if kind == "ct":
        check_ct_values(stats, f"{path} (given as the {what})", require_air=False)
    elif kind == "entropy":
        check_unit_interval_values(stats, f"{path} (given as the {what})")
    else:
        check_label_map_values(stats, f"{path} (given as the {what})")
    volume = stored.to_volume(None if kind == "label" else np.float32)
    moved = on_grid_of(volume, reference)
    if moved is None:
        raise InputError(
            f"{path}: the {what} is not on the label's grid: {reference.grid_difference(volume)} "
            f"(label vs {what}); resample it onto the label first"
        )
    if moved is not volume:
        LOG.info("%s: the %s's voxel axes are ordered differently; re-indexed onto the label's grid", path, what)
    return moved


def _read_stored(path: str | os.PathLike, warn: Warn | None = None) -> StoredImage:
    """``read_stored``, passing on what the reader assumed or fixed (each note naming the file)."""
    stored = read_stored(path)
    for note in stored.notes:
        (warn or LOG.warning)(f"{path}: {note}")
    return stored


def name_the_file(exc: InputError, path: str | os.PathLike | DicomCase) -> InputError:
    """The same error with the file (or DICOM series) named first, unless its message names it already."""
    message, name = str(exc), str(path)
    names = [name, Path(name).name] + ([str(path.series.folder)] if isinstance(path, DicomCase) else [])
    if any(message.startswith(known) for known in names):
        return exc
    return type(exc)(f"{name}: {message}")
