"""Per-lesion and per-case tumour measurements: volume, HU, entropy, RECIST 1.1 axes, 3D Feret diameter.

Definitions (see docs/measurements.md):

- A lesion is a 26-connected component of the binary label (voxels with value > 0.5).
- Diameters are measured across voxel CORNERS (the outer extent of the voxels, as a reader measures
  the visible edge of the lesion): each voxel is a box of its spacing, and a diameter is the longest
  distance between two points of the convex hull of the lesion's voxel boxes. A one-voxel lesion
  therefore has the size of its voxel, not zero.
- The axial plane is the voxel plane closest to perpendicular to the patient's S axis (found with
  ``nibabel.orientations.io_orientation``), not "the third array axis": permuted and flipped voxel
  axes are handled exactly; oblique grids are measured exactly within their closest-to-axial slice plane.
- RECIST long axis: the longest in-plane diameter over all axial slices of the lesion. Short axis: the
  longest chord of the same slice's convex hull perpendicular to the long axis.
- Measurable (RECIST 1.1): long axis >= 10 mm and >= 2 x slice thickness (the spacing along the axial
  direction); this equals RECIST's "10 mm, or twice the slice thickness when slices are thicker than 5 mm".
- Target lesions: measurable lesions, longest first, at most 5; the RECIST 1.1 strict rule (at most
  2 per organ, both lungs counting as one organ) is reported beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from nibabel.orientations import io_orientation
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from ..core.errors import InputError
from ..core.volume import Volume

Point = tuple[float, float, float]
Segment = tuple[Point, Point]

MIN_MEASURABLE_MM = 10.0
MAX_TARGETS = 5
MAX_TARGETS_PER_ORGAN = 2
DIAMETER_CONVENTION = "voxel corners (outer extent of the lesion's voxels)"
_STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)
_TIE_MM = 1e-6


@dataclass(frozen=True)
class Component:
    """One connected lesion: its bounding box in the volume and its mask inside that box.

    Attributes:
        slices: bounding box as index slices of the full volume (``find_objects`` style).
        mask: boolean mask of the lesion, shaped like the bounding box.
    """

    slices: tuple[slice, slice, slice]
    mask: np.ndarray

    @property
    def offset(self) -> np.ndarray:
        """Voxel index of the bounding box's first corner."""
        return np.array([s.start for s in self.slices], dtype=np.int64)

    @property
    def voxel_count(self) -> int:
        """Number of lesion voxels."""
        return int(np.count_nonzero(self.mask))


