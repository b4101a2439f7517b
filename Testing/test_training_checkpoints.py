"""Checkpoints (atomic, weights_only loading, RNG states), configuration checks, run-folder files, stop signals."""

from __future__ import annotations

import os
import pickle
import random
import signal

import numpy as np
import pytest
import torch
from monai.optimizers import WarmupCosineSchedule

from LungTumorSegLib.core.errors import InputError
from LungTumorSegLib.model.networks import build_network
from LungTumorSegTrainingLib.config import TrainConfig
from LungTumorSegTrainingLib.training.checkpoints import (
    capture_rng,
    find_checkpoint,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from LungTumorSegTrainingLib.training.run_folder import RunFolder, read_metrics, read_status
from LungTumorSegTrainingLib.training.stopping import StopRequest


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), np.random.randn(1).tolist(), random.random()


def test_rng_states_survive_a_weights_only_checkpoint(tmp_path):
    np.random.randn()  # leave a cached gaussian in numpy's state
    path = save_checkpoint(tmp_path / "checkpoints" / "last.pt", {"rng": capture_rng(), "epoch": 3})
    expected = draws()
    restore_rng(load_checkpoint(path)["rng"])
    assert draws() == expected
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left
    assert find_checkpoint(tmp_path) == path


def test_training_state_round_trip(tmp_path):
    cfg = TrainConfig(unet_channels=[4, 8], unet_res_units=0, patch_size=[16, 16, 16])
    network = build_network(cfg.arch, cfg.network_kwargs())
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    scheduler = WarmupCosineSchedule(optimizer, 2, 10, warmup_multiplier=0.1)
    network(torch.rand(1, 1, 16, 16, 16)).sum().backward()
    optimizer.step()
    scheduler.step()
    payload = {
        "config": cfg.to_dict(),
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": torch.amp.GradScaler("cuda", enabled=False).state_dict(),
        "history": [{"epoch": 1, "train_loss": 0.5, "val_dice": None}],
    }
    loaded = load_checkpoint(save_checkpoint(tmp_path / "c.pt", payload))
    assert TrainConfig.from_dict(loaded["config"]) == cfg
    optimizer2 = torch.optim.AdamW(network.parameters(), lr=1e-3)
    scheduler2 = WarmupCosineSchedule(optimizer2, 2, 10, warmup_multiplier=0.1)  # build both, then load (as resume)
    optimizer2.load_state_dict(loaded["optimizer"])
    scheduler2.load_state_dict(loaded["scheduler"])
    assert scheduler2.last_epoch == 1 and optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_unsafe_or_foreign_files_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-not-run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"format": "lungtumorseg-train-checkpoint", "x": Payload()}, protocol=2))
    with pytest.raises(InputError, match="cannot load the checkpoint"):
        load_checkpoint(evil)
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(InputError, match="not a lungtumorseg-train checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(InputError, match="no checkpoint"):
        find_checkpoint(tmp_path / "nothing")


def test_config_validation():
    TrainConfig(arch="SwinUNETR", patch_size=[64, 64, 32]).validate()
    with pytest.raises(InputError, match=r"multiple of 32 for SwinUNETR \(try 96 64 32\)"):
        TrainConfig(arch="SwinUNETR", patch_size=[96, 48, 32]).validate()
    with pytest.raises(InputError, match="single voxel at its coarsest level"):
        TrainConfig(arch="SwinUNETR", patch_size=[32, 32, 32]).validate()
    with pytest.raises(InputError, match="multiple of 16 for UNet"):
        TrainConfig(patch_size=[40, 40, 40]).validate()
    TrainConfig(unet_channels=[8, 16, 32], patch_size=[32, 32, 16]).validate()  # 2 strides: multiple of 4
    with pytest.raises(InputError, match="one stride fewer"):
        TrainConfig(unet_channels=[8, 16], unet_strides=[2, 2]).validate()
    with pytest.raises(InputError, match="--loss"):
        TrainConfig(loss="l2").validate()
    kwargs = TrainConfig(arch="SwinUNETR", swin_feature_size=24, swin_depths=[1, 1, 1, 1]).network_kwargs()
    assert kwargs["feature_size"] == 24 and kwargs["depths"] == [1, 1, 1, 1] and kwargs["out_channels"] == 2
    assert TrainConfig.from_dict({"epochs": 3, "from_the_future": 1}).epochs == 3


def test_run_folder_status_and_metrics(tmp_path):
    folder = RunFolder(tmp_path / "run")
    folder.create()
    folder.write_status("running", epoch=1, best_dice=None)
    folder.write_status("stopped", message="stopped by SIGTERM")
    status = read_status(folder.root)
    assert status["state"] == "stopped" and status["epoch"] == 1 and status["pid"] == os.getpid()
    assert status["updated"].endswith("Z") and status["started"] <= status["updated"]
    with pytest.raises(ValueError):
        folder.write_status("paused")
    folder.write_metrics([{"epoch": 1, "global_step": 5, "train_loss": 0.123456789, "val_dice": None, "lr": 1e-4}])
    assert read_metrics(folder.root) == [
        {"epoch": 1, "global_step": 5, "train_loss": 0.12345679, "val_dice": None, "lr": 0.0001,
         "epoch_time_s": None, "best_dice": None}
    ]  # fmt: skip
    assert RunFolder(tmp_path / "rank1", enabled=False).write_status("running") is None
    assert not (tmp_path / "rank1").exists()


def test_stop_request_catches_sigterm_and_sigint():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.signal_name == "SIGTERM" and stop.exit_code == 0
    assert signal.getsignal(signal.SIGTERM) is not stop._handle
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl+C interrupts at once
