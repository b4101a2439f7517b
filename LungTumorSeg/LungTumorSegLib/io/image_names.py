"""Image file names: supported suffixes and case stems (no third-party imports; the Slicer GUIs use it)."""

from __future__ import annotations

import os
from pathlib import Path

NIFTI_SUFFIXES = (".nii", ".nii.gz")
NRRD_SUFFIXES = (".nrrd", ".nhdr", ".seg.nrrd")
IMAGE_SUFFIXES = NIFTI_SUFFIXES + NRRD_SUFFIXES
# what ``segment`` writes: ``<stem>_<map><image suffix>`` and the clinical files (``<stem>.seg.nrrd``, DICOM SEG, SR)
OUTPUT_MAPS = ("tumor", "probability", "entropy", "mutual_information")
CANDIDATE_MAP = "candidates"  # ``<stem>_candidates<suffix>``: the regions listed in ``<stem>_candidates.json``
CLINICAL_OUTPUT_SUFFIXES = (".seg.nrrd", "_seg.dcm", "_sr.dcm")


def image_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``ct.nii.gz`` → ``ct``, ``LIDC-IDRI-0001_R_1.nii.gz`` → ...)."""
    name = Path(path).name
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def is_output_file(path: str | os.PathLike) -> bool:
    """True for a file ``segment`` writes (``<stem>_tumor.nii.gz``, ``<stem>.seg.nrrd``, ``<stem>_seg.dcm``, ...).

    Such a file is never taken as a CT to segment, so a folder can be segmented into itself.
    """
    name = Path(path).name.lower()
    if name.endswith(CLINICAL_OUTPUT_SUFFIXES):
        return True
    suffix = next((s for s in sorted(IMAGE_SUFFIXES, key=len, reverse=True) if name.endswith(s)), "")
    return bool(suffix) and any(name[: -len(suffix)].endswith(f"_{kind}") for kind in (*OUTPUT_MAPS, CANDIDATE_MAP))


def unique_stems(paths: list[Path], stems: list[str] | None = None) -> list[str]:
    """One output stem per input: its stem, prefixed with parent folder names where stems collide.

    ``a/ct.nii.gz`` and ``b/ct.nii.gz`` give ``a_ct`` and ``b_ct``; a stem used once stays as it is.
    ``stems`` gives the inputs' own stems (default: the image file names without suffix; a DICOM
    series passes its folder as the path and the folder's name as the stem). The caller removes
    repeated inputs first. Inputs that no folder prefix tells apart (``ct.nii`` and ``ct.nrrd`` in one
    folder) keep their colliding stems, for the caller to refuse.
    """
    stems = list(stems) if stems is not None else [image_stem(path) for path in paths]
    groups: dict[str, list[int]] = {}
    for index, stem in enumerate(stems):
        groups.setdefault(stem, []).append(index)
    taken = set(stems)
    for stem, members in groups.items():
        if len(members) < 2:
            continue
        parents = [Path(paths[i]).resolve().parent.parts for i in members]
        for depth in range(1, max(len(p) for p in parents) + 1):
            named = ["_".join([*p[max(1, len(p) - depth) :], stem]) for p in parents]
            if len(set(named)) == len(named) and not (set(named) & (taken - {stem})):
                for i, name in zip(members, named):
                    stems[i] = name
                taken |= set(named)
                break
    return stems
