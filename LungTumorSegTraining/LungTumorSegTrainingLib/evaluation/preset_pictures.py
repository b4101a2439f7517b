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
