"""Full-volume sliding-window prediction on pre-processed cases, for validation and ensemble search.

Uses the inference engine's ``predict_ensemble`` (MONAI ``sliding_window_inference``, Gaussian blending)
so validation scores come from the same code that segments for users.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from LungTumorSegLib.measurements.metrics import dice
from LungTumorSegLib.model.bundle import MemberSpec
from LungTumorSegLib.model.inference import InferenceSettings, predict_ensemble


@dataclass
class CasePrediction:
    """One validation case on the model grid (RAS axes, cropped to the body)."""

    case: str
    image: np.ndarray
    label: np.ndarray
    probability: np.ndarray


def predict_probability(
    network: nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    overlap: float,
    device: torch.device,
    sw_batch_size: int = 2,
    amp: bool = True,
) -> torch.Tensor:
    """Tumour probability (X, Y, Z, CPU float32) of one pre-processed image.

    Args:
        network: a 2-channel softmax network (eval mode is set here).
        image: (1, X, Y, Z) or (X, Y, Z) image scaled to [0, 1].
        patch_size: sliding-window size.
        overlap: sliding-window overlap.
        device: where the network runs.
        sw_batch_size: windows per forward pass.
        amp: mixed precision on CUDA.
    """
    was_training = network.training
    network.eval()
    spec = MemberSpec(name="member", file="", architecture="", kwargs={}, weight=1.0, sha256="")
    settings = InferenceSettings(
        patch_size=tuple(int(s) for s in patch_size),  # type: ignore[arg-type]
        overlap=float(overlap),
        flips=((),),
        sw_batch_size=sw_batch_size,
        device=device,
        amp=amp,
    )
    volume = torch.as_tensor(image).float()
    volume = volume[0] if volume.ndim == 4 else volume
    output = predict_ensemble(volume.as_subclass(torch.Tensor), [(spec, network)], settings)
    network.train(was_training)
    return output.probability


def predict_cases(
    network: nn.Module,
    items: Iterable[dict[str, Any]],
    patch_size: Sequence[int],
    overlap: float,
    device: torch.device,
    keep_image: bool = True,
) -> Iterator[CasePrediction]:
    """Yield the probability of each pre-processed item (``{"image", "label", "case"}`` dictionaries).

    A generator, so callers that only score can drop each case before the next one is predicted.
    """
    for index, item in enumerate(items):
        probability = predict_probability(network, item["image"], patch_size, overlap, device)
        yield CasePrediction(
            case=str(item.get("case", index)),
            image=_array(item["image"]) if keep_image else np.zeros((0, 0, 0), np.float32),
            label=_array(item["label"]) > 0.5,
            probability=probability.numpy(),
        )


def mean_dice(predictions: Sequence[CasePrediction], threshold: float = 0.5) -> tuple[float, dict[str, float]]:
    """Mean and per-case Dice (LungTumorSegLib.measurements.metrics.dice) of ``probability > threshold``."""
    per_case = {p.case: dice(p.probability > threshold, p.label) for p in predictions}
    return (float(np.mean(list(per_case.values()))) if per_case else float("nan")), per_case


def _array(tensor: Any) -> np.ndarray:
    array = torch.as_tensor(tensor).as_subclass(torch.Tensor).detach().cpu().numpy()
    return array[0] if array.ndim == 4 else array
