"""Voxel-wise uncertainty from ensemble/TTA probabilities (binary, in bits)."""

from __future__ import annotations

import torch

_EPS = 1e-7


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) = -p log2 p - (1-p) log2 (1-p), in bits: 0 where certain, 1 at p = 0.5."""
    p = p.clamp(_EPS, 1.0 - _EPS)
    return -(p * torch.log2(p) + (1.0 - p) * torch.log2(1.0 - p))


def mutual_information(mean_p: torch.Tensor, mean_entropy: torch.Tensor) -> torch.Tensor:
    """Epistemic part of the uncertainty: H(mean p) minus the mean of the samples' H (>= 0)."""
    return (binary_entropy(mean_p) - mean_entropy).clamp_min(0.0)
