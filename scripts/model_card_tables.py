"""Print the model card's tables (Markdown) from the committed results, so the card's numbers come from data.

    python scripts/model_card_tables.py > runs/model_card_tables.md

Reads ``scripts/data/operating_points.json`` (``scripts/choose_presets.py``) and ``scripts/data/miss_analysis.json``
(``scripts/analyse_misses.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "LungTumorSeg"), str(ROOT / "LungTumorSegTraining")]
from LungTumorSegTrainingLib.evaluation.preset_pictures import (  # noqa: E402
    lesion_peak,
    variant_lesion_index,
    variant_reference_lesions,
)

CASE_NAMES = {
    "4dlung-113_HM10395-phase40": "4D-Lung 113_HM10395",
    "lidc-idri-0001": "LIDC-IDRI-0001",
    "nsclc-radiomics-LUNG1-001": "NSCLC-Radiomics LUNG1-001",
    "lidc-idri-0002": "LIDC-IDRI-0002",
    "ibsi-ct-phantom-nsclc": "IBSI phantom",
    "lidc-idri-0003": "LIDC-IDRI-0003",
}


def interval(values: list[float] | None, digits: int = 2, percent: bool = False) -> str:
    if not values:
        return ""
    low, high = (v * 100 if percent else v for v in values)
    return f" ({low:.0f}–{high:.0f} %)" if percent else f" ({low:.{digits}f}–{high:.{digits}f})"


def presets_table(tables: dict[str, Any]) -> str:
    crops = tables["crops"]
    lines = [
        "| preset | level (shipped; per fold) | lesions found, nested CV | with candidates | false positives / CT | "
        "false candidates / CT | lesion Dice | validation nodules kept | LIDC test nodules kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, preset in tables["presets"].items():
        s = preset["cross_validated"]["summary"]
        level = preset["min_peak_probability"]
        folds = ", ".join(f"{v:g}" for v in preset["per_fold"].values())
        test = crops["shipped_test"]["kept_share"][f"{level:g}"]
        lines.append(
            f"| **{name}** | {level:g} ({folds}) | {s['found']}/{s['lesions']}"
            f"{interval(s['ci95']['sensitivity'], percent=True)} | {s['found_with_candidates']}/{s['lesions']} | "
            f"{s['false_positives_per_ct']:.1f}{interval(s['ci95']['false_positives_per_ct'], 1)} | "
            f"{s['false_candidates_per_ct']:.1f} | {s['mean_lesion_dice_over_cases']:.2f}"
            f"{interval(s['ci95']['mean_lesion_dice_over_cases'])} | {preset['validation_nodules_kept'] * 100:.0f} % | "
            f"{test * 100:.0f} % |"
        )
    return "\n".join(lines)


def cases_table(tables: dict[str, Any]) -> str:
    presets = tables["presets"]
    head = " | ".join(f"{name}: found / FP / false cand." for name in presets)
    lines = [f"| case (fold) | lesions | {head} | lesion Dice (high) |", "|---|---|" + "---|" * len(presets) + "---|"]
    for case, fold in tables["folds"].items():
        cells = []
        for preset in presets.values():
            c = preset["cross_validated"]["cases"][case]
            cells.append(
                f"{c['found']} (+{c['found_with_candidates'] - c['found']}) / {c['false_positives']} / "
                f"{c['false_candidates']}"
            )
        high = presets["high"]["cross_validated"]["cases"][case]
        name = CASE_NAMES.get(case, case)
        lines.append(f"| {name} ({fold[-1]}) | {high['lesions']} | {' | '.join(cells)} | {high['lesion_dice']:.2f} |")
    return "\n".join(lines)


def lesions_table(tables: dict[str, Any]) -> str:
    presets = list(tables["presets"])
    lines = [
        "| lesion | volume | mean HU | highest p | " + " | ".join(presets) + " |",
        "|---|---|---|---|" + "---|" * len(presets),
    ]
    for lesion in tables["lesions"]:
        fates = [lesion["fate_cross_validated"][p] for p in presets]
        lines.append(
            f"| {CASE_NAMES.get(lesion['case'], lesion['case'])} #{lesion['lesion']} | {lesion['volume_ml']:.1f} ml | "
            f"{lesion['mean_hu']:.0f} | {lesion['max_probability']:.3f} | " + " | ".join(fates) + " |"
        )
    return "\n".join(lines)


def froc_table(tables: dict[str, Any]) -> str:
    lines = ["| confidence level | lesions found | false positives / CT |", "|---|---|---|"]
    for point in tables["froc"]:
        lines.append(
            f"| {point['min_peak_probability']:g} | {point['found']}/{point['lesions']} | "
            f"{point['false_positives_per_ct']:.1f} |"
        )
    return "\n".join(lines)


def crops_tables(misses: dict[str, Any]) -> str:
    out = []
    for grouping, groups in misses["crops"]["test"]["by"].items():
        levels = [k for k in next(iter(groups.values())) if k.startswith("kept")]
        out.append(f"| {grouping} | nodules | " + " | ".join(levels) + " |")
        out.append("|---|---|" + "---|" * len(levels))
        for group, row in groups.items():
            out.append(f"| {group} | {row['nodules']} | " + " | ".join(f"{row[k] * 100:.0f} %" for k in levels) + " |")
        out.append("")
    return "\n".join(out)


def crop_variants_table(misses: dict[str, Any]) -> str:
    variants = misses.get("crop_variants", {})
    if not variants:
        return ""
    lines = ["| variant | nodules | found (p >= 0.5) | kept at 0.95 | same nodules as they are: found / kept at 0.95 |"]
    lines.append("|---|---|---|---|---|")
    for name, row in variants.items():
        lines.append(
            f"| {name} | {row['nodules']} | {row['kept at 0.5'] * 100:.0f} % | {row['kept at 0.95'] * 100:.0f} % | "
            f"{row['as is, kept at 0.5'] * 100:.0f} % / {row['as is, kept at 0.95'] * 100:.0f} % |"
        )
    return "\n".join(lines)


def whole_ct_variants_table(misses: dict[str, Any]) -> str:
    """Per whole-CT lesion and scan variant: the peak of its region (or its highest probability when none is drawn),
    and its lesion Dice at the outline threshold."""
    rows = misses.get("variants", [])
    lesions = variant_reference_lesions(rows)
    header = [f"{CASE_NAMES.get(case, case)} #{n}" for case, n in lesions]
    lines = ["| variant | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        cells = []
        for case, n in lesions:
            found = [
                (r, i)
                for r in rows
                if r["case"] == case and r["variant"] == variant
                for i in [variant_lesion_index(rows, r, n)]
                if i is not None
            ]
            if not found:
                cells.append("")
                continue
            row, index = found[0]
            peak = lesion_peak(row["lesions"][index])
            detected, dice = row["levels"]["0.5"]["detected"][index], row["levels"]["0.5"]["dice"][index]
            cells.append(f"{peak:.2f} / " + (f"{dice:.2f}" if detected else "missed"))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    tables = json.loads((ROOT / "scripts" / "data" / "operating_points.json").read_text())
    misses_path = ROOT / "scripts" / "data" / "miss_analysis.json"
    misses = json.loads(misses_path.read_text()) if misses_path.is_file() else {}
    print("## Presets\n\n" + presets_table(tables) + "\n")
    print("## Cases\n\n" + cases_table(tables) + "\n")
    print("## Lesions\n\n" + lesions_table(tables) + "\n")
    print("## FROC\n\n" + froc_table(tables) + "\n")
    if misses.get("crops"):
        print("## Crops\n\n" + crops_tables(misses))
    if misses.get("crop_variants"):
        print("## Crop variants\n\n" + crop_variants_table(misses) + "\n")
    if misses.get("variants"):
        print(
            "## Whole-CT variants (peak probability / lesion Dice at 0.5)\n\n" + whole_ct_variants_table(misses) + "\n"
        )


if __name__ == "__main__":
    main()
