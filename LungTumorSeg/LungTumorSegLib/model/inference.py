"""Ensemble x test-time-augmentation sliding-window inference with MONAI."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
from monai.data.utils import dense_patch_slices
from monai.inferers import sliding_window_inference
from torch import nn

from ..core.allocator import retained_heap
from .bundle import MemberSpec
from .uncertainty import binary_entropy, mutual_information

LOG = logging.getLogger("lungtumorseg")

# Flip sets over spatial dims of a (B, C, X, Y, Z) tensor, most informative first:
# none, left-right, anterior-posterior, both, then with superior-inferior.
ALL_FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (3,), (2, 3), (4,), (2, 4), (3, 4), (2, 3, 4))
PROGRESS_STEP = 0.02  # report a pass's progress every 2 % of its windows


def tta_flips(count: int) -> tuple[tuple[int, ...], ...]:
    """The first ``count`` flip sets (1 = no TTA, 2, 4 or 8)."""
    if count not in (1, 2, 4, 8):
        raise ValueError(f"TTA must be 1, 2, 4 or 8 flips, got {count}")
    return ALL_FLIPS[:count]


@dataclass
class InferenceSettings:
    """How to run the networks."""

    patch_size: tuple[int, int, int]
    overlap: float = 0.25
    flips: tuple[tuple[int, ...], ...] = ((),)
    sw_batch_size: int = 2
    device: torch.device = torch.device("cpu")
    amp: bool = True


@dataclass
class EnsembleOutput:
    """Mean probability and uncertainty maps on the model grid (X, Y, Z tensors, CPU)."""

    probability: torch.Tensor
    entropy: torch.Tensor
    mutual_information: torch.Tensor
    device_used: str


def foreground_probability(logits: torch.Tensor) -> torch.Tensor:
    """Tumour probability from logits: softmax channel 1 for 2 channels, sigmoid for 1."""
    if logits.shape[1] == 1:
        return torch.sigmoid(logits[:, 0])
    return torch.softmax(logits.float(), dim=1)[:, 1]


def predict_ensemble(
    image: torch.Tensor,
    members: Sequence[tuple[MemberSpec, nn.Module]],
    settings: InferenceSettings,
    progress: Callable[[float, str], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> EnsembleOutput:
    """Weighted mean tumour probability over members x flips, with entropy and mutual information.

    Args:
        image: (X, Y, Z) float tensor, already windowed/scaled for the models.
        members: (spec, network) pairs; ``spec.weight`` weights each member.
        settings: patch size, overlap, flips, device.
        progress: called with (fraction done, message) every few windows; passes count equally.
        warn: called with a message when falling back after CUDA out-of-memory.
    """
    total_weight = sum(spec.weight for spec, _ in members)
    passes = [(spec, net, flip) for spec, net in members for flip in settings.flips]
    mean_p = torch.zeros(image.shape, dtype=torch.float32)
    mean_h = torch.zeros(image.shape, dtype=torch.float32)
    batch = image[None, None].float()
    device_used = str(settings.device)
    with retained_heap():  # large CPU buffers are reused instead of re-faulted (see allocator.py)
        for index, (spec, network, flip) in enumerate(passes):
            weight = spec.weight / total_weight / len(settings.flips)
            x = torch.flip(batch, flip) if flip else batch
            member_settings = replace(settings, patch_size=spec.patch_size) if spec.patch_size else settings
            label = f"{spec.name} flip {settings.flips.index(flip) + 1}/{len(settings.flips)}"
            within = _pass_progress(progress, index, len(passes), label)
            logits, device_used = _run_with_fallback(network, x, member_settings, warn, within)
            p = foreground_probability(logits)[0]
            if flip:
                p = torch.flip(p, tuple(d - 2 for d in flip))
            mean_p.add_(p, alpha=weight)
            mean_h.add_(binary_entropy(p), alpha=weight)
            if progress:
                progress((index + 1) / len(passes), label)
    return EnsembleOutput(mean_p, binary_entropy(mean_p), mutual_information(mean_p, mean_h), device_used)


def window_count(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    """Windows MONAI's ``sliding_window_inference`` evaluates on an image of ``shape`` (after its padding)."""
    padded = [max(size, r) for size, r in zip(shape, roi)]
    interval = [r if r == size else max(1, int(r * (1 - overlap))) for size, r in zip(padded, roi)]
    return len(dense_patch_slices(padded, roi, interval))


def _pass_progress(
    progress: Callable[[float, str], None] | None, index: int, passes: int, label: str
) -> Callable[[float], None] | None:
    """Maps one pass's window fraction into the ensemble's progress; never goes back (OOM retries)."""
    if progress is None:
        return None
    reported = [0.0]

    def report(fraction: float) -> None:
        if fraction - reported[0] >= PROGRESS_STEP and fraction < 1.0:
            reported[0] = fraction
            progress((index + fraction) / passes, label)

    return report


class _CountingPredictor:
    """Calls the network and reports the fraction of the pass's windows done."""

    def __init__(self, network: nn.Module, total: int, report: Callable[[float], None]) -> None:
        self.network, self.total, self.report, self.done = network, max(1, total), report, 0

    def __call__(self, windows: torch.Tensor) -> torch.Tensor:
        logits = self.network(windows)
        self.done += windows.shape[0]
        self.report(min(1.0, self.done / self.total))
        return logits


def _run_with_fallback(
    network: nn.Module,
    x: torch.Tensor,
    settings: InferenceSettings,
    warn: Callable[[str], None] | None,
    report: Callable[[float], None] | None = None,
) -> tuple[torch.Tensor, str]:
    """Sliding-window logits; on CUDA out-of-memory retry smaller, then stitch on CPU, then all-CPU."""
    device = settings.device
    attempts = [(device, device, settings.sw_batch_size)]
    if device.type == "cuda":
        attempts += [
            (device, device, 1),
            (device, torch.device("cpu"), 1),
            (torch.device("cpu"), torch.device("cpu"), 1),
        ]
    for attempt, (net_device, stitch_device, sw_batch) in enumerate(attempts):
        try:
            predictor: Callable[[torch.Tensor], torch.Tensor] = network.to(net_device)
            if report is not None:
                total = window_count(x.shape[2:], settings.patch_size, settings.overlap)
                predictor = _CountingPredictor(predictor, total, report)
            return _sliding_window(predictor, x, settings, net_device, stitch_device, sw_batch), str(net_device)
        except torch.OutOfMemoryError:
            if attempt + 1 == len(attempts):
                raise
            torch.cuda.empty_cache()
            nxt = attempts[attempt + 1]
            message = (
                f"CUDA out of memory: retrying with sw_batch_size={nxt[2]}, network on {nxt[0]}, stitching on {nxt[1]}"
            )
            LOG.warning(message)
            if warn:
                warn(message)
    raise AssertionError("unreachable")


def _sliding_window(
    network: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    settings: InferenceSettings,
    net_device: torch.device,
    stitch_device: torch.device,
    sw_batch: int,
) -> torch.Tensor:
    use_amp = settings.amp and net_device.type == "cuda"
    with torch.inference_mode(), torch.autocast(device_type=net_device.type, enabled=use_amp):
        logits = sliding_window_inference(
            x.to(stitch_device),
            roi_size=settings.patch_size,
            sw_batch_size=sw_batch,
            predictor=network,
            overlap=settings.overlap,
            mode="gaussian",
            sw_device=net_device,
            device=stitch_device,
        )
    return logits.float().cpu()
