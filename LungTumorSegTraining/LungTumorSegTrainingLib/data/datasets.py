"""Datasets and loaders: CacheDataset / PersistentDataset, and a deterministic data order per epoch.

Every epoch's loader is built from seeds derived from ``(seed, epoch, rank)`` only, so a resumed run sees
exactly the batches (and augmentations) the uninterrupted run would have seen.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset
from torch.utils.data import Subset
from torch.utils.data.distributed import DistributedSampler

from LungTumorSegLib.core.errors import InputError, LungTumorSegError

from ..config import TrainConfig


def make_dataset(
    cases: Sequence[dict[str, Any]], transform: Callable, cfg: TrainConfig, cache_dir: Path, progress: bool = False
) -> Dataset:
    """A MONAI dataset caching the deterministic transforms as ``cfg.cache`` says.

    Args:
        cases: data-list entries.
        transform: the transform chain.
        cfg: ``cache`` (memory, disk, none), ``cache_rate``, ``num_workers``.
        cache_dir: folder for ``disk`` caching (PersistentDataset) when ``cfg.cache_dir`` is empty.
        progress: show MONAI's caching bar.
    """
    try:
        if cfg.cache == "memory":
            # copy_cache=False: the random transforms never modify a cached item in place (crops, flips and
            # intensity changes make new tensors), and deep-copying a whole CT for every draw would dominate
            return CacheDataset(
                list(cases),
                transform,
                cache_rate=float(cfg.cache_rate),
                num_workers=max(1, int(cfg.num_workers)),
                progress=progress,
                copy_cache=False,
            )
        if cfg.cache == "disk":
            folder = Path(cfg.cache_dir) if cfg.cache_dir else cache_dir
            folder.mkdir(parents=True, exist_ok=True)
            return PersistentDataset(list(cases), transform, cache_dir=folder)
        return Dataset(list(cases), transform)
    except Exception as exc:
        raise unwrap_transform_error(exc) from exc


def is_context_case(name: str, cfg: TrainConfig) -> bool:
    """True for whole-CT (context) cases: their names match ``cfg.context_cases``."""
    return bool(cfg.context_cases) and re.search(cfg.context_cases, name) is not None


def context_weighted(dataset: Dataset, cases: Sequence[dict[str, Any]], cfg: TrainConfig) -> Dataset:
    """``dataset`` with context cases repeated so they make up about ``cfg.context_share`` of each pass.

    The repeats are indices into the same (cached) dataset, so nothing is cached twice.
    """
    if not cfg.context_share:
        return dataset
    context = [i for i, case in enumerate(cases) if is_context_case(case["case"], cfg)]
    others = len(cases) - len(context)
    if not context:
        raise InputError(f"--context-cases {cfg.context_cases!r} matches no training case")
    repeats = max(1, round(cfg.context_share * max(others, 1) / ((1.0 - cfg.context_share) * len(context))))
    is_context = set(context)
    indices = [i for i in range(len(cases)) if i not in is_context] + [i for i in context for _ in range(repeats)]
    return Subset(dataset, sorted(indices))


def epoch_seed(seed: int, epoch: int, repeat: int = 0, rank: int = 0) -> int:
    """Seed of one pass over the training data: a function of the run seed, epoch, pass and rank only."""
    return (int(seed) * 1_000_003 + int(epoch) * 10_007 + int(repeat) * 101 + int(rank) * 7_919) % (2**63 - 1)


def train_loader(
    dataset: Dataset, cfg: TrainConfig, epoch: int, repeat: int, rank: int, world_size: int, pin_memory: bool
) -> DataLoader:
    """The loader for one pass: shuffled by a DistributedSampler (also with one process) and seeded generator."""
    sampler = DistributedSampler(
        dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=int(cfg.seed), drop_last=False
    )
    sampler.set_epoch(epoch * 1000 + repeat)
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(cfg.seed, epoch, repeat, rank))
    return DataLoader(
        dataset,
        batch_size=int(cfg.batch_size),
        sampler=sampler,
        num_workers=int(cfg.num_workers),
        generator=generator,
        pin_memory=pin_memory,
    )


def batches_per_pass(n_cases: int, batch_size: int, world_size: int) -> int:
    """Batches one rank draws in one pass over ``n_cases`` (DistributedSampler pads to equal shares)."""
    per_rank = -(-n_cases // world_size)
    return -(-per_rank // batch_size)


def unwrap_transform_error(exc: BaseException) -> BaseException:
    """The LungTumorSegError inside MONAI's "applying transform" wrappers, or a readable InputError."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, LungTumorSegError):
            return cause
        cause = cause.__cause__ or cause.__context__
    innermost = exc
    while innermost.__cause__ is not None:
        innermost = innermost.__cause__
    if isinstance(innermost, (OSError, ValueError, RuntimeError)) and innermost is not exc:
        return InputError(f"cannot load the training data: {type(innermost).__name__}: {innermost}")
    return exc
