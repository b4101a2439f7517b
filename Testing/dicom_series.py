"""Write a real CT volume as a DICOM series with pydicom, the way a scanner export looks (tests, benchmarks).

Each slice is one file with real-looking patient/study/series tags, stored values with a rescale
slope/intercept, ImagePositionPatient/ImageOrientationPatient from the volume's affine (RAS → LPS),
InstanceNumber in acquisition order (head first: decreasing z) and file names in a shuffled order.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from LungTumorSegLib.core.volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_ct_series(
    volume: Volume,
    folder: Path,
    *,
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_uid: str | None = None,
    study_uid: str | None = None,
    frame_uid: str | None = None,
    series_number: int = 2,
    description: str = "CHEST 1.0 B30f",
    skip_slices: tuple[int, ...] = (),
    instance_order: str = "acquisition",
    seed: int = 0,
) -> list[Path]:
    """Write ``volume`` (HU, any orientation with orthogonal in-plane axes) as one file per k-slice.

    Args:
        volume: the CT; slices are its k planes, rows its j axis, columns its i axis.
        folder: created if needed; files are named ``IM<random 8 digits>``, so not in slice order.
        modality: ``CT`` (CT Image Storage) or ``MR`` (MR Image Storage, no rescale).
        slope, intercept: stored value = (HU − intercept) / slope, rounded.
        series_uid, study_uid, frame_uid: fixed UIDs (generated when None).
        series_number, description: SeriesNumber and SeriesDescription.
        skip_slices: k indices left out (a series with missing slices).
        instance_order: ``acquisition`` (InstanceNumber 1 at the top slice) or ``shuffled``.
        seed: for the file-name and instance-number shuffles.

    Returns:
        The written files, in k order (skipped slices left out).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lps = LPS_TO_RAS @ volume.affine
    spacing = volume.spacing
    row_direction = lps[:3, 0] / spacing[0]  # along i = along a row (increasing column)
    column_direction = lps[:3, 1] / spacing[1]
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_uid or generate_uid()
    n = volume.shape[2]
    stored = np.rint((np.asarray(volume.array, dtype=np.float64) - intercept) / slope)
    signed = bool(stored.min() < 0)
    dtype = np.int16 if signed else np.uint16
    info = np.iinfo(dtype)
    if stored.min() < info.min or stored.max() > info.max:
        raise ValueError(f"stored values {stored.min()}..{stored.max()} do not fit {np.dtype(dtype).name}")
    stored = stored.astype(dtype)
    numbers = np.arange(n, 0, -1) if instance_order == "acquisition" else rng.permutation(n) + 1
    names = rng.choice(10**8, size=n, replace=False)  # random, so series written into one folder do not collide
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    written = []
    for k in range(n):
        if k in skip_slices:
            continue
        ds = _slice_dataset(sop_class, modality, study_uid, series_uid, frame_uid, series_number, description)
        ds.InstanceNumber = int(numbers[k])
        ds.ImagePositionPatient = [_ds(v) for v in lps[:3, :3] @ np.array([0.0, 0.0, k]) + lps[:3, 3]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing (between rows), column spacing
        ds.SliceThickness = _ds(spacing[2])
        ds.SliceLocation = _ds(float(ds.ImagePositionPatient[2]))
        pixels = np.ascontiguousarray(stored[:, :, k].T)  # (rows = j, columns = i)
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16 if signed else 12, 15 if signed else 11
        ds.PixelRepresentation = 1 if signed else 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        if modality == "CT":
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = _ds(slope), _ds(intercept), "HU"
            ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        ds.PixelData = pixels.tobytes()
        path = folder / f"IM{names[k]:08d}"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
    return written


def _slice_dataset(
    sop_class: str, modality: str, study_uid: str, series_uid: str, frame_uid: str, number: int, description: str
) -> FileDataset:
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "R01^001", "R01-001", "19500101", "M"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240102"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.StudyID, ds.AccessionNumber, ds.StudyDescription = "1", "A1234", "CT CHEST W CONTRAST"
    ds.ReferringPhysicianName = ""
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription = modality, number, description
    ds.Manufacturer, ds.ManufacturerModelName, ds.InstitutionName = "SIEMENS", "SOMATOM Definition AS", "TEST"
    ds.BodyPartExamined, ds.PatientPosition = "CHEST", "HFS"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.AcquisitionNumber, ds.PositionReferenceIndicator = 1, ""
    if modality == "CT":
        ds.KVP, ds.ConvolutionKernel, ds.GantryDetectorTilt = "120", "B30f", "0"
    else:
        ds.MagneticFieldStrength, ds.ScanningSequence, ds.SequenceVariant = "1.5", "SE", "NONE"
        ds.ScanOptions, ds.MRAcquisitionType = "", "2D"
        ds.EchoTime, ds.RepetitionTime = "15", "500"
    return ds


def _ds(value: float) -> str:
    """A decimal string (DS, at most 16 characters) as scanners write it."""
    text = f"{float(value):.10g}"
    return text if len(text) <= 16 else f"{float(value):.8g}"


def rotated(volume: Volume, degrees: float, axis: tuple[float, float, float] = (1.0, 0.3, 0.0)) -> Volume:
    """The same voxels with the grid rotated about its centre (an oblique acquisition)."""
    axis_ = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis_[2], axis_[1]], [axis_[2], 0, -axis_[0]], [-axis_[1], axis_[0], 0]])
    rotation = np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross
    centre = volume.voxel_to_ras((np.array(volume.shape) - 1) / 2)
    affine = volume.affine.copy()
    affine[:3, :3] = rotation @ volume.affine[:3, :3]
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(volume.shape) - 1) / 2)
    return Volume(volume.array, affine)


def tilted(volume: Volume, degrees: float) -> Volume:
    """The same voxels with each slice shifted along j: a gantry-tilted (sheared) acquisition."""
    affine = volume.affine.copy()
    affine[:3, 2] += np.tan(np.radians(degrees)) * volume.spacing[2] * affine[:3, 1] / volume.spacing[1]
    return Volume(volume.array, affine)


def downsampled(volume: Volume, step: tuple[int, int, int]) -> Volume:
    """Every ``step``-th voxel along each axis, geometry kept exact (a small CT for fast tests)."""
    affine = volume.affine.copy()
    affine[:3, :3] = volume.affine[:3, :3] * np.asarray(step, dtype=np.float64)
    array = np.ascontiguousarray(volume.array[:: step[0], :: step[1], :: step[2]])
    return Volume(array, affine)


def ct_slab(path: Path, first: int, count: int, step: tuple[int, int, int] = (4, 4, 1)) -> Volume:
    """Slices ``first`` to ``first + count`` of a NIfTI CT, every ``step``-th voxel, geometry exact (read lazily)."""
    image = nib.load(str(path))
    array = np.asarray(image.dataobj[:, :, first : first + count], dtype=np.float32)
    affine = image.affine.copy()
    affine[:3, 3] = image.affine[:3, :3] @ np.array([0.0, 0.0, first]) + image.affine[:3, 3]
    return downsampled(Volume(array, affine), step)


def read_back_order(folder: Path) -> list[int]:
    """InstanceNumbers of the files in file-name order (to check the order is shuffled)."""
    return [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber) for p in sorted(folder.iterdir())]
