"""DICOM SR measurement report (TID 1500) of the tumour measurements, written with highdicom.

- A measurement group (TID 1501) "All lesions" with the total tumour volume (0 ml when there is no
  lesion, so that every case has a report).
- One Volumetric ROI group (TID 1411) per lesion, tracked as "Lesion N", referencing the "Lung tumor"
  segment of the DICOM SEG and its source series, with the lesion's volume (ml) and RECIST long and
  short axes (mm). The axes' end points stay in ``<name>_measurements.json``: TID 1411 measurements
  may not carry coordinates.

The SEG's one segment holds every lesion, as the Slicer segmentation does; the groups tell them apart.
"""

from __future__ import annotations

import os
from pathlib import Path

import highdicom as hd
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from ..core.errors import OutputError
from ..io.dicom_io import DicomGrid
from ..io.output_files import atomic_path
from ..measurements.lesion_measurements import CaseMeasurements, LesionMeasurement
from .dicom_seg import MANUFACTURER, SEGMENT_NUMBER, AlgorithmInfo, derived_series_number, terminology_codes

CT_CHEST = Code("24627-2", "LN", "CT Chest")
MILLILITRE = Code("ml", "UCUM", "milliliter")
MILLIMETRE = Code("mm", "UCUM", "millimeter")
ALL_LESIONS = "All lesions"


def build_measurement_report(
    seg: hd.seg.Segmentation, grid: DicomGrid, case: CaseMeasurements, algorithm: AlgorithmInfo
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR holding a TID 1500 report with one group per lesion of ``case``."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(),
            name=MANUFACTURER,
            manufacturer_name=MANUFACTURER,
            model_name=f"{algorithm.model_name} {algorithm.model_version}"[:64],
        ),
    )
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=MANUFACTURER,
        version=algorithm.software_version,
        parameters=[f"model_name={algorithm.model_name}", f"model_version={algorithm.model_version}"],
    )
    groups = [_case_group(case, algorithm_id)]
    groups += [_lesion_group(lesion, seg, grid, algorithm_id) for lesion in case.lesions]
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CT_CHEST,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*grid.datasets, seg],
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=derived_series_number(grid) + 1,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description=f"Lung tumor measurements ({algorithm.model_name})"[:64],
    )


def _case_group(
    case: CaseMeasurements, algorithm_id: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The whole case (TID 1501): the total tumour volume, 0 ml when no lesion was found."""
    code = terminology_codes()
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=ALL_LESIONS),
        finding_type=code["type"],
        finding_category=code["category"],
        finding_sites=[hd.sr.FindingSite(anatomic_location=code["region"])],
        algorithm_id=algorithm_id,
        measurements=[
            hd.sr.Measurement(
                name=codes.SCT.Volume, value=case.total_volume_ml, unit=MILLILITRE, algorithm_id=algorithm_id
            )
        ],
    )


def _lesion_group(
    lesion: LesionMeasurement,
    seg: hd.seg.Segmentation,
    grid: DicomGrid,
    algorithm_id: hd.sr.AlgorithmIdentification,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    code = terminology_codes()
    measurements = [
        hd.sr.Measurement(name=name, value=value, unit=unit, algorithm_id=algorithm_id)
        for name, value, unit in (
            (codes.SCT.Volume, lesion.volume_ml, MILLILITRE),
            (codes.SCT.LongAxis, lesion.long_axis_mm, MILLIMETRE),
            (codes.SCT.ShortAxis, lesion.short_axis_mm, MILLIMETRE),
        )
    ]
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"Lesion {lesion.lesion_id}"),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=SEGMENT_NUMBER,
            source_series=hd.sr.SourceSeriesForSegmentation(grid.series.uid),
        ),
        finding_type=code["type"],
        finding_category=code["category"],
        finding_sites=[hd.sr.FindingSite(anatomic_location=code["region"])],
        algorithm_id=algorithm_id,
        measurements=measurements,
    )


def write_measurement_report(
    seg: hd.seg.Segmentation,
    grid: DicomGrid,
    case: CaseMeasurements,
    algorithm: AlgorithmInfo,
    path: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """Build the report and write it to ``path`` atomically.

    Raises:
        OutputError: the file exists (and overwrite is false) or cannot be written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: file exists (pass overwrite to replace it)")
    report = build_measurement_report(seg, grid, case, algorithm)
    with atomic_path(path) as tmp:
        report.save_as(tmp)
    return path
