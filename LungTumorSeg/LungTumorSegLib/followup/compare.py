"""Comparing a baseline and a follow-up scan: align, match the lesions, and assess the RECIST 1.1 response.

Each scan is measured on its own grid, as a reader measures each scan (``measure_lesions``). The alignment
is used only to decide which lesions correspond: the baseline lesions' voxels and centroids are mapped
into the follow-up scan (``registration.Alignment``), then ``lesion_matching`` groups the lesions and
``recist_response`` assesses the targets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..core.errors import InputError
from ..core.volume import Volume
from ..measurements.lesion_measurements import (
    CaseMeasurements,
    Component,
    LesionMeasurement,
    find_lesions,
    lesion_mask,
    measure_lesions,
)
from ..segmentation.preprocess import crop
from .lesion_matching import MAX_CENTROID_DISTANCE_MM, MIN_OVERLAP_FRACTION, LesionMatch, match_lesions, overlap_counts
from .recist_response import NEW_LESION_MIN_MM, Response, assess_response
from .registration import Alignment, RegistrationSettings, identity_alignment, register, settings_dict

Progress = Callable[[float, str], None]


@dataclass
class TimePoint:
    """One scan: its CT, its tumour label on the CT's grid, the lesions and their measurements.

    Attributes:
        name: ``baseline`` or ``follow-up``.
        ct: the CT in HU.
        label: tumour label on the CT's grid.
        components: the label's lesions (``find_lesions``), lesion id = position + 1.
        case: the measurements.
        entropy: uncertainty map when the label was segmented here.
        info: where the CT and the label came from (files, model), for the reports.
    """

    name: str
    ct: Volume
    label: Volume
    components: list[Component]
    case: CaseMeasurements
    entropy: Volume | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def lesion(self, lesion_id: int) -> LesionMeasurement:
        """The measurements of lesion ``lesion_id``."""
        return self.case.lesions[lesion_id - 1]


def time_point(
    name: str, ct: Volume, label: Volume, entropy: Volume | None = None, info: dict | None = None
) -> TimePoint:
    """Find and measure the lesions of one scan.

    Raises:
        InputError: the label is not on the CT's grid.
    """
    if not ct.same_grid(label):
        raise InputError(
            f"the {name} label ({label.shape}) is not on the {name} CT's grid ({ct.shape}); "
            "export it with the CT as reference geometry"
        )
    components = find_lesions(lesion_mask(label.array))
    case = measure_lesions(label, ct, entropy, components=components)
    return TimePoint(name, ct, label, components, case, entropy, dict(info or {}))


@dataclass
class CompareOptions:
    """Choices of the comparison; ``registration=None`` means the scans already share patient coordinates."""

    registration: RegistrationSettings | None = field(default_factory=RegistrationSettings)
    min_overlap_fraction: float = MIN_OVERLAP_FRACTION
    max_distance_mm: float = MAX_CENTROID_DISTANCE_MM
    new_lesion_min_mm: float = NEW_LESION_MIN_MM
    nadir_sum_mm: float | None = None


@dataclass
class Comparison:
    """Everything the comparison found."""

    baseline: TimePoint
    followup: TimePoint
    alignment: Alignment
    matches: list[LesionMatch]
    response: Response
    options: CompareOptions

    def target_number(self, match: LesionMatch) -> int | None:
        """The target number of the match's first target lesion, or None."""
        numbers = [t.number for t in self.response.targets if t.baseline_id in match.baseline_ids]
        return min(numbers) if numbers else None

    def match_rows(self) -> list[dict]:
        """One row per match: ids, type, volumes, long and short axes at both time points, changes, response.

        Groups (split, merged) sum the volumes and long axes of their lesions (RECIST 1.1 sums fragments);
        the short axis is that of the group's largest lesion.
        """
        rows = []
        for number, match in enumerate(self.matches, start=1):
            base = [self.baseline.lesion(i) for i in match.baseline_ids]
            follow = [self.followup.lesion(i) for i in match.followup_ids]
            target = self.target_number(match)
            counted = [t.followup_mm for t in self.response.targets if t.baseline_id in match.baseline_ids]
            row = {
                "match_id": number,
                "match_type": match.match_type,
                "matched_by": match.matched_by,
                "baseline_ids": match.baseline_ids,
                "followup_ids": match.followup_ids,
                "target": target,
                **_group_values("baseline", base),
                **_group_values("followup", follow),
                "recist_followup_mm": round(sum(counted), 3) if target is not None else None,
                "overlap_ml": round(match.overlap_ml, 4),
                "centroid_distance_mm": match.centroid_distance_mm,
                "response": self.response.category,
            }
            row["volume_change_percent"] = _percent(row["baseline_volume_ml"], row["followup_volume_ml"])
            row["long_axis_change_percent"] = _percent(row["baseline_long_axis_mm"], row["followup_long_axis_mm"])
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        """The content of comparison.json, with the response as the top-level ``"response"`` field."""
        options = self.options
        return {
            "lungtumorseg_version": __version__,
            "response": self.response.to_dict(),
            "matches": self.match_rows(),
            "registration": {
                **self.alignment.to_dict(),
                "settings": None if options.registration is None else settings_dict(options.registration),
            },
            "matching": {
                "min_overlap_fraction": options.min_overlap_fraction,
                "max_centroid_distance_mm": options.max_distance_mm,
            },
            "baseline": _time_point_dict(self.baseline),
            "followup": _time_point_dict(self.followup),
            "research_use_only": True,
        }


