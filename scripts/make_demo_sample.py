"""Build the small demo samples shipped with the extension from the shared data.

- ``demo_ct``: the full chest CT of TCIA 4D-Lung (patient 113_HM10395, 40 % phase) cropped to
  the body with the in-plane resolution halved (2x2 mean), real geometry kept; the radiotherapy
  GTV resampled the same way (majority of the 2x2 block) as ``demo_ct_gtv``.
- ``demo_nodule``: one LIDC-IDRI nodule crop of a held-out test patient (none of its crops was
  used for training or model choice), copied unchanged with its consensus mask as
  ``demo_nodule_mask``: a 24 mm malignant nodule that the bundled model segments.

Credit: see CREDIT.md.

    python scripts/make_demo_sample.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

CASE = "chest-ct/4dlung-113_HM10395-phase40"
NODULE = "LIDC-IDRI-0141_R_1"  # test split of runs/bundle-split.json (seed 0)
OUT = Path(__file__).resolve().parents[1] / "LungTumorSeg" / "Resources" / "Sample"
MARGIN = 4


def body_box(array: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the largest > -300 HU component (the patient, not the table)."""
    labels, _ = ndimage.label(array > -300)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    box = ndimage.find_objects((labels == sizes.argmax()).astype(np.uint8))[0]
    return tuple(slice(max(0, s.start - MARGIN), min(n, s.stop + MARGIN)) for s, n in zip(box, array.shape))


def halve_in_plane(array: np.ndarray) -> np.ndarray:
    """2x2 block mean over the first two axes (trailing odd row/column dropped)."""
    x, y = (array.shape[0] // 2) * 2, (array.shape[1] // 2) * 2
    a = array[:x, :y].astype(np.float32)
    return (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2]) / 4.0


def save(data: np.ndarray, affine: np.ndarray, name: str) -> None:
    """Write a NIfTI with the affine as both qform and sform, in mm."""
    out = nib.Nifti1Image(data, affine)
    out.header.set_qform(affine, code=1)
    out.header.set_sform(affine, code=1)
    out.header.set_xyzt_units("mm")
    nib.save(out, OUT / name)
    print(OUT / name, data.shape, np.round(np.linalg.norm(affine[:3, :3], axis=0), 3))


def write_nodule_sample(data: Path) -> None:
    """Copy the held-out LIDC-IDRI nodule crop and its mask (int16 HU, uint8)."""
    crops = data / "lidc-nodule-crops"
    image = nib.load(crops / "image" / f"{NODULE}.nii.gz")
    mask = nib.load(crops / "mask" / f"{NODULE}.nii.gz")
    save(np.asanyarray(image.dataobj).astype(np.int16), image.affine, "demo_nodule.nii.gz")
    save((np.asanyarray(mask.dataobj) > 0).astype(np.uint8), mask.affine, "demo_nodule_mask.nii.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    ct = nib.load(args.data / CASE / "ct.nii.gz")
    tumor = nib.load(args.data / CASE / "tumor.nii.gz")
    array = np.asanyarray(ct.dataobj)
    box = body_box(array)
    affine = ct.affine.copy()
    affine[:3, 3] = (ct.affine @ np.array([box[0].start + 0.5, box[1].start + 0.5, box[2].start, 1.0]))[:3]
    affine[:3, :2] *= 2.0
    image = np.round(halve_in_plane(array[box])).astype(np.int16)
    label = (halve_in_plane(np.asanyarray(tumor.dataobj)[box]) >= 0.5).astype(np.uint8)
    OUT.mkdir(parents=True, exist_ok=True)
    save(image, affine, "demo_ct.nii.gz")
    save(label, affine, "demo_ct_gtv.nii.gz")
    write_nodule_sample(args.data)


if __name__ == "__main__":
    main()
