"""Candidates: regions the model gives some probability to that are not reported as lesions.

A sensitivity preset reports lesions drawn at the outline threshold whose peak probability reaches its confidence
level; whatever else reaches ``candidate_min_peak`` is listed here, strongest first, for the reader to accept (and
outline with the box tool) or dismiss. Each candidate is a 26-connected region of ``probability >=
candidate_min_peak`` that holds no reported lesion and passes the lesion filters (size, lung field).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..core.volume import Volume
from .postprocess import CONNECTIVITY_26, PostprocessSettings


@dataclass(frozen=True)
class CandidateSettings:
    """Which candidates are listed."""

    min_peak: float = 1.0  # regions drawn at this probability level; above 1: none
    max_count: int = 0


@dataclass
class Candidate:
    """One listed candidate; ``label`` is its value in the candidates label map (1 = the strongest)."""

    label: int
    peak_probability: float
    mean_probability: float
    volume_ml: float
    voxels: int
    centroid_ras: list[float]
    box_ras_min: list[float]
    box_ras_max: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (RAS in mm, rounded to 0.01 mm; probabilities to 4 decimals)."""
        return {
            "label": self.label,
            "peak_probability": round(self.peak_probability, 4),
            "mean_probability": round(self.mean_probability, 4),
            "volume_ml": round(self.volume_ml, 4),
            "voxels": self.voxels,
            "centroid_ras": [round(v, 2) for v in self.centroid_ras],
            "box_ras": {"min": [round(v, 2) for v in self.box_ras_min], "max": [round(v, 2) for v in self.box_ras_max]},
        }


def find_candidates(
    probability: np.ndarray,
    lesions: np.ndarray,
    voxel_ml: float,
    post: PostprocessSettings,
    settings: CandidateSettings,
    lung_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, list[tuple[int, float, float, int]]]:
    """The candidates on one grid, strongest first.

    Args:
        probability: tumour probability.
        lesions: the reported lesions (non-zero) on the same grid.
        voxel_ml: volume of one voxel in ml.
        post: the lesion filters (``min_lesion_ml``, ``restrict_to_lung``) the candidates pass too.
        settings: the candidate level and how many to list.
        lung_mask: lung field on the same grid (candidates must touch it, as lesions must).

    Returns:
        (uint16 label map, value k for the k-th strongest candidate; and per candidate
        ``(k, peak probability, mean probability, voxel count)``).
    """
    empty = np.zeros(probability.shape, np.uint16)
    if settings.max_count <= 0 or settings.min_peak > 1.0:
        return empty, []
    labels, count = ndimage.label(probability >= settings.min_peak, structure=CONNECTIVITY_26)
    if count == 0:
        return empty, []
    index = np.arange(1, count + 1)
    voxels = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = voxels * voxel_ml >= post.min_lesion_ml
    keep &= ~ndimage.maximum(lesions > 0, labels, index=index).astype(bool)
    if post.restrict_to_lung and lung_mask is not None and lung_mask.any():
        keep &= ndimage.maximum(lung_mask, labels, index=index).astype(bool)
    peaks = np.asarray(ndimage.maximum(probability, labels, index=index), dtype=np.float64)
    means = np.asarray(ndimage.mean(probability, labels, index=index), dtype=np.float64)
    kept = index[keep]
    strongest = kept[np.argsort(-peaks[kept - 1], kind="stable")][: settings.max_count]
    lookup = np.zeros(count + 1, np.uint16)
    lookup[strongest] = np.arange(1, len(strongest) + 1)
    rows = [(rank, float(peaks[c - 1]), float(means[c - 1]), int(voxels[c - 1])) for rank, c in enumerate(strongest, 1)]
    return lookup[labels], rows


def describe_candidates(label_map: Volume, rows: list[tuple[int, float, float, int]]) -> list[Candidate]:
    """Candidates with their size, centroid and axis-aligned RAS bounding box (voxel corners included).

    Args:
        label_map: the candidates label map on its grid (any orientation).
        rows: ``find_candidates``' per-candidate numbers.
    """
    if not rows:
        return []
    boxes = ndimage.find_objects(label_map.array, max_label=max(rank for rank, *_ in rows))
    candidates = []
    for rank, peak, mean, voxels in rows:
        box = boxes[rank - 1]
        inside = np.argwhere(label_map.array[box] == rank) + [s.start for s in box]
        corners = [
            [s.start - 0.5 if bit == 0 else s.stop - 0.5 for s, bit in zip(box, bits)] for bits in np.ndindex(2, 2, 2)
        ]
        ras = label_map.voxel_to_ras(np.array(corners, dtype=np.float64))
        candidates.append(
            Candidate(
                label=rank,
                peak_probability=peak,
                mean_probability=mean,
                volume_ml=voxels * label_map.voxel_volume_ml,
                voxels=voxels,
                centroid_ras=[float(v) for v in label_map.voxel_to_ras(inside.mean(axis=0))],
                box_ras_min=[float(v) for v in ras.min(axis=0)],
                box_ras_max=[float(v) for v in ras.max(axis=0)],
            )
        )
    return candidates
