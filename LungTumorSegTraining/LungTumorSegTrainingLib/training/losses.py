"""Segmentation losses for 2-channel softmax networks: DiceCE (default), DiceFocal and Top-K CE + Dice."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss, DiceFocalLoss, DiceLoss
from torch import nn

from LungTumorSegLib.core.errors import InputError


class TopKCrossEntropy(nn.Module):
    """Online bootstrapped cross-entropy: the mean over the hardest ``k`` percent of voxels.

    For two softmax channels the per-voxel cross-entropy is the binary cross-entropy of the tumour
    probability. The hardest voxels are taken over the whole batch (as nnU-Net's TopK loss does).

    Args:
        k_percent: percentage of voxels (largest losses) that contribute, in (0, 100].
    """

    def __init__(self, k_percent: float = 10.0) -> None:
        super().__init__()
        if not 0.0 < k_percent <= 100.0:
            raise ValueError(f"k_percent must be in (0, 100], got {k_percent}")
        self.k_percent = float(k_percent)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: logits (B, C, ...); target (B, 1, ...) or (B, ...) with class indices."""
        if target.ndim == logits.ndim:
            target = target[:, 0]
        voxel_loss = F.cross_entropy(logits.float(), target.long(), reduction="none").flatten()
        k = max(1, int(round(voxel_loss.numel() * self.k_percent / 100.0)))
        return voxel_loss.topk(k, sorted=False).values.mean()


class TopKDiceLoss(nn.Module):
    """Soft Dice (MONAI) plus the Top-K cross-entropy, equally weighted."""

    def __init__(self, k_percent: float = 10.0) -> None:
        super().__init__()
        self.dice = DiceLoss(to_onehot_y=True, softmax=True)
        self.topk = TopKCrossEntropy(k_percent)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: logits (B, 2, ...); target (B, 1, ...) with 0/1 labels."""
        return self.dice(logits, target) + self.topk(logits, target)


IGNORED_LOGIT = 20.0


def mask_ignored(logits: torch.Tensor, ignore: torch.Tensor | None) -> torch.Tensor:
    """Logits with ignored voxels set to a confident background answer (no loss, no gradient there).

    The labels are 0 in ignored voxels (``SplitIgnored``), so every loss sees a perfect prediction there:
    cross-entropy ~0 and nothing in Dice's overlap or sums, whatever the loss.

    Args:
        logits: (B, 2, ...) softmax logits.
        ignore: (B, 1, ...) mask, 1 where the voxel is ignored; None leaves the logits as they are.
    """
    if ignore is None or not bool(ignore.any()):
        return logits
    answer = torch.tensor([IGNORED_LOGIT, -IGNORED_LOGIT], dtype=logits.dtype, device=logits.device)
    answer = answer.view(1, 2, *([1] * (logits.ndim - 2)))
    return torch.where(ignore > 0.5, answer, logits)


def build_loss(name: str, topk_percent: float = 10.0) -> nn.Module:
    """The loss named on the command line: ``dicece``, ``dicefocal`` or ``topk``.

    Raises:
        InputError: unknown name.
    """
    if name == "dicece":
        return DiceCELoss(to_onehot_y=True, softmax=True)
    if name == "dicefocal":
        return DiceFocalLoss(to_onehot_y=True, softmax=True, gamma=2.0)
    if name == "topk":
        return TopKDiceLoss(topk_percent)
    raise InputError(f"unknown loss {name!r} (use dicece, dicefocal or topk)")
