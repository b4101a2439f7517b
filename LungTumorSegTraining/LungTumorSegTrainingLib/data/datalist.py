"""Training data lists: MSD ``dataset.json`` folders, image/label folder pairs, checks and MSD-layout conversion.

A data list is a list of dictionaries ``{"image": path, "label": path, "case": case_id}`` as MONAI's
``load_decathlon_datalist`` returns them (plus ``case``, the image file name without its extension).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.data import load_decathlon_datalist

from LungTumorSegLib.core.errors import InputError, OutputError
from LungTumorSegLib.io.image_io import NIFTI_SUFFIXES, NRRD_SUFFIXES, load_volume, save_volume

from .case_files import IMAGE_DIR_NAMES, LABEL_DIR_NAMES, case_id, find_label, is_image

LOG = logging.getLogger("lungtumorseg.train")
DATASET_JSON = "dataset.json"
ALLOWED_LABEL_VALUES = (0, 1, 2)  # background, tumour, ignore (no loss there; e.g. one reader's outline)
MSD_LABELS = {"0": "background", "1": "tumour"}


def find_dataset_json(path: Path) -> Path | None:
    """``path`` itself if it is a dataset.json file, ``path/dataset.json`` if present, else None."""
    if path.is_file() and path.suffix == ".json":
        return path
    candidate = path / DATASET_JSON
    return candidate if candidate.is_file() else None


def load_msd_datalist(json_path: Path, key: str = "training") -> list[dict[str, Any]]:
    """Read an MSD ``dataset.json`` (MONAI ``load_decathlon_datalist``), paths made absolute.

    Raises:
        InputError: unreadable JSON, no ``key`` list, or listed files missing.
    """
    try:
        cases = load_decathlon_datalist(json_path, is_segmentation=True, data_list_key=key, base_dir=json_path.parent)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{json_path}: invalid JSON ({exc})") from exc
    except ValueError as exc:
        raise InputError(f"{json_path}: {exc}") from exc
    if not cases:
        raise InputError(f"{json_path}: the '{key}' list is empty")
    out = [{**case, "case": case_id(case["image"])} for case in cases]
    check_files(out)
    return out


def pair_folders(images_dir: Path, labels_dir: Path, strict: bool = False) -> list[dict[str, Any]]:
    """Pair every image in ``images_dir`` with the label of the same name (or ``<name>_seg``, ``_label``, ...).

    Images without a label are skipped with a warning (``strict``: an error).

    Raises:
        InputError: a folder is missing or empty, no image has a label, or (``strict``) one image has none.
    """
    for folder, what in ((images_dir, "image"), (labels_dir, "label")):
        if not folder.is_dir():
            raise InputError(f"{folder}: {what} folder not found")
    images = sorted(p for p in images_dir.iterdir() if is_image(p))
    if not images:
        raise InputError(f"{images_dir}: no .nii, .nii.gz or .nrrd images found")
    cases, unlabelled = [], []
    for image in images:
        label = find_label(image, labels_dir)
        if label is None:
            if strict:
                raise InputError(f"{image.name}: no label in {labels_dir} (looked for the same file name)")
            unlabelled.append(image.name)
            continue
        cases.append({"image": str(image), "label": str(label), "case": case_id(image)})
    if not cases:
        raise InputError(f"{images_dir}: no image has a label of the same name in {labels_dir}")
    if unlabelled:
        LOG.warning("%d image(s) without a label in %s skipped (first: %s)", len(unlabelled), labels_dir, unlabelled[0])
    return cases


def load_datalist(data: Sequence[str | os.PathLike], max_cases: int = 0, strict: bool = False) -> list[dict[str, Any]]:
    """Cases from ``--data``: an MSD folder or dataset.json, a folder with image/label sub-folders, or two folders.

    Args:
        data: one path (MSD task folder, its dataset.json, or a folder holding e.g. ``image/`` and ``mask/``)
            or two paths (image folder, label folder).
        max_cases: keep only the first N cases (sorted by case name) when > 0, for quick checks.
        strict: with image/label folders, an image without a label is an error (default: skipped, warned).

    Raises:
        InputError: nothing usable found, or files missing.
    """
    paths = [Path(p).expanduser() for p in data]
    if not paths:
        raise InputError("no training data given (use --data)")
    if len(paths) == 2:
        cases = pair_folders(paths[0], paths[1], strict)
    elif len(paths) == 1:
        root = paths[0]
        if not root.exists():
            raise InputError(f"{root}: no such file or folder")
        json_path = find_dataset_json(root)
        if json_path is not None:
            cases = load_msd_datalist(json_path)
        else:
            images_dir = next((root / n for n in IMAGE_DIR_NAMES if (root / n).is_dir()), None)
            labels_dir = next((root / n for n in LABEL_DIR_NAMES if (root / n).is_dir()), None)
            if images_dir is None or labels_dir is None:
                raise InputError(
                    f"{root}: not a dataset (expected dataset.json, or image and label sub-folders such as "
                    "imagesTr/+labelsTr/ or image/+mask/)"
                )
            cases = pair_folders(images_dir, labels_dir, strict)
    else:
        raise InputError(f"--data takes one dataset folder or an image folder and a label folder, got {len(paths)}")
    cases = sorted(cases, key=lambda c: c["case"])
    _check_unique(cases)
    return cases[:max_cases] if max_cases > 0 else cases


def check_files(cases: Iterable[dict[str, Any]]) -> None:
    """Raise InputError naming the first missing image or label file."""
    for case in cases:
        for key in ("image", "label"):
            if key in case and not Path(case[key]).is_file():
                raise InputError(f"case {case.get('case', '?')}: {key} file {case[key]} is missing")


def geometry(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and voxel-to-world affine of an image, read from the header only where possible."""
    path = Path(path)
    try:
        if path.name.lower().endswith(NIFTI_SUFFIXES):
            header_image = nib.load(str(path))
            shape = tuple(int(s) for s in header_image.shape)
            while len(shape) > 3 and shape[-1] == 1:
                shape = shape[:-1]
            return shape, np.asarray(header_image.affine, dtype=np.float64)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad files
        raise InputError(f"{path}: cannot read the image header ({type(exc).__name__}: {exc})") from exc
    volume = load_volume(path, dtype=None)
    return volume.shape, volume.affine


