"""Pictures of the operating points: the FROC with each preset on it, and the lesions a preset loses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from LungTumorSegLib.core.volume import Volume

from ..training.plots import _save, plt

PRESET_COLOURS = {"high": "tab:red", "balanced": "tab:orange", "specific": "tab:green"}


def save_preset_froc(froc: Sequence[dict[str, Any]], presets: dict[str, Any], path: Path, title: str = "") -> Path:
    """Sensitivity against false positives per CT over the confidence level (cross-validated whole CTs), with each
    preset's nested cross-validated point (filled: lesions reported; hollow: with its listed candidates, the false
    candidates counted as false positives) and its 95 % bootstrap interval over cases."""
    figure, axis = plt.subplots(figsize=(6.4, 4.6), dpi=100)
    axis.plot(
        [p["false_positives_per_ct"] for p in froc],
        [p["sensitivity"] for p in froc],
        marker="o",
        color="tab:blue",
        label="confidence level (all folds)",
    )
    for point in froc:
        axis.annotate(
            f"{point['min_peak_probability']:g}",
            (point["false_positives_per_ct"], point["sensitivity"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, -9),
        )
    for name, preset in presets.items():
        summary, colour = preset["cross_validated"]["summary"], PRESET_COLOURS.get(name, "black")
        x, y = summary["false_positives_per_ct"], summary["sensitivity"]
        low, high = summary["ci95"]["sensitivity"] or (y, y)
        fp_low, fp_high = summary["ci95"]["false_positives_per_ct"] or (x, x)
        axis.errorbar(
            x,
            y,
            yerr=[[y - low], [high - y]],
            xerr=[[x - fp_low], [fp_high - x]],
            fmt="s",
            color=colour,
            markersize=8,
            capsize=3,
            alpha=0.9,
            label=f"{name} (level {preset['min_peak_probability']:g}): {summary['found']}/{summary['lesions']}, "
            f"{x:.1f} FP/CT",
        )
        if preset["max_candidates"]:
            xc = x + summary["false_candidates_per_ct"]
            yc = summary["sensitivity_with_candidates"]
            axis.plot([x, xc], [y, yc], color=colour, linestyle=":", linewidth=1)
            axis.plot(
                xc,
                yc,
                "s",
                markerfacecolor="none",
                color=colour,
                markersize=8,
                label=f"{name} + candidates: {summary['found_with_candidates']}/{summary['lesions']}, "
                f"+{summary['false_candidates_per_ct']:.1f} false candidates/CT",
            )
    axis.set(
        xlabel="false positives (>= 0.1 ml) per CT",
        ylabel="lesion sensitivity",
        ylim=(0, 1.05),
        title=f"Sensitivity presets, cross-validated{': ' + title if title else ''}",
    )
    axis.set_xlim(left=0)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return _save(figure, path)


def save_lost_lesions(panels: Sequence[dict[str, Any]], path: Path, columns: int = 3) -> Path:
    """One axial panel per lesion (its largest slice, 80 mm square): CT in the lung window, the model's probability
    as a heat map (>= 0.01), the reference outline (red) and the outline threshold (white contour at 0.5).

    Args:
        panels: ``{"ct": Volume, "probability": Volume, "mask": bool array, "title": str}`` per lesion.
    """
    from LungTumorSegLib.measurements.lesion_measurements import axial_voxel_axis
    from LungTumorSegLib.reporting.overlay import radiological_slice

    if not panels:
        raise ValueError("no lesion to show")
    rows = max(1, -(-len(panels) // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.4 * columns, 4.9 * rows), dpi=100, squeeze=False)
    for axis in axes.ravel():
        axis.axis("off")
    for axis, panel in zip(axes.ravel(), panels):
        ct, probability, mask = panel["ct"], panel["probability"], panel["mask"]
        axial = axial_voxel_axis(ct.affine)
        index = int(np.argmax(mask.sum(axis=tuple(a for a in range(3) if a != axial))))
        views = [radiological_slice(v, index) for v in (ct, probability, Volume(mask.astype(np.uint8), ct.affine))]
        extent = views[0].extent
        axis.imshow(views[0].image, cmap="gray", vmin=-1350, vmax=150, extent=extent)
        heat = axis.imshow(
            np.ma.masked_less(views[1].image, 0.01), cmap="inferno", vmin=0, vmax=1, alpha=0.5, extent=extent
        )
        axis.contour(views[2].image > 0, levels=[0.5], colors="red", extent=extent, origin="upper", linewidths=1.2)
        if (views[1].image >= 0.5).any():
            axis.contour(views[1].image >= 0.5, levels=[0.5], colors="white", extent=extent, origin="upper")
        centre = views[0].to_display(ct.voxel_to_ras(np.argwhere(mask).mean(axis=0)))[0]
        axis.set_xlim(centre[0] - 40, centre[0] + 40)
        axis.set_ylim(centre[1] + 40, centre[1] - 40)
        axis.set_title(panel["title"], fontsize=8)
    figure.colorbar(heat, ax=axes.ravel().tolist(), fraction=0.02, pad=0.01, label="tumour probability")
    return _save(figure, path)


def save_crop_peaks(
    nodules: Sequence[dict[str, Any]], groupings: dict[str, Sequence[str]], levels: dict[str, float], path: Path
) -> Path:
    """Each nodule's peak probability (of its region at the outline threshold; 0 when none) in groups (e.g. the
    readers' texture, the crop's slice spacing), with the presets' confidence levels as lines: the dots below a line
    are the nodules that preset does not report.

    Args:
        nodules: rows with ``peak_at_threshold`` and one field per grouping.
        groupings: field -> its groups in display order.
    """
    figure, axes = plt.subplots(1, len(groupings), figsize=(5 * len(groupings), 4.2), dpi=100, sharey=True)
    axes = np.atleast_1d(axes)
    rng = np.random.default_rng(0)
    for axis, (key, names) in zip(axes, groupings.items()):
        for index, name in enumerate(names):
            peaks = np.array([row["peak_at_threshold"] for row in nodules if row[key] == name])
            if not len(peaks):
                continue
            x = index + rng.uniform(-0.25, 0.25, len(peaks))
            axis.scatter(x, np.clip(peaks, 1e-3, 0.9999), s=9, alpha=0.6, color="tab:blue")
            axis.annotate(f"n={len(peaks)}", (index, 0.9999), textcoords="offset points", xytext=(-10, 4), fontsize=7)
        for preset, level in levels.items():
            axis.axhline(level, color=PRESET_COLOURS.get(preset, "black"), linestyle="--", linewidth=1, label=preset)
        axis.set_xticks(range(len(names)), names, fontsize=8)
        axis.set_yscale("logit")
        axis.set_ylim(1e-3, 0.9999)
        ticks = (0.001, 0.01, 0.1, 0.5, 0.9, 0.95, 0.99, 0.999, 0.9999)
        axis.set_yticks(ticks, ["none" if t == 0.001 else f"{t:g}" for t in ticks])
        axis.minorticks_off()
        axis.set_xlabel(key)
        axis.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("peak probability of the nodule's region")
    axes[0].legend(fontsize=7, loc="lower left", title="confidence level", title_fontsize=7)
    figure.suptitle(f"{len(nodules)} LIDC nodules of held-out test patients, shipped model", fontsize=10)
    figure.tight_layout()
    return _save(figure, path)


def variant_reference_lesions(rows: Sequence[dict[str, Any]]) -> list[tuple[str, int]]:
    """(case, lesion) of every reference lesion, numbered as in the case's uncut variants."""
    return sorted({(r["case"], f["lesion"]) for r in rows if r["around_lesion"] is None for f in r["lesions"]})


