"""MONAI transform chains for training and validation, built from the run configuration.

The deterministic part (load, RAS, resample to ``spacing_mm``, HU window to [0, 1], crop to the body)
mirrors the inference pipeline (LungTumorSegLib.segmentation.pipeline), so a bundle sees at inference what the
network saw in training. Random augmentation follows; CacheDataset caches the deterministic part.
Label value 2 marks regions the loss ignores (``ignore``); with ``paste_prob`` training nodules are
pasted into whole CTs (context_transforms.py); ``scanner_augment`` varies slice thickness, kernel,
noise and contrast.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import (
    Compose,
    CropForegroundd,
    DeleteItemsd,
    EnsureChannelFirstd,
    EnsureTyped,
    FgBgToIndicesd,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    RandScaleIntensityd,
    RandShiftIntensityd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialPadd,
)

from ..config import TrainConfig
from .context_transforms import (
    LUNG_KEY,
    LesionLibrary,
    LungMaskd,
    RandPasteLesiond,
    RandSliceThicknessd,
    SplitIgnored,
    scaled,
)
from .datalist import check_label_values

KEYS = ("image", "label")
TRAIN_KEYS = ("image", "label", "ignore")

# nibabel's axis-code convention (the inference engine's Reorientation uses nibabel too)
NIBABEL_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))


class CheckLabelValuesd(MapTransform):
    """Raise InputError (through MONAI's wrapper) when a label holds values other than {0, 1, 2 (ignore)}."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Check each key's array; pass the data through unchanged."""
        d = dict(data)
        for key in self.key_iterator(d):
            source = getattr(d[key], "meta", {}).get("filename_or_obj", key)
            check_label_values(d[key], f"label {source}")
        return d


def preprocessing(
    cfg: TrainConfig, with_label: bool = True, pad_to_patch: bool = False, training: bool = False
) -> list:
    """Deterministic transforms: load, channel first, RAS, resample, HU window to [0, 1], crop to the body.

    Args:
        cfg: run configuration (``spacing_mm``, ``hu_window``, ``patch_size``, ``paste_prob``).
        with_label: include the label key.
        pad_to_patch: pad images smaller than the patch (training; sliding-window inference pads itself).
        training: keep label value 2 as the ``ignore`` mask (else it is dropped), and find paste sites.
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
    ]
    if with_label:
        chain.append(SplitIgnored(keep_ignore=training))
        keys = list(TRAIN_KEYS) if training else keys
    chain += [
        ScaleIntensityRanged(keys="image", a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=True),
        CropForegroundd(keys=keys, source_key="image", allow_smaller=True),
    ]
    if pad_to_patch:
        chain.append(SpatialPadd(keys=keys, spatial_size=[int(s) for s in cfg.patch_size]))
    chain.append(EnsureTyped(keys=keys, dtype="float32"))
    if training:
        # patch centres, computed once per case and cached (whole CTs have tens of millions of voxels)
        # negative centres: anywhere in the image, or (negative_min_hu) only on tissue: vessels, hilum, heart,
        # chest wall, diaphragm and liver dome, where a model trained on nodules finds its false positives
        floor = 0.0 if cfg.negative_min_hu is None else scaled(cfg.negative_min_hu, cfg.hu_window)
        chain.append(FgBgToIndicesd(keys="label", image_key="image", image_threshold=floor))
        if cfg.paste_prob > 0:
            chain.append(LungMaskd(cfg.spacing_mm, cfg.hu_window))
    return chain


def augmentation(cfg: TrainConfig, library: LesionLibrary | None = None) -> list:
    """Random transforms: lesion pasting (with ``library``), positive/negative patch sampling, then (with
    ``cfg.augment``) flips, affine, intensity, and (with ``cfg.scanner_augment``) scanner variation."""
    keys = list(TRAIN_KEYS)
    patch = [int(s) for s in cfg.patch_size]
    paste = library is not None and cfg.paste_prob > 0
    chain: list = [
        RandCropByPosNegLabeld(
            keys=[*keys, LUNG_KEY] if paste else keys,
            label_key="label",
            spatial_size=patch,
            pos=float(cfg.pos_ratio),
            neg=1.0 - float(cfg.pos_ratio),
            num_samples=int(cfg.samples_per_case),
            image_key="image",
            image_threshold=0.0,
            fg_indices_key="label_fg_indices",
            bg_indices_key="label_bg_indices",
            allow_smaller=True,
        )
    ]
    if paste:
        chain += [
            RandPasteLesiond(library, cfg.hu_window, cfg.paste_prob, cfg.paste_max, cfg.paste_scale),  # type: ignore[arg-type]
            DeleteItemsd(keys=[LUNG_KEY]),
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
                mode=("bilinear", "nearest", "nearest"),
                padding_mode="zeros",
            ),
            RandGaussianNoised(keys="image", prob=0.15, mean=0.0, std=0.01),
            RandScaleIntensityd(keys="image", factors=0.1, prob=0.15),
            RandShiftIntensityd(keys="image", offsets=0.1, prob=0.15),
        ]
    if cfg.scanner_augment:
        chain += scanner_variation(cfg)
    chain.append(EnsureTyped(keys=keys, dtype="float32", track_meta=False))
    return chain


def scanner_variation(cfg: TrainConfig) -> list:
    """What differs between scanners and protocols: slice thickness 1-5 mm, soft or sharp kernels,
    noise, and contrast (gamma; window-scaled intensities, so a contrast-enhanced mediastinum shifts)."""
    return [
        RandSliceThicknessd(keys=["image"], spacing_mm=float(cfg.spacing_mm[2]), thickness_mm=(1.0, 5.0), prob=0.25),
        RandGaussianSmoothd(keys="image", sigma_x=(0.4, 0.9), sigma_y=(0.4, 0.9), sigma_z=(0.1, 0.5), prob=0.15),
        RandGaussianSharpend(keys="image", prob=0.1),
        RandGaussianNoised(keys="image", prob=0.2, mean=0.0, std=0.02),
        RandAdjustContrastd(keys="image", prob=0.15, gamma=(0.8, 1.25)),
    ]


def training_transforms(cfg: TrainConfig, library: LesionLibrary | None = None) -> Compose:
    """Pre-processing (padded to the patch, ``ignore`` kept) followed by augmentation."""
    return Compose(preprocessing(cfg, with_label=True, pad_to_patch=True, training=True) + augmentation(cfg, library))


def validation_transforms(cfg: TrainConfig, with_label: bool = True) -> Compose:
    """Pre-processing only: whole volumes for sliding-window validation."""
    return Compose(preprocessing(cfg, with_label=with_label))