def check_geometry(case: dict[str, Any], atol_mm: float = 1e-3) -> None:
    """Raise InputError unless the case's image and label are 3D on the same grid (shape and affine)."""
    image_shape, image_affine = geometry(case["image"])
    label_shape, label_affine = geometry(case["label"])
    name = case.get("case", Path(case["image"]).name)
    if len(image_shape) != 3:
        raise InputError(f"case {name}: expected a 3D image, got shape {image_shape}")
    if image_shape != label_shape:
        raise InputError(f"case {name}: image shape {image_shape} differs from label shape {label_shape}")
    if not np.allclose(image_affine, label_affine, atol=atol_mm, rtol=1e-5):
        worst = float(np.abs(image_affine - label_affine).max())
        raise InputError(
            f"case {name}: image and label geometry differ (voxel-to-world matrices differ by up to {worst:.3g} mm)"
        )


def check_label_values(label: Any, name: str, allowed: Sequence[int] = ALLOWED_LABEL_VALUES) -> None:
    """Raise InputError if a label array holds values other than ``allowed`` ({0, 1, 2} by default: 2 = ignore)."""
    values = np.unique(np.asarray(label))
    unexpected = [v for v in values.tolist() if v not in allowed]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in values[:10].tolist())
        raise InputError(
            f"{name}: label values {{{shown}}} found, expected only {{{', '.join(str(a) for a in allowed)}}} "
            "(background 0, tumour 1, 2 = ignored by the loss; merge or remap other labels first)"
        )


