"""Reading a CT series from a DICOM folder with pydicom: find the series, choose one, check it, build a Volume.

Slices are sorted by their position along the slice normal (never by file name or InstanceNumber),
stored values go through each slice's modality transform (RescaleSlope/Intercept), and the
voxel-to-RAS affine comes from ImageOrientationPatient/ImagePositionPatient (LPS → RAS). Series that
cannot be stacked into one regular grid (missing or unevenly spaced slices, gantry tilt, mixed
orientations, undecodable compression, non-CT) are refused with a one-line InputError.

The choice of pydicom over MONAI's PydicomReader, SimpleITK and highdicom's volume reader is measured
in ``Testing/benchmarks/bench_dicom_read.py``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom

from ..core.errors import InputError
from ..core.volume import Volume
from .image_names import is_output_file

try:  # pydicom >= 3
    from pydicom.pixels import apply_modality_lut, get_decoder, pixel_array
except ImportError:  # pydicom 2.4, the version Slicer 5.4 to 5.10 ship
    from pydicom.pixel_data_handlers.util import apply_modality_lut

    get_decoder = None

    def pixel_array(path: Path) -> np.ndarray:
        """The pixels of one image file."""
        return pydicom.dcmread(path).pixel_array


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
SPACING_RTOL = 0.01  # slice gaps may differ from the series' spacing by 1 % (IPP rounding)
ORIENTATION_ATOL = 1e-4  # direction cosines equal within this
TILT_TOLERANCE_DEG = 0.05  # angle between the slice normal and the stacking direction
DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"  # DICOMDIR


@dataclass
class DicomSeries:
    """The files of one series (SeriesInstanceUID) with their headers (no pixel data read).

    Attributes:
        uid: SeriesInstanceUID.
        files: one path per image file.
        headers: the datasets read without pixel data, in the order of ``files``.
    """

    uid: str
    files: list[Path] = field(default_factory=list)
    headers: list[Dataset] = field(default_factory=list)

    @property
    def modality(self) -> str:
        """Modality of the first image (``CT``, ``MR``, ``SEG``, ...)."""
        return str(self.headers[0].get("Modality", "")) or "unknown modality"

    @property
    def number(self) -> str:
        """SeriesNumber as text ('' when absent)."""
        value = self.headers[0].get("SeriesNumber")
        return "" if value is None else str(value)

    @property
    def description(self) -> str:
        """SeriesDescription ('' when absent)."""
        return str(self.headers[0].get("SeriesDescription", "") or "")

    @property
    def folder(self) -> Path:
        """The folder holding the series' files (their common parent)."""
        return Path(os.path.commonpath([str(p.parent) for p in self.files]))

    @property
    def is_localizer(self) -> bool:
        """True for scout/localizer images (ImageType LOCALIZER)."""
        return "LOCALIZER" in [str(v).upper() for v in self.headers[0].get("ImageType", [])]

    def describe(self) -> str:
        """A short name for messages: ``series 2 'CHEST 1.0' (CT, 304 images)``."""
        label = f"series {self.number}" if self.number else "series"
        if self.description:
            label += f" '{self.description}'"
        return f"{label} ({self.modality}, {len(self.files)} image{'s' if len(self.files) != 1 else ''})"


@dataclass
class DicomGrid:
    """Where a series' slices lie: the sorted headers and the voxel-to-RAS geometry (no pixels read).

    Attributes:
        series: the series.
        datasets: headers in slice order: ``datasets[k]`` is plane ``k`` (the SEG's source images).
        files: the files in the same order.
        affine: 4x4 voxel-to-RAS matrix of the ``[column, row, slice]`` grid.
        shape: (columns, rows, slices).
    """

    series: DicomSeries
    datasets: list[Dataset]
    files: list[Path]
    affine: np.ndarray
    shape: tuple[int, int, int]


