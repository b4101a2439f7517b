"""Assemble the bundled model's training data from ../shared/data (issue 5 recipe).

- Positives: the LIDC-IDRI nodule crops with masks (symlinked).
- Negatives: blocks of the 4D-Lung chest CT (heart, vessels, chest wall, mediastinum, lung bases)
  at least 20 mm away from its tumour and involved lymph node, with empty labels, repeated so
  they make up about 10 % of the cases. The 4D-Lung GTV itself is never trained on: it stays the
  whole-volume validation case.
- Synthetic central tumours (``--synthetic N --split FILE``): real LIDC nodules of the split's
  training patients only, enlarged 1.5-3.5x and pasted into the 4D-Lung lung beside the
  mediastinum (``lesion_paste``), in blocks that also stay MARGIN_MM away from the real lesions.
  Their case names are added to the split's training list (written to ``--split-out``).

    python scripts/build_training_data.py [--data ../shared/data] [--out runs/bundle-data]
    python scripts/build_training_data.py --synthetic 60 --split runs/bundle-split.json \
        --split-out runs/bundle-split-syn.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]
from LungTumorSegTrainingLib.lesion_paste import (  # noqa: E402
    Lesion,
    is_calcified,
    juxtamediastinal_sites,
    lung_mask,
    paste,
    resize_lesion,
)

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


def training_lesions(lidc: Path, train_cases: set[str], min_ml: float = 0.4) -> list[Lesion]:
    """The nodules of the training-split LIDC crops of at least ``min_ml``, cut to their bounding box."""
    lesions = []
    for mask_path in sorted((lidc / "mask").glob("*.nii.gz")):
        if mask_path.name.removesuffix(".nii.gz") not in train_cases:
            continue
        mask_img = nib.load(mask_path)
        mask = np.asanyarray(mask_img.dataobj) > 0
        spacing = tuple(float(s) for s in mask_img.header.get_zooms()[:3])
        if mask.sum() * np.prod(spacing) / 1000 < min_ml:
            continue
        hu = np.asanyarray(nib.load(lidc / "image" / mask_path.name).dataobj)
        box = ndimage.find_objects(mask.astype(np.uint8))[0]
        box = tuple(slice(max(0, b.start - 1), b.stop + 1) for b in box)
        lesion = Lesion(hu[box], mask[box], spacing)
        if not is_calcified(lesion):
            lesions.append(lesion)
    return lesions


def synthetic_cases(args: argparse.Namespace, ct: nib.Nifti1Image, lesions: np.ndarray) -> list[str]:
    """Write ``args.synthetic`` CT blocks with enlarged training nodules pasted beside the mediastinum."""
    rng = np.random.default_rng(args.seed)
    split = json.loads(args.split.read_text(encoding="utf-8"))
    sources = training_lesions(args.data / "lidc-nodule-crops", set(split["folds"][0]["train"]))
    array = np.asanyarray(ct.dataobj).astype(np.int16)
    spacing = np.array(ct.header.get_zooms()[:3], float)
    far_from_lesions = ndimage.distance_transform_edt(~lesions, sampling=spacing) > MARGIN_MM
    lung = lung_mask(array)
    sites = juxtamediastinal_sites(lung, spacing)
    sites = sites[far_from_lesions[tuple(sites.T)]]
    names: list[str] = []
    while len(names) < args.synthetic:
        source = sources[rng.integers(len(sources))]
        source_ml = source.mask.sum() * np.prod(source.spacing) / 1000
        target_ml = rng.uniform(5.0, 90.0)
        scale = float(np.clip((target_ml / source_ml) ** (1 / 3), 1.5, 3.5))
        lesion = resize_lesion(source, spacing, scale)
        image, label = array.copy(), np.zeros(array.shape, bool)
        if not paste(image, label, lesion, sites[rng.integers(len(sites))]):
            continue
        coords = np.argwhere(label)
        middle = (coords.min(axis=0) + coords.max(axis=0)) // 2 + rng.integers(-20, 21, 3) * [1, 1, 0]
        start = np.clip(middle - np.array(BLOCK) // 2, 0, np.array(array.shape) - BLOCK)
        block = tuple(slice(int(a), int(a + n)) for a, n in zip(start, BLOCK))
        if label[block].sum() < 0.9 * label.sum() or not far_from_lesions[block].all():
            continue  # lesion cut by the block edge, or the block reaches the real tumour
        affine = ct.affine.copy()
        affine[:3, 3] = (ct.affine @ np.append(start, 1.0))[:3]
        name = f"113_HM10395_syn{len(names):03d}.nii.gz"
        nib.save(nib.Nifti1Image(image[block], affine), args.out / "image" / name)
        nib.save(nib.Nifti1Image(label[block].astype(np.uint8), affine), args.out / "mask" / name)
        names.append(name.removesuffix(".nii.gz"))
    split["folds"][0]["train"] = sorted(set(split["folds"][0]["train"]) | set(names))
    args.split_out.write_text(json.dumps(split, indent=1), encoding="utf-8")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bundle-data")
    parser.add_argument("--negative-fraction", type=float, default=0.10)
    parser.add_argument("--synthetic", type=int, default=0, help="synthetic central-tumour cases to add")
    parser.add_argument("--split", type=Path, help="split JSON whose fold-0 training patients give the nodules")
    parser.add_argument("--split-out", type=Path, help="the split with the synthetic cases added to training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.synthetic and not (args.split and args.split_out):
        parser.error("--synthetic needs --split and --split-out")
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
    if args.synthetic:
        names = synthetic_cases(args, ct, lesions)
        print(f"{len(names)} synthetic central-tumour cases → {args.out}, split → {args.split_out}")


if __name__ == "__main__":
    main()
