"""Checking a training data folder before a run: MSD layout or image/label folders, with clear messages.

No slicer, qt or torch import (the engine's split is used when it imports).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..data.case_files import IMAGE_DIR_NAMES, LABEL_DIR_NAMES, case_id, find_label, is_image

PATIENT_PATTERNS = (r"LIDC-IDRI-\d+", r"lung_\d+", r"R01-\d+", r"\d+_HM\d+")


# ----------------------------------------------------------------------------------------------- dataset


@dataclass
class DatasetSummary:
    """Result of :func:`validate_dataset`: usable when ``errors`` is empty."""

    kind: str = ""
    cases: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    label_values: list[int] = field(default_factory=list)
    labels_checked: int = 0
    spacing_min: list[float] = field(default_factory=list)
    spacing_max: list[float] = field(default_factory=list)
    split: dict[str, int] = field(default_factory=dict)
    name: str = ""

    @property
    def ok(self) -> bool:
        """No errors and at least one case."""
        return not self.errors and bool(self.cases)

    def text(self) -> str:
        """Multi-line summary for the GUI."""
        lines = []
        if self.kind:
            title = f" '{self.name}'" if self.name else ""
            lines.append(
                f"{'MSD dataset' if self.kind == 'msd' else 'Image/label folders'}{title}: {len(self.cases)} cases"
            )
        if self.spacing_min:
            lo = " × ".join(f"{v:.2f}" for v in self.spacing_min)
            hi = " × ".join(f"{v:.2f}" for v in self.spacing_max)
            lines.append(f"Voxel spacing (mm): {lo} to {hi}")
        if self.labels_checked:
            values = ", ".join(str(v) for v in self.label_values)
            lines.append(f"Label values ({self.labels_checked} labels read): {{{values}}}")
        if self.split:
            lines.append(
                "Split (by patient, fold 0): "
                + ", ".join(f"{k} {v}" for k, v in self.split.items() if v or k != "test")
            )
        lines += [f"Error: {m}" for m in self.errors] + [f"Warning: {m}" for m in self.warnings]
        return "\n".join(lines)


def _msd_cases(root: Path, summary: DatasetSummary) -> None:
    json_path = root if root.is_file() else root / "dataset.json"
    base = json_path.parent
    try:
        dataset = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        summary.errors.append(f"{json_path.name}: cannot be read as JSON ({exc})")
        return
    if not isinstance(dataset, dict) or not isinstance(dataset.get("training"), list) or not dataset["training"]:
        summary.errors.append(f"{json_path.name}: no 'training' list of {{'image', 'label'}} entries")
        return
    summary.name = str(dataset.get("name", ""))
    for folder in ("imagesTr", "labelsTr"):
        if not (base / folder).is_dir():
            summary.errors.append(f"the {folder}/ folder is missing next to dataset.json")
    missing = []
    for entry in dataset["training"]:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            summary.errors.append(f"{json_path.name}: training entry {entry!r} needs 'image' and 'label'")
            return
        image, label = (base / entry["image"]).resolve(), (base / entry["label"]).resolve()
        for path in (image, label):
            if not path.is_file():
                missing.append(str(Path(entry["image" if path == image else "label"])))
        summary.cases.append({"case": case_id(image), "image": str(image), "label": str(label)})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        summary.errors.append(f"{len(missing)} file(s) listed in dataset.json are missing: {shown}")


def _folder_cases(images_dir: Path, labels_dir: Path, summary: DatasetSummary) -> None:
    images = sorted(p for p in images_dir.iterdir() if is_image(p)) if images_dir.is_dir() else []
    if not images_dir.is_dir():
        summary.errors.append(f"{images_dir}: image folder not found")
        return
    if not labels_dir.is_dir():
        summary.errors.append(f"{labels_dir}: label folder not found")
        return
    if not images:
        summary.errors.append(f"{images_dir.name}/: no .nii, .nii.gz or .nrrd images")
        return
    unlabelled = []
    for image in images:
        label = find_label(image, labels_dir)
        if label is None:
            unlabelled.append(image.name)
        else:
            summary.cases.append({"case": case_id(image), "image": str(image), "label": str(label)})
    if unlabelled:
        shown = ", ".join(unlabelled[:5]) + (f" and {len(unlabelled) - 5} more" if len(unlabelled) > 5 else "")
        summary.errors.append(f"{len(unlabelled)} image(s) have no label in {labels_dir.name}/: {shown}")


def _check_headers(summary: DatasetSummary, max_labels: int) -> None:
    import nibabel as nib
    import numpy as np

    spacings, values = [], set()
    for index, case in enumerate(summary.cases):
        try:
            image, label = nib.load(case["image"]), nib.load(case["label"])
        except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad files
            summary.errors.append(f"case {case['case']}: cannot read the NIfTI header ({type(exc).__name__}: {exc})")
            continue
        shape_i, shape_l = tuple(image.shape[:3]), tuple(label.shape[:3])
        if len(image.shape) < 3 or shape_i != shape_l:
            summary.errors.append(
                f"case {case['case']}: image shape {image.shape} differs from label shape {label.shape}"
            )
            continue
        if not np.allclose(image.affine, label.affine, atol=1e-3, rtol=1e-5):
            summary.errors.append(f"case {case['case']}: image and label have different geometry (affine)")
        spacings.append([float(z) for z in image.header.get_zooms()[:3]])
        if index < max_labels:
            try:
                values.update(int(v) for v in np.unique(np.asarray(label.dataobj)).tolist())
                summary.labels_checked += 1
            except Exception as exc:  # noqa: BLE001
                summary.errors.append(f"case {case['case']}: cannot read the label ({exc})")
    if spacings:
        array = np.asarray(spacings)
        summary.spacing_min = array.min(axis=0).round(4).tolist()
        summary.spacing_max = array.max(axis=0).round(4).tolist()
    summary.label_values = sorted(values)
    extra = [v for v in summary.label_values if v not in (0, 1)]
    if extra:
        summary.errors.append(
            f"label values {{{', '.join(map(str, summary.label_values))}}} found; expected only {{0, 1}} "
            "(background 0, tumour 1): merge or remap the other labels first"
        )
    elif summary.labels_checked and 1 not in values:
        summary.warnings.append("the labels read contain no tumour voxels (value 1)")


def split_counts(cases: Sequence[str], val_fraction: float = 0.2, fold: int = 0) -> dict[str, int]:
    """Case counts of the engine's patient-level split (its ``make_split``), with a simple fallback."""
    try:
        from ..data.splits import make_split

        split = make_split(list(cases), val_fraction=val_fraction)
        return {"train": len(split.subset("train", 0)), "val": len(split.subset("val", 0)), "test": len(split.test)}
    except Exception:  # noqa: BLE001 - engine not importable or too few patients: estimate
        patients = set()
        for case in cases:
            match = next((re.search(p, case) for p in PATIENT_PATTERNS if re.search(p, case)), None)
            patients.add(match.group(0) if match else case)
        n_val_patients = max(1, round(val_fraction * len(patients))) if len(patients) >= 2 else 0
        n_val = round(len(cases) * n_val_patients / max(1, len(patients)))
        return {"train": len(cases) - n_val, "val": n_val, "test": 0}