@dataclass
class LesionMeasurement:
    """Measurements of one lesion; coordinates are RAS millimetres, indices are the label's voxel indices."""

    lesion_id: int
    voxel_count: int
    volume_ml: float
    centroid_ras: Point
    bbox_min_ijk: tuple[int, int, int]
    bbox_max_ijk: tuple[int, int, int]
    long_axis_mm: float
    long_axis_ras: Segment
    short_axis_mm: float
    short_axis_ras: Segment
    axial_slice_index: int
    max_diameter_3d_mm: float
    max_diameter_3d_ras: Segment
    measurable: bool
    not_measurable_reason: str
    mean_hu: float | None = None
    min_hu: float | None = None
    max_hu: float | None = None
    mean_entropy: float | None = None
    max_entropy: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dictionary (tuples become lists)."""
        return _jsonable(asdict(self))

    def to_row(self) -> dict:
        """Flat dictionary for one CSV row (points split into _r/_a/_s columns)."""
        row: dict = {}
        for key, value in asdict(self).items():
            if key.endswith("_ras") and isinstance(value[0], tuple):
                for end, point in zip(("p1", "p2"), value):
                    row.update({f"{key[:-4]}_{end}_{axis}": point[n] for n, axis in enumerate("ras")})
            elif key == "centroid_ras":
                row.update({f"centroid_{axis}": value[n] for n, axis in enumerate("ras")})
            elif key.startswith("bbox_"):
                row.update({f"{key[:-4]}_{axis}": value[n] for n, axis in enumerate("ijk")})
            else:
                row[key] = value
        return row


@dataclass
class CaseMeasurements:
    """All lesions of one label plus the case summary."""

    lesions: list[LesionMeasurement]
    shape: tuple[int, int, int]
    spacing_mm: Point
    axial_voxel_axis: int
    slice_thickness_mm: float
    voxel_volume_ml: float
    target_lesion_ids: list[int] = field(default_factory=list)
    sum_longest_diameters_mm: float = 0.0
    target_lesion_ids_recist_strict: list[int] = field(default_factory=list)
    sum_longest_diameters_recist_strict_mm: float = 0.0
    diameter_convention: str = DIAMETER_CONVENTION

    @property
    def lesion_count(self) -> int:
        """Number of lesions."""
        return len(self.lesions)

    @property
    def total_volume_ml(self) -> float:
        """Total tumour volume in millilitres."""
        return float(sum(lesion.volume_ml for lesion in self.lesions))

    @property
    def measurable_count(self) -> int:
        """Number of lesions measurable under RECIST 1.1."""
        return sum(lesion.measurable for lesion in self.lesions)

    def summary(self) -> dict:
        """The case summary (no per-lesion entries), JSON-ready."""
        return _jsonable(
            {
                "lesion_count": self.lesion_count,
                "total_volume_ml": self.total_volume_ml,
                "total_voxel_count": int(sum(lesion.voxel_count for lesion in self.lesions)),
                "measurable_count": self.measurable_count,
                "target_lesion_ids": self.target_lesion_ids,
                "sum_longest_diameters_mm": self.sum_longest_diameters_mm,
                "target_lesion_ids_recist_strict": self.target_lesion_ids_recist_strict,
                "sum_longest_diameters_recist_strict_mm": self.sum_longest_diameters_recist_strict_mm,
                "largest_long_axis_mm": max((lesion.long_axis_mm for lesion in self.lesions), default=0.0),
                "shape": self.shape,
                "spacing_mm": self.spacing_mm,
                "axial_voxel_axis": self.axial_voxel_axis,
                "slice_thickness_mm": self.slice_thickness_mm,
                "voxel_volume_ml": self.voxel_volume_ml,
                "diameter_convention": self.diameter_convention,
            }
        )

    def to_dict(self) -> dict:
        """JSON-ready dictionary: ``{"case": summary, "lesions": [...]}``."""
        return {"case": self.summary(), "lesions": [lesion.to_dict() for lesion in self.lesions]}


def lesion_mask(array: np.ndarray) -> np.ndarray:
    """Boolean lesion mask of a label array: True where the value is > 0.5 (any positive label)."""
    return array if array.dtype == bool else np.asarray(array) > 0.5


def axial_voxel_axis(affine: np.ndarray) -> int:
    """Index of the voxel axis closest to the patient's S axis (the axial slice axis)."""
    ornt = io_orientation(np.asarray(affine))
    return int(np.flatnonzero(ornt[:, 0] == 2)[0])


def find_lesions(mask: np.ndarray, block: int = 4) -> list[Component]:
    """26-connected components of a boolean mask, largest first.

    The mask is first reduced to blocks of ``block``^3 voxels and the block grid is labelled; each
    block component is then labelled at full resolution inside its own bounding box only. Voxels that
    are 26-connected lie in 26-adjacent blocks, so the result equals ``ndimage.label`` on the whole
    volume at a fraction of the cost for sparse masks.

    Args:
        mask: 3D boolean array.
        block: block edge in voxels for the coarse pass (1 labels the full volume directly).

    Returns:
        Components sorted by voxel count (descending), ties by bounding-box position.
    """
    mask = lesion_mask(mask)
    components: list[Component] = []
    if block <= 1:
        regions = [(tuple(slice(0, n) for n in mask.shape), mask)]
    else:
        coarse = _block_any(mask, block)
        coarse_labels, _ = ndimage.label(coarse, structure=_STRUCTURE_26)
        regions = []
        for index, box in enumerate(ndimage.find_objects(coarse_labels), start=1):
            fine = tuple(slice(s.start * block, min(s.stop * block, n)) for s, n in zip(box, mask.shape))
            blocks = coarse_labels[box] == index
            for axis in range(3):
                blocks = np.repeat(blocks, block, axis=axis)
            blocks = blocks[tuple(slice(0, f.stop - f.start) for f in fine)]
            regions.append((fine, mask[fine] & blocks))
    for region, sub in regions:
        labels, _ = ndimage.label(sub, structure=_STRUCTURE_26)
        for index, box in enumerate(ndimage.find_objects(labels), start=1):
            if box is None:
                continue
            slices = tuple(slice(r.start + b.start, r.start + b.stop) for r, b in zip(region, box))
            components.append(Component(slices, labels[box] == index))  # type: ignore[arg-type]
    components.sort(key=lambda c: (-c.voxel_count, tuple(s.start for s in c.slices)))
    return components