@dataclass
class DicomImage:
    """A CT series read as a Volume (HU, float32, indexed ``[column, row, slice]``) with its grid."""

    volume: Volume
    grid: DicomGrid


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` is a file with the DICOM preamble (the 'DICM' marker)."""
    try:
        return path.is_file() and is_dicom(path)
    except OSError:
        return False


def find_series(paths: Iterable[Path]) -> list[DicomSeries]:
    """Group the DICOM image files among ``paths`` by SeriesInstanceUID (other files are skipped).

    ``segment``'s own DICOM outputs (``*_seg.dcm``, ``*_sr.dcm``) are skipped too, so a DICOM folder
    can be segmented into itself.

    Returns:
        The series in order of first appearance, files in the given order.
    """
    series: dict[str, DicomSeries] = {}
    for path in paths:
        if is_output_file(path) or not is_dicom_file(path):
            continue
        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        uid = header.get("SeriesInstanceUID")
        if not uid or header.get("SOPClassUID") == DIRECTORY_SOP_CLASS:
            continue
        entry = series.setdefault(str(uid), DicomSeries(str(uid)))
        entry.files.append(path)
        entry.headers.append(header)
    return list(series.values())


def series_in_folder(folder: Path) -> list[DicomSeries]:
    """The series whose files lie directly in ``folder`` (file names sorted)."""
    return find_series(sorted(p for p in folder.iterdir() if p.is_file()))


def is_ct_volume(series: DicomSeries) -> bool:
    """True for a CT series that is not a localizer (a candidate for segmentation)."""
    return series.modality == "CT" and not series.is_localizer


def choose_series(series: list[DicomSeries], folder: Path, series_uid: str | None = None) -> DicomSeries:
    """The series with ``series_uid``, else the CT series with the most images.

    Raises:
        InputError: no DICOM series, no series with that UID, or no CT series.
    """
    if not series:
        raise InputError(f"{folder}: no DICOM images found")
    found = "; ".join(f"{s.describe()} UID {s.uid}" for s in series)
    if series_uid:
        for candidate in series:
            if candidate.uid == series_uid:
                return candidate
        raise InputError(f"{folder}: no series with UID {series_uid} (found: {found})")
    candidates = [s for s in series if is_ct_volume(s)]
    if not candidates:
        if len(series) == 1:
            _check_modality(series[0], folder)
        raise InputError(f"{folder}: no CT series to segment (localizers are not; found: {found})")
    return max(candidates, key=lambda s: len(s.files))


def choice_note(chosen: DicomSeries, series: list[DicomSeries]) -> str | None:
    """A message naming the chosen series and the others, when the folder held more than one."""
    others = [s for s in series if s is not chosen]
    if not others:
        return None
    listed = "; ".join(f"{s.describe()} UID {s.uid}" for s in others)
    return (
        f"{chosen.folder}: segmenting {chosen.describe()} (UID {chosen.uid}); also found {listed} "
        "(choose with --series-uid)"
    )


def series_grid(series: DicomSeries) -> DicomGrid:
    """Sort a CT series' slices along the slice normal and check that they form one regular grid.

    Raises:
        InputError: the series is not CT, is multi-frame, lacks geometry, has mixed orientations or
            sizes, duplicate, missing or unevenly spaced slices, gantry tilt, or a transfer syntax
            that cannot be decoded.
    """
    folder = series.folder
    where = f"{folder}: {series.describe()}"
    _check_modality(series, folder)
    headers = series.headers
    if any(int(h.get("NumberOfFrames", 1) or 1) > 1 for h in headers):
        raise InputError(f"{where} is a multi-frame (enhanced) image; export the series as single-frame images")
    for name in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing", "Rows", "Columns"):
        if any(h.get(name) is None for h in headers):
            raise InputError(f"{where}: images without {name}; cannot place the slices in space")
    orientation = np.array([[float(v) for v in h.ImageOrientationPatient] for h in headers])
    if np.abs(orientation - orientation[0]).max() > ORIENTATION_ATOL:
        distinct = len(np.unique(np.round(orientation, 4), axis=0))
        raise InputError(f"{where}: mixed slice orientations ({distinct} different ImageOrientationPatient values)")
    sizes = {(int(h.Rows), int(h.Columns), *(round(float(v), 4) for v in h.PixelSpacing)) for h in headers}
    if len(sizes) > 1:
        raise InputError(f"{where}: slices differ in size or pixel spacing ({len(sizes)} kinds)")
    _check_decodable(series, where)

    row_cosines, column_cosines = orientation[0, :3], orientation[0, 3:]
    normal = np.cross(row_cosines, column_cosines)
    positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in headers])
    order = np.argsort(positions @ normal, kind="stable")
    positions = positions[order]
    spacing = _slice_spacing(positions @ normal, positions, normal, where)
    row_spacing, column_spacing = (float(v) for v in headers[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = row_cosines * column_spacing  # i: along a row (next column)
    lps[:3, 1] = column_cosines * row_spacing  # j: down a column (next row)
    lps[:3, 2] = normal * spacing
    lps[:3, 3] = positions[0]
    shape = (int(headers[0].Columns), int(headers[0].Rows), len(order))
    return DicomGrid(series, [headers[i] for i in order], [series.files[i] for i in order], LPS_TO_RAS @ lps, shape)


def read_ct_series(series: DicomSeries) -> DicomImage:
    """Read a CT series as a Volume in HU on its grid (see ``series_grid`` for the checks).

    Raises:
        InputError: the series cannot be stacked into one regular grid, or its pixels cannot be decoded.
    """
    grid = series_grid(series)
    where = f"{series.folder}: {series.describe()}"
    columns, rows, slices = grid.shape
    stack = np.empty((slices, rows, columns), dtype=np.float32)
    for k, (path, header) in enumerate(zip(grid.files, grid.datasets)):
        _read_slice_hu(path, header, stack[k], where)
    return DicomImage(Volume(stack.transpose(2, 1, 0), grid.affine.copy()), grid)  # Fortran order like nibabel's


def _check_modality(series: DicomSeries, folder: Path) -> None:
    if series.modality != "CT":
        raise InputError(f"{folder}: {series.describe()} is {series.modality}, not CT; LungTumorSeg segments CT only")


def _check_decodable(series: DicomSeries, where: str) -> None:
    """Refuse transfer syntaxes pydicom has no working decoder for, before reading any pixels (pydicom >= 3)."""
    if get_decoder is None:
        return  # pydicom 2: decoding failures are reported per file
    syntaxes = {getattr(h, "file_meta", Dataset()).get("TransferSyntaxUID") for h in series.headers}
    for syntax in syntaxes - {None}:
        try:
            decoder = get_decoder(syntax)
            available = decoder.is_available
        except NotImplementedError:
            available = False
        if not available:
            raise InputError(
                f"{where}: pixel data compressed as {syntax.name} ({syntax}) cannot be decoded here "
                "(install pylibjpeg with its plugins, or python-gdcm, or export uncompressed)"
            )


def _slice_spacing(along: np.ndarray, positions: np.ndarray, normal: np.ndarray, where: str) -> float:
    """The uniform slice spacing (mm), or InputError for duplicates, gaps, uneven spacing or gantry tilt."""
    if len(along) == 1:
        raise InputError(f"{where}: a single slice is not a 3D CT")
    gaps = np.diff(along)
    smallest = float(gaps.min())
    if smallest < 1e-3:
        count = int(np.sum(gaps < 1e-3))
        raise InputError(
            f"{where}: {count} slice(s) share a position (several acquisitions or time points in one series?)"
        )
    stacking = positions[-1] - positions[0]
    tilt = np.degrees(np.arccos(min(1.0, abs(float(stacking @ normal)) / float(np.linalg.norm(stacking)))))
    if tilt > TILT_TOLERANCE_DEG:
        raise InputError(
            f"{where}: gantry tilt of {tilt:.2f}° (slices shifted in-plane); resample the series to an "
            "untilted grid first (e.g. Slicer's DICOM acquisition geometry regularization)"
        )
    if float(gaps.max()) - smallest <= SPACING_RTOL * smallest:
        return float((along[-1] - along[0]) / (len(along) - 1))
    multiples = gaps / smallest
    if np.allclose(multiples, np.rint(multiples), atol=SPACING_RTOL * 5):
        missing = int(np.rint(multiples).sum() - len(gaps))
        first = int(np.argmax(multiples > 1.5))
        raise InputError(
            f"{where}: {missing} missing slice(s) (spacing {smallest:.3g} mm, first gap of {gaps[first]:.3g} mm "
            f"after slice {first + 1} of {len(along)})"
        )
    raise InputError(
        f"{where}: non-uniform slice spacing ({smallest:.3g} to {float(gaps.max()):.3g} mm); "
        "resample the series to even spacing first"
    )


def _read_slice_hu(path: Path, header: Dataset, out: np.ndarray, where: str) -> None:
    """Decode one slice into ``out`` (rows, columns) in HU: modality LUT or RescaleSlope/Intercept."""
    try:
        pixels = pixel_array(path)
    except Exception as exc:  # noqa: BLE001 - any decoder failure becomes one line naming the file
        raise InputError(f"{where}: cannot decode the pixels of {path.name} ({type(exc).__name__}: {exc})") from exc
    if pixels.shape != out.shape:
        raise InputError(f"{where}: {path.name} has pixel data of shape {pixels.shape}, expected {out.shape}")
    if "ModalityLUTSequence" in header:
        out[...] = apply_modality_lut(pixels, header)
        return
    np.multiply(pixels, np.float32(float(header.get("RescaleSlope", 1.0) or 1.0)), out=out)
    out += np.float32(float(header.get("RescaleIntercept", 0.0) or 0.0))