def validate_dataset(paths: Sequence[str | Path], max_labels: int = 3, val_fraction: float = 0.2) -> DatasetSummary:
    """Check a training data folder: MSD layout (dataset.json, imagesTr, labelsTr) or image/label folders.

    Args:
        paths: one folder (MSD task folder, its dataset.json, or a folder with image/ and mask/ sub-folders)
            or two folders (images, labels), as the engine's ``--data`` takes them.
        max_labels: read the voxel values of this many labels (headers of all cases are read).
        val_fraction: validation fraction for the split preview.
    """
    summary = DatasetSummary()
    paths = [Path(p).expanduser() for p in paths if str(p).strip()]
    if not paths:
        summary.errors.append("no dataset folder chosen")
        return summary
    if len(paths) == 2:
        summary.kind = "folders"
        _folder_cases(paths[0], paths[1], summary)
    elif len(paths) == 1:
        root = paths[0]
        if not root.exists():
            summary.errors.append(f"{root}: no such folder")
            return summary
        if (root.is_file() and root.suffix == ".json") or (root / "dataset.json").is_file():
            summary.kind = "msd"
            _msd_cases(root, summary)
        else:
            images_dir = next((root / n for n in IMAGE_DIR_NAMES if (root / n).is_dir()), None)
            labels_dir = next((root / n for n in LABEL_DIR_NAMES if (root / n).is_dir()), None)
            if images_dir is None or labels_dir is None:
                what = "labelsTr/ (or mask/, labels/)" if images_dir else "imagesTr/ (or image/, images/)"
                if (root / "imagesTr").is_dir() or (root / "labelsTr").is_dir():
                    summary.errors.append(f"{root.name}: dataset.json is missing and so is {what}")
                else:
                    summary.errors.append(
                        f"{root.name}: not a dataset: expected dataset.json + imagesTr/ + labelsTr/ (MSD layout), "
                        f"or image and label sub-folders such as image/ + mask/ (missing: {what})"
                    )
                return summary
            summary.kind = "folders"
            _folder_cases(images_dir, labels_dir, summary)
    else:
        summary.errors.append(f"give one dataset folder or an image folder and a label folder, not {len(paths)}")
        return summary
    if summary.cases and not summary.errors:
        _check_headers(summary, max_labels)
    if summary.cases:
        if len(summary.cases) < 2:
            summary.errors.append("at least 2 cases are needed (one for training, one for validation)")
        else:
            summary.split = split_counts([c["case"] for c in summary.cases], val_fraction)
    return summary


def build_tiny_msd(root: Path | str, pairs: Sequence[tuple[str | Path, str | Path]], link: bool = True) -> Path:
    """Write a small MSD-layout dataset (imagesTr/, labelsTr/, dataset.json) from (image, label) files.

    Used by the tests and the Slicer self-test. Files are symlinked (copied where links are not allowed).
    Returns the dataset folder.
    """
    import shutil

    root = Path(root)
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for index, (image, label) in enumerate(pairs):
        name = case_id(image) if len({case_id(i) for i, _ in pairs}) == len(pairs) else f"case_{index:03d}"
        suffix = ".nii.gz" if str(image).endswith(".gz") else ".nii"
        for source, folder in ((Path(image), "imagesTr"), (Path(label), "labelsTr")):
            target = root / folder / f"{name}{suffix}"
            if target.exists() or target.is_symlink():
                target.unlink()
            try:
                if not link:
                    raise OSError
                target.symlink_to(source.resolve())
            except OSError:
                shutil.copy2(source, target)
        training.append({"image": f"./imagesTr/{name}{suffix}", "label": f"./labelsTr/{name}{suffix}"})
    dataset = {
        "name": root.name,
        "description": "tiny dataset for quick checks",
        "labels": {"0": "background", "1": "tumour"},
        "modality": {"0": "CT"},
        "numTraining": len(training),
        "training": training,
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    return root