def _block_any(mask: np.ndarray, block: int) -> np.ndarray:
    """Logical OR over blocks of ``block``^3 voxels (the last block of an axis may be partial)."""
    reduced = mask
    for axis in range(3):
        size = -(-reduced.shape[axis] // block)
        out = np.zeros(reduced.shape[:axis] + (size,) + reduced.shape[axis + 1 :], dtype=bool)
        for start in range(block):
            part = reduced[(slice(None),) * axis + (slice(start, None, block),)]
            out[(slice(None),) * axis + (slice(0, part.shape[axis]),)] |= part
        reduced = out
    return reduced


def measure_lesions(
    label: Volume,
    ct: Volume | None = None,
    entropy: Volume | None = None,
    *,
    components: list[Component] | None = None,
    max_targets: int = MAX_TARGETS,
    max_targets_per_organ: int = MAX_TARGETS_PER_ORGAN,
) -> CaseMeasurements:
    """Measure every lesion of a label.

    Args:
        label: tumour label (any value > 0.5 is tumour).
        ct: CT in HU on the same grid, for mean/min/max HU.
        entropy: voxel-wise uncertainty (e.g. binary entropy in bits) on the same grid.
        components: precomputed ``find_lesions`` result for ``label`` (saves the labelling pass).
        max_targets: most target lesions in the sum of longest diameters.
        max_targets_per_organ: per-organ cap for the RECIST 1.1 strict sum (all lesions are lung).

    Raises:
        InputError: ``ct`` or ``entropy`` is not on the label's grid.
    """
    for name, other in (("CT", ct), ("entropy", entropy)):
        if other is not None and not label.same_grid(other):
            raise InputError(
                f"the {name} image is not on the label's grid: {label.grid_difference(other)} (label vs {name}); "
                "resample it first"
            )
    if components is None:
        components = find_lesions(lesion_mask(label.array))
    axis = axial_voxel_axis(label.affine)
    thickness = float(label.spacing[axis])
    lesions = [
        _measure_one(lesion_id, component, label, axis, thickness, ct, entropy)
        for lesion_id, component in enumerate(components, start=1)
    ]
    case = CaseMeasurements(
        lesions=lesions,
        shape=label.shape,
        spacing_mm=tuple(float(s) for s in label.spacing),  # type: ignore[arg-type]
        axial_voxel_axis=axis,
        slice_thickness_mm=thickness,
        voxel_volume_ml=label.voxel_volume_ml,
    )
    ranked = sorted((lesion for lesion in lesions if lesion.measurable), key=lambda x: (-x.long_axis_mm, x.lesion_id))
    targets, strict = ranked[:max_targets], ranked[: min(max_targets, max_targets_per_organ)]
    case.target_lesion_ids = [lesion.lesion_id for lesion in targets]
    case.sum_longest_diameters_mm = float(sum(lesion.long_axis_mm for lesion in targets))
    case.target_lesion_ids_recist_strict = [lesion.lesion_id for lesion in strict]
    case.sum_longest_diameters_recist_strict_mm = float(sum(lesion.long_axis_mm for lesion in strict))
    return case


def _measure_one(
    lesion_id: int,
    component: Component,
    label: Volume,
    axis: int,
    thickness: float,
    ct: Volume | None,
    entropy: Volume | None,
) -> LesionMeasurement:
    mask, offset = component.mask, component.offset
    count = int(np.count_nonzero(mask))
    centroid = np.asarray(ndimage.center_of_mass(mask)) + offset
    long_axis, short_axis, slice_index = _recist_axes(mask, offset, label.affine, axis)
    feret = _feret_3d(mask, offset, label.affine)
    measurable, reason = _measurability(long_axis[0], thickness)
    stats: dict[str, float | None] = {}
    if ct is not None:
        values = ct.array[component.slices][mask]
        stats.update(mean_hu=float(values.mean()), min_hu=float(values.min()), max_hu=float(values.max()))
    if entropy is not None:
        values = entropy.array[component.slices][mask]
        stats.update(mean_entropy=float(values.mean()), max_entropy=float(values.max()))
    return LesionMeasurement(
        lesion_id=lesion_id,
        voxel_count=count,
        volume_ml=count * label.voxel_volume_ml,
        centroid_ras=_point(label.voxel_to_ras(centroid)),
        bbox_min_ijk=tuple(int(s.start) for s in component.slices),  # type: ignore[arg-type]
        bbox_max_ijk=tuple(int(s.stop - 1) for s in component.slices),  # type: ignore[arg-type]
        long_axis_mm=long_axis[0],
        long_axis_ras=long_axis[1],
        short_axis_mm=short_axis[0],
        short_axis_ras=short_axis[1],
        axial_slice_index=slice_index,
        max_diameter_3d_mm=feret[0],
        max_diameter_3d_ras=feret[1],
        measurable=measurable,
        not_measurable_reason=reason,
        **stats,
    )


def _measurability(long_axis_mm: float, thickness_mm: float) -> tuple[bool, str]:
    minimum = max(MIN_MEASURABLE_MM, 2.0 * thickness_mm)
    if long_axis_mm + 1e-9 >= minimum:
        return True, ""
    if long_axis_mm < MIN_MEASURABLE_MM:
        return False, f"long axis {long_axis_mm:.1f} mm < {MIN_MEASURABLE_MM:.0f} mm"
    return False, f"long axis {long_axis_mm:.1f} mm < 2 x slice thickness ({2 * thickness_mm:.1f} mm)"


def _row_extreme_corners(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise first/last voxels along axis 0: their boxes span the convex hull of all voxel boxes.

    Returns:
        ``rows`` (N, 2) indices along axes 1 and 2 of the non-empty rows (axis-2-major order), and
        ``ends`` (N, 2) first and last index along axis 0.
    """
    present = mask.any(axis=0)
    first = np.argmax(mask, axis=0)
    last = mask.shape[0] - 1 - np.argmax(mask[::-1], axis=0)
    k, j = np.nonzero(present.T)
    return np.stack([j, k], axis=1), np.stack([first[j, k], last[j, k]], axis=1)


def _recist_axes(
    mask: np.ndarray, offset: np.ndarray, affine: np.ndarray, axis: int
) -> tuple[tuple[float, Segment], tuple[float, Segment], int]:
    """Long and short axis over the axial slices of one lesion crop (voxel corners, exact in mm)."""
    in_plane = [a for a in range(3) if a != axis]
    moved = np.moveaxis(mask, (in_plane[0], in_plane[1], axis), (0, 1, 2))
    # In-plane metric: the slice plane is spanned by two affine columns; R maps (u, v) indices to
    # orthonormal in-plane millimetres, so distances are exact even for sheared or oblique grids.
    _, r = np.linalg.qr(affine[:3, in_plane])
    rows, ends = _row_extreme_corners(moved)
    half = np.array([-0.5, 0.5])
    u = np.concatenate([np.repeat(ends[:, 0] - 0.5, 2), np.repeat(ends[:, 1] + 0.5, 2)])
    v = np.concatenate([rows[:, 0, None] + half, rows[:, 0, None] + half]).ravel()
    k = np.concatenate([np.repeat(rows[:, 1], 2)] * 2)
    order = np.argsort(k, kind="stable")
    uv, k = np.stack([u, v], axis=1)[order], k[order]
    xy = uv @ r.T
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    groups = np.split(np.arange(len(k)), starts[1:])
    bounds = [float(np.linalg.norm(xy[g].max(0) - xy[g].min(0))) for g in groups]
    areas = np.count_nonzero(moved, axis=(0, 1))
    inferior_first = -1.0 if affine[2, axis] > 0 else 1.0  # ranks lower S coordinates higher
    best: tuple[float, float, float, int, np.ndarray, tuple[int, int]] | None = None
    for n in np.argsort(bounds, kind="stable")[::-1]:
        if best is not None and bounds[n] < best[0] - _TIE_MM:
            break
        points = xy[groups[n]]
        hull = points[ConvexHull(points).vertices]
        diameter, pair = _max_pair(hull)
        slice_k = int(k[groups[n][0]])
        # Ties (within 1e-6 mm) go to the slice with the larger area, then to the more inferior slice,
        # so that the choice does not depend on the voxel-axis order or direction.
        key = (diameter, float(areas[slice_k]), inferior_first * slice_k)
        if best is None or key[0] > best[0] + _TIE_MM or (abs(key[0] - best[0]) <= _TIE_MM and key[1:] > best[1:3]):
            best = (*key, slice_k, hull, pair)
    assert best is not None
    diameter, _, _, slice_k, hull, pair = best
    p1, p2 = hull[pair[0]], hull[pair[1]]
    short, q1, q2 = _perpendicular_chord(hull, p1, p2)
    r_inv = np.linalg.inv(r)

    def to_ras(point_2d: np.ndarray) -> Point:
        ijk = np.zeros(3)
        ijk[in_plane] = r_inv @ point_2d + offset[in_plane]
        ijk[axis] = slice_k + offset[axis]
        return _point(ijk @ affine[:3, :3].T + affine[:3, 3])

    global_slice = int(slice_k + offset[axis])
    return (diameter, (to_ras(p1), to_ras(p2))), (short, (to_ras(q1), to_ras(q2))), global_slice


def _perpendicular_chord(hull: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Longest chord of a convex polygon perpendicular to the segment p1-p2.

    The chord length along parallel lines is concave in the line's offset and piecewise linear with
    breaks at the vertices, so the maximum lies on a line through a vertex.
    """
    direction = (p2 - p1) / np.linalg.norm(p2 - p1)
    normal = np.array([-direction[1], direction[0]])
    a, b = hull, np.roll(hull, -1, axis=0)
    ta, tb = a @ direction, b @ direction
    offsets = hull @ direction
    denominator = tb - ta
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (offsets[:, None] - ta[None, :]) / denominator[None, :]
    valid = (np.abs(denominator)[None, :] > 1e-12) & (s >= -1e-12) & (s <= 1 + 1e-12)
    s = np.clip(np.where(valid, s, 0.0), 0.0, 1.0)
    crossing = a[None, :, :] + s[..., None] * (b - a)[None, :, :]
    along = np.where(valid, crossing @ normal, np.nan)
    points = crossing
    top, bottom = np.nanargmax(along, axis=1), np.nanargmin(along, axis=1)
    rows = np.arange(len(hull))
    lengths = along[rows, top] - along[rows, bottom]
    best = int(np.argmax(lengths))
    return float(lengths[best]), points[best, bottom[best]], points[best, top[best]]


def _feret_3d(mask: np.ndarray, offset: np.ndarray, affine: np.ndarray) -> tuple[float, Segment]:
    """3D maximum diameter: longest distance between corners of the convex hull of the voxel boxes."""
    rows, ends = _row_extreme_corners(mask)
    corners = np.array([[dj, dk] for dj in (-0.5, 0.5) for dk in (-0.5, 0.5)])
    jk = (rows[:, None, :] + corners[None, :, :]).reshape(-1, 2)
    first = np.repeat(ends[:, 0] - 0.5, 4)
    last = np.repeat(ends[:, 1] + 0.5, 4)
    ijk = np.concatenate([np.column_stack([first, jk]), np.column_stack([last, jk])])
    ijk = ijk + offset
    ras = ijk @ affine[:3, :3].T + affine[:3, 3]
    try:
        hull = ras[ConvexHull(ras).vertices]
    except QhullError:  # cannot happen for voxel boxes (never flat); keep every corner then
        hull = ras
    diameter, (a, b) = _max_pair(hull)
    return diameter, (_point(hull[a]), _point(hull[b]))


def _max_pair(points: np.ndarray, chunk: int = 512) -> tuple[float, tuple[int, int]]:
    """Largest pairwise distance among ``points`` (N, D): exact brute force over pruned candidates.

    With r(p) the distance to the centroid, any pair is at most r(p) + max(r) long, so a point with
    r(p) < L - max(r), L a pair length already found, cannot be an end of the longest pair.
    """
    points = points - points.mean(axis=0)
    radius = np.sqrt((points**2).sum(axis=1))
    far = int(np.argmax(radius))
    reach = np.sqrt(((points - points[far]) ** 2).sum(axis=1))
    lower = float(reach.max())
    candidates = np.flatnonzero(radius >= lower - radius[far] - 1e-9)
    subset = points[candidates]
    norms = (subset**2).sum(axis=1)
    best, pair = -1.0, (far, int(np.argmax(reach)))
    for start in range(0, len(subset), chunk):
        d2 = norms[start : start + chunk, None] + norms[None, :] - 2.0 * subset[start : start + chunk] @ subset.T
        i, j = divmod(int(np.argmax(d2)), len(subset))
        if d2[i, j] > best:
            best, pair = float(d2[i, j]), (int(candidates[start + i]), int(candidates[j]))
    i, j = pair
    return float(np.linalg.norm(points[i] - points[j])), pair


def _point(values: np.ndarray) -> Point:
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _jsonable(value):
    """Tuples to lists and numpy scalars to Python numbers, recursively."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
