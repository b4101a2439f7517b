"""The training loop: AdamW, warm-up + cosine schedule, AMP on CUDA, validation, checkpoints, resume, stop.

One function, ``train``, runs a whole (or resumed) run in one process or as one rank of a torchrun job.
Reproducibility: ``monai.utils.set_determinism(seed)``, data order and augmentation seeded per epoch
(datasets.py), and checkpoints that hold the model, optimizer, scheduler, scaler, counters and RNG states,
so a stopped-and-resumed run reproduces the uninterrupted run's losses.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.optimizers import WarmupCosineSchedule
from monai.utils import set_determinism

from LungTumorSegLib.core.allocator import retained_heap
from LungTumorSegLib.core.errors import InputError, LungTumorSegError, OutputError
from LungTumorSegLib.core.progress import ProgressReporter
from LungTumorSegLib.measurements.metrics import dice
from LungTumorSegLib.model.networks import build_network

from ..config import TrainConfig
from ..data.context_transforms import LesionLibrary
from ..data.datalist import load_datalist, validate_cases
from ..data.datasets import (
    batches_per_pass,
    context_weighted,
    is_context_case,
    make_dataset,
    train_loader,
    unwrap_transform_error,
)
from ..data.splits import Split, load_split, make_split, select_cases
from ..data.transforms import training_transforms, validation_transforms
from . import ddp
from .checkpoints import capture_rng, load_checkpoint, load_initial_weights, restore_rng, save_checkpoint
from .losses import build_loss, mask_ignored
from .plots import save_curves, save_overlay
from .prediction import predict_cases
from .run_folder import RunFolder
from .stopping import StopRequest

LOG = logging.getLogger("lungtumorseg.train")
WARMUP_START = 0.1  # linear warm-up from 10 % of --lr


@dataclass
class TrainResult:
    """What a run ended with (rank 0's view; every rank returns the same state)."""

    run_dir: Path
    state: str
    exit_code: int
    epochs_completed: int
    global_step: int
    best_dice: float | None
    best_epoch: int | None
    history: list[dict[str, Any]] = field(default_factory=list)
    param_digests: list[str] = field(default_factory=list)
    message: str = ""


def train(
    cfg: TrainConfig,
    reporter: ProgressReporter | None = None,
    resume: bool = False,
    stop: StopRequest | None = None,
) -> TrainResult:
    """Train (or resume) the run in ``cfg.output``.

    Args:
        cfg: the run configuration (for a resume: config.json with any overrides applied).
        reporter: progress sink (tqdm, JSON lines or none); rank 0 only reports.
        resume: continue from ``checkpoints/last.pt`` in ``cfg.output``.
        stop: stop request; by default SIGTERM/SIGINT handlers are installed for the run.

    Raises:
        InputError: bad configuration or data; OutputError: the run folder is taken (without ``resume``).
    """
    cfg.validate()
    ctx = ddp.init_distributed(cfg.device)
    threads = torch.get_num_threads()
    try:
        own_stop = stop is None
        stop = stop or StopRequest().install()
        try:
            return _Run(cfg, ctx, reporter or ProgressReporter("none"), resume, stop).run()
        finally:
            if own_stop:
                stop.restore()
    finally:
        torch.set_num_threads(threads)
        ddp.cleanup(ctx)


class _Run:
    """State of one training run on one rank."""

    def __init__(
        self, cfg: TrainConfig, ctx: ddp.DistContext, reporter: ProgressReporter, resume: bool, stop: StopRequest
    ) -> None:
        self.cfg, self.ctx, self.stop, self.resume = cfg, ctx, stop, resume
        self.reporter = reporter if ctx.is_main else _SilentReporter()
        self.folder = RunFolder(cfg.output, enabled=ctx.is_main)
        self.device = ctx.device
        self.amp = bool(cfg.amp and self.device.type == "cuda")
        self.history: list[dict[str, Any]] = []
        self.best_dice: float | None = None
        self.best_epoch: int | None = None
        self.epoch = 0
        self.global_step = 0
        self.step_in_epoch = 0
        self.epoch_loss = [0.0, 0]
        self.writer: Any = None
        self._log_handler: logging.Handler | None = None

    # ----------------------------------------------------------------- setup
    def run(self) -> TrainResult:
        payload = self._check_folder()
        self._configure_torch()
        split, train_cases, val_cases = self._data()
        self.folder.create()
        self._start_log()
        try:
            if self.ctx.is_main:
                self.cfg.save(self.folder.config)
                split.save(self.folder.split)
            self.folder.write_status(
                "running",
                epoch=int(payload["epoch"]) if payload else 0,
                epochs=self.cfg.epochs,
                best_dice=payload.get("best_dice") if payload else None,
                message="resuming" if payload else "starting",
            )
            with retained_heap():  # CPU layers reuse freed buffers instead of re-faulting them
                result = self._train(payload, train_cases, val_cases)
        except KeyboardInterrupt:
            self.folder.write_status(
                "stopped", message="interrupted; resume continues from the last epoch's checkpoint"
            )
            raise
        except BaseException as exc:
            error = unwrap_transform_error(exc)
            self.folder.write_status("failed", message=f"{type(error).__name__}: {error}")
            if error is not exc:
                raise error from exc
            raise
        finally:
            if self.writer is not None:
                self.writer.close()
            self._stop_log()
        return result

    def _check_folder(self) -> dict[str, Any] | None:
        if self.resume:
            payload = load_checkpoint(self.folder.last)
            if payload["config"].get("arch") != self.cfg.arch:
                raise InputError(f"{self.folder.last}: checkpoint architecture differs from config.json")
            return payload
        if self.folder.last.exists():
            raise OutputError(
                f"{self.folder.root}: holds a training run already "
                f"(use 'lungtumorseg-train resume {self.folder.root}' or another --output)"
            )
        return None

    def _configure_torch(self) -> None:
        threads = self.cfg.threads
        if not threads and self.device.type == "cpu" and self.ctx.enabled:
            local = int(os.environ.get("LOCAL_WORLD_SIZE", self.ctx.world_size))
            threads = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1) // local)
        if threads:
            torch.set_num_threads(int(threads))
        set_determinism(seed=int(self.cfg.seed))
        if self.cfg.cudnn_benchmark:
            torch.backends.cudnn.deterministic = False
            torch.backends.cudnn.benchmark = True

    def _data(self) -> tuple[Split, list[dict[str, Any]], list[dict[str, Any]]]:
        cfg = self.cfg
        cases = load_datalist(cfg.data, cfg.max_cases)
        names = [c["case"] for c in cases]
        if self.resume and self.folder.split.is_file():
            split = load_split(self.folder.split)
        elif cfg.split_file:
            split = load_split(Path(cfg.split_file))
        else:
            split = make_split(names, cfg.val_fraction, cfg.test_fraction, cfg.seed, cfg.patient_pattern)
        present = set(names)
        train_names = split.subset("train", cfg.fold)
        val_names = split.subset("val", cfg.fold)
        if cfg.max_cases:
            train_names = [n for n in train_names if n in present]
            val_names = [n for n in val_names if n in present]
        train_cases = select_cases(cases, train_names, "training")
        val_cases = select_cases(cases, val_names, "validation")
        if not train_cases:
            raise InputError("no training cases (check --data, --split/--fold and --max-cases)")
        validate_cases(train_cases + val_cases, check_values=False)
        return split, train_cases, val_cases

    # ----------------------------------------------------------------- training
    def _train(
        self, payload: dict[str, Any] | None, train_cases: list[dict[str, Any]], val_cases: list[dict[str, Any]]
    ) -> TrainResult:
        cfg, ctx = self.cfg, self.ctx
        self.reporter.update("prepare", 0.0, f"caching {len(train_cases)} training and {len(val_cases)} val cases")
        progress_bar = ctx.is_main and self.reporter.mode == "tqdm"
        library = self._lesion_library(train_cases) if cfg.paste_prob > 0 else None
        train_ds = make_dataset(
            train_cases, training_transforms(cfg, library), cfg, self.folder.cache_dir / "train", progress=progress_bar
        )
        train_ds = context_weighted(train_ds, train_cases, cfg)
        my_val = val_cases[ctx.rank :: ctx.world_size]
        val_ds = make_dataset(my_val, validation_transforms(cfg), cfg, self.folder.cache_dir / "val") if my_val else []
        do_validate = bool(val_cases) and cfg.val_every > 0

        network = build_network(cfg.arch, cfg.network_kwargs())
        if cfg.init_weights and payload is None:
            load_initial_weights(network, Path(cfg.init_weights))
            LOG.info("starting from the weights in %s", cfg.init_weights)
        network = network.to(self.device)
        if self.device.type == "cpu":  # oneDNN's 3D convolutions train ~1.5-3x faster on channels-last tensors
            network = network.to(memory_format=torch.channels_last_3d)
        optimizer = torch.optim.AdamW(network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = int(cfg.steps_per_epoch) or batches_per_pass(len(train_ds), cfg.batch_size, ctx.world_size)
        total = steps * int(cfg.epochs)
        warmup = min(int(cfg.warmup_epochs) * steps, max(total - 1, 0))
        scheduler = WarmupCosineSchedule(optimizer, warmup, total, warmup_multiplier=WARMUP_START)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        loss_fn = build_loss(cfg.loss, cfg.topk_percent)
        if payload is not None:
            self._restore(payload, network, optimizer, scheduler, scaler)
            scheduler.t_total, scheduler.warmup_steps = total, min(warmup, total)
        model = ddp.wrap_model(network, ctx)
        self.writer = self.folder.tensorboard(purge_step=self.global_step if payload is not None else None)
        if payload is not None:
            restore_rng(payload["rng"])
            self.reporter.log("info", f"resuming at epoch {self.epoch + 1}, step {self.global_step}")
        LOG.info("training %s on %s: %d steps/epoch, %d epochs", cfg.arch, self.device, steps, cfg.epochs)

        state, message = "finished", "done"
        while self.epoch < cfg.epochs:
            tick = time.perf_counter()
            stopped = self._train_epoch(model, train_ds, optimizer, scheduler, scaler, loss_fn, steps, total)
            if stopped:
                self._save_last(network, optimizer, scheduler, scaler)
                state, message = "stopped", f"stopped by {self.stop.signal_name} in epoch {self.epoch + 1}"
                break
            count_sum = ddp.all_reduce_sum([self.epoch_loss[0], float(self.epoch_loss[1])], ctx)
            train_loss = count_sum[0] / max(count_sum[1], 1.0)
            self.epoch += 1
            val_dice = None
            if do_validate and (self.epoch % cfg.val_every == 0 or self.epoch == cfg.epochs):
                val_dice = self._validate(network, val_ds)
            improved = val_dice is not None and (self.best_dice is None or val_dice > self.best_dice)
            if improved:
                self.best_dice, self.best_epoch = val_dice, self.epoch
            row = {
                "epoch": self.epoch,
                "global_step": self.global_step,
                "train_loss": train_loss,
                "val_dice": val_dice,
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_time_s": round(time.perf_counter() - tick, 3),
                "best_dice": self.best_dice,
            }
            self.history.append(row)
            self.step_in_epoch, self.epoch_loss = 0, [0.0, 0]
            self._save_last(network, optimizer, scheduler, scaler, val_dice)
            if improved:
                self._save(self.folder.best, network, optimizer, scheduler, scaler, val_dice)
            self._report_epoch(row, improved)
            if cfg.patience > 0 and self.best_epoch is not None and self.epoch - self.best_epoch >= cfg.patience:
                message = f"early stop: no validation improvement for {cfg.patience} epochs (best at {self.best_epoch})"
                break
            if ddp.any_rank(self.stop.requested, ctx):
                state, message = "stopped", f"stopped by {self.stop.signal_name or 'another rank'} after epoch"
                break
            if cfg.stop_after_epoch and self.epoch >= cfg.stop_after_epoch and self.epoch < cfg.epochs:
                state, message = "stopped", f"stopped after epoch {self.epoch} (--stop-after-epoch)"
                break
        digests = [str(d) for d in ddp.gather_objects(ddp.parameter_digest(network), ctx)]
        if len(set(digests)) > 1:
            self.reporter.log("error", "model parameters differ between ranks (DDP synchronisation failed)")
        self.folder.write_status(
            state,
            epoch=self.epoch,
            global_step=self.global_step,
            best_dice=self.best_dice,
            best_epoch=self.best_epoch,
            message=message,
            world_size=ctx.world_size,
            param_digests=digests,
        )
        if self.reporter.mode == "json":
            self.reporter.log("info", message)
        self.reporter.close()
        exit_code = self.stop.exit_code if state == "stopped" and self.stop.requested else 0
        return TrainResult(
            run_dir=self.folder.root,
            state=state,
            exit_code=exit_code,
            epochs_completed=self.epoch,
            global_step=self.global_step,
            best_dice=self.best_dice,
            best_epoch=self.best_epoch,
            history=list(self.history),
            param_digests=digests,
            message=message,
        )

    def _train_epoch(self, model, dataset, optimizer, scheduler, scaler, loss_fn, steps: int, total: int) -> bool:
        """Run the rest of the current epoch; True when a stop was requested (after a finished step)."""
        cfg = self.cfg
        model.train()
        skip = self.step_in_epoch
        for index, batch in enumerate(self._epoch_batches(dataset, steps)):
            if index < skip:
                continue
            image = batch["image"].to(self.device, non_blocking=True)
            label = batch["label"].to(self.device, non_blocking=True)
            ignore = batch["ignore"].to(self.device, non_blocking=True) if "ignore" in batch else None
            value = training_step(model, image, label, optimizer, scaler, loss_fn, cfg.grad_clip, self.amp, ignore)
            scheduler.step()
            if not math.isfinite(value):
                raise LungTumorSegError(
                    f"training diverged (loss {value}) at step {self.global_step + 1}; try a lower --lr"
                )
            self.epoch_loss[0] += value
            self.epoch_loss[1] += 1
            self.global_step += 1
            self.step_in_epoch = index + 1
            self.reporter.update(
                "train",
                self.global_step / max(total, 1),
                f"epoch {self.epoch + 1}/{cfg.epochs} step {self.step_in_epoch}/{steps} loss {value:.4f}",
            )
            if self.writer is not None:
                self.writer.add_scalar("train/step_loss", value, self.global_step)
            if ddp.any_rank(self.stop.requested, self.ctx) and self.step_in_epoch < steps:
                return True
        return False

    def _epoch_batches(self, dataset, steps: int) -> Iterator[dict[str, Any]]:
        """``steps`` batches of the current epoch, in an order fixed by (seed, epoch, rank)."""
        produced, repeat = 0, 0
        pin = self.device.type == "cuda"
        while True:
            loader = train_loader(dataset, self.cfg, self.epoch, repeat, self.ctx.rank, self.ctx.world_size, pin)
            for batch in loader:
                yield batch
                produced += 1
                if produced >= steps:
                    return
            repeat += 1

    def _lesion_library(self, train_cases: list[dict[str, Any]]) -> LesionLibrary:
        """The training crops' lesions on the model grid, for pasting into whole CTs (never the val/test cases)."""
        crops = [c for c in train_cases if not is_context_case(c["case"], self.cfg)]
        chain = validation_transforms(self.cfg)
        self.reporter.update("prepare", 0.0, f"cutting the lesions of {len(crops)} training crops for pasting")
        library = LesionLibrary.from_items((chain(c) for c in crops), self.cfg.spacing_mm, self.cfg.hu_window)
        LOG.info("lesion library: %d lesions from %d training crops", len(library), len(crops))
        return library

    # ----------------------------------------------------------------- validation
    def _validate(self, network, val_ds) -> float:
        """Mean Dice over all validation cases (sharded over ranks); writes the overlay PNG on rank 0."""
        cfg = self.cfg
        self.reporter.update("validate", self.reporter.fraction, f"epoch {self.epoch}")
        total, count, overlay = 0.0, 0, None
        with torch.no_grad():
            items = (val_ds[i] for i in range(len(val_ds)))
            for case in predict_cases(network, items, cfg.patch_size, cfg.overlap, self.device):
                total += dice(case.probability > 0.5, case.label)
                count += 1
                if self.ctx.is_main and (overlay is None or case.label.sum() > overlay.label.sum()):
                    overlay = case
        total, count = ddp.all_reduce_sum([total, float(count)], self.ctx)
        if overlay is not None:
            save_overlay(
                overlay.image,
                overlay.label,
                overlay.probability,
                self.folder.overlay,
                title=f"{overlay.case}, epoch {self.epoch}",
            )
        return total / count if count else float("nan")

    # ----------------------------------------------------------------- checkpoints and reports
    def _payload(self, network, optimizer, scheduler, scaler, val_dice: float | None) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(),
            "model": network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "epoch_loss_sum": float(self.epoch_loss[0]),
            "epoch_loss_count": int(self.epoch_loss[1]),
            "global_step": self.global_step,
            "best_dice": self.best_dice,
            "best_epoch": self.best_epoch,
            "val_dice": val_dice,
            "history": self.history,
            "rng": capture_rng(),
        }

    def _save(self, path: Path, network, optimizer, scheduler, scaler, val_dice: float | None = None) -> None:
        if self.ctx.is_main:
            save_checkpoint(path, self._payload(network, optimizer, scheduler, scaler, val_dice))
            self.reporter.emit("checkpoint", path=str(path), epoch=self.epoch, step=self.global_step)
        ddp.barrier(self.ctx)

    def _save_last(self, network, optimizer, scheduler, scaler, val_dice: float | None = None) -> None:
        self._save(self.folder.last, network, optimizer, scheduler, scaler, val_dice)

    def _restore(self, payload, network, optimizer, scheduler, scaler) -> None:
        network.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        self.epoch = int(payload["epoch"])
        self.global_step = int(payload["global_step"])
        self.step_in_epoch = int(payload.get("step_in_epoch", 0))
        self.epoch_loss = [float(payload.get("epoch_loss_sum", 0.0)), int(payload.get("epoch_loss_count", 0))]
        self.best_dice = payload.get("best_dice")
        self.best_epoch = payload.get("best_epoch")
        self.history = [dict(row) for row in payload.get("history", [])]

    def _report_epoch(self, row: dict[str, Any], improved: bool) -> None:
        cfg = self.cfg
        if not self.ctx.is_main:
            return
        self.folder.write_metrics(self.history)
        save_curves(self.history, self.folder.curves)
        if self.writer is not None:
            self.writer.add_scalar("train/loss", row["train_loss"], self.epoch)
            self.writer.add_scalar("train/lr", row["lr"], self.epoch)
            if row["val_dice"] is not None:
                self.writer.add_scalar("val/dice", row["val_dice"], self.epoch)
            self.writer.flush()
        self.folder.write_status(
            "running",
            epoch=self.epoch,
            global_step=self.global_step,
            best_dice=self.best_dice,
            best_epoch=self.best_epoch,
            last_val_dice=row["val_dice"],
            message=f"epoch {self.epoch}/{cfg.epochs}",
        )
        self.reporter.emit(
            "metrics",
            epoch=self.epoch,
            step=self.global_step,
            train_loss=row["train_loss"],
            val_dice=row["val_dice"],
            lr=row["lr"],
            best_dice=self.best_dice,
            epoch_time_s=row["epoch_time_s"],
        )
        val = "" if row["val_dice"] is None else f", val Dice {row['val_dice']:.4f}" + (" (best)" if improved else "")
        line = f"epoch {self.epoch}/{cfg.epochs}: loss {row['train_loss']:.4f}{val}, {row['epoch_time_s']:.1f} s"
        LOG.info(line)
        if self.reporter.mode == "tqdm":
            self.reporter.log("info", line)

    def _start_log(self) -> None:
        if self.ctx.is_main:
            self._log_handler = logging.FileHandler(self.folder.log, encoding="utf-8")
            self._log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            LOG.addHandler(self._log_handler)
            LOG.setLevel(logging.INFO)
            LOG.propagate = False

    def _stop_log(self) -> None:
        if self._log_handler is not None:
            LOG.removeHandler(self._log_handler)
            self._log_handler.close()
            LOG.propagate = True