def lesion_peak(facts: dict[str, Any]) -> float:
    """The peak of the lesion's region at the outline threshold; its highest probability when none is drawn."""
    return max((region["peak"] for region in facts["regions_at_threshold"]), default=facts["max_probability"])


def variant_lesion_index(rows: Sequence[dict[str, Any]], row: dict[str, Any], lesion: int) -> int | None:
    """Index in ``row["lesions"]`` of reference lesion ``lesion`` (numbered as in the case "as is").

    A variant cut around one lesion (``around_lesion``) numbers the lesions left in its image anew, so the lesion is
    the one whose volume is nearest its volume as is (the cuts keep it whole)."""
    if row["around_lesion"] is None:
        return next((i for i, f in enumerate(row["lesions"]) if f["lesion"] == lesion), None)
    if row["around_lesion"] != lesion or not row["lesions"]:
        return None
    as_is = next((r for r in rows if r["case"] == row["case"] and r["around_lesion"] is None), None)
    if as_is is None:
        return None
    volume = next(f["volume_ml"] for f in as_is["lesions"] if f["lesion"] == lesion)
    return int(np.argmin([abs(f["volume_ml"] - volume) for f in row["lesions"]]))


def save_variant_grid(rows: Sequence[dict[str, Any]], variants: Sequence[str], path: Path, level: float) -> Path:
    """Reference lesions (rows) × scan variants (columns): the peak probability of the lesion's region at the outline
    threshold (colour; its highest probability when no region is drawn), and whether a confidence level of
    ``level`` reports it (bold number) or not (grey)."""
    lesions = variant_reference_lesions(rows)
    values = np.full((len(lesions), len(variants)), np.nan)
    for row in rows:
        if row["variant"] not in variants:
            continue
        for line, (case, lesion) in enumerate(lesions):
            index = variant_lesion_index(rows, row, lesion) if case == row["case"] else None
            if index is None:
                continue
            values[line, list(variants).index(row["variant"])] = lesion_peak(row["lesions"][index])
    figure, axis = plt.subplots(figsize=(1.0 + 0.95 * len(variants), 0.9 + 0.42 * len(lesions)), dpi=100)
    shown = axis.imshow(values, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(values):
        if np.isfinite(value):
            axis.text(
                j,
                i,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                fontweight="bold" if value >= level else "normal",
                color="black" if value >= level else "dimgray",
            )
    axis.set_xticks(range(len(variants)), variants, rotation=35, ha="right", fontsize=8)
    axis.set_yticks(range(len(lesions)), [f"{case} #{lesion}" for case, lesion in lesions], fontsize=8)
    figure.colorbar(shown, ax=axis, fraction=0.03, pad=0.01, label="peak probability of the lesion's region")
    axis.set_title(f"Scan variants, cross-validated models (bold: reported at confidence level {level:g})", fontsize=9)
    figure.tight_layout()
    return _save(figure, path)