def validate_cases(
    cases: Sequence[dict[str, Any]],
    check_values: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Check every case: files exist, image/label geometry matches, and (optionally) label values are {0, 1, 2}
    with a tumour voxel (1) in at least one label.

    Raises:
        InputError: the first problem found, naming the case.
    """
    check_files(cases)
    with_tumour = 0
    for index, case in enumerate(cases):
        check_geometry(case)
        if check_values:
            label = load_volume(case["label"], dtype=None)
            check_label_values(label.array, f"case {case.get('case', '?')} label {Path(case['label']).name}")
            with_tumour += bool(np.any(label.array == 1))
        if progress:
            progress(index + 1, len(cases))
    if check_values and cases and not with_tumour:
        raise InputError(
            f"every label is empty ({len(cases)} case(s), no tumour voxel in any, e.g. {cases[0]['label']}): "
            "a model would learn nothing; check the label folder"
        )


def build_msd_layout(
    cases: Sequence[dict[str, Any]],
    out_dir: Path,
    name: str | None = None,
    description: str = "",
    link: bool = True,
    overwrite: bool = False,
    check_values: bool = True,
) -> Path:
    """Write an MSD-style task folder (``imagesTr/``, ``labelsTr/``, ``dataset.json``) from paired cases.

    NIfTI files are symlinked (``link``) or copied; NRRD files are converted to ``.nii.gz``.
    The cases are validated first (files, geometry, label values).

    Returns:
        The path of the written ``dataset.json``.

    Raises:
        InputError: invalid cases; OutputError: ``out_dir`` holds a dataset and ``overwrite`` is false.
    """
    validate_cases(cases, check_values=check_values)
    out_dir = Path(out_dir)
    json_path = out_dir / DATASET_JSON
    if json_path.exists() and not overwrite:
        raise OutputError(f"{out_dir}: already holds a {DATASET_JSON} (use --overwrite to replace it)")
    training = []
    for sub in ("imagesTr", "labelsTr"):
        folder = out_dir / sub
        if folder.exists() and overwrite:
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
    for case in cases:
        entry = {}
        for key, sub in (("image", "imagesTr"), ("label", "labelsTr")):
            source = Path(case[key])
            suffix = ".nii.gz" if source.name.lower().endswith(NRRD_SUFFIXES) else _nifti_suffix(source)
            target = out_dir / sub / f"{case['case']}{suffix}"
            _place(source, target, link)
            entry[key] = f"./{sub}/{target.name}"
        training.append(entry)
    dataset = {
        "name": name or out_dir.name,
        "description": description or f"Lung tumour segmentation data ({len(cases)} cases)",
        "reference": "",
        "licence": "see the source data",
        "release": "",
        "tensorImageSize": "3D",
        "modality": {"0": "CT"},
        "labels": dict(MSD_LABELS),
        "numTraining": len(training),
        "numTest": 0,
        "training": training,
        "test": [],
    }
    tmp = json_path.with_name(f".{DATASET_JSON}.tmp")
    tmp.write_text(json.dumps(dataset, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, json_path)
    return json_path


def dataset_description(data: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Provenance for manifests: the data paths and, for MSD folders, dataset.json's name and description."""
    info: dict[str, Any] = {"paths": [str(Path(p).expanduser().resolve()) for p in data]}
    if len(data) == 1:
        json_path = find_dataset_json(Path(data[0]).expanduser())
        if json_path is not None:
            try:
                dataset = json.loads(json_path.read_text(encoding="utf-8"))
                info.update({k: dataset[k] for k in ("name", "description", "reference", "licence") if k in dataset})
            except (OSError, json.JSONDecodeError):
                pass
    return info


def _nifti_suffix(path: Path) -> str:
    return ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"


def _place(source: Path, target: Path, link: bool) -> None:
    if target.exists() or target.is_symlink():
        target.unlink()
    if source.name.lower().endswith(NRRD_SUFFIXES):
        save_volume(load_volume(source, dtype=None), target)
    elif link:
        target.symlink_to(source.resolve())
    else:
        shutil.copy2(source, target)


def _check_unique(cases: Sequence[dict[str, Any]]) -> None:
    seen: dict[str, str] = {}
    for case in cases:
        if case["case"] in seen:
            raise InputError(
                f"two images share the case name {case['case']!r}: {seen[case['case']]} and {case['image']}"
            )
        seen[case["case"]] = case["image"]
