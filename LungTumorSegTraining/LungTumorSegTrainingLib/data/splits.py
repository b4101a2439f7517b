"""Patient-level data splits (train/val/test fractions or k folds), seeded and saved as JSON.

Split file format (``split.json``)::

    {"version": 1, "method": "fractions" | "kfold", "seed": 0, "patient_pattern": "...",
     "test": ["case", ...],                       # held out from every fold (may be empty)
     "folds": [{"train": ["case", ...], "val": ["case", ...]}, ...],
     "patients": {"case": "patient id", ...}}

Cases are named by their image file name without extension; every case of one patient lands in the
same subset, so no patient is in two subsets of a fold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from LungTumorSegLib.core.errors import InputError

from ..config import write_json_atomic

SPLIT_VERSION = 1
# LIDC-IDRI crops (LIDC-IDRI-0001_R_1), MSD Task06 (lung_001), then NSCLC/4D-Lung style ids.
DEFAULT_PATTERNS = (r"LIDC-IDRI-\d+", r"lung_\d+", r"R01-\d+", r"\d+_HM\d+")
SUBSETS = ("train", "val", "test")


def patient_id(case: str, pattern: str = "") -> str:
    """The patient a case belongs to.

    Args:
        case: case name (image file name without extension).
        pattern: regular expression; its first group (or the whole match) is the patient id. Empty: try
            the built-in patterns (``LIDC-IDRI-XXXX``, ``lung_XXX``, ...), else the case is its own patient.

    Raises:
        InputError: an explicit ``pattern`` does not match the case name.
    """
    patterns = [pattern] if pattern else list(DEFAULT_PATTERNS)
    for candidate in patterns:
        try:
            match = re.search(candidate, case)
        except re.error as exc:
            raise InputError(f"--patient-pattern {candidate!r} is not a valid regular expression: {exc}") from exc
        if match:
            return match.group(1) if match.groups() else match.group(0)
    if pattern:
        raise InputError(f"--patient-pattern {pattern!r} does not match case {case!r}")
    return case


@dataclass
class Split:
    """A saved split: held-out test cases and one (train, val) pair per fold."""

    folds: list[dict[str, list[str]]]
    test: list[str] = field(default_factory=list)
    patients: dict[str, str] = field(default_factory=dict)
    method: str = "fractions"
    seed: int = 0
    patient_pattern: str = ""

    def subset(self, name: str, fold: int = 0) -> list[str]:
        """Case names of ``train``, ``val`` or ``test`` (``all`` = every case) for ``fold``."""
        if name == "test":
            return list(self.test)
        if name == "all":
            return sorted(set(self.test) | {c for f in self.folds for part in f.values() for c in part})
        if name not in ("train", "val"):
            raise InputError(f"unknown subset {name!r} (use train, val, test or all)")
        if not 0 <= fold < len(self.folds):
            raise InputError(f"--fold {fold} does not exist (the split has {len(self.folds)} fold(s): 0..)")
        return list(self.folds[fold][name])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (the split.json format)."""
        return {
            "version": SPLIT_VERSION,
            "method": self.method,
            "seed": self.seed,
            "patient_pattern": self.patient_pattern,
            "test": self.test,
            "folds": self.folds,
            "patients": self.patients,
        }

    def check_no_leak(self) -> None:
        """Raise InputError if a patient appears in two subsets of a fold (or in test and a fold)."""
        test_patients = {self.patients.get(c, c) for c in self.test}
        for index, fold in enumerate(self.folds):
            train = {self.patients.get(c, c) for c in fold["train"]}
            val = {self.patients.get(c, c) for c in fold["val"]}
            for a, b, names in ((train, val, "train/val"), (train, test_patients, "train/test")):
                common = a & b
                if common:
                    raise InputError(f"split fold {index}: patient {sorted(common)[0]} is in both {names}")
            if val & test_patients:
                raise InputError(f"split fold {index}: patient {sorted(val & test_patients)[0]} in both val/test")

    def save(self, path: Path) -> None:
        """Write the split JSON atomically."""
        write_json_atomic(path, self.to_dict())


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise InputError unless both fractions are in [0, 1) and together leave patients for training."""
    for option, value in (("--val-fraction", val_fraction), ("--test-fraction", test_fraction)):
        if not (0.0 <= float(value) < 1.0):
            raise InputError(f"{option} {value:g} is out of range: a fraction of patients, at least 0 and below 1")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(
            f"--val-fraction {val_fraction:g} and --test-fraction {test_fraction:g} add up to 1 or more: "
            "no patient would be left for training"
        )


def make_split(
    cases: Sequence[str],
    val_fraction: float = 0.2,
    test_fraction: float = 0.0,
    seed: int = 0,
    pattern: str = "",
) -> Split:
    """One train/val(/test) split by patient, with seeded shuffling.

    Fractions apply to patients (rounded, at least one patient in val when ``val_fraction`` > 0 and there
    are at least two patients).
    """
    check_fractions(val_fraction, test_fraction)
    patients, groups = _group(cases, pattern)
    order = _shuffled(sorted(groups), seed)
    n = len(order)
    n_test = int(round(test_fraction * n)) if test_fraction > 0 else 0
    n_val = int(round(val_fraction * n)) if val_fraction > 0 else 0
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)
    if n_test + n_val >= n:
        raise InputError(f"{n} patient(s) are too few for val {val_fraction:g} and test {test_fraction:g} fractions")
    test_ids, val_ids, train_ids = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    fold = {"train": _cases_of(train_ids, groups), "val": _cases_of(val_ids, groups)}
    return Split([fold], _cases_of(test_ids, groups), patients, "fractions", seed, pattern)


def make_kfold(
    cases: Sequence[str], folds: int = 5, seed: int = 0, test_fraction: float = 0.0, pattern: str = ""
) -> Split:
    """K-fold cross-validation by patient (after holding out ``test_fraction`` of patients as test)."""
    if folds < 2:
        raise InputError(f"--folds must be at least 2, got {folds}")
    check_fractions(0.0, test_fraction)
    patients, groups = _group(cases, pattern)
    order = _shuffled(sorted(groups), seed)
    n_test = int(round(test_fraction * len(order))) if test_fraction > 0 else 0
    test_ids, rest = order[:n_test], order[n_test:]
    if len(rest) < folds:
        raise InputError(f"{len(rest)} patient(s) are too few for {folds} folds")
    parts = [rest[i::folds] for i in range(folds)]
    fold_list = [
        {
            "train": _cases_of([p for j, part in enumerate(parts) if j != i for p in part], groups),
            "val": _cases_of(parts[i], groups),
        }
        for i in range(folds)
    ]
    return Split(fold_list, _cases_of(test_ids, groups), patients, "kfold", seed, pattern)


def load_split(path: Path) -> Split:
    """Read and check a split JSON.

    Raises:
        InputError: missing file, invalid JSON or structure, or a patient in two subsets.
    """
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: split file not found") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("folds"), list) or not raw["folds"]:
        raise InputError(f"{path}: not a split file (needs a non-empty 'folds' list)")
    for index, fold in enumerate(raw["folds"]):
        if not isinstance(fold, dict) or not {"train", "val"} <= set(fold):
            raise InputError(f"{path}: fold {index} needs 'train' and 'val' lists")
    split = Split(
        folds=[{"train": list(f["train"]), "val": list(f["val"])} for f in raw["folds"]],
        test=list(raw.get("test", [])),
        patients=dict(raw.get("patients", {})),
        method=str(raw.get("method", "fractions")),
        seed=int(raw.get("seed", 0)),
        patient_pattern=str(raw.get("patient_pattern", "")),
    )
    split.check_no_leak()
    return split


def select_cases(cases: Sequence[dict[str, Any]], names: Sequence[str], what: str) -> list[dict[str, Any]]:
    """The data-list entries named in ``names`` (in that order).

    Raises:
        InputError: a named case is not in the data list.
    """
    by_name = {c["case"]: c for c in cases}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(
            f"{len(missing)} {what} case(s) of the split are not in the data (first: {missing[0]!r}); "
            "wrong --data or --split?"
        )
    return [by_name[n] for n in names]


def _group(cases: Sequence[str], pattern: str) -> tuple[dict[str, str], dict[str, list[str]]]:
    if not cases:
        raise InputError("no cases to split")
    patients = {case: patient_id(case, pattern) for case in cases}
    groups: dict[str, list[str]] = {}
    for case in sorted(cases):
        groups.setdefault(patients[case], []).append(case)
    return patients, groups


def _shuffled(items: list[str], seed: int) -> list[str]:
    order = np.random.default_rng(seed).permutation(len(items))
    return [items[i] for i in order]


def _cases_of(patient_ids: Sequence[str], groups: dict[str, list[str]]) -> list[str]:
    return sorted(case for p in patient_ids for case in groups[p])
