"""Benchmark: training throughput (patches/s for forward + backward + optimizer step) of UNet and SwinUNETR.

Uses the training engine's own pieces (network sizes from TrainConfig defaults, DiceCE loss, AdamW,
``trainer.training_step`` with AMP on CUDA and gradient clipping) on random patches of the default
patch size, so data loading is excluded. Reports the best of ``--steps`` timed steps after ``--warmup``
untimed ones, on the CPU and, when present, on CUDA. On the CPU each architecture runs twice, with
glibc's allocator defaults and inside ``allocator.retained_heap`` (what the trainer uses), and the
ratio of the two is reported.

    python Testing/benchmarks/bench_training.py [--archs UNet SwinUNETR] [--patch-size 96 96 64]
        [--patches 4] [--steps 3] [--warmup 1] [--devices cpu cuda] [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import nullcontext

import torch

from LungTumorSegLib.core.allocator import retained_heap
from LungTumorSegLib.model.networks import build_network
from LungTumorSegTrainingLib.config import TrainConfig
from LungTumorSegTrainingLib.training.losses import build_loss
from LungTumorSegTrainingLib.training.trainer import training_step


def bench(arch: str, patch: list[int], patches: int, steps: int, warmup: int, device: torch.device) -> dict:
    """Time training steps of one architecture on one device."""
    cfg = TrainConfig(arch=arch, patch_size=patch)
    cfg.validate()
    torch.manual_seed(0)
    network = build_network(arch, cfg.network_kwargs()).to(device).train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = build_loss(cfg.loss)
    image = torch.rand(patches, 1, *patch, device=device)
    label = (torch.rand(patches, 1, *patch, device=device) > 0.9).float()
    times = []
    for index in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        tick = time.perf_counter()
        training_step(network, image, label, optimizer, scaler, loss_fn, cfg.grad_clip, amp)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - tick)
    best = min(times)
    result = {
        "arch": arch,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "amp": amp,
        "patch_size": patch,
        "patches_per_step": patches,
        "parameters_m": round(sum(p.numel() for p in network.parameters()) / 1e6, 2),
        "best_step_s": round(best, 4),
        "patches_per_s": round(patches / best, 3),
    }
    if device.type == "cuda":
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 1024**3, 2)
        torch.cuda.reset_peak_memory_stats(device)
    return result


def main() -> None:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["UNet", "SwinUNETR"])
    parser.add_argument("--patch-size", type=int, nargs=3, default=defaults.patch_size)
    parser.add_argument("--patches", type=int, default=defaults.batch_size * defaults.samples_per_case)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"], help="cuda is skipped when absent")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: torch's)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for name in args.devices:
        if name.startswith("cuda") and not torch.cuda.is_available():
            print(f"{name}: not available, skipped")
            continue
        device = torch.device(name)
        for arch in args.archs:
            heaps = ("glibc defaults", "retained heap") if device.type == "cpu" else ("retained heap",)
            for heap in heaps:
                with retained_heap() if heap == "retained heap" else nullcontext():
                    result = bench(arch, list(args.patch_size), args.patches, args.steps, args.warmup, device)
                result["heap"] = heap
                results.append(result)
                print(
                    f"{arch:10s} {result['device']:>24s} {heap:>15s}  "
                    f"patch {'x'.join(map(str, result['patch_size']))}  "
                    f"{result['patches_per_step']} patches/step  best step {result['best_step_s']:.3f} s  "
                    f"{result['patches_per_s']:.2f} patches/s  ({result['parameters_m']} M parameters)",
                    flush=True,
                )
            if len(heaps) == 2:
                print(
                    f"{arch:10s} retained heap speed-up {results[-2]['best_step_s'] / results[-1]['best_step_s']:.2f}x"
                )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(
                {"machine": platform.platform(), "torch": torch.__version__, "results": results}, handle, indent=2
            )


if __name__ == "__main__":
    main()
