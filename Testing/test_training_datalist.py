"""Data lists: an MSD task folder built from real LIDC crops loads through dataset.json (MONAI
load_decathlon_datalist); broken data (missing label, geometry mismatch, label values {0, 2}) gives clear
InputErrors; the prepare command writes the MSD folder and a patient-level split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist

from LungTumorSegLib.core.errors import InputError, OutputError
from LungTumorSegTrainingLib.cli import main as cli
from LungTumorSegTrainingLib.config import TrainConfig
from LungTumorSegTrainingLib.data.datalist import (
    build_msd_layout,
    case_id,
    load_datalist,
    pair_folders,
    validate_cases,
)
from LungTumorSegTrainingLib.data.splits import load_split, patient_id
from LungTumorSegTrainingLib.data.transforms import validation_transforms

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIDC = SHARED_DATA / "lidc-nodule-crops"


@pytest.fixture
def crops(tmp_path) -> tuple[Path, Path]:
    """Image and label folders holding symlinks to 6 real LIDC crops (writable copies of the folders)."""
    if not (LIDC / "image").is_dir():
        pytest.skip(f"shared LIDC crops not available: {LIDC}")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for path in sorted((LIDC / "image").glob("*.nii.gz"))[:6]:
        (images / path.name).symlink_to(path)
        (labels / path.name).symlink_to(LIDC / "mask" / path.name)
    return images, labels


def test_msd_layout_loads_through_dataset_json(crops, tmp_path):
    cases = pair_folders(*crops)
    json_path = build_msd_layout(cases, tmp_path / "Task100_LIDC", description="six LIDC crops")
    dataset = json.loads(json_path.read_text())
    assert dataset["labels"] == {"0": "background", "1": "tumour"} and dataset["modality"] == {"0": "CT"}
    assert dataset["numTraining"] == 6 and dataset["name"] == "Task100_LIDC"
    assert dataset["training"][0] == {
        "image": "./imagesTr/LIDC-IDRI-0001_R_1.nii.gz",
        "label": "./labelsTr/LIDC-IDRI-0001_R_1.nii.gz",
    }
    monai_list = load_decathlon_datalist(json_path, data_list_key="training")
    assert len(monai_list) == 6 and all(Path(c["image"]).is_file() and Path(c["label"]).is_file() for c in monai_list)
    for folder in (json_path.parent, json_path):
        cases_back = load_datalist([folder])
        assert [c["case"] for c in cases_back] == [c["case"] for c in cases]
    item = validation_transforms(TrainConfig(spacing_mm=[1.0, 1.0, 1.0]))(dict(cases_back[0]))
    assert item["image"].shape[0] == 1 and item["image"].shape == item["label"].shape
    assert float(item["image"].min()) >= 0.0 and float(item["image"].max()) <= 1.0
    assert set(np.unique(item["label"].numpy()).tolist()) == {0.0, 1.0}
    with pytest.raises(OutputError, match="overwrite"):
        build_msd_layout(cases, tmp_path / "Task100_LIDC")


def test_image_label_folders_and_their_errors(crops, tmp_path):
    images, labels = crops
    assert len(load_datalist([images, labels])) == 6
    assert len(load_datalist([images, labels], max_cases=2)) == 2
    (labels / "LIDC-IDRI-0001_R_1.nii.gz").unlink()
    assert len(load_datalist([images, labels])) == 5  # skipped, with a warning
    with pytest.raises(InputError, match="LIDC-IDRI-0001_R_1.nii.gz: no label"):
        load_datalist([images, labels], strict=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not a dataset"):
        load_datalist([tmp_path / "empty"])
    with pytest.raises(InputError, match="no such file"):
        load_datalist([tmp_path / "missing"])


def test_missing_label_listed_in_dataset_json(crops, tmp_path):
    json_path = build_msd_layout(pair_folders(*crops), tmp_path / "Task100")
    os.unlink(json_path.parent / "labelsTr" / "LIDC-IDRI-0003_R_2.nii.gz")
    with pytest.raises(InputError, match=r"case LIDC-IDRI-0003_R_2: label file .* is missing"):
        load_datalist([json_path.parent])


def _write_like(source: Path, target: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    image = nib.load(str(source))
    nib.save(nib.Nifti1Image(array.astype(np.int16), image.affine if affine is None else affine), str(target))


def test_geometry_mismatch_and_label_values(crops, tmp_path):
    images, labels = crops
    name = "LIDC-IDRI-0003_R_2.nii.gz"
    label_path = labels / name
    original = np.asarray(nib.load(str(label_path)).dataobj)
    label_path.unlink()

    _write_like(images / name, label_path, original[:-1])
    with pytest.raises(InputError, match=r"case LIDC-IDRI-0003_R_2: image shape .* differs from label shape"):
        validate_cases(pair_folders(images, labels))

    shifted = nib.load(str(images / name)).affine.copy()
    shifted[:3, 3] += 5.0
    _write_like(images / name, label_path, original, shifted)
    with pytest.raises(InputError, match="geometry differ"):
        validate_cases(pair_folders(images, labels))

    _write_like(images / name, label_path, original * 3)  # 2 is allowed: it marks ignored voxels
    cases = pair_folders(images, labels)
    with pytest.raises(InputError, match=r"label values \{0, 3\} found, expected only \{0, 1, 2\}"):
        validate_cases(cases)
    with pytest.raises(InputError, match=r"label values \{0, 3\}"):
        build_msd_layout(cases, tmp_path / "Task_bad")
    case = next(c for c in cases if c["case"] == "LIDC-IDRI-0003_R_2")
    with pytest.raises(Exception) as error:  # the training transforms refuse it too (MONAI wraps the error)
        validation_transforms(TrainConfig())(dict(case))
    assert "label values {0, 3}" in str(error.value) or "label values {0, 3}" in str(error.value.__cause__)


def test_prepare_command_writes_msd_folder_and_split(crops, tmp_path, capsys):
    task, split_path = tmp_path / "Task101_LIDC", tmp_path / "split.json"
    code = cli.main(["prepare", "--data", *map(str, crops), "--msd-out", str(task), "--split-out", str(split_path)]
                    + ["--folds", "2", "--progress", "none", "--json"])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["cases"] == 6 and printed["patients"] == len({patient_id(case_id(p)) for p in crops[0].iterdir()})
    assert (task / "dataset.json").is_file() and (task / "imagesTr").is_dir()
    split = load_split(split_path)
    assert split.method == "kfold" and len(split.folds) == 2
    assert sorted(split.subset("val", 0) + split.subset("val", 1)) == sorted(case_id(p) for p in crops[0].iterdir())
    code = cli.main(["prepare", "--data", str(task), "--split-out", str(split_path), "--progress", "none"])
    assert code == 2 and "exists" in capsys.readouterr().err
