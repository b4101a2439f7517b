"""Training transforms that put lesions in real context and vary what differs between scanners.

- ``SplitIgnored``: label value 2 (reader outlines that are not in the reference) becomes an ``ignore``
  mask that the loss skips; the label becomes binary.
- ``LungMaskd`` (deterministic, cached) and ``RandPasteLesiond``: real training nodules, at the model
  spacing, pasted into the lung parenchyma of whole-CT patches, so a nodule is seen with vessels,
  fissures, chest wall and mediastinum around it instead of air padding.
- ``RandSliceThicknessd``: a thicker reconstruction (1-5 mm slices) simulated as the slice-profile
  average along the superior axis.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from scipy import ndimage

from LungTumorSegLib.segmentation.lungfield import AIR_HU, BODY_HU, fill_holes_per_axial_slice

from .lesion_paste import BONE_HU, Lesion, lesion_box, paste, resize_lesion

IGNORE_LABEL = 2
LUNG_KEY = "lung"
MIN_CONTEXT_LUNG_ML = 100.0  # images with less lung than this are crops: nothing is pasted into them


def scaled(hu: float, hu_window: Sequence[float]) -> float:
    """An HU level in the window-scaled [0, 1] units of the network input."""
    low, high = float(hu_window[0]), float(hu_window[1])
    return float(np.clip((hu - low) / (high - low), 0.0, 1.0))


class SplitIgnored(MapTransform):
    """``label == 2`` becomes the ``ignore`` mask (with ``keep_ignore``), and the label becomes ``label == 1``."""

    def __init__(self, label_key: str = "label", ignore_key: str = "ignore", keep_ignore: bool = True) -> None:
        super().__init__(keys=[label_key])
        self.label_key, self.ignore_key, self.keep_ignore = label_key, ignore_key, keep_ignore

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        label = d[self.label_key]
        if self.keep_ignore:
            d[self.ignore_key] = (label > 1.5).to(label.dtype) if torch.is_tensor(label) else (label > 1.5)
        d[self.label_key] = ((label > 0.5) & (label < 1.5)).to(label.dtype) if torch.is_tensor(label) else label == 1
        return d


def lung_parenchyma(image: np.ndarray, hu_window: Sequence[float]) -> np.ndarray:
    """Lung voxels of a window-scaled image: air inside the (hole-filled) body."""
    body = fill_holes_per_axial_slice(image > scaled(BODY_HU, hu_window))
    return (image < scaled(AIR_HU, hu_window)) & (image > 0.0) & body


class LungMaskd(MapTransform):
    """Store the lung parenchyma of images with at least ``MIN_CONTEXT_LUNG_ML`` of lung as ``lung`` (uint8).

    Crops get an empty mask: nothing is pasted into them. The mask is cropped with the image, so
    ``RandPasteLesiond`` finds lung sites inside each patch.
    """

    def __init__(self, spacing_mm: Sequence[float], hu_window: Sequence[float], image_key: str = "image") -> None:
        super().__init__(keys=[image_key])
        self.image_key, self.hu_window = image_key, list(hu_window)
        self.voxel_ml = float(np.prod(spacing_mm)) / 1000.0

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.image_key]
        lung = lung_parenchyma(np.asarray(torch.as_tensor(image).cpu())[0], self.hu_window)
        if lung.sum() * self.voxel_ml < MIN_CONTEXT_LUNG_ML:
            lung[:] = False
        d[LUNG_KEY] = _like(image, lung).to(torch.uint8) if torch.is_tensor(image) else lung[None].astype(np.uint8)
        return d


@dataclass
class LesionLibrary:
    """Training nodules on the model grid: window-scaled image values and mask inside their box."""

    lesions: list[Lesion]
    spacing: tuple[float, float, float]

    @classmethod
    def from_items(
        cls,
        items: Sequence[Mapping[str, Any]],
        spacing: Sequence[float],
        hu_window: Sequence[float],
        min_voxels: int = 8,
    ) -> LesionLibrary:
        """Cut each labelled item's lesion components (bounding box + 1 voxel); calcified lesions and lesions
        cut by the image's edge are left out."""
        lesions = []
        bone = scaled(BONE_HU, hu_window)
        for item in items:
            image = np.asarray(torch.as_tensor(item["image"]).cpu())[0]
            label = np.asarray(torch.as_tensor(item["label"]).cpu())[0] > 0.5
            labels, count = ndimage.label(label, structure=np.ones((3, 3, 3), bool))
            for index, box in enumerate(ndimage.find_objects(labels), start=1):
                if any(b.start == 0 or b.stop == n for b, n in zip(box, label.shape)):
                    continue  # cut by the crop's edge: not the whole lesion
                box = tuple(slice(b.start - 1, b.stop + 1) for b in box)
                mask = labels[box] == index
                if mask.sum() < min_voxels:
                    continue
                lesion = Lesion(image[box].astype(np.float32), mask, tuple(float(s) for s in spacing))
                if np.percentile(lesion.hu[lesion.mask], 90) <= bone:  # calcified nodules look like bone
                    lesions.append(lesion)
        return cls(lesions, tuple(float(s) for s in spacing))  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.lesions)


