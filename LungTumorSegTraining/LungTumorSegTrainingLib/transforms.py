"""MONAI transform chains for training and validation, built from the run configuration.

The deterministic part (load, RAS, resample to ``spacing_mm``, HU window to [0, 1], crop to the body)
mirrors the inference pipeline (LungTumorSegLib.pipeline), so a bundle sees at inference what the
network saw in training. Random augmentation follows; CacheDataset caches the deterministic part.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureChannelFirstd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from .config import TrainConfig
from .datalist import check_label_values

KEYS = ("image", "label")
# nibabel's axis-code convention (the inference engine's Reorientation uses nibabel too)
NIBABEL_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


class CheckLabelValuesd(MapTransform):
    """Raise InputError (through MONAI's wrapper) when a label holds values other than {0, 1}."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Check each key's array; pass the data through unchanged."""
        d = dict(data)
        for key in self.key_iterator(d):
            source = getattr(d[key], "meta", {}).get("filename_or_obj", key)
            check_label_values(d[key], f"label {source}")
        return d


def preprocessing(cfg: TrainConfig, with_label: bool = True, pad_to_patch: bool = False) -> list:
    """Deterministic transforms: load, channel first, RAS, resample, HU window to [0, 1], crop to the body.

    Args:
        cfg: run configuration (``spacing_mm``, ``hu_window``, ``patch_size``).
        with_label: include the label key.
        pad_to_patch: pad images smaller than the patch (training; sliding-window inference pads itself).
    """
    keys = list(KEYS) if with_label else ["image"]
    modes = ("bilinear", "nearest") if with_label else ("bilinear",)
    low, high = (float(v) for v in cfg.hu_window)
    chain = [LoadImaged(keys=keys, image_only=True), EnsureChannelFirstd(keys=keys)]
    if with_label:
        chain.append(CheckLabelValuesd(keys="label"))
    chain += [
        Orientationd(keys=keys, axcodes="RAS", labels=NIBABEL_LABELS),
        Spacingd(keys=keys, pixdim=[float(s) for s in cfg.spacing_mm], mode=modes),
        ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
    ]
    if pad_to_patch:
        chain.append(SpatialPadd(keys=keys, spatial_size=[int(s) for s in cfg.patch_size]))
    chain.append(EnsureTyped(keys=keys, dtype="float32"))
    return chain


def augmentation(cfg: TrainConfig) -> list:
    """Random transforms: positive/negative patch sampling, then (with ``cfg.augment``) flips, affine, intensity."""
    keys = list(KEYS)
    patch = [int(s) for s in cfg.patch_size]
    chain: list = [
        RandCropByPosNegLabeld(
            keys=keys,
            label_key="label",
            spatial_size=patch,
            pos=float(cfg.pos_ratio),
            neg=1.0 - float(cfg.pos_ratio),
            num_samples=int(cfg.samples_per_case),
            image_key="image",
            image_threshold=0.0,
            allow_smaller=True,
        )
    ]
    if cfg.augment:
        chain += [
            RandFlipd(keys=keys, prob=0.5, spatial_axis=0),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=1),
            RandFlipd(keys=keys, prob=0.5, spatial_axis=2),
            RandAffined(
                keys=keys,
                prob=0.2,
                rotate_range=(0.26, 0.26, 0.26),
                scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            RandGaussianNoised(keys="image", prob=0.15, mean=0.0, std=0.01),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.15),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.15),
        ]
    chain.append(EnsureTyped(keys=keys, dtype="float32", track_meta=False))
    return chain


def training_transforms(cfg: TrainConfig) -> Compose:
    """Pre-processing (padded to the patch) followed by augmentation."""
    return Compose(preprocessing(cfg, with_label=True, pad_to_patch=True) + augmentation(cfg))


def validation_transforms(cfg: TrainConfig, with_label: bool = True) -> Compose:
    """Pre-processing only: whole volumes for sliding-window validation."""
    return Compose(preprocessing(cfg, with_label=with_label))
