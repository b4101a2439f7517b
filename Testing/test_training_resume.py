"""Stop and resume: a run stopped (after an epoch, or by SIGTERM mid-epoch) and resumed reproduces the
uninterrupted run's per-epoch losses and validation Dice with the same seed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from LungTumorSegTrainingLib.config import TrainConfig
from LungTumorSegTrainingLib.training.run_folder import read_metrics, read_status
from LungTumorSegTrainingLib.training.trainer import epoch_losses, train

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIDC = SHARED_DATA / "lidc-nodule-crops"
TINY = {
    "unet_channels": [8, 16, 32],
    "unet_res_units": 1,
    "patch_size": [32, 32, 16],
    "spacing_mm": [2.0, 2.0, 2.0],
    "batch_size": 2,
    "samples_per_case": 2,
    "epochs": 4,
    "lr": 3e-3,
    "warmup_epochs": 1,
    "val_every": 2,
    "max_cases": 10,
    "threads": 1,
    "seed": 7,
}
TOLERANCE = 1e-6


def tiny_config(output: Path, **overrides) -> TrainConfig:
    if not (LIDC / "image").is_dir():
        pytest.skip(f"shared LIDC crops not available: {LIDC}")
    return TrainConfig(data=[str(LIDC)], output=str(output), **{**TINY, **overrides})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    return train(tiny_config(tmp_path_factory.mktemp("resume") / "reference"))


def assert_same_curve(result, reference) -> None:
    np.testing.assert_allclose(epoch_losses(result.history), epoch_losses(reference.history), rtol=TOLERANCE)
    got = [row["val_dice"] for row in result.history]
    want = [row["val_dice"] for row in reference.history]
    assert [v is None for v in got] == [v is None for v in want]
    np.testing.assert_allclose([v for v in got if v is not None], [v for v in want if v is not None], rtol=TOLERANCE)
    assert result.global_step == reference.global_step


def test_stop_after_epoch_then_resume_reproduces_the_curve(reference, tmp_path):
    assert reference.state == "finished" and reference.epochs_completed == 4
    first = train(tiny_config(tmp_path / "run", stop_after_epoch=2))
    assert first.state == "stopped" and first.exit_code == 0 and first.epochs_completed == 2
    assert read_status(tmp_path / "run")["state"] == "stopped"
    cfg = TrainConfig.load(tmp_path / "run" / "config.json")
    cfg.stop_after_epoch = 0
    resumed = train(cfg, resume=True)
    assert resumed.state == "finished" and resumed.epochs_completed == 4
    assert_same_curve(resumed, reference)
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    np.testing.assert_allclose([r["train_loss"] for r in rows], epoch_losses(reference.history), rtol=1e-6)


def test_sigterm_mid_epoch_checkpoints_and_resume_reproduces_the_curve(reference, tmp_path):
    run_dir = tmp_path / "signalled"
    cfg = tiny_config(run_dir)
    command = [sys.executable, "-m", "LungTumorSegTrainingLib", "train", "--data", str(LIDC), "-o", str(run_dir)]
    command += ["--unet-channels", "8", "16", "32", "--unet-res-units", "1", "--patch-size", "32", "32", "16"]
    command += ["--spacing", "2", "2", "2", "--batch-size", "2", "--samples-per-case", "2", "--epochs", "4"]
    command += ["--lr", "3e-3", "--warmup-epochs", "1", "--val-every", "2", "--max-cases", "10", "--threads", "1"]
    command += ["--seed", str(cfg.seed), "--progress", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events = []
    try:
        for line in process.stdout:
            event = json.loads(line)
            events.append(event)
            if event["event"] == "progress" and event.get("message", "").startswith("epoch 2/4 step 2/"):
                process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert code == 0, process.stderr.read()
    result = events[-1]
    assert result["event"] == "result" and result["state"] == "stopped" and result["epochs_completed"] == 1
    assert "SIGTERM" in result["message"]
    status = read_status(run_dir)
    assert status["state"] == "stopped" and status["epoch"] == 1 and 6 <= status["global_step"] < 10
    checkpoint_events = [e for e in events if e["event"] == "checkpoint"]
    assert checkpoint_events[-1]["step"] == status["global_step"]  # saved after the interrupted step
    resumed = train(TrainConfig.load(run_dir / "config.json"), resume=True)
    assert resumed.state == "finished"
    assert_same_curve(resumed, reference)


def test_resume_refuses_a_folder_without_checkpoint(tmp_path):
    from LungTumorSegLib.core.errors import InputError

    with pytest.raises(InputError, match="checkpoint not found"):
        train(tiny_config(tmp_path / "empty"), resume=True)


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path):
    # a learning rate of ~0 keeps the validation Dice constant: no improvement after epoch 1
    result = train(tiny_config(tmp_path / "early", epochs=6, val_every=1, patience=2, lr=1e-12, max_cases=6))
    assert result.state == "finished" and result.epochs_completed == 3 and result.best_epoch == 1
    assert "early stop" in result.message and read_status(tmp_path / "early")["message"] == result.message
