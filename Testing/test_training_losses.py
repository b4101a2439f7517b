"""Losses: Top-K cross-entropy averages exactly the hardest k% voxels; Dice+TopK, DiceCE and DiceFocal train."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from LungTumorSegLib.core.errors import InputError
from LungTumorSegTrainingLib.training.losses import TopKCrossEntropy, TopKDiceLoss, build_loss


def random_case(seed: int = 0, shape=(2, 2, 6, 5, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=generator) * 3
    target = (torch.rand((shape[0], 1, *shape[2:]), generator=generator) > 0.7).float()
    return logits, target


@pytest.mark.parametrize("k_percent", [1.0, 10.0, 37.5, 100.0])
def test_topk_matches_a_manual_computation(k_percent):
    logits, target = random_case()
    # manual: binary cross-entropy of the softmax tumour probability, per voxel, over the whole batch
    log_p = torch.log_softmax(logits.double(), dim=1)
    y = target[:, 0].double()
    per_voxel = -(y * log_p[:, 1] + (1 - y) * log_p[:, 0]).flatten()
    k = max(1, round(per_voxel.numel() * k_percent / 100))
    manual = torch.sort(per_voxel, descending=True).values[:k].mean()
    assert float(TopKCrossEntropy(k_percent)(logits, target)) == pytest.approx(float(manual), rel=1e-6)
    if k_percent == 100.0:
        assert TopKCrossEntropy(100.0)(logits, target) == pytest.approx(float(F.cross_entropy(logits, y.long())))


def test_topk_gradient_reaches_only_the_hardest_voxels():
    logits, target = random_case(1)
    logits.requires_grad_(True)
    TopKCrossEntropy(10.0)(logits, target).backward()
    touched = logits.grad.abs().sum(dim=1).flatten() > 0
    per_voxel = F.cross_entropy(logits.detach(), target[:, 0].long(), reduction="none").flatten()
    hardest = torch.zeros_like(touched)
    hardest[per_voxel.topk(touched.sum().item()).indices] = True
    assert touched.sum().item() == round(per_voxel.numel() * 0.1)
    assert torch.equal(touched, hardest)


def test_topk_dice_is_dice_plus_topk():
    logits, target = random_case(2)
    combined = TopKDiceLoss(10.0)(logits, target)
    expected = DiceLoss(to_onehot_y=True, softmax=True)(logits, target) + TopKCrossEntropy(10.0)(logits, target)
    assert combined == pytest.approx(float(expected), rel=1e-6)


@pytest.mark.parametrize("name", ["dicece", "dicefocal", "topk"])
def test_losses_decrease_when_optimised(name):
    logits, target = random_case(3)
    logits = logits.clone().requires_grad_(True)
    loss_fn = build_loss(name)
    optimizer = torch.optim.Adam([logits], lr=0.3)
    first = None
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(logits, target)
        first = first if first is not None else float(loss.detach())
        loss.backward()
        optimizer.step()
    assert float(loss_fn(logits, target).detach()) < 0.5 * first


def test_unknown_loss_and_bad_k():
    with pytest.raises(InputError, match="unknown loss"):
        build_loss("mse")
    with pytest.raises(ValueError):
        TopKCrossEntropy(0.0)
