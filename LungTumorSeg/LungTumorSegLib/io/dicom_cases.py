"""DICOM inputs of ``segment`` as cases: a folder (one series, the chosen one) or a folder of folders (one per series).

- A folder that holds DICOM files is one case: the series given by ``--series-uid``, else the CT series
  with the most images (a note names it and the others).
- A folder whose DICOM files lie in sub-folders (an export tree) is a batch: every CT series is a case
  (localizers and other modalities are skipped with a note), named after its folder's path below the
  root (plus ``_S<SeriesNumber>`` when a folder holds several CT series).
- A single DICOM file stands for its series (the other files of its folder).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError
from ..core.progress import ProgressReporter
from ..core.volume import Volume
from .dicom_io import (
    DicomImage,
    DicomSeries,
    choice_note,
    choose_series,
    find_series,
    is_ct_volume,
    is_dicom_file,
    read_ct_series,
    series_in_folder,
)
from .image_io import image_format
from .image_names import image_stem

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class DicomCase:
    """One DICOM series to segment.

    Attributes:
        series: the series (headers read, pixels not yet).
        stem: the output file-name stem.
        notes: messages for the user (series chosen, series skipped).
        image: the series read by ``load_case`` (kept for the DICOM SEG and SR).
    """

    series: DicomSeries
    stem: str
    notes: list[str] = field(default_factory=list)
    image: DicomImage | None = None

    @property
    def name(self) -> str:
        """Short name for progress messages."""
        return f"{self.stem} [{self.series.describe()}]"

    def __str__(self) -> str:
        return f"{self.series.folder} [series {self.series.uid}]"


def safe_stem(text: str) -> str:
    """A file-name stem from a folder name or path (unsafe characters become '_')."""
    return _UNSAFE.sub("_", text).strip("._") or "dicom"


def dicom_cases(folder: Path, series_uid: str | None = None, skip: Path | None = None) -> list[DicomCase]:
    """The cases of a DICOM folder (see the module notes); [] when it holds no DICOM file.

    ``skip``: a folder below ``folder`` not to search (``segment``'s output folder, which holds its DICOM SEG
    and SR files).

    Raises:
        InputError: DICOM files but no CT series to segment, or no series with ``series_uid``.
    """
    folder = Path(folder)
    here = series_in_folder(folder)
    if here:
        chosen = choose_series(here, folder, series_uid)
        note = choice_note(chosen, here)
        return [DicomCase(chosen, safe_stem(folder.resolve().name), [note] if note else [])]
    cases: list[DicomCase] = []
    skipped: list[str] = []
    skipped_folder = Path(skip).resolve() if skip is not None else None
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if (Path(root) / d).resolve() != skipped_folder)
        found = find_series(sorted(Path(root) / name for name in names))
        if not found:
            continue
        relative = Path(root).relative_to(folder)
        stem = safe_stem("_".join(relative.parts) or folder.resolve().name)
        if series_uid:
            cases += [DicomCase(s, stem) for s in found if s.uid == series_uid]
            continue
        volumes = sorted((s for s in found if is_ct_volume(s)), key=_by_series_number)
        skipped += [f"{s.folder}: skipped {s.describe()}" for s in found if not is_ct_volume(s)]
        for series in volumes:
            suffix = f"_S{safe_stem(series.number or series.uid[-8:])}" if len(volumes) > 1 else ""
            cases.append(DicomCase(series, stem + suffix))
    if series_uid and not cases:
        raise InputError(f"{folder}: no series with UID {series_uid} below this folder")
    if not cases and skipped:
        raise InputError(f"{folder}: no CT series to segment ({'; '.join(skipped)})")
    if cases and skipped:
        cases[0].notes.append("not segmented: " + "; ".join(skipped))
    return cases


def _by_series_number(series: DicomSeries) -> tuple[float, str]:
    return (float(series.number) if series.number.isdigit() else float("inf"), series.uid)


def dicom_file_case(path: Path, series_uid: str | None = None) -> DicomCase:
    """The case of a single DICOM file: its series, read from the file's folder.

    Raises:
        InputError: the file is not part of a CT series that can be segmented.
    """
    found = series_in_folder(path.parent)
    own = next((s for s in found if path in s.files), None)
    if own is None:
        raise InputError(f"{path}: not a DICOM image")
    chosen = choose_series(found, path.parent, series_uid or own.uid)
    return DicomCase(chosen, safe_stem(path.parent.resolve().name))


def dicom_inputs(item: Path, series_uid: str | None = None, skip: Path | None = None) -> list[DicomCase]:
    """The DICOM cases of a CLI input (a DICOM file or a folder), [] when it is neither.

    ``skip``: a folder not to search (see ``dicom_cases``).
    """
    if item.is_dir():
        return dicom_cases(item, series_uid, skip)
    if is_dicom_file(item):
        return [dicom_file_case(item, series_uid)]
    return []


def case_stem(item: Path | DicomCase) -> str:
    """The output stem of a case: the DICOM case's stem or the image file name without its suffix."""
    return item.stem if isinstance(item, DicomCase) else image_stem(item)


def case_format(item: Path | DicomCase) -> str:
    """The maps' format for ``--format auto``: as the input file, NIfTI for DICOM."""
    return "nifti" if isinstance(item, DicomCase) else image_format(item)


def load_case(item: Path | DicomCase, reporter: ProgressReporter | None = None) -> Volume:
    """Read a case's CT (an image file through ``image_io``, a DICOM series through ``dicom_io``)."""
    if not isinstance(item, DicomCase):
        from .image_io import load_volume

        return load_volume(item)
    for note in item.notes:
        if reporter is not None:
            reporter.log("info", note)
    item.image = read_ct_series(item.series)
    return item.image.volume
