"""Finding image/label files and naming cases (no torch/MONAI import: the Slicer GUI uses it too)."""

from __future__ import annotations

from pathlib import Path

from LungTumorSegLib.io.image_names import IMAGE_SUFFIXES
from LungTumorSegLib.io.image_names import image_stem as case_id

IMAGE_DIR_NAMES = ("imagesTr", "image", "images", "img", "ct")
LABEL_DIR_NAMES = ("labelsTr", "mask", "masks", "label", "labels", "seg", "segmentations")
LABEL_NAME_SUFFIXES = ("", "_seg", "_label", "_mask", "_gtv")


def is_image(path: Path) -> bool:
    """A visible image file with a NIfTI or NRRD extension."""
    return path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES)


def find_label(image: Path, labels_dir: Path) -> Path | None:
    """The label of ``image`` in ``labels_dir``: same name, or with a ``_seg``/``_label``/``_mask``/``_gtv`` suffix."""
    stem = case_id(image)
    for suffix in LABEL_NAME_SUFFIXES:
        for ext in IMAGE_SUFFIXES:
            candidate = labels_dir / f"{stem}{suffix}{ext}"
            if candidate.is_file():
                return candidate
    return None
