"""Sensitivity presets: a bundle's documented operating points (manifest ``output.sensitivity``), torch-free.

A preset says which lesions are reported and which are listed as candidates::

    "output": {
      "threshold": 0.5, "min_lesion_ml": 0.05, "min_peak_probability": 0.5,
      "sensitivity": {
        "default": "high",
        "presets": {
          "high": {"min_peak_probability": 0.5, "candidate_min_peak": 0.1, "max_candidates": 10,
                   "description": "...", "operating_point": {"sensitivity": 0.88, "false_positives_per_ct": 9.5}},
          "balanced": {...}, "specific": {...}
        }
      }
    }

- A **lesion** is drawn at ``output.threshold`` and reported when its highest probability reaches the preset's
  ``min_peak_probability``.
- A **candidate** is a region whose probability reaches ``candidate_min_peak`` (drawn at that level) holding no
  reported lesion: the strongest ``max_candidates`` of them are listed for the reader to accept or dismiss.
- ``operating_point`` holds what the preset was measured to give (cross-validated); the engine only shows it.

Options given explicitly (``--min-peak-probability``) override the preset; a bundle without presets runs with its
``output`` settings and lists no candidates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRESET_NAMES = ("high", "balanced", "specific")
PRESET_FIELDS = ("min_peak_probability", "candidate_min_peak", "max_candidates")


@dataclass(frozen=True)
class SensitivityPreset:
    """One operating point of a bundle."""

    name: str
    min_peak_probability: float
    candidate_min_peak: float
    max_candidates: int
    description: str = ""
    operating_point: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The preset as the engine's outputs record it."""
        return {
            "preset": self.name,
            "min_peak_probability": self.min_peak_probability,
            "candidate_min_peak": self.candidate_min_peak,
            "max_candidates": self.max_candidates,
            "description": self.description,
            "operating_point": self.operating_point,
        }


def preset_problem(output: dict[str, Any]) -> str | None:
    """What is wrong with ``output.sensitivity`` (None when it is absent or valid)."""
    spec = output.get("sensitivity")
    if spec is None:
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("presets"), dict) or not spec["presets"]:
        return "output.sensitivity must be an object with a non-empty 'presets' object"
    for name, preset in spec["presets"].items():
        where = f"output.sensitivity.presets.{name}"
        if name not in PRESET_NAMES:
            return f"{where}: unknown preset (known: {', '.join(PRESET_NAMES)})"
        if not isinstance(preset, dict) or any(key not in preset for key in PRESET_FIELDS):
            return f"{where}: needs {', '.join(PRESET_FIELDS)}"
        for key in ("min_peak_probability", "candidate_min_peak"):
            value = preset[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                return f"{where}.{key} must be a number in [0, 1], got {value!r}"
        count = preset["max_candidates"]
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            return f"{where}.max_candidates must be a whole number >= 0, got {count!r}"
        if not isinstance(preset.get("operating_point", {}), dict):
            return f"{where}.operating_point must be an object"
    default = spec.get("default")
    if default is not None and default not in spec["presets"]:
        return f"output.sensitivity.default {default!r} is not one of its presets ({', '.join(spec['presets'])})"
    return None


def bundle_presets(output: dict[str, Any]) -> dict[str, SensitivityPreset]:
    """The presets of a (validated) manifest ``output`` section, in ``PRESET_NAMES`` order; {} without any."""
    spec = output.get("sensitivity") or {}
    presets = spec.get("presets") or {}
    return {
        name: SensitivityPreset(
            name=name,
            min_peak_probability=float(presets[name]["min_peak_probability"]),
            candidate_min_peak=float(presets[name]["candidate_min_peak"]),
            max_candidates=int(presets[name]["max_candidates"]),
            description=str(presets[name].get("description", "")),
            operating_point=dict(presets[name].get("operating_point", {})),
        )
        for name in PRESET_NAMES
        if name in presets
    }


def default_preset_name(output: dict[str, Any]) -> str | None:
    """The preset used when none is asked for (the manifest's ``default``; else ``high`` when present)."""
    presets = bundle_presets(output)
    if not presets:
        return None
    named = (output.get("sensitivity") or {}).get("default")
    return named if named in presets else ("high" if "high" in presets else next(iter(presets)))


def check_preset_available(output: dict[str, Any], name: str | None, model: str) -> None:
    """Raise ValueError (a one-line message naming ``--sensitivity``) when ``name`` is not a preset of the model."""
    if name is None:
        return
    presets = bundle_presets(output)
    if not presets:
        raise ValueError(
            f"--sensitivity {name}: model {model} has no sensitivity presets (exported without cross-validated "
            "operating points); use --min-peak-probability instead"
        )
    if name not in presets:
        raise ValueError(f"--sensitivity {name}: model {model} has the presets {', '.join(presets)}")


def choose_preset(output: dict[str, Any], name: str | None, model: str = "the model") -> SensitivityPreset | None:
    """The preset asked for, else the bundle's default one; None for a bundle without presets."""
    check_preset_available(output, name, model)
    chosen = name or default_preset_name(output)
    return bundle_presets(output)[chosen] if chosen else None
