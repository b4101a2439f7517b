"""Assemble the bundled model's training data from ../shared/data (issue 5 recipe).

- Positives: the LIDC-IDRI nodule crops with masks (symlinked).
- Negatives: blocks of the 4D-Lung chest CT (heart, vessels, chest wall, mediastinum, lung bases)
  at least 20 mm away from its tumour and involved lymph node, with empty labels, repeated so
  they make up about 10 % of the cases. The 4D-Lung GTV itself is never trained on: it stays the
  whole-volume validation case.

    python scripts/build_training_data.py [--data ../shared/data] [--out runs/bundle-data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASE = "chest-ct/4dlung-113_HM10395-phase40"
MARGIN_MM = 20.0
BLOCK = (160, 160, 32)


def negative_blocks(ct: nib.Nifti1Image, lesions: np.ndarray) -> list[tuple[slice, slice, slice]]:
    """Blocks on a regular grid whose extent stays MARGIN_MM away from every lesion voxel."""
    spacing = np.array(ct.header.get_zooms()[:3])
    margin = np.ceil(MARGIN_MM / spacing).astype(int)
    coords = np.argwhere(lesions)
    low, high = coords.min(axis=0) - margin, coords.max(axis=0) + margin
    shape = np.array(ct.shape)
    blocks = []
    for x in range(0, shape[0] - BLOCK[0] + 1, BLOCK[0] // 2):
        for y in range(80, shape[1] - BLOCK[1] - 40 + 1, BLOCK[1] // 2):
            for z in range(0, shape[2] - BLOCK[2] + 1, BLOCK[2]):
                start, stop = np.array([x, y, z]), np.array([x, y, z]) + BLOCK
                if np.all(stop > low) and np.all(start < high):
                    continue  # overlaps the lesions' bounding box plus margin
                blocks.append(tuple(slice(int(a), int(b)) for a, b in zip(start, stop)))
    return blocks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bundle-data")
    parser.add_argument("--negative-fraction", type=float, default=0.10)
    args = parser.parse_args()
    images, masks = args.out / "image", args.out / "mask"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    lidc = args.data / "lidc-nodule-crops"
    positives = 0
    for mask in sorted((lidc / "mask").glob("*.nii.gz")):
        for folder, source in ((images, lidc / "image" / mask.name), (masks, mask)):
            link = folder / mask.name
            if not link.exists():
                link.symlink_to(source.resolve())
        positives += 1
    ct = nib.load(args.data / CASE / "ct.nii.gz")
    array = np.asanyarray(ct.dataobj)
    lesions = np.zeros(ct.shape, bool)
    for name in ("tumor", "lymph_node"):
        lesions |= np.asanyarray(nib.load(args.data / CASE / f"{name}.nii.gz").dataobj) > 0
    blocks = [b for b in negative_blocks(ct, lesions) if (array[b] > -300).mean() > 0.2]  # mostly body
    repeats = max(1, round(args.negative_fraction * positives / (1 - args.negative_fraction) / len(blocks)))
    for index, block in enumerate(blocks):
        affine = ct.affine.copy()
        affine[:3, 3] = (ct.affine @ np.array([b.start for b in block] + [1.0]))[:3]
        image = nib.Nifti1Image(array[block], affine)
        label = nib.Nifti1Image(np.zeros(array[block].shape, np.uint8), affine)
        for repeat in range(repeats):
            name = f"113_HM10395_neg{index:02d}_r{repeat}.nii.gz"
            nib.save(image, images / name)
            nib.save(label, masks / name)
    print(f"{positives} LIDC crops, {len(blocks)} negative blocks x {repeats} → {args.out}")


if __name__ == "__main__":
    main()