def compare(
    baseline: TimePoint,
    followup: TimePoint,
    options: CompareOptions | None = None,
    *,
    alignment: Alignment | None = None,
    progress: Progress | None = None,
) -> Comparison:
    """Align the follow-up to the baseline, match the lesions and assess the response.

    Args:
        baseline: the baseline scan.
        followup: the follow-up scan.
        options: comparison choices.
        alignment: a registration already computed for these two CTs (skips ``register``).
        progress: ``progress(fraction, message)`` callback.
    """
    options = options or CompareOptions()
    progress = progress or (lambda fraction, message: None)
    if alignment is None and options.registration is None:
        alignment = identity_alignment()
    elif alignment is None:
        alignment = register(
            baseline.ct, followup.ct, options.registration, lambda f, m: progress(0.9 * f, f"registration: {m}")
        )
    progress(0.92, "matching the lesions")
    overlap_ml = _overlap_ml(baseline, followup, alignment)
    centroids = np.array([lesion.centroid_ras for lesion in baseline.case.lesions]).reshape(-1, 3)
    matches = match_lesions(
        overlap_ml,
        np.array([lesion.volume_ml for lesion in baseline.case.lesions]),
        np.array([lesion.volume_ml for lesion in followup.case.lesions]),
        alignment.to_followup(centroids).reshape(-1, 3) if len(centroids) else centroids,
        np.array([lesion.centroid_ras for lesion in followup.case.lesions]).reshape(-1, 3),
        min_overlap_fraction=options.min_overlap_fraction,
        max_distance_mm=options.max_distance_mm,
    )
    response = assess_response(
        baseline.case,
        followup.case,
        matches,
        nadir_sum_mm=options.nadir_sum_mm,
        new_lesion_min_mm=options.new_lesion_min_mm,
    )
    progress(1.0, f"response {response.category}")
    return Comparison(baseline, followup, alignment, matches, response, options)


def lesion_ids(shape: tuple[int, int, int], components: list[Component]) -> np.ndarray:
    """A lesion-id map (0 = background, n = lesion n) from ``find_lesions`` components."""
    ids = np.zeros(shape, dtype=np.uint16)
    for number, component in enumerate(components, start=1):
        ids[component.slices][component.mask] = number
    return ids


def _overlap_ml(baseline: TimePoint, followup: TimePoint, alignment: Alignment) -> np.ndarray:
    """Volume of each baseline lesion that falls on each follow-up lesion once mapped into the follow-up."""
    n_b, n_f = len(baseline.components), len(followup.components)
    if n_b == 0 or n_f == 0:
        return np.zeros((n_b, n_f))
    starts = np.min([[s.start for s in c.slices] for c in baseline.components], axis=0)
    stops = np.max([[s.stop for s in c.slices] for c in baseline.components], axis=0)
    box = tuple(slice(int(a), int(b)) for a, b in zip(starts, stops))
    reference = crop(baseline.label, box)  # type: ignore[arg-type]
    followup_ids = followup.label.with_array(lesion_ids(followup.label.shape, followup.components))
    aligned = alignment.resample_followup(followup_ids, reference, nearest=True).array
    counts = overlap_counts(lesion_ids(baseline.label.shape, baseline.components)[box], aligned, n_b, n_f)
    return counts * baseline.label.voxel_volume_ml


def _group_values(prefix: str, lesions: list[LesionMeasurement]) -> dict:
    if not lesions:
        return {f"{prefix}_{key}": None for key in ("volume_ml", "long_axis_mm", "short_axis_mm", "measurable")}
    return {
        f"{prefix}_volume_ml": round(sum(lesion.volume_ml for lesion in lesions), 4),
        f"{prefix}_long_axis_mm": round(sum(lesion.long_axis_mm for lesion in lesions), 3),
        f"{prefix}_short_axis_mm": round(lesions[0].short_axis_mm, 3),
        f"{prefix}_measurable": any(lesion.measurable for lesion in lesions),
    }


def _percent(before: float | None, after: float | None) -> float | None:
    if before is None or before <= 0:
        return None
    return round(100.0 * ((after or 0.0) - before) / before, 2)


def _time_point_dict(point: TimePoint) -> dict:
    return {"inputs": point.info, "case": point.case.summary(), "lesions": [x.to_dict() for x in point.case.lesions]}