class RandPasteLesiond(Randomizable, MapTransform):
    """Paste 1..``max_count`` library lesions into the lung of a patch, with probability ``prob``.

    Each lesion is rescaled by a log-uniform factor in ``scale_range`` (large factors give large
    tumours), placed at a random lung voxel of the patch (``lung``, at least 2 voxels inside it), blended
    (the brighter of lesion and tissue inside the mask, a soft rim outside; see ``lesion_paste.paste``)
    and added to the label. Lesions never touch the existing tumour or ignore regions. Patches without
    lung (crops, mediastinum) are left as they are. The ``lung`` key is removed.
    """

    def __init__(
        self,
        library: LesionLibrary,
        hu_window: Sequence[float],
        prob: float = 0.5,
        max_count: int = 2,
        scale_range: Sequence[float] = (0.8, 2.0),
        attempts: int = 10,
    ) -> None:
        MapTransform.__init__(self, keys=["image", "label"])
        self.library, self.prob, self.max_count = library, float(prob), int(max_count)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.attempts = int(attempts)
        self.lung_level = scaled(AIR_HU, hu_window)
        self.bone_level = scaled(BONE_HU, hu_window)

    def randomize(self, data: Any = None) -> None:
        """Draws happen in ``__call__`` (their number depends on the patch)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        lung = d.pop(LUNG_KEY, None)
        if lung is None or not len(self.library) or self.R.random() >= self.prob:
            return d
        inner = ndimage.binary_erosion(np.asarray(torch.as_tensor(lung).cpu())[0] > 0, iterations=2)
        sites = np.argwhere(inner)
        if not len(sites):
            return d
        image = np.array(torch.as_tensor(d["image"]).cpu()[0], dtype=np.float32)
        label = np.asarray(torch.as_tensor(d["label"]).cpu()[0]) > 0.5
        blocked = label.copy()
        if "ignore" in d:
            blocked |= np.asarray(torch.as_tensor(d["ignore"]).cpu()[0]) > 0.5
        pasted = np.zeros(label.shape, bool)
        log_low, log_high = np.log(self.scale_range[0]), np.log(self.scale_range[1])
        for _ in range(int(self.R.randint(1, self.max_count + 1))):
            source = self.library.lesions[int(self.R.randint(len(self.library)))]
            scale = float(np.exp(self.R.uniform(log_low, log_high)))
            lesion = resize_lesion(source, np.asarray(self.library.spacing), scale)
            if not lesion.mask.any():
                continue
            near = ndimage.binary_dilation(lesion.mask, iterations=2)
            for _attempt in range(self.attempts):
                centre = sites[int(self.R.randint(len(sites)))]
                box = lesion_box(lesion, centre, image.shape)
                if box is None or ((blocked[box] | pasted[box]) & near).any():
                    continue
                new = np.zeros(label.shape, bool)
                if paste(image, new, lesion, centre, self.lung_level, self.bone_level, min_lung_fraction=0.6):
                    pasted |= new
                    break
        if pasted.any():
            d["image"] = _like(d["image"], image)
            d["label"] = _like(d["label"], label | pasted)
        return d


class RandSliceThicknessd(Randomizable, MapTransform):
    """Simulate a thicker slice reconstruction: average along axis ``axis`` over ``thickness / spacing`` voxels."""

    def __init__(
        self,
        keys: Sequence[str],
        spacing_mm: float,
        thickness_mm: Sequence[float] = (1.0, 5.0),
        prob: float = 0.25,
        axis: int = 2,
    ) -> None:
        MapTransform.__init__(self, keys=keys)
        self.spacing_mm, self.axis, self.prob = float(spacing_mm), int(axis), float(prob)
        self.thickness_mm = (float(thickness_mm[0]), float(thickness_mm[1]))
        self._width = 1

    def randomize(self, data: Any = None) -> None:
        self._width = 1
        if self.R.random() < self.prob:
            thickness = self.R.uniform(*self.thickness_mm)
            self._width = int(round(thickness / self.spacing_mm))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if self._width < 2:
            return d
        for key in self.key_iterator(d):
            image = np.asarray(torch.as_tensor(d[key]).cpu(), dtype=np.float32)
            smoothed = ndimage.uniform_filter1d(image, size=self._width, axis=self.axis + 1, mode="nearest")
            d[key] = _like(d[key], smoothed)
        return d


def _like(reference: Any, array: np.ndarray) -> Any:
    """``array`` with the shape, type (MetaTensor, tensor or ndarray), dtype and metadata of ``reference``."""
    if torch.is_tensor(reference):
        out = reference.clone()
        out[...] = torch.as_tensor(np.ascontiguousarray(array)).reshape(reference.shape).to(reference.dtype)
        return out
    return np.asarray(array).reshape(np.shape(reference)).astype(np.asarray(reference).dtype)
