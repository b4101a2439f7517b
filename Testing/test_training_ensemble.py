"""Ensemble search: Dice for all thresholds at once equals metrics.dice; the weight search finds the better
member on a constructed case and a useful threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.measurements.metrics import dice
from LungTumorSegTrainingLib.evaluation.ensemble import dice_by_threshold, search_weights, simplex_grid


def test_simplex_grid():
    for members, count in ((1, 1), (2, 11), (3, 66), (4, 286)):
        grid = simplex_grid(members, 0.1)
        assert grid.shape == (count, members)
        assert np.allclose(grid.sum(axis=1), 1.0) and (grid >= 0).all()
        assert len({tuple(np.round(row, 6)) for row in grid}) == count
    assert simplex_grid(2, 0.25).tolist()[0] == [0.0, 1.0]
    with pytest.raises(InputError, match="must divide 1"):
        simplex_grid(2, 0.3)


def test_dice_by_threshold_matches_metrics_dice():
    generator = torch.Generator().manual_seed(0)
    probability = torch.rand(20, 18, 9, generator=generator)
    label = torch.rand(20, 18, 9, generator=generator) > 0.6
    thresholds = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.95])
    fast = dice_by_threshold(probability, label, thresholds)
    for value, t in zip(fast.tolist(), thresholds.tolist()):
        assert value == pytest.approx(dice((probability > t).numpy(), label.numpy()), abs=1e-12)
    empty = torch.zeros(4, 4, 4, dtype=torch.bool)
    assert dice_by_threshold(torch.zeros(4, 4, 4), empty, thresholds).tolist() == [1.0] * 5


def blobs(seed: int, cases: int = 4, shape=(24, 24, 12)) -> list[torch.Tensor]:
    generator = np.random.default_rng(seed)
    out = []
    for _ in range(cases):
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
        centre, radius = generator.uniform(6, 18, 3) * [1, 1, 0.5], generator.uniform(3, 6)
        out.append(torch.from_numpy(np.linalg.norm((grid - centre) / [1, 1, 0.5], axis=-1) <= radius))
    return out


def test_search_finds_the_better_member_and_threshold():
    labels = blobs(0)
    generator = torch.Generator().manual_seed(1)
    # good member: right shape, under-confident (best threshold well below 0.5); bad member: noise
    good = [0.1 + 0.3 * lab.float() + 0.05 * torch.rand(lab.shape, generator=generator) for lab in labels]
    bad = [torch.rand(lab.shape, generator=generator) for lab in labels]
    result = search_weights([bad, good], labels, step=0.1)
    assert result.weights[1] >= 0.9 and result.mean_dice > 0.99
    assert result.threshold < 0.5
    assert result.member_dice[1] > 0.99 and result.member_dice[0] < 0.6
    assert result.equal_weights_dice < result.mean_dice
    assert result.candidates == 11 and len(result.table) == 11


def test_search_prefers_even_weights_on_ties_and_checks_inputs():
    labels = blobs(2, cases=2)
    same = [lab.float() * 0.8 + 0.1 for lab in labels]
    result = search_weights([same, same, same], labels, step=0.1)
    assert sorted(result.weights) == pytest.approx([0.3, 0.3, 0.4])
    with pytest.raises(InputError, match="every member"):
        search_weights([same, same[:1]], labels)
