"""Assemble the bundled model's training data and its cross-validation split from ../shared/data.

- LIDC-IDRI nodule crops with masks (symlinked): nodules, and the source of the lesions pasted into
  whole CTs during training.
- Every labelled whole chest CT (``chest-ct/*/tumor.nii.gz``) as ``<patient>_whole``: reoriented to RAS
  and cropped to the lung field + the inference margin (as ``lungtumorseg segment`` crops it), label
  1 = tumour, 2 = ignored by the loss (reader outlines outside the reference, e.g. the one-reader
  nodule of LIDC-IDRI-0003, and involved lymph nodes).
- ``split.json``: the LIDC patients' validation and test lists are those of every earlier bundle
  (``scripts/data/lidc_split_patients.json``; the test patients stay out of all training and choices).
  Folds 0..K-1 are the whole-CT cross-validation folds (each leaves out the whole CTs of ``CV_FOLDS[k]``
  and every crop of their patients); fold K trains on all whole CTs (the shipped model); fold K+1 holds
  the crops of patients without a whole CT only (nodule pre-training that every other fold may start from).
  ``cv_folds.json`` names each fold's held-out whole CTs.

    python scripts/build_training_data.py [--data ../shared/data] [--out runs/bundle-data]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]
from LungTumorSegLib.core.orientation import Reorientation  # noqa: E402
from LungTumorSegLib.io.image_io import load_volume, save_volume  # noqa: E402
from LungTumorSegLib.segmentation.lungfield import lung_field  # noqa: E402
from LungTumorSegLib.segmentation.pipeline import LUNG_MARGIN_MM  # noqa: E402
from LungTumorSegLib.segmentation.preprocess import crop  # noqa: E402
from LungTumorSegTrainingLib.data.context_transforms import IGNORE_LABEL  # noqa: E402
from LungTumorSegTrainingLib.data.splits import Split, patient_id  # noqa: E402
from LungTumorSegTrainingLib.evaluation.whole_ct_cases import Reference, find_whole_ct_cases  # noqa: E402

PATIENT_SPLIT = ROOT / "scripts" / "data" / "lidc_split_patients.json"
WHOLE_SUFFIX = "_whole"
# Whole-CT cross-validation folds, grouped by patient: each pairs a large central tumour with a LIDC
# nodule scan, so every fold trains on two of the three large tumours.
CV_FOLDS = (
    ("4dlung-113_HM10395-phase40", "lidc-idri-0001"),
    ("nsclc-radiomics-LUNG1-001", "lidc-idri-0002"),
    ("ibsi-ct-phantom-nsclc", "lidc-idri-0003"),
)
PATIENT_PATTERN = r"LIDC-IDRI-\d+|LUNG1-\d+|IBSI-phantom|\d+_HM\d+"


def write_whole_ct(case, out: Path) -> str:
    """The case's CT and label, RAS and cropped to the lung field + margin, as ``<patient>_whole``."""
    name = f"{case.patient}{WHOLE_SUFFIX}"
    ct = load_volume(case.ct, dtype=None)
    reference = Reference.load(case)
    label = np.where(reference.tumour, 1, np.where(reference.ignore | reference.other_tumour, IGNORE_LABEL, 0))
    reorientation = Reorientation.for_volume(ct)
    ras = reorientation.apply(ct)
    ras_label = reorientation.apply(ct.with_array(label.astype(np.uint8)))
    box = lung_field(ras.with_array(ras.array.astype(np.float32))).bounding_box(np.ceil(LUNG_MARGIN_MM / ras.spacing))
    box = box or tuple(slice(0, n) for n in ras.shape)
    for volume, folder in ((crop(ras, box), "image"), (crop(ras_label, box), "mask")):
        save_volume(volume.with_array(np.ascontiguousarray(volume.array)), out / folder / f"{name}.nii.gz", True)
    return name


def build_split(crops: list[str], whole: dict[str, str]) -> tuple[Split, list[dict[str, object]]]:
    """Folds 0..K-1: whole-CT cross-validation; fold K: everything but the LIDC test patients."""
    patients = json.loads(PATIENT_SPLIT.read_text(encoding="utf-8"))
    val_patients, test_patients = set(patients["val_patients"]), set(patients["test_patients"])
    test = [c for c in crops if patient_id(c) in test_patients]
    folds, held_out = [], []
    for index, names in enumerate((*CV_FOLDS, ())):
        held_patients = {patient_id(whole[n], PATIENT_PATTERN) for n in names}
        trained_whole = [w for n, w in whole.items() if n not in names]
        whole_patients = {patient_id(w, PATIENT_PATTERN) for w in trained_whole}
        usable = [c for c in crops if patient_id(c) not in held_patients | test_patients]
        # crops of a patient whose whole CT is trained on are training data too (one patient, one side)
        val = [c for c in usable if patient_id(c) in val_patients - whole_patients]
        train = [c for c in usable if c not in set(val)] + trained_whole
        folds.append({"train": sorted(train), "val": sorted(val)})
        held_out.append({"fold": index, "whole_ct": list(names), "final": not names})
    # crops only, without any patient of a whole CT: the nodule pre-training every fold may start from
    whole_patients = {patient_id(w, PATIENT_PATTERN) for w in whole.values()}
    crops_only = [c for c in crops if patient_id(c) not in whole_patients | test_patients]
    folds.append(
        {
            "train": sorted(c for c in crops_only if patient_id(c) not in val_patients),
            "val": sorted(c for c in crops_only if patient_id(c) in val_patients),
        }
    )
    held_out.append({"fold": len(folds) - 1, "whole_ct": [], "final": False, "pretrain": True})
    all_cases = [*crops, *whole.values()]
    split = Split(
        folds=folds,
        test=sorted(test),
        patients={c: patient_id(c, PATIENT_PATTERN) for c in all_cases},
        method="whole-ct-cv",
        seed=0,
        patient_pattern=PATIENT_PATTERN,
    )
    split.check_no_leak()
    return split, held_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bundle-data")
    args = parser.parse_args()
    images, masks = args.out / "image", args.out / "mask"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    lidc = args.data / "lidc-nodule-crops"
    crops = []
    for mask in sorted((lidc / "mask").glob("*.nii.gz")):
        for folder, source in ((images, lidc / "image" / mask.name), (masks, mask)):
            link = folder / mask.name
            if not link.exists():
                link.symlink_to(source.resolve())
        crops.append(mask.name.removesuffix(".nii.gz"))
    whole = {case.name: write_whole_ct(case, args.out) for case in find_whole_ct_cases(args.data)}
    split, held_out = build_split(crops, whole)
    split.save(args.out / "split.json")
    (args.out / "cv_folds.json").write_text(json.dumps({"folds": held_out}, indent=1) + "\n", encoding="utf-8")
    sizes = ", ".join(f"fold {i}: {len(f['train'])} train / {len(f['val'])} val" for i, f in enumerate(split.folds))
    print(f"{len(crops)} LIDC crops, {len(whole)} whole CTs -> {args.out}; {len(split.test)} test crops; {sizes}")


if __name__ == "__main__":
    main()
