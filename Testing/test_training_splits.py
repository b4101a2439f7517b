"""Patient-level splits: no patient in two subsets, reproducible with a seed, saved and re-loaded as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from LungTumorSegLib.core.errors import InputError
from LungTumorSegTrainingLib.data.datalist import case_id
from LungTumorSegTrainingLib.data.splits import load_split, make_kfold, make_split, patient_id, select_cases

LIDC_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lidc-nodule-crops" / "image"


@pytest.fixture(scope="module")
def lidc_cases() -> list[str]:
    """All real LIDC crop names (551 patients, several nodules for many)."""
    if not LIDC_IMAGES.is_dir():
        pytest.skip(f"shared LIDC crops not available: {LIDC_IMAGES}")
    return sorted(case_id(p) for p in LIDC_IMAGES.glob("*.nii.gz"))


def patients(cases, pattern: str = "") -> set[str]:
    return {patient_id(c, pattern) for c in cases}


def test_patient_ids():
    assert patient_id("LIDC-IDRI-0003_R_2") == "LIDC-IDRI-0003"
    assert patient_id("lung_042") == "lung_042"
    assert patient_id("someone_else") == "someone_else"
    assert patient_id("site1-p17_scan2", r"(p\d+)_") == "p17"
    with pytest.raises(InputError, match="does not match"):
        patient_id("site1-x", r"(p\d+)_")
    with pytest.raises(InputError, match="not a valid regular expression"):
        patient_id("x", "(")


def test_fraction_split_keeps_patients_together(lidc_cases):
    split = make_split(lidc_cases, val_fraction=0.2, test_fraction=0.1, seed=3)
    train, val, test = split.subset("train"), split.subset("val"), split.subset("test")
    assert sorted(train + val + test) == lidc_cases
    assert not patients(train) & patients(val) and not patients(train) & patients(test)
    assert not patients(val) & patients(test)
    n = len(patients(lidc_cases))
    assert abs(len(patients(val)) - 0.2 * n) <= 1 and abs(len(patients(test)) - 0.1 * n) <= 1
    assert make_split(lidc_cases, 0.2, 0.1, seed=3).to_dict() == split.to_dict()
    assert make_split(lidc_cases, 0.2, 0.1, seed=4).subset("val") != val


def test_kfold_covers_every_patient_once(lidc_cases):
    split = make_kfold(lidc_cases, folds=5, seed=0, test_fraction=0.1)
    vals = [split.subset("val", k) for k in range(5)]
    held_out = set(split.test)
    assert sorted(c for v in vals for c in v) == sorted(set(lidc_cases) - held_out)
    for k in range(5):
        train = split.subset("train", k)
        assert not patients(train) & patients(vals[k]) and not patients(train) & patients(split.test)
        assert sorted(train + vals[k]) == sorted(set(lidc_cases) - held_out)
    with pytest.raises(InputError, match="fold 5 does not exist"):
        split.subset("val", 5)


def test_split_json_round_trip_and_leak_detection(lidc_cases, tmp_path):
    split = make_split(lidc_cases[:40], seed=1)
    path = tmp_path / "split.json"
    split.save(path)
    again = load_split(path)
    assert again.to_dict() == split.to_dict()
    raw = json.loads(path.read_text())
    raw["folds"][0]["val"].append(raw["folds"][0]["train"][0])
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match="is in both train/val"):
        load_split(path)
    path.write_text("{}")
    with pytest.raises(InputError, match="not a split file"):
        load_split(path)
    with pytest.raises(InputError, match="not in the data"):
        select_cases([{"case": "a"}], ["a", "b"], "validation")


def test_too_few_patients():
    one_patient = make_split(["LIDC-IDRI-0001_R_1", "LIDC-IDRI-0001_R_2"], val_fraction=0.2)
    assert one_patient.subset("val") == [] and len(one_patient.subset("train")) == 2  # trains without validation
    with pytest.raises(InputError, match="too few"):
        make_split(["lung_001", "lung_002"], val_fraction=0.4, test_fraction=0.4)
    with pytest.raises(InputError, match="too few for 3 folds"):
        make_kfold(["lung_001", "lung_002"], folds=3)
