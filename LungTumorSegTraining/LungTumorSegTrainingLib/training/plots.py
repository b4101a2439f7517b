"""PNG pictures of a run: loss/Dice curves and a validation overlay (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from LungTumorSegLib.model.uncertainty import binary_entropy  # noqa: E402


def save_curves(history: list[dict[str, Any]], path: Path) -> Path:
    """Training loss and validation Dice against the epoch, side by side."""
    epochs = [row["epoch"] for row in history]
    losses = [row["train_loss"] for row in history]
    val = [(row["epoch"], row["val_dice"]) for row in history if row.get("val_dice") is not None]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    left.plot(epochs, losses, color="tab:blue", marker="." if len(epochs) < 50 else None)
    left.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    left.grid(alpha=0.3)
    if val:
        right.plot([e for e, _ in val], [d for _, d in val], color="tab:green", marker="o", markersize=3)
        best_epoch, best = max(val, key=lambda item: item[1])
        right.axhline(best, color="tab:gray", linestyle="--", linewidth=0.8)
        right.set_title(f"Validation Dice (best {best:.3f} at epoch {best_epoch})")
    else:
        right.set_title("Validation Dice (none yet)")
    right.set(xlabel="epoch", ylabel="mean Dice", ylim=(0, 1))
    right.grid(alpha=0.3)
    for axis in (left, right):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    return _save(figure, path)


def save_overlay(
    image: np.ndarray, label: np.ndarray, probability: np.ndarray, path: Path, title: str = "", threshold: float = 0.5
) -> Path:
    """Image, label, prediction and entropy on the axial slice with the largest tumour area.

    Args:
        image: (X, Y, Z) image scaled to [0, 1] (RAS axes, Z superior).
        label: (X, Y, Z) ground truth.
        probability: (X, Y, Z) tumour probability.
        path: PNG to write.
        title: figure title (case name, epoch).
        threshold: probability threshold for the prediction panel.
    """
    area = (label > 0.5).sum(axis=(0, 1))
    z = int(np.argmax(area)) if area.max() > 0 else int(np.argmax((probability > threshold).sum(axis=(0, 1))))
    entropy = binary_entropy(torch.as_tensor(probability[:, :, z], dtype=torch.float32)).numpy()
    panels = [
        ("image", image[:, :, z], "gray", None),
        ("label", label[:, :, z], None, "tab:green"),
        (f"prediction (p > {threshold:g})", probability[:, :, z] > threshold, None, "tab:red"),
        ("entropy (bits)", entropy, "magma", None),
    ]
    figure, axes = plt.subplots(1, 4, figsize=(13, 3.6), dpi=100)
    for axis, (name, data, cmap, colour) in zip(axes, panels):
        # RAS arrays: show X left-to-right flipped to radiological convention, Y (anterior) up.
        if colour is None:
            shown = axis.imshow(np.asarray(data, dtype=np.float32).T[::-1, ::-1], cmap=cmap, vmin=0, vmax=1)
            if name.startswith("entropy"):
                figure.colorbar(shown, ax=axis, fraction=0.046, pad=0.04)
        else:
            axis.imshow(image[:, :, z].T[::-1, ::-1], cmap="gray", vmin=0, vmax=1)
            mask = np.ma.masked_where(~(np.asarray(data) > 0.5).T[::-1, ::-1], np.ones(data.shape).T)
            axis.imshow(mask, cmap=matplotlib.colors.ListedColormap([colour]), alpha=0.6, vmin=0, vmax=1)
        axis.set_title(name)
        axis.axis("off")
    figure.suptitle(f"{title}  (axial slice {z})" if title else f"axial slice {z}")
    figure.tight_layout()
    return _save(figure, path)


def save_lesion_panels(
    ct: Any, reference: Any, result: Any, path: Path, row: dict[str, Any], max_panels: int = 4
) -> Path:
    """One axial panel per reference lesion (its largest slice) and for the largest false positive.

    CT in the lung window, the reference outline in red, the predicted lesions in green and the tumour
    probability (>= 0.1) as a heat map; each panel is a 100 mm square around the lesion.

    Args:
        ct: the CT Volume (HU); ``reference``: a whole_ct.Reference; ``result``: the SegmentationResult.
        path: PNG to write.
        row: the case's scores (``whole_ct.score_case``), for the titles.
    """
    from scipy import ndimage

    from LungTumorSegLib.measurements.lesion_measurements import axial_voxel_axis
    from LungTumorSegLib.reporting.overlay import radiological_slice

    labels, count = ndimage.label(reference.tumour, structure=np.ones((3, 3, 3), bool))
    targets = [(f"lesion {i}: Dice {row['lesions'][i - 1]['dice']:.2f}", labels == i) for i in range(1, count + 1)]
    pred = result.label.array > 0
    fp_labels, fp_count = ndimage.label(
        pred & ~ndimage.binary_dilation(reference.tumour | reference.ignore | reference.other_tumour, iterations=1),
        structure=np.ones((3, 3, 3), bool),
    )
    if fp_count:
        sizes = np.bincount(fp_labels.ravel())[1:]
        targets.append(
            (
                f"largest false positive ({sizes.max() * reference.voxel_ml:.2f} ml)",
                fp_labels == int(np.argmax(sizes)) + 1,
            )
        )
    targets = targets[:max_panels]
    figure, axes = plt.subplots(1, len(targets), figsize=(4.2 * len(targets), 4.6), dpi=100, squeeze=False)
    volume = result.label
    axial = axial_voxel_axis(volume.affine)
    for axis, (title, mask) in zip(axes[0], targets):
        counts = mask.sum(axis=tuple(a for a in range(3) if a != axial))
        index = int(np.argmax(counts))
        views = [
            radiological_slice(v, index)
            for v in (ct, volume.with_array(reference.tumour.astype(np.uint8)), volume, result.probability)
        ]
        extent = views[0].extent
        axis.imshow(views[0].image, cmap="gray", vmin=-1350, vmax=150, extent=extent)
        axis.imshow(np.ma.masked_less(views[3].image, 0.1), cmap="inferno", vmin=0, vmax=1, alpha=0.45, extent=extent)
        for image, colour in ((views[1].image, "red"), (views[2].image, "lime")):
            if (image > 0).any():
                axis.contour(image > 0, levels=[0.5], colors=colour, extent=extent, origin="upper", linewidths=1.2)
        centre = views[0].to_display(volume.voxel_to_ras(np.argwhere(mask).mean(axis=0)))[0]
        axis.set_xlim(centre[0] - 50, centre[0] + 50)
        axis.set_ylim(centre[1] + 50, centre[1] - 50)
        axis.set_title(title, fontsize=9)
        axis.axis("off")
    figure.suptitle(
        f"{row['case']} ({row.get('fold', '')}): {row['detected']}/{row['reference_lesions']} found, "
        f"{row['false_positives']} FP; reference red, prediction green, p >= 0.1 heat",
        fontsize=9,
    )
    figure.tight_layout()
    return _save(figure, path)


def save_froc(points: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Lesion sensitivity against false positives per CT over the probability threshold."""
    figure, axis = plt.subplots(figsize=(5, 4), dpi=100)
    fps = [p["false_positives_per_ct"] for p in points]
    sens = [p["sensitivity"] for p in points]
    axis.plot(fps, sens, marker="o", color="tab:blue")
    for p in points:
        axis.annotate(
            f"{p['threshold']:g}",
            (p["false_positives_per_ct"], p["sensitivity"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, -8),
        )
    axis.set(
        xlabel="false positives (>= 0.1 ml) per CT",
        ylabel="lesion sensitivity",
        ylim=(0, 1.05),
        title=f"FROC over the threshold{': ' + title if title else ''}",
    )
    axis.set_xlim(left=0)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    try:
        figure.savefig(tmp)
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        if tmp.exists():
            tmp.unlink()
    return path
