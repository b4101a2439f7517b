"""DDP for real: ``torchrun --nproc_per_node 2`` with gloo on CPU trains a few steps; rank 0 alone writes the
run folder (one checkpoint), and every rank ends with identical parameters (gathered sha256 digests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from LungTumorSegLib.model.networks import build_network
from LungTumorSegTrainingLib.config import TrainConfig
from LungTumorSegTrainingLib.training.checkpoints import load_checkpoint
from LungTumorSegTrainingLib.training.ddp import parameter_digest
from LungTumorSegTrainingLib.training.run_folder import read_metrics, read_status

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LIDC = SHARED_DATA / "lidc-nodule-crops"


@pytest.mark.timeout(180)
def test_torchrun_two_cpu_processes(tmp_path):
    if not (LIDC / "image").is_dir():
        pytest.skip(f"shared LIDC crops not available: {LIDC}")
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo not available")
    run_dir = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "LungTumorSegTrainingLib", "train", "--data", str(LIDC), "--max-cases", "8"]
    command += ["-o", str(run_dir), "--device", "cpu", "--unet-channels", "8", "16", "32", "--unet-res-units", "1"]
    command += ["--patch-size", "32", "32", "16", "--spacing", "2", "2", "2", "--batch-size", "2"]
    command += ["--samples-per-case", "1", "--epochs", "2", "--lr", "3e-3", "--warmup-epochs", "0"]
    command += ["--val-every", "0", "--threads", "1", "--progress", "json"]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=170)
    assert completed.returncode == 0, completed.stderr[-3000:]

    events = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 1 and results[0]["state"] == "finished"  # only rank 0 reports
    # each rank draws ceil(train cases / 2 ranks) cases per epoch, in batches of 2
    train_cases = len(json.loads((run_dir / "split.json").read_text())["folds"][0]["train"])
    steps_per_epoch = math.ceil(math.ceil(train_cases / 2) / 2)
    assert [e["epoch"] for e in events if e["event"] == "metrics"] == [1, 2]
    assert [row["epoch"] for row in read_metrics(run_dir)] == [1, 2]

    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.pt"]
    status = read_status(run_dir)
    assert status["state"] == "finished" and status["world_size"] == 2
    assert status["global_step"] == 2 * steps_per_epoch
    digests = status["param_digests"]
    assert len(digests) == 2 and digests[0] == digests[1], "ranks ended with different parameters"

    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    cfg = TrainConfig.from_dict(checkpoint["config"])
    network = build_network(cfg.arch, cfg.network_kwargs())
    network.load_state_dict(checkpoint["model"])
    assert parameter_digest(network) == digests[0]  # the saved model is the one every rank holds
