"""Image file names: supported suffixes and case stems (no third-party imports; the Slicer GUIs use it)."""

from __future__ import annotations

import os
from pathlib import Path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr", ".seg.nrrd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES


def image_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``ct.nii.gz`` → ``ct``, ``LIDC-IDRI-0001_R_1.nii.gz`` → ...)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
