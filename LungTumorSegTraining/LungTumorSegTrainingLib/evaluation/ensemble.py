"""Ensemble weight and threshold search on the validation split.

Each member's probabilities are predicted once per validation case; then every weight vector on a
simplex grid (step 0.1 by default) and every threshold of a grid is scored by the mean Dice over
cases. Dice for all thresholds at once comes from counting voxels per threshold bin, so a candidate
costs one pass over the voxels.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from LungTumorSegLib.core.errors import InputError

from ..training.prediction import predict_probability

DEFAULT_THRESHOLDS = tuple(round(0.2 + 0.05 * i, 2) for i in range(13))  # 0.2 .. 0.8


@dataclass
class SearchResult:
    """The best ensemble found."""

    weights: list[float]
    threshold: float
    mean_dice: float
    equal_weights_dice: float
    member_dice: list[float]
    candidates: int
    table: list[dict[str, Any]] = field(default_factory=list)


def simplex_grid(members: int, step: float = 0.1) -> np.ndarray:
    """All weight vectors with entries in multiples of ``step`` summing to 1, shape (K, members)."""
    if members < 1:
        raise InputError("an ensemble needs at least one member")
    parts = int(round(1.0 / step))
    if parts < 1 or abs(parts * step - 1.0) > 1e-6:
        raise InputError(f"--step must divide 1 (e.g. 0.1, 0.125, 0.25), got {step}")
    rows = []
    for head in itertools.product(range(parts + 1), repeat=members - 1):
        if sum(head) <= parts:
            rows.append([c / parts for c in (*head, parts - sum(head))])
    return np.array(rows, dtype=np.float64)


def dice_by_threshold(probability: torch.Tensor, label: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Dice of ``probability > t`` against ``label`` for every ``t`` in ascending ``thresholds``.

    Same convention as LungTumorSegLib.measurements.metrics.dice: two empty masks score 1.
    """
    p = probability.reshape(-1).float()
    fg = label.reshape(-1).bool()
    # bins[v] = number of thresholds strictly below p[v], i.e. for how many thresholds voxel v is predicted
    bins = torch.bucketize(p, thresholds, right=False)
    n = thresholds.numel()
    predicted = torch.bincount(bins, minlength=n + 1).flip(0).cumsum(0).flip(0)[1:]
    hits = torch.bincount(bins[fg], minlength=n + 1).flip(0).cumsum(0).flip(0)[1:]
    gt = fg.sum()
    denominator = (predicted + gt).double()
    return torch.where(denominator > 0, 2.0 * hits.double() / denominator.clamp_min(1), torch.ones_like(denominator))


def search_weights(
    probabilities: Sequence[Sequence[torch.Tensor]],
    labels: Sequence[torch.Tensor],
    step: float = 0.1,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    progress: Callable[[int, int], None] | None = None,
) -> SearchResult:
    """Grid-search ensemble weights and threshold maximising the mean validation Dice.

    Args:
        probabilities: ``probabilities[m][c]``: member m's tumour probability for case c (any shape).
        labels: ground truth per case (same shapes).
        step: simplex grid step.
        thresholds: candidate thresholds.
        progress: called with (candidates done, total).

    Ties (within 1e-9) go to the more even weights, then to the threshold nearer 0.5.
    """
    n_members = len(probabilities)
    if n_members == 0 or not labels:
        raise InputError("ensemble search needs at least one member and one validation case")
    if any(len(member) != len(labels) for member in probabilities):
        raise InputError("every member needs a probability for every validation case")
    grid = simplex_grid(n_members, step)
    t = torch.tensor(sorted(float(v) for v in thresholds), dtype=torch.float32)

    def score(weights: np.ndarray) -> dict[str, Any]:
        scores = torch.zeros(t.numel(), dtype=torch.float64)
        for case, label in enumerate(labels):
            mixed = sum(float(w) * probabilities[m][case].float() for m, w in enumerate(weights) if w > 0)
            scores += dice_by_threshold(mixed, label, t)  # type: ignore[arg-type]
        scores /= len(labels)
        j = int(torch.argmax(scores))
        return {
            "weights": [float(w) for w in weights],
            "threshold": round(float(t[j]), 6),
            "mean_dice": float(scores[j]),
        }

    best: tuple[float, float, float] | None = None
    best_row: dict[str, Any] = {}
    table = []
    for index, weights in enumerate(grid):
        row = score(weights)
        table.append(row)
        key = (round(row["mean_dice"], 9), -float(np.max(weights) - np.min(weights)), -abs(row["threshold"] - 0.5))
        if best is None or key > best:
            best, best_row = key, row
        if progress:
            progress(index + 1, len(grid))
    equal = next((r for r in table if np.allclose(r["weights"], 1.0 / n_members)), None)
    equal = equal or score(np.full(n_members, 1.0 / n_members))
    member_dice = [
        max((r["mean_dice"] for r in table if r["weights"][m] == 1.0), default=float("nan")) for m in range(n_members)
    ]
    return SearchResult(
        weights=best_row["weights"],
        threshold=best_row["threshold"],
        mean_dice=best_row["mean_dice"],
        equal_weights_dice=equal["mean_dice"],
        member_dice=member_dice,
        candidates=len(grid),
        table=table,
    )


def predict_members(
    networks: Sequence[tuple[torch.nn.Module, Sequence[int], float]],
    items: Sequence[dict[str, Any]],
    device: torch.device,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[list[torch.Tensor]], list[torch.Tensor], list[str]]:
    """Predict every member once on every pre-processed validation item.

    Args:
        networks: (network, patch size, overlap) per member.
        items: pre-processed ``{"image", "label", "case"}`` dictionaries (validation transforms).
        device: where the networks run.
        progress: called with (predictions done, total).

    Returns:
        ``probabilities[m][c]`` (float16, CPU), boolean labels per case, and the case names.
    """
    probabilities: list[list[torch.Tensor]] = [[] for _ in networks]
    labels, names = [], []
    total, done = len(networks) * len(items), 0
    for index in range(len(items)):
        item = items[index]
        label = torch.as_tensor(item["label"]).as_subclass(torch.Tensor)
        labels.append((label[0] if label.ndim == 4 else label) > 0.5)
        names.append(str(item.get("case", len(names))))
        for m, (network, patch, overlap) in enumerate(networks):
            probability = predict_probability(network, item["image"], patch, overlap, device)
            probabilities[m].append(probability.half())
            done += 1
            if progress:
                progress(done, total)
    return probabilities, labels, names
