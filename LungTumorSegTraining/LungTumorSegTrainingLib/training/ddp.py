"""Distributed data parallel training through ``torchrun`` (NCCL on GPUs, gloo on CPU).

``torchrun`` starts one process per GPU (or per CPU worker) and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; multi-node runs use its rendezvous
(``--nnodes``, ``--rdzv-backend c10d``, ``--rdzv-endpoint host:port``). Without those variables
training runs in one process and every helper here is a no-op.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from LungTumorSegLib.core.device import resolve_device
from LungTumorSegLib.core.errors import InputError


@dataclass
class DistContext:
    """Where this process stands in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str = ""

    @property
    def enabled(self) -> bool:
        """True inside a multi-process job."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only rank that logs and writes files."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) set ``WORLD_SIZE`` and ``RANK``."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistContext:
    """Join the process group when launched by torchrun, else describe a single process.

    Args:
        device: ``auto``, ``cpu``, ``cuda``; with CUDA each process takes GPU ``LOCAL_RANK``.
        timeout_minutes: collective timeout (validation on rank-sharded cases must finish within it).

    Raises:
        InputError: CUDA requested but absent, or fewer GPUs than local processes.
    """
    base = resolve_device(device)
    if not launched_by_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistContext(device=base)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if base.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise InputError(
                f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                "use --nproc-per-node <= number of GPUs"
            )
        torch.cuda.set_device(local_rank)
        base, backend = torch.device("cuda", local_rank), "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(minutes=timeout_minutes))
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=base, backend=backend)


def wrap_model(model: nn.Module, ctx: DistContext) -> nn.Module:
    """DistributedDataParallel around ``model`` in a multi-process job (gradients all-reduced per step)."""
    if not ctx.enabled:
        return model
    if ctx.device.type == "cuda":
        return DistributedDataParallel(model, device_ids=[ctx.local_rank], output_device=ctx.local_rank)
    return DistributedDataParallel(model)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain network inside a DDP wrapper."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def barrier(ctx: DistContext) -> None:
    """Wait for every rank."""
    if ctx.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if not ctx.enabled:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=_collective_device(ctx))
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.cpu().tolist()


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True if ``flag`` is true on any rank (all ranks agree on the answer)."""
    if not ctx.enabled:
        return bool(flag)
    return all_reduce_sum([1.0 if flag else 0.0], ctx)[0] > 0


def broadcast_object(value: object, ctx: DistContext) -> object:
    """Rank 0's ``value`` on every rank."""
    if not ctx.enabled:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def gather_objects(value: object, ctx: DistContext) -> list[object]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ctx.enabled:
        return [value]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out


def parameter_digest(model: nn.Module) -> str:
    """sha256 of all parameters and buffers (names and bytes): equal on every rank after synchronised steps."""
    digest = hashlib.sha256()
    for name, tensor in sorted(unwrap_model(model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


def cleanup(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def _collective_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.backend == "nccl" else torch.device("cpu")
