"""The tumour segment's name, colour and DICOM terminology, shared by every output that names it.

Slicer's segment tag ``TerminologyEntry``, the ``.seg.nrrd`` segment and the DICOM SEG segment all carry the same
SNOMED codes: category 49755003 Morphologically Altered Structure, type 108369006 Neoplasm, region 39607008 Lung.
"""

from __future__ import annotations

from typing import Any

TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"


def _code(code: tuple[str, str, str] | None) -> str:
    return "^".join(code) if code else "^^"


def terminology_entry(
    category: tuple[str, str, str],
    type_: tuple[str, str, str],
    type_modifier: tuple[str, str, str] | None = None,
    region: tuple[str, str, str] | None = None,
    region_modifier: tuple[str, str, str] | None = None,
    context: str = TERMINOLOGY_CONTEXT,
    anatomic_context: str = ANATOMIC_CONTEXT,
) -> str:
    """Slicer's segment tag ``TerminologyEntry`` string.

    Format: ``context~category~type~typeModifier~anatomicContext~region~regionModifier`` with each
    code written ``scheme^value^meaning`` (empty code: ``^^``).
    """
    return "~".join(
        [
            context,
            _code(category),
            _code(type_),
            _code(type_modifier),
            anatomic_context,
            _code(region),
            _code(region_modifier),
        ]
    )


def parse_terminology_entry(entry: str) -> dict[str, Any]:
    """Split a ``TerminologyEntry`` string into its parts (codes as (scheme, value, meaning) tuples)."""
    parts = entry.split("~")
    if len(parts) != 7:
        raise ValueError(f"expected 7 '~'-separated fields, got {len(parts)}: {entry!r}")
    keys = ("context", "category", "type", "type_modifier", "anatomic_context", "region", "region_modifier")
    out: dict[str, Any] = {}
    for key, value in zip(keys, parts):
        out[key] = value if key.endswith("context") else tuple(value.split("^"))
    return out


LUNG_TUMOR_SEGMENT_NAME = "Lung tumor"
LUNG_TUMOR_COLOR = (0.85, 0.32, 0.20)  # fixed orange-red, clear against lung and soft tissue
LUNG_TUMOR_TERMINOLOGY = terminology_entry(
    ("SCT", "49755003", "Morphologically Altered Structure"),
    ("SCT", "108369006", "Neoplasm"),
    region=("SCT", "39607008", "Lung"),
)