def training_step(
    model: torch.nn.Module,
    image: torch.Tensor,
    label: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    loss_fn: torch.nn.Module,
    grad_clip: float,
    amp: bool,
    ignore: torch.Tensor | None = None,
) -> float:
    """One optimisation step: forward (autocast when ``amp``), backward, gradient clipping, optimizer step.

    Voxels where ``ignore`` is set take no part in the loss (``losses.mask_ignored``).

    Returns:
        The loss value before the step.
    """
    optimizer.zero_grad(set_to_none=True)
    if image.device.type == "cpu" and image.ndim == 5:
        image = image.contiguous(memory_format=torch.channels_last_3d)
    with torch.autocast(device_type=image.device.type, enabled=amp):
        loss = loss_fn(mask_ignored(model(image), ignore), label)
    scaler.scale(loss).backward()
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach())


class _SilentReporter(ProgressReporter):
    """Reporter of ranks other than 0: nothing on screen, log lines only to the debug log."""

    def __init__(self) -> None:
        super().__init__("none")

    def log(self, level: str, message: str) -> None:
        """Debug-log the message instead of printing it."""
        LOG.debug("%s: %s", level, message)


def epoch_losses(history: list[dict[str, Any]]) -> np.ndarray:
    """Training loss per completed epoch, from a result or checkpoint history."""
    return np.array([row["train_loss"] for row in history], dtype=np.float64)
