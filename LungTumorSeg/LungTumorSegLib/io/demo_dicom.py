"""Write a CT ``Volume`` as a DICOM series: the DICOM input of the Slicer batch script's self-test.

One file per axial slice (CT Image Storage, 16-bit signed HU, LPS geometry from the volume's affine). Works with
pydicom 2.4 (Slicer 5.4 to 5.10) and 3.x (Slicer 5.12); no slicer import.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.volume import Volume

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
LPS = np.diag([-1.0, -1.0, 1.0])


def _number(value: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    return f"{float(value):.6g}"


def write_series(
    volume: Volume,
    folder: str | Path,
    modality: str = "CT",
    image_type: str = "ORIGINAL\\PRIMARY\\AXIAL",
    series_number: int = 1,
    description: str = "LungTumorSeg test series",
    patient_id: str = "LTS-TEST",
    study_uid: str | None = None,
) -> list[Path]:
    """Write ``volume`` (one file per slice along its third voxel axis) into ``folder``; returns the files."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine_lps = LPS @ volume.affine[:3]  # voxel (i, j, k, 1) -> LPS mm
    spacing = volume.spacing
    row_direction = affine_lps[:, 0] / spacing[0]  # along i: the columns of a row
    column_direction = affine_lps[:, 1] / spacing[1]  # along j: down the rows
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    hu = np.clip(np.rint(volume.array), -32768, 32767).astype(np.int16)
    files = []
    for k in range(volume.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{series_number:03d}_{k:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "LungTumorSeg^Test", patient_id
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.ImageType = modality, image_type.split("\\")
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = series_number, k + 1, description
        ds.StudyDate = ds.SeriesDate = "20240101"
        ds.ImagePositionPatient = [_number(v) for v in affine_lps @ np.array([0.0, 0.0, k, 1.0])]
        ds.ImageOrientationPatient = [_number(v) for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [_number(spacing[1]), _number(spacing[0])]  # row spacing (along j), column spacing
        ds.SliceThickness = _number(spacing[2])
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
        ds.PixelData = np.ascontiguousarray(hu[:, :, k].T).tobytes()  # rows along j, columns along i
        if int(pydicom.__version__.split(".")[0]) >= 3:
            ds.save_as(path, enforce_file_format=True)
        else:
            ds.is_little_endian, ds.is_implicit_VR = True, False
            ds.save_as(path, write_like_original=False)
        files.append(path)
    return files
