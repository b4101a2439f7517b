"""DICOM Segmentation (SEG) of the tumour label, written with highdicom against the source CT series.

The SEG references every source image (Referenced Series Sequence, Source Image Sequence) and the
series' frame of reference, holds one binary segment "Lung tumor" coded with the SNOMED category,
type and anatomic region of the Slicer module's terminology entry (one definition,
``terminology.LUNG_TUMOR_TERMINOLOGY``), and identifies the algorithm (LungTumorSeg and its
version, the model's name and version).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .. import __version__
from ..core.errors import OutputError
from ..core.volume import Volume
from ..io.dicom_io import DicomGrid
from ..io.output_files import atomic_path
from .terminology import (
    LUNG_TUMOR_COLOR,
    LUNG_TUMOR_SEGMENT_NAME,
    LUNG_TUMOR_TERMINOLOGY,
    parse_terminology_entry,
)

MANUFACTURER = "LungTumorSeg"
SEGMENT_NUMBER = 1
GRID_ATOL_MM = 1e-3
SERIES_NUMBER_OFFSET = 1000  # derived series are numbered 1000 + the source series number


@dataclass(frozen=True)
class AlgorithmInfo:
    """Who made the segmentation: the software and the model bundle."""

    model_name: str
    model_version: str
    software_version: str = __version__

    @classmethod
    def from_run_info(cls, info: dict[str, Any]) -> AlgorithmInfo:
        """From a ``SegmentationResult.info`` dictionary (``model``, ``model_version``)."""
        return cls(str(info.get("model") or "unknown"), str(info.get("model_version") or "unknown"))

    def identification(self) -> hd.AlgorithmIdentificationSequence:
        """The Segment Algorithm Identification (name, version, family, model as parameters)."""
        return hd.AlgorithmIdentificationSequence(
            name=MANUFACTURER,
            family=codes.DCM.ArtificialIntelligence,
            version=self.software_version,
            source=f"model bundle {self.model_name} {self.model_version}"[:64],
            parameters={"model_name": self.model_name, "model_version": self.model_version},
        )


def terminology_codes() -> dict[str, Code]:
    """Category, type and anatomic region of the tumour segment as DICOM codes."""
    parts = parse_terminology_entry(LUNG_TUMOR_TERMINOLOGY)
    return {key: Code(parts[key][1], parts[key][0], parts[key][2]) for key in ("category", "type", "region")}


def derived_series_number(grid: DicomGrid) -> int:
    """Series number for a series derived from ``grid``'s series (1000 + the source number)."""
    try:
        return SERIES_NUMBER_OFFSET + int(grid.datasets[0].get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        return SERIES_NUMBER_OFFSET


def build_dicom_seg(label: Volume, grid: DicomGrid, algorithm: AlgorithmInfo) -> hd.seg.Segmentation:
    """A binary DICOM SEG of ``label`` (voxels > 0.5) on the grid of the source series.

    Raises:
        ValueError: the label is not on the series' grid.
    """
    if label.shape != grid.shape or not np.allclose(label.affine, grid.affine, atol=GRID_ATOL_MM):
        raise ValueError("the label is not on the grid of the source DICOM series")
    mask = np.ascontiguousarray(np.asarray(label.array).transpose(2, 1, 0) > 0.5)  # frames = slices, (rows, cols)
    code = terminology_codes()
    from_rgb = getattr(hd.color.CIELabColor, "from_rgb", None)  # highdicom >= 0.23 (not in Slicer 5.4-5.10)
    colour = {"display_color": from_rgb(*(round(255 * c) for c in LUNG_TUMOR_COLOR))} if from_rgb else {}
    description = hd.seg.SegmentDescription(
        segment_number=SEGMENT_NUMBER,
        segment_label=LUNG_TUMOR_SEGMENT_NAME,
        segmented_property_category=code["category"],
        segmented_property_type=code["type"],
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm.identification(),
        tracking_id=LUNG_TUMOR_SEGMENT_NAME,
        tracking_uid=generate_uid(),
        anatomic_regions=[code["region"]],
        **colour,
    )
    return hd.seg.Segmentation(
        source_images=grid.datasets,
        pixel_array=mask,
        omit_empty_frames=bool(mask.any()),  # an empty SEG keeps every frame (highdicom cannot omit them all)
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=derived_series_number(grid),
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"{algorithm.model_name} {algorithm.model_version}"[:64],
        software_versions=[algorithm.software_version, algorithm.model_version],
        device_serial_number="1",
        content_label="LUNGTUMOR",
        content_description="Lung tumour segmentation (research use only)",
        content_creator_name="LungTumorSeg^",
        series_description=f"Lung tumor ({algorithm.model_name} {algorithm.model_version})"[:64],
    )


def write_dicom_seg(
    label: Volume, grid: DicomGrid, algorithm: AlgorithmInfo, path: str | os.PathLike, overwrite: bool = False
) -> hd.seg.Segmentation:
    """Build the SEG and write it to ``path`` atomically; returns the dataset (for the SR's reference).

    Raises:
        OutputError: the file exists (and overwrite is false) or cannot be written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: file exists (pass overwrite to replace it)")
    seg = build_dicom_seg(label, grid, algorithm)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return seg
