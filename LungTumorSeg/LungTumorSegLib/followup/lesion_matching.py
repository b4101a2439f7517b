"""Matching the lesions of a baseline and a follow-up scan after alignment.

Two lesions are linked when they overlap after alignment: the baseline lesion's voxels, mapped into the
follow-up scan, fall on the follow-up lesion for at least ``min_overlap_fraction`` of the smaller of the
two volumes. Lesions left without any overlap link are then paired one to one by centroid distance
(baseline centroid mapped into the follow-up scan), closest pairs first (``linear_sum_assignment``), when
the distance is at most ``max_distance_mm``. Each connected group of links is one match:

- ``matched``: one baseline lesion, one follow-up lesion;
- ``split``: one baseline lesion, several follow-up lesions;
- ``merged``: several baseline lesions, one follow-up lesion (also several to several);
- ``disappeared``: a baseline lesion with no follow-up lesion;
- ``new``: a follow-up lesion with no baseline lesion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

MIN_OVERLAP_FRACTION = 0.1
MAX_CENTROID_DISTANCE_MM = 10.0
MATCH_TYPES = ("matched", "split", "merged", "disappeared", "new")


@dataclass
class LesionMatch:
    """One group of linked lesions.

    Attributes:
        match_type: one of ``MATCH_TYPES``.
        baseline_ids: baseline lesion ids (1 = largest at baseline).
        followup_ids: follow-up lesion ids (1 = largest at follow-up).
        matched_by: ``overlap``, ``centroid distance``, or empty for new/disappeared lesions.
        overlap_ml: volume of the baseline lesions that falls on the follow-up lesions after alignment.
        centroid_distance_mm: distance between the baseline and the follow-up centroid after alignment (for
            groups, the volume-weighted centroids of their lesions), or None.
    """

    match_type: str
    baseline_ids: list[int]
    followup_ids: list[int]
    matched_by: str = ""
    overlap_ml: float = 0.0
    centroid_distance_mm: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary."""
        return asdict(self)


def overlap_counts(baseline_ids: np.ndarray, followup_ids: np.ndarray, n_baseline: int, n_followup: int) -> np.ndarray:
    """Voxel counts of every (baseline lesion, follow-up lesion) pair on one grid.

    Args:
        baseline_ids: baseline lesion id per voxel (0 = background).
        followup_ids: follow-up lesion id per voxel on the same grid (the aligned follow-up label).
        n_baseline: number of baseline lesions.
        n_followup: number of follow-up lesions.

    Returns:
        ``(n_baseline, n_followup)`` array: counts[i, j] voxels of baseline lesion i + 1 on follow-up lesion j + 1.
    """
    both = (baseline_ids > 0) & (followup_ids > 0)
    pairs = (baseline_ids[both].astype(np.int64) - 1) * n_followup + (followup_ids[both].astype(np.int64) - 1)
    return np.bincount(pairs, minlength=n_baseline * n_followup).reshape(n_baseline, n_followup)


def match_lesions(
    overlap_ml: np.ndarray,
    baseline_volumes_ml: np.ndarray,
    followup_volumes_ml: np.ndarray,
    baseline_centroids: np.ndarray,
    followup_centroids: np.ndarray,
    *,
    min_overlap_fraction: float = MIN_OVERLAP_FRACTION,
    max_distance_mm: float = MAX_CENTROID_DISTANCE_MM,
) -> list[LesionMatch]:
    """Group the lesions of two time points into matches.

    Args:
        overlap_ml: ``(n_baseline, n_followup)`` overlap volumes after alignment.
        baseline_volumes_ml: volume of each baseline lesion.
        followup_volumes_ml: volume of each follow-up lesion.
        baseline_centroids: ``(n_baseline, 3)`` baseline lesion centroids mapped into the follow-up scan (RAS mm).
        followup_centroids: ``(n_followup, 3)`` follow-up lesion centroids (RAS mm).
        min_overlap_fraction: overlap needed, as a fraction of the smaller lesion, to link two lesions.
        max_distance_mm: largest centroid distance for the fallback pairing.

    Returns:
        Matches ordered by their first baseline lesion, then new lesions by follow-up id.
    """
    n_b, n_f = len(baseline_volumes_ml), len(followup_volumes_ml)
    overlap_ml = np.asarray(overlap_ml, dtype=np.float64).reshape(n_b, n_f)
    centroids = (
        np.asarray(baseline_centroids, np.float64).reshape(n_b, 3),
        np.asarray(followup_centroids, np.float64).reshape(n_f, 3),
    )
    distances_mm = np.linalg.norm(centroids[0][:, None, :] - centroids[1][None, :, :], axis=2)
    smaller = np.minimum(np.asarray(baseline_volumes_ml)[:, None], np.asarray(followup_volumes_ml)[None, :])
    by_overlap = (overlap_ml > 0) & (overlap_ml >= min_overlap_fraction * smaller)
    by_distance = np.zeros_like(by_overlap)
    free_b = np.flatnonzero(~by_overlap.any(axis=1))
    free_f = np.flatnonzero(~by_overlap.any(axis=0))
    if free_b.size and free_f.size:
        cost = distances_mm[np.ix_(free_b, free_f)]
        rows, cols = linear_sum_assignment(np.where(cost <= max_distance_mm, cost, 1e9))
        for r, c in zip(rows, cols):
            if cost[r, c] <= max_distance_mm:
                by_distance[free_b[r], free_f[c]] = True
    links = by_overlap | by_distance
    rows, cols = np.nonzero(links)
    graph = coo_matrix((np.ones(len(rows)), (rows, n_b + cols)), shape=(n_b + n_f, n_b + n_f))
    _, component = connected_components(graph, directed=False)
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for node in range(n_b + n_f):
        members = groups.setdefault(int(component[node]), ([], []))
        members[0 if node < n_b else 1].append(node if node < n_b else node - n_b)
    matches = []
    for b_index, f_index in groups.values():
        volumes = (np.asarray(baseline_volumes_ml)[b_index], np.asarray(followup_volumes_ml)[f_index])
        matches.append(_match(b_index, f_index, by_overlap, overlap_ml, centroids, volumes))
    matches.sort(key=lambda m: (not m.baseline_ids, m.baseline_ids[:1] or m.followup_ids[:1]))
    return matches


def _match(b_index, f_index, by_overlap, overlap_ml, centroids, volumes) -> LesionMatch:
    baseline_ids, followup_ids = [i + 1 for i in b_index], [j + 1 for j in f_index]
    if not f_index:
        return LesionMatch("disappeared", baseline_ids, [])
    if not b_index:
        return LesionMatch("new", [], followup_ids)
    kind = "matched" if len(b_index) == 1 and len(f_index) == 1 else "split" if len(b_index) == 1 else "merged"
    block = np.ix_(b_index, f_index)
    centres = [
        np.average(points[index], axis=0, weights=np.maximum(weights, 1e-12))
        for points, index, weights in zip(centroids, (b_index, f_index), volumes)
    ]
    distance = float(np.linalg.norm(centres[0] - centres[1]))
    return LesionMatch(
        kind,
        baseline_ids,
        followup_ids,
        matched_by="overlap" if by_overlap[block].any() else "centroid distance",
        overlap_ml=float(overlap_ml[block].sum()),
        centroid_distance_mm=round(distance, 3),
    )
