"""The labelled whole chest CTs of ``<data>/chest-ct/<case>/`` and their reference lesions.

Each case folder holds ``ct.nii.gz`` + ``tumor.nii.gz``; optional ``tumor_votes.nii.gz`` (readers per voxel, whose
outlines outside ``tumor.nii.gz`` are an ignore region) and ``lymph_node.nii.gz`` (involved nodes: tumour too, but not
scored). Each reference lesion is a 26-connected component of ``tumor.nii.gz``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.io.image_io import load_volume

CHEST_CT = "chest-ct"


NON_COMMERCIAL = "CC BY-NC 3.0"


# Folder-name prefixes of the shared whole CTs: (patient id as in training case names, licence)
KNOWN_PATIENTS = {
    "4dlung-113_HM10395": ("113_HM10395", "CC BY 3.0"),
    "nsclc-radiomics-LUNG1-001": ("LUNG1-001", NON_COMMERCIAL),
    "ibsi-ct-phantom-nsclc": ("IBSI-phantom", NON_COMMERCIAL),
    "nsclc-radiogenomics-R01-001": ("R01-001", "CC BY 3.0"),
}


@dataclass(frozen=True)
class WholeCtCase:
    """One labelled whole chest CT of the shared data."""

    name: str
    folder: Path
    patient: str
    licence: str

    @property
    def ct(self) -> Path:
        return self.folder / "ct.nii.gz"

    @property
    def tumour(self) -> Path:
        return self.folder / "tumor.nii.gz"

    @property
    def votes(self) -> Path | None:
        path = self.folder / "tumor_votes.nii.gz"
        return path if path.is_file() else None

    @property
    def involved_nodes(self) -> Path | None:
        path = self.folder / "lymph_node.nii.gz"
        return path if path.is_file() else None


def case_patient(folder_name: str) -> tuple[str, str]:
    """(patient id, licence) of a shared whole-CT folder; LIDC folders map to ``LIDC-IDRI-XXXX``."""
    if folder_name.lower().startswith("lidc-idri-"):
        return "LIDC-IDRI-" + folder_name.split("-")[-1], "CC BY 3.0"
    for prefix, info in KNOWN_PATIENTS.items():
        if folder_name.startswith(prefix):
            return info
    return folder_name, "unknown"


def find_whole_ct_cases(data_root: Path, names: Sequence[str] | None = None) -> list[WholeCtCase]:
    """The labelled whole CTs under ``data_root/chest-ct`` (those with ``tumor.nii.gz``), by folder name.

    Raises:
        InputError: no such folder, or a requested name is not a labelled whole CT.
    """
    root = Path(data_root) / CHEST_CT
    if not root.is_dir():
        raise InputError(f"{root}: no whole-CT folder (expected <data>/{CHEST_CT}/<case>/ct.nii.gz)")
    cases = []
    for folder in sorted(p for p in root.iterdir() if (p / "ct.nii.gz").is_file() and (p / "tumor.nii.gz").is_file()):
        patient, licence = case_patient(folder.name)
        cases.append(WholeCtCase(folder.name, folder, patient, licence))
    if names is not None:
        known = {c.name: c for c in cases}
        missing = [n for n in names if n not in known]
        if missing:
            raise InputError(f"not a labelled whole CT in {root}: {', '.join(missing)} (known: {', '.join(known)})")
        cases = [known[n] for n in names]
    return cases


@dataclass
class Reference:
    """What a whole CT's prediction is scored against, on the CT's grid."""

    tumour: np.ndarray  # bool
    ignore: np.ndarray  # bool: reader outlines not in the reference (not scored either way)
    other_tumour: np.ndarray  # bool: involved nodes (not false positives, not scored)
    affine: np.ndarray

    @classmethod
    def load(cls, case: WholeCtCase) -> Reference:
        tumour = load_volume(case.tumour, dtype=None)
        mask = tumour.array > 0
        ignore = np.zeros_like(mask)
        if case.votes is not None:
            ignore = (load_volume(case.votes, dtype=None).array > 0) & ~mask
        other = np.zeros_like(mask)
        if case.involved_nodes is not None:
            other = load_volume(case.involved_nodes, dtype=None).array > 0
        return cls(mask, ignore, other, tumour.affine)

    @property
    def voxel_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3])) / 1000.0)
