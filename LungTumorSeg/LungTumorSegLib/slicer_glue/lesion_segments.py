"""One segment per lesion: names, colours, which segments are lesions, and their measurements (no slicer import).

The engine's label is binary; its lesions are the 26-connected components in ``find_lesions`` order (largest
first), which is also the order of its measurements JSON. The module gives each lesion its own segment
("Lung tumor 1", "Lung tumor 2", ...), so the table rows, the RECIST lines, a seed click, an edit in the
Segment Editor and later tools (a box prompt, a "candidates" segment) all work per lesion.

A segment is a lesion when it carries the tag ``LungTumorSeg.Role = lesion`` (set on every segment the module
creates) or is named "Lung tumor" / "Lung tumor N" (hand-made segments named so count too). Other segments of the
same segmentation (a lung mask, "Candidates") are left alone and never measured.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..clinical.terminology import LUNG_TUMOR_COLOR, LUNG_TUMOR_SEGMENT_NAME
from ..core.volume import Volume

if TYPE_CHECKING:  # the measurement code needs nibabel and scipy, which a stock Slicer lacks until the first install
    from ..measurements.lesion_measurements import CaseMeasurements, Component

ROLE_TAG = "LungTumorSeg.Role"
LESION_ROLE = "lesion"
_NUMBERED = re.compile(re.escape(LUNG_TUMOR_SEGMENT_NAME) + r"(?: (\d+))?")
# The first lesion keeps the module's orange-red; the next ones get distinct colours (Okabe-Ito, colour-blind safe),
# none of them grey or close to the entropy map's yellow.
LESION_COLORS = (
    LUNG_TUMOR_COLOR,
    (0.0, 0.45, 0.70),
    (0.0, 0.62, 0.45),
    (0.80, 0.47, 0.65),
    (0.34, 0.71, 0.91),
    (0.84, 0.37, 0.0),
)


def lesion_segment_name(number: int) -> str:
    """``Lung tumor <number>``."""
    return f"{LUNG_TUMOR_SEGMENT_NAME} {int(number)}"


def lesion_color(number: int) -> tuple[float, float, float]:
    """The colour of lesion ``number`` (1-based), cycling through ``LESION_COLORS``."""
    return LESION_COLORS[(int(number) - 1) % len(LESION_COLORS)]


def is_lesion_segment(name: str, role: str = "") -> bool:
    """True for a segment the module measures as a lesion (its role tag, or its "Lung tumor [N]" name)."""
    if role:
        return role == LESION_ROLE
    return _NUMBERED.fullmatch(name.strip()) is not None


def next_lesion_number(names: Sequence[str]) -> int:
    """One more than the highest N of the "Lung tumor N" names (1 when there is none)."""
    numbers = [int(m.group(1) or 1) for m in (_NUMBERED.fullmatch(n.strip()) for n in names) if m]
    return max(numbers, default=0) + 1


def lesion_label_map(label: Volume) -> tuple[np.ndarray, int]:
    """The engine's binary label split into lesions: (uint16 array, lesion i has value i; the lesion count).

    Lesion numbers follow ``find_lesions`` (the engine's measurement order), so lesion i is row i of the engine's
    measurements JSON.
    """
    from ..measurements.lesion_measurements import find_lesions

    components = find_lesions(np.asarray(label.array) > 0.5)
    labelled = np.zeros(label.shape, dtype=np.uint16)
    for number, component in enumerate(components, start=1):
        labelled[component.slices][component.mask] = number
    return labelled, len(components)


def overlapping_lesion(new_mask: np.ndarray, lesion_masks: Sequence[np.ndarray]) -> int | None:
    """Index of the lesion mask that shares the most voxels with ``new_mask``; None when none overlaps."""
    overlaps = [int(np.count_nonzero(new_mask & (mask > 0))) for mask in lesion_masks]
    if not overlaps or max(overlaps) == 0:
        return None
    return int(np.argmax(overlaps))


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The index box (slices) around the non-zero voxels; None when there is none.

    From the projections on each axis: a whole-CT mask (80 M voxels, possibly a transposed view) is scanned
    three times instead of listing every voxel (``np.nonzero``: seconds per segment).
    """
    mask = np.asarray(mask)
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def component_of(mask: np.ndarray) -> Component | None:
    """The whole of ``mask`` as one lesion (its bounding box and the mask inside it); None when it is empty."""
    from ..measurements.lesion_measurements import Component

    slices = bounding_box(mask)
    if slices is None:
        return None
    return Component(slices, np.asarray(mask)[slices] > 0)  # type: ignore[arg-type]


def measure_segments(
    masks: Sequence[np.ndarray], affine: np.ndarray, ct: Volume | None = None, entropy: Volume | None = None
) -> tuple[CaseMeasurements, list[int]]:
    """Measure each segment as one lesion, with the engine's own code (volume, RECIST axes, 3D diameter, entropy).

    Args:
        masks: one boolean or 0/1 array per segment, all on the grid of ``affine`` (engine ``[i, j, k]`` order).
        affine: their voxel-to-RAS matrix.
        ct: the CT on the same grid (mean HU), optional.
        entropy: the entropy map on the same grid (mean and max entropy), optional.

    Returns:
        (measurements, indices into ``masks`` of the measured segments): empty segments are not lesions and are
        left out; lesion n of the measurements is segment ``indices[n - 1]``.
    """
    from ..measurements.lesion_measurements import measure_lesions

    if not masks:
        shape = ct.shape if ct is not None else (1, 1, 1)
        return measure_lesions(Volume(np.zeros(shape, np.uint8), np.asarray(affine)), components=[]), []
    union = np.zeros(np.asarray(masks[0]).shape, dtype=np.uint8)
    components, measured = [], []
    for index, mask in enumerate(masks):
        component = component_of(mask)
        if component is None:
            continue
        union[component.slices][component.mask] = 1
        components.append(component)
        measured.append(index)
    case = measure_lesions(Volume(union, np.asarray(affine, dtype=np.float64)), ct, entropy, components=components)
    return case, measured
